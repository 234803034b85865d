-- wrk script: POST /api/v1/entitlements/usage, one unit of FEATURE per request, with the
-- reference's metadata; with MODE "events" each request also carries a unique event_id.
--   wrk -s benchmarks/wrk_usage.lua URL -- KEYS_FILE FEATURE MODE TOKEN   (MODE: plain|events)
-- KEYS_FILE holds one API key per line (one workspace each); request n uses key n mod N.
local keys, feature, token, counter, events = {}, "mcp_calls", "t", 0, false
local thread_no = 0

function setup(thread)
  thread_no = thread_no + 1
  thread:set("tid", thread_no)
end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then keys[#keys + 1] = line end
  end
  feature, events = args[2], args[3] == "events"
  token = args[4] .. "-" .. tostring(tid or 0)
end

function request()
  counter = counter + 1
  local event = ""
  if events then event = ',"event_id":"' .. token .. "-" .. counter .. '"' end
  local body = '{"feature":"' .. feature .. '","quantity":1' .. event
    .. ',"metadata":{"endpoint":"/api/v1/posts"}}'
  return wrk.format("POST", "/api/v1/entitlements/usage", {
    ["Authorization"] = "Bearer " .. keys[(counter % #keys) + 1],
    ["Content-Type"] = "application/json",
  }, body)
end
