-- GET /health, BENCH_PIPELINE (default 16) requests sent back to back on each
-- connection before the responses are read (HTTP/1.1 pipelining). A single
-- wrk thread cannot saturate a server with one request per round trip; this
-- makes the load generator's cost per request small, so the server's shows.
dofile((os.getenv("BENCH_LUA_DIR") or ".") .. "/common.lua")
local depth = tonumber(os.getenv("BENCH_PIPELINE") or "16")
local req
function init(args)
  local r = {}
  for i = 1, depth do
    r[i] = wrk.format("GET", "/health")
  end
  req = table.concat(r)
end
function request()
  return req
end
