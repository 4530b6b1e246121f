-- ARGV: now (ms), reason. Replies {"cancelled", "", path1, queue1, ...}
-- for the steps that were active, or {"final", status} / {"gone", ""}.
local st = redis.call("HGET", meta, "status")
if not st then return {"gone", ""} end
if not live(st) then return {"final", st} end
redis.call("HSET", meta, "status", "cancelled", "finished", ARGV[1], "updated", ARGV[1], "error", ARGV[2])
local act = redis.call("HKEYS", act_k)
redis.call("DEL", act_k)
local r = {"cancelled", ""}
for _, p in ipairs(act) do
  r[#r + 1] = p
  redis.call("HSET", cnt_k, "x:" .. p, 1)
  r[#r + 1] = cjson.decode(redis.call("HGET", spec_k, p)).queue
end
expire()
return r
