-- wrk script: POST /api/v1/entitlements/usage, one unit of FEATURE per request with a unique
-- event_id (so every request also takes the ledger's dedup path).
--   wrk -s benchmarks/wrk_usage.lua URL -- KEYS_FILE FEATURE TOKEN
-- KEYS_FILE holds one API key per line (one workspace each); request n uses key n mod N.
local keys, feature, token, counter = {}, "mcp_calls", "t", 0
local thread_no = 0

function setup(thread)
  thread_no = thread_no + 1
  thread:set("tid", thread_no)
end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then keys[#keys + 1] = line end
  end
  feature = args[2]
  token = args[3] .. "-" .. tostring(tid or 0)
end

function request()
  counter = counter + 1
  local body = '{"feature":"' .. feature .. '","quantity":1,"event_id":"' .. token .. "-"
    .. counter .. '","metadata":{"endpoint":"/api/v1/posts"}}'
  return wrk.format("POST", "/api/v1/entitlements/usage", {
    ["Authorization"] = "Bearer " .. keys[(counter % #keys) + 1],
    ["Content-Type"] = "application/json",
  }, body)
end
