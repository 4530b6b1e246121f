-- Shared by every workflow script (prepended to each). KEYS are the
-- workflow's keys, all in one hash slot (keys.go):
local meta, shape_k, spec_k, act_k, done_k, cnt_k, res_k, err_k = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]

-- Errors in err_k are "<task path>\n<message>": a chain or group that
-- failed holds the error of the step that failed it.
-- shape_k holds the shape of each chain ("c:<steps>") and group
-- ("g:<members>:<callback 0|1>:<policy a|s>"); a path without one is a
-- task step, whose spec_k entry says how to enqueue it.
-- Paths: "." is the root chain; "1", "1.m3", "1.m3.0", "1.cb".
local function parent(p)
  local i = string.find(p, "%.[^%.]*$")
  if i == nil then return "." end
  return string.sub(p, 1, i - 1)
end

local function last(p)
  return string.match(p, "([^%.]+)$")
end

local function child(p, s)
  if p == "." then return s end
  return p .. "." .. s
end

local function live(st)
  return st == "pending" or st == "running"
end

-- activate appends to out the task paths that start when the node at p
-- starts; mark then marks them active.
local function activate(p, out, now)
  local sh = redis.call("HGET", shape_k, p)
  local kind = "t"
  if sh then kind = string.sub(sh, 1, 1) end
  if kind == "t" then
    out[#out + 1] = p
  elseif kind == "c" then
    activate(child(p, "0"), out, now)
  else
    local n = tonumber(string.match(sh, "^g:(%d+)"))
    for i = 0, n - 1 do
      activate(child(p, "m" .. i), out, now)
    end
  end
end

-- mark records the task paths of out as active since now, a thousand per
-- call, and the workflow as updated.
local function mark(out, now)
  local i = 1
  while i <= #out do
    local j = math.min(i + 999, #out)
    local args = {}
    for k = i, j do
      args[#args + 1] = out[k]
      args[#args + 1] = now
    end
    redis.call("HSET", act_k, unpack(args))
    i = j + 1
  end
  if #out > 0 then redis.call("HSET", meta, "updated", now) end
end

-- expire gives every key of the workflow its retention once it is final.
local function expire()
  local ttl = tonumber(redis.call("HGET", meta, "retention") or "0")
  if ttl > 0 then
    for i = 1, #KEYS do redis.call("EXPIRE", KEYS[i], ttl) end
  end
end

-- finish propagates the end of the node at p (ok or failed) to its
-- parents, activating what starts next; it returns the workflow's new
-- status when the root finished.
local function finish(p, ok, now, out)
  while true do
    if p == "." then
      if ok then
        redis.call("HSET", meta, "status", "succeeded", "finished", now, "updated", now)
        return "succeeded"
      end
      redis.call("HSET", meta, "status", "failed", "finished", now, "updated", now)
      local e = redis.call("HGET", err_k, ".")
      if e then
        local fp, msg = string.match(e, "^([^\n]*)\n(.*)$")
        if fp then redis.call("HSET", meta, "failed_step", fp, "error", msg) end
      end
      return "failed"
    end
    local par = parent(p)
    local s = last(p)
    local psh = redis.call("HGET", shape_k, par)
    if string.sub(psh, 1, 1) == "c" then
      local n = tonumber(string.sub(psh, 3))
      local i = tonumber(s)
      if ok and i + 1 < n then
        activate(child(par, tostring(i + 1)), out, now)
        return nil
      end
      if ok then
        local r = redis.call("HGET", res_k, p)
        if r then redis.call("HSET", res_k, par, r) end
      else
        local e = redis.call("HGET", err_k, p)
        if e then redis.call("HSETNX", err_k, par, e) end
      end
      p = par
    else
      local n, cb, pol = string.match(psh, "^g:(%d+):(%d):(%a)$")
      n = tonumber(n)
      if s == "cb" then
        if ok then
          local r = redis.call("HGET", res_k, p)
          if r then redis.call("HSET", res_k, par, r) end
          -- The group succeeded: a member's failure (policy always) is
          -- not the group's.
          redis.call("HDEL", err_k, par)
        else
          -- The callback's failure fails the group, whatever failed
          -- before it (policy always).
          local e = redis.call("HGET", err_k, p)
          if e then redis.call("HSET", err_k, par, e) end
        end
        p = par
      else
        if not ok then
          redis.call("HINCRBY", cnt_k, par .. ":f", 1)
          local e = redis.call("HGET", err_k, p)
          if e then redis.call("HSETNX", err_k, par, e) end
        end
        local count = redis.call("HINCRBY", cnt_k, par, 1)
        if count < n then return nil end
        local failed = tonumber(redis.call("HGET", cnt_k, par .. ":f") or "0")
        if cb == "1" and (pol == "a" or failed == 0) then
          activate(child(par, "cb"), out, now)
          return nil
        end
        ok = failed == 0
        p = par
      end
    end
  end
end

-- reply returns {code, status, path1, spec1, ...} for the task paths of out.
local function reply(code, st, out, now)
  mark(out, now)
  local r = {code, st or ""}
  local i = 1
  while i <= #out do
    local j = math.min(i + 999, #out)
    local specs = redis.call("HMGET", spec_k, unpack(out, i, j))
    for k = i, j do
      r[#r + 1] = out[k]
      r[#r + 1] = specs[k - i + 1]
    end
    i = j + 1
  end
  return r
end
