-- ARGV: now (ms), name, total, retention (s), n shapes, then n (path,
-- shape) pairs, then (path, spec) pairs to the end. KEYS[9] is the list
-- of task paths in tree order.
if redis.call("EXISTS", meta) == 1 then return {"exists"} end
local now = ARGV[1]
redis.call("HSET", meta, "status", "pending", "created", now, "updated", now,
  "name", ARGV[2], "total", ARGV[3], "done", 0, "failed", 0, "retention", ARGV[4])
local n = tonumber(ARGV[5])
local first, stop = 6, 6 + 2 * n - 1
local i = first
while i <= stop do
  local j = math.min(i + 1999, stop)
  redis.call("HSET", shape_k, unpack(ARGV, i, j))
  i = j + 1
end
i = stop + 1
while i <= #ARGV do
  local j = math.min(i + 1999, #ARGV)
  redis.call("HSET", spec_k, unpack(ARGV, i, j))
  local paths = {}
  for k = i, j, 2 do paths[#paths + 1] = ARGV[k] end
  redis.call("RPUSH", KEYS[9], unpack(paths))
  i = j + 1
end
local out = {}
activate(".", out, now)
mark(out, now)
table.insert(out, 1, "ok")
table.insert(out, 2, "pending")
return out
