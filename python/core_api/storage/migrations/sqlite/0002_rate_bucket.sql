-- A rotated key's successor spends from its predecessor's rate-limit bucket, so rotation
-- cannot be used to refill a budget. NULL means the key's own id.
ALTER TABLE api_keys ADD COLUMN rate_bucket_id BIGINT;
