-- ARGV: now (ms), stale (ms), limit. Replies {"live", status, path1,
-- spec1, ...}: up to limit steps active for longer than stale, each
-- claimed for another stale period; or {"final", status} / {"gone", ""}.
local st = redis.call("HGET", meta, "status")
if not st then return {"gone", ""} end
if not live(st) then return {"final", st} end
local now, stale, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
local act = redis.call("HGETALL", act_k)
for i = 1, #act, 2 do
  if tonumber(act[i + 1]) <= now - stale then
    out[#out + 1] = act[i]
    if #out >= limit then break end
  end
end
-- Claimed for another stale period.
return reply("live", st, out, now)
