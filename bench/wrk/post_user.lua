-- POST /users with a unique email per request: "b-<BENCH_TAG>-<thread>-<n>@bench.example".
dofile((os.getenv("BENCH_LUA_DIR") or ".") .. "/common.lua")
local tag = os.getenv("BENCH_TAG") or tostring(os.time())
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end
local n = 0
local headers = {["Content-Type"] = "application/json"}
function request()
  n = n + 1
  local body = string.format('{"name":"Bench User %d","email":"b-%s-%d-%d@bench.example"}',
                             n, tag, tid or 0, n)
  return wrk.format("POST", "/users", headers, body)
end
