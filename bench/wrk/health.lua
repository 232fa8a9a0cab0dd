-- GET /health: a static request (wrk sends its prebuilt request, no Lua per request).
dofile((os.getenv("BENCH_LUA_DIR") or ".") .. "/common.lua")
