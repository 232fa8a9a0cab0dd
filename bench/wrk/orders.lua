-- POST /orders/process with the batch in BENCH_BODY (bench/gen_orders.py), static.
dofile((os.getenv("BENCH_LUA_DIR") or ".") .. "/common.lua")
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
