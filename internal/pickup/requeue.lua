-- Puts tasks the pickup took but never handed to asynq back at the head of
-- their queue, as asynq's own requeue at shutdown does.
-- KEYS: per task: its queue's active, lease and pending keys, its task key
-- ARGV: per task: its id
for i = 1, #ARGV do
	local active, lease, pending, task = KEYS[4 * i - 3], KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i]
	if redis.call("LREM", active, 0, ARGV[i]) > 0 then
		redis.call("ZREM", lease, ARGV[i])
		redis.call("RPUSH", pending, ARGV[i])
		redis.call("HSET", task, "state", "pending")
	end
end
return #ARGV
