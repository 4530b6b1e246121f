-- forgeq's batch enqueue: every item of one hash slot, all or nothing.
-- It writes asynq v0.26's layout (the task hash with msg, state and
-- pending_since or unique_key; the pending list or the scheduled set).
--
-- KEYS: per queue q (1..Q): pending, scheduled; then per item: its task
-- key, its uniqueness lock key when it has one, its dedup key when it has
-- one.
-- ARGV[1] now in unix ns (pending_since), ARGV[2] now in unix seconds,
-- ARGV[3] Q, ARGV[4] N; then 9 per item: id, the task message (its id
-- field first), score (unix seconds; 0: pending), queue number, uniqueness
-- lock TTL in seconds (0: none), dedup mode ("": none, keep, replace,
-- debounce), dedup release (start, finish), debounce's maximum delay in
-- seconds (from the first enqueue of the key), task type. The caller has
-- refused a task id given twice.
--
-- A dedup key is a hash: the holding task's id and type, the release, and
-- first, when the key was taken (unix seconds).
--
-- Returns {1, then per item with a dedup key: item, id, outcome, state,
-- score} (outcome 1 new, 2 kept, 3 replaced, 4 debounced; the other items
-- are new, as sent), or {0, item, kind, detail, detail} for the first item
-- that conflicts, having written nothing.
local nowNs, now = ARGV[1], tonumber(ARGV[2])
local nq, n = tonumber(ARGV[3]), tonumber(ARGV[4])

local function idField(id)
  local len, s = #id, ""
  while len >= 128 do
    s = s .. string.char(len % 128 + 128)
    len = math.floor(len / 128)
  end
  return "\26" .. s .. string.char(len) .. id
end

-- msgFor returns the message of item a for the task id: its own, with
-- its id field swapped.
local function msgFor(a, id)
  return idField(id) .. string.sub(ARGV[a + 2], #idField(ARGV[a + 1]) + 1)
end

local function taskPrefix(q)
  local pending = KEYS[2 * q - 1]
  return string.sub(pending, 1, #pending - 7) .. "t:"
end

-- Which task keys exist, EXISTS on many keys at once: almost always none.
local exists = {}
do
  local kk, chunk, from = 2 * nq + 1, {}, {}
  local function flush()
    if #chunk > 0 and redis.call("EXISTS", unpack(chunk)) > 0 then
      for j, key in ipairs(chunk) do
        if redis.call("EXISTS", key) == 1 then exists[from[j]] = true end
      end
    end
    chunk, from = {}, {}
  end
  for i = 1, n do
    local a = 4 + (i - 1) * 9
    chunk[#chunk + 1], from[#from + 1] = KEYS[kk], i
    kk = kk + 1
    if ARGV[a + 5] ~= "0" then kk = kk + 1 end
    if ARGV[a + 6] ~= "" then kk = kk + 1 end
    if #chunk == 1000 then flush() end
  end
  flush()
end

-- The new tasks: their ARGV offsets and keys, and sparse changes.
local pa, pk, pu, pd, pmsg, pscore = {}, {}, {}, {}, {}, {}
local edits = {}  -- changes to tasks already in Redis
local dres = {}   -- per item with a dedup key: {item, holder, outcome}
local locks = {}  -- uniqueness locks taken in this batch
local held = {}   -- dedup key: what holds it, as of this item (false: none)

local k = 2 * nq + 1
for i = 1, n do
  local a = 4 + (i - 1) * 9
  local tkey = KEYS[k]
  k = k + 1
  local ukey, dkey
  if ARGV[a + 5] ~= "0" then
    ukey = KEYS[k]
    k = k + 1
  end
  local mode = ARGV[a + 6]
  if mode ~= "" then
    dkey = KEYS[k]
    k = k + 1
  end
  local h
  if dkey then
    h = held[dkey]
    if h == nil then
      h = false
      local v = redis.call("HMGET", dkey, "id", "type", "first", "release")
      if v[1] then
        local q = tonumber(ARGV[a + 4])
        local st = redis.call("HGET", taskPrefix(q) .. v[1], "state")
        if st then
          h = {id = v[1], typ = v[2], first = tonumber(v[3]) or now, release = v[4], state = st, score = 0}
          if st == "scheduled" then
            h.score = tonumber(redis.call("ZSCORE", KEYS[2 * q], v[1]))
          end
          -- A key is free once its task is over, or (release start)
          -- running, should its worker have missed the release. A task
          -- of release start in retry with its key still held never
          -- started: a limit postponed it (the release comes when its
          -- handler starts), so it still waits.
          if st == "completed" or st == "archived" or (h.release == "start" and st == "active") then
            h = false -- released
          end
        end
      end
      held[dkey] = h
    end
  end
  if h then
    local state
    if h.j then
      local score = pscore[h.j] or tonumber(ARGV[pa[h.j] + 3])
      state = score > 0 and "scheduled" or "pending"
    else
      state = h.state
    end
    if h.typ ~= ARGV[a + 9] then
      return {0, i, "dedup_type", h.id, h.typ}
    end
    local waiting = state == "pending" or state == "scheduled" or
      (state == "retry" and h.release == "start")
    if mode ~= "keep" and not waiting then
      return {0, i, "dedup_state", h.id, state}
    end
    local outcome = 2
    if mode ~= "keep" then
      outcome = 3
      local msg, newScore = msgFor(a, h.id), nil
      if mode == "debounce" and state == "scheduled" then
        outcome = 4
        newScore = math.min(tonumber(ARGV[a + 3]), h.first + tonumber(ARGV[a + 8]))
      end
      if h.j then
        pmsg[h.j] = msg
        if newScore then pscore[h.j] = newScore end
      else
        local q = tonumber(ARGV[a + 4])
        edits[#edits + 1] = {key = taskPrefix(q) .. h.id, id = h.id, q = q, msg = msg, score = newScore}
        if newScore then h.score = newScore end
      end
    end
    dres[#dres + 1] = {i, h, outcome}
  else
    if exists[i] then
      return {0, i, "id", ARGV[a + 1], redis.call("HGET", tkey, "state") or ""}
    end
    local j = #pa + 1
    if ukey then
      local by = locks[ukey] or redis.call("GET", ukey)
      if by then
        return {0, i, "unique", by, ""}
      end
      locks[ukey] = ARGV[a + 1]
      pu[j] = ukey
    end
    pa[j], pk[j] = a, tkey
    if dkey then
      pd[j] = dkey
      held[dkey] = {j = j, id = ARGV[a + 1], typ = ARGV[a + 9], first = now, release = ARGV[a + 7]}
      dres[#dres + 1] = {i, held[dkey], 1}
    end
  end
end

-- The pending and scheduled additions go out a thousand at a time, in
-- item order (LPUSH a b c pushes as LPUSH a, LPUSH b, LPUSH c do).
local pushes, adds = {}, {}
local function flushQueue(q)
  local p, z = pushes[q], adds[q]
  if p and #p > 0 then redis.call("LPUSH", KEYS[2 * q - 1], unpack(p)) end
  if z and #z > 0 then redis.call("ZADD", KEYS[2 * q], unpack(z)) end
  pushes[q], adds[q] = {}, {}
end
for j = 1, #pa do
  local a = pa[j]
  local id, q = ARGV[a + 1], tonumber(ARGV[a + 4])
  local msg = pmsg[j] or ARGV[a + 2]
  local score = pscore[j] or tonumber(ARGV[a + 3])
  if score > 0 then
    redis.call("HSET", pk[j], "msg", msg, "state", "scheduled")
    local z = adds[q] or {}
    adds[q] = z
    z[#z + 1] = score
    z[#z + 1] = id
    if #z >= 2000 then flushQueue(q) end
  else
    redis.call("HSET", pk[j], "msg", msg, "state", "pending", "pending_since", nowNs)
    local p = pushes[q] or {}
    pushes[q] = p
    p[#p + 1] = id
    if #p >= 1000 then flushQueue(q) end
  end
  if pu[j] then
    redis.call("SET", pu[j], id, "EX", ARGV[a + 5])
    redis.call("HSET", pk[j], "unique_key", pu[j])
  end
  if pd[j] then
    redis.call("DEL", pd[j])
    redis.call("HSET", pd[j], "id", id, "type", ARGV[a + 9], "first", now, "release", ARGV[a + 7])
  end
end
for q = 1, nq do flushQueue(q) end
for _, e in ipairs(edits) do
  redis.call("HSET", e.key, "msg", e.msg)
  if e.score then
    redis.call("ZADD", KEYS[2 * e.q], e.score, e.id)
  end
end

local out = {1}
for _, r in ipairs(dres) do
  local h = r[2]
  local state, score
  if h.j then
    score = pscore[h.j] or tonumber(ARGV[pa[h.j] + 3])
    state = score > 0 and "scheduled" or "pending"
  else
    state, score = h.state, h.score
  end
  out[#out + 1] = r[1]
  out[#out + 1] = h.id
  out[#out + 1] = r[3]
  out[#out + 1] = state
  out[#out + 1] = score
end
return out
