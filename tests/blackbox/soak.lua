-- wrk script for tests/blackbox/test_soak.py: every request() returns the next
-- `depth` requests of a fixed rotation over the endpoints (depth > 1: pipelined).
-- Every request is one that must succeed (2xx), so wrk's "Non-2xx or 3xx
-- responses" line must not appear; the test also checks brisk's own counters.
--
--   wrk ... -s soak.lua URL -- FIRST_USER LAST_USER FIRST_ORDER LAST_ORDER TAG DEPTH
--
-- Users FIRST_USER..LAST_USER and orders FIRST_ORDER..LAST_ORDER exist (the test
-- created them); TAG makes the e-mail addresses of this run unique.

local next_thread = 0

function setup(thread)
   next_thread = next_thread + 1
   thread:set("tid", next_thread)
end

local first_user, last_user, first_order, last_order, tag, depth
local n = 0
local json_hdr = { ["Content-Type"] = "application/json" }

local function rand_user()
   return math.random(first_user, last_user)
end

local function rand_order()
   return math.random(first_order, last_order)
end

-- the rotation: 20 slots, about 15% writes
local slots = {
   function() return wrk.format("GET", "/health") end,
   function() return wrk.format("GET", "/users/" .. rand_user()) end,
   function()
      return wrk.format("POST", "/users", json_hdr, string.format(
         '{"name":"Soak %d","email":"soak-%s-%d-%d@example.com"}', n, tag, tid or 0, n))
   end,
   function() return wrk.format("GET", "/orders/" .. rand_order()) end,
   function() return wrk.format("GET", "/ready") end,
   function()
      return wrk.format("PATCH", "/users/" .. rand_user(), json_hdr,
                        string.format('{"name":"Soak patched %d"}', n))
   end,
   function() return wrk.format("GET", "/users?limit=20&after=" .. rand_user()) end,
   function() return wrk.format("GET", "/users/" .. rand_user() .. "/orders?limit=10") end,
   function()
      local q = 1 + n % 5
      return wrk.format("POST", "/orders", json_hdr, string.format(
         '{"user_id":%d,"items":[{"sku":"SOAK-%d","quantity":%d,"unit_price_cents":%d},' ..
         '{"sku":"SOAK-B","quantity":1,"unit_price_cents":250}]}', rand_user(), n % 97, q, 100 + n % 20000))
   end,
   function() return wrk.format("GET", "/health") end,
   function() return wrk.format("GET", "/users/" .. rand_user()) end,
   function()
      return wrk.format("POST", "/orders/process", json_hdr, string.format(
         '{"orders":[{"id":"s-%d-a","user_id":%d,"items":[{"sku":"P-1","quantity":2,"unit_price_cents":1999}]},' ..
         '{"id":"s-%d-b","user_id":%d,"items":[{"sku":"P-2","quantity":%d,"unit_price_cents":%d}]},' ..
         '{"id":"s-%d-c","user_id":1,"items":[{"sku":"P-3","quantity":1,"unit_price_cents":12000}]}]}',
         n, rand_user(), n, rand_user(), 1 + n % 9, 1 + n % 50000, n))
   end,
   function() return wrk.format("GET", "/orders/" .. rand_order()) end,
   function() return wrk.format("GET", "/health") end,
   function() return wrk.format("GET", "/users/" .. rand_user()) end,
   function() return wrk.format("GET", "/metrics") end,
   function() return wrk.format("GET", "/users?limit=5") end,
   function() return wrk.format("GET", "/ready") end,
   function() return wrk.format("GET", "/orders/" .. rand_order()) end,
   function() return wrk.format("GET", "/users?limit=10&after=" .. rand_user()) end,
}

function init(args)
   first_user = tonumber(args[1])
   last_user = tonumber(args[2])
   first_order = tonumber(args[3])
   last_order = tonumber(args[4])
   tag = args[5]
   depth = tonumber(args[6]) or 1
   math.randomseed(os.time() + (tid or 0) * 7919)
   -- threads start at different places in the rotation
   n = (tid or 0) * 7
end

function request()
   local out = {}
   for i = 1, depth do
      n = n + 1
      out[i] = slots[1 + n % #slots]()
   end
   return table.concat(out)
end
