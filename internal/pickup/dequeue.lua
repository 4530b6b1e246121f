-- forgeq's dequeue over several asynq queues in one round trip.
-- KEYS: per queue, in the order to try them: pending, paused, active, lease
-- ARGV[1]: the lease's expiry (unix seconds); ARGV[1+i]: queue i's task key prefix
-- Returns the first task message found, else the 1-based positions of the
-- queues that hold tasks but are paused.
local paused = {}
local n = #KEYS / 4
for i = 1, n do
	local pending = KEYS[4 * i - 3]
	if redis.call("EXISTS", KEYS[4 * i - 2]) == 1 then
		if redis.call("LLEN", pending) > 0 then
			paused[#paused + 1] = i
		end
	else
		local id = redis.call("RPOPLPUSH", pending, KEYS[4 * i - 1])
		if id then
			local task = ARGV[i + 1] .. id
			redis.call("ZADD", KEYS[4 * i], ARGV[1], id)
			redis.call("HSET", task, "state", "active")
			redis.call("HDEL", task, "pending_since")
			return redis.call("HGET", task, "msg")
		end
	end
end
return paused
