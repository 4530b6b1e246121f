-- ARGV: path, ok ("1" or "0"), result or error message, now (ms).
-- Replies {code, status, path1, spec1, ...}: the task steps that start
-- now. code: "ok", "dup" (already counted), "stopped" (the workflow is
-- final: recorded, nothing starts), "gone" (no such workflow).
local p, ok, v, now = ARGV[1], ARGV[2] == "1", ARGV[3], ARGV[4]
local st = redis.call("HGET", meta, "status")
if not st then return {"gone", ""} end
if redis.call("SADD", done_k, p) == 0 then return {"dup", st} end
redis.call("HDEL", act_k, p)
redis.call("HINCRBY", meta, "done", 1)
if ok then
  if #v > 0 then redis.call("HSET", res_k, p, v) end
else
  redis.call("HINCRBY", meta, "failed", 1)
  redis.call("HSET", meta, "updated", now)
  redis.call("HSET", err_k, p, p .. "\n" .. v)
end
if not live(st) then
  -- Final: what this completion wrote expires with the rest.
  expire()
  return {"stopped", st}
end
local out = {}
local fin = finish(p, ok, now, out)
if fin then
  expire()
  return reply("ok", fin, out, now)
end
return reply("ok", st, out, now)
