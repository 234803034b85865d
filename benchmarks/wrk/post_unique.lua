-- wrk script: POST a unique JSON body with a unique Idempotency-Key on every request.
-- Used by benchmarks/wrk/writes.py (POST /workspaces, POST /api-keys), e.g.
--   wrk -t1 -c32 -d10s -s benchmarks/wrk/post_unique.lua http://127.0.0.1:PORT \
--       -- /api/v1/workspaces <api key> <name prefix>
local path, token, prefix = "/api/v1/workspaces", "", "bench"
local counter = 0
local run = tostring(math.random(1, 1e9))

function init(args)
  path = args[1] or path
  token = args[2] or token
  prefix = args[3] or prefix
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0) % 100000)
  run = string.format("%08x", math.random(0, 0x7fffffff))
end

function request()
  counter = counter + 1
  local id = run .. "-" .. counter
  local body = '{"name":"' .. prefix .. " " .. id .. '"}'
  return wrk.format("POST", path, {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = "bench-" .. id,
  }, body)
end

function done(summary, latency, requests)
  io.write(string.format("errors: connect %d read %d write %d status %d timeout %d\n",
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout))
end
