-- ARGV: path, now (ms). Replies {"run"|"done"|"stopped"|"gone", status}.
local st = redis.call("HGET", meta, "status")
if not st then return {"gone", ""} end
if redis.call("SISMEMBER", done_k, ARGV[1]) == 1 then return {"done", st} end
if not live(st) then return {"stopped", st} end
if st == "pending" then
  redis.call("HSET", meta, "status", "running", "started", ARGV[2])
  st = "running"
end
return {"run", st}
