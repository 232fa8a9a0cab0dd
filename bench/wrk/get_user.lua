-- GET /users/{id} with a random id in BENCH_IDS="LO:HI" (all existing users).
dofile((os.getenv("BENCH_LUA_DIR") or ".") .. "/common.lua")
local lo, hi = string.match(os.getenv("BENCH_IDS") or "1:1000", "(%d+):(%d+)")
lo, hi = tonumber(lo), tonumber(hi)
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end
function init(args)
  math.randomseed(1234 + (tid or 0))
end
function request()
  return wrk.format("GET", "/users/" .. math.random(lo, hi))
end
