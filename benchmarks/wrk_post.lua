-- wrk script: POSTs spread over many users, each with a unique Idempotency-Key and body.
--   wrk -s benchmarks/wrk_post.lua URL -- KEYS_FILE PATH KIND TOKEN
-- KEYS_FILE holds one API key per line (one seeded user each); request n uses key n mod N.
-- KIND is "workspace" (POST /workspaces) or "api-key" (POST /api-keys). TOKEN (random per
-- run, from the runner) keeps names, slugs and Idempotency-Keys unique across runs.
local keys, counter, path, kind, token = {}, 0, "/", "workspace", "t"
local thread_no = 0

function setup(thread)
  thread_no = thread_no + 1
  thread:set("tid", thread_no)
end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then keys[#keys + 1] = line end
  end
  path, kind = args[2], args[3]
  token = args[4] .. "-" .. tostring(tid or 0)
end

function request()
  counter = counter + 1
  local id = token .. "-" .. counter
  local body
  if kind == "workspace" then
    body = '{"name":"wrk ' .. id .. '"}'
  else
    body = '{"name":"wrk ' .. id .. '","scopes":["workspaces:read"]}'
  end
  return wrk.format("POST", path, {
    ["Authorization"] = "Bearer " .. keys[(counter % #keys) + 1],
    ["Idempotency-Key"] = id,
    ["Content-Type"] = "application/json",
  }, body)
end
