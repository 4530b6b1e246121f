-- forgeq's dequeue over several asynq queues in one round trip.
-- KEYS: per queue: pending, paused, active, lease
-- ARGV[1]: the leases' expiry (unix seconds); ARGV[2]: slots, the most
-- tasks to take; ARGV[3 .. 2+n]: each queue's task key prefix; then, per
-- slot, the order to try the queues in for it (n positions, 1-based), as
-- asynq draws one for each of its dequeues.
-- Each task taken is moved as asynq's own dequeue moves it: from pending
-- to active, leased, its state active. Returns {messages, paused}: the
-- taken tasks' messages, and the positions of the queues that hold tasks
-- but are paused.
local n = #KEYS / 4
local slots = tonumber(ARGV[2])
local got, held = {}, {}
local paused, empty = {}, {}
for i = 1, n do
	if redis.call("EXISTS", KEYS[4 * i - 2]) == 1 then
		paused[i] = true
		if redis.call("LLEN", KEYS[4 * i - 3]) > 0 then
			held[#held + 1] = i
		end
	end
end
local orders = 2 + n
for slot = 0, slots - 1 do
	local took = false
	for j = 1, n do
		local i = tonumber(ARGV[orders + slot * n + j])
		if not paused[i] and not empty[i] then
			local id = redis.call("RPOPLPUSH", KEYS[4 * i - 3], KEYS[4 * i - 1])
			if id then
				local task = ARGV[2 + i] .. id
				redis.call("ZADD", KEYS[4 * i], ARGV[1], id)
				redis.call("HSET", task, "state", "active")
				redis.call("HDEL", task, "pending_since")
				local msg = redis.call("HGET", task, "msg")
				if msg then
					got[#got + 1] = msg
				end
				took = true
				break
			end
			empty[i] = true
		end
	end
	if not took then
		break
	end
end
return {got, held}
