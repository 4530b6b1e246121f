-- forgeq's dequeue over several asynq queues in one round trip.
-- KEYS: per queue, in the order to try them: pending, paused, active, lease
-- ARGV[1]: the leases' expiry (unix seconds); ARGV[2]: the most tasks to
-- take; ARGV[2+i]: queue i's task key prefix
-- Each task taken is moved as asynq's own dequeue moves it: from pending
-- to active, leased, its state active. Returns {messages, paused}: the
-- taken tasks' messages, and the 1-based positions of the queues that hold
-- tasks but are paused.
local got, paused = {}, {}
local most = tonumber(ARGV[2])
local n = #KEYS / 4
for i = 1, n do
	local pending = KEYS[4 * i - 3]
	if redis.call("EXISTS", KEYS[4 * i - 2]) == 1 then
		if redis.call("LLEN", pending) > 0 then
			paused[#paused + 1] = i
		end
	else
		while #got < most do
			local id = redis.call("RPOPLPUSH", pending, KEYS[4 * i - 1])
			if not id then
				break
			end
			local task = ARGV[i + 2] .. id
			redis.call("ZADD", KEYS[4 * i], ARGV[1], id)
			redis.call("HSET", task, "state", "active")
			redis.call("HDEL", task, "pending_since")
			local msg = redis.call("HGET", task, "msg")
			if msg then
				got[#got + 1] = msg
			end
		end
		if #got >= most then
			break
		end
	end
end
return {got, paused}
