-- wsrelay's one script in Redis (loaded with SCRIPT LOAD, run with EVALSHA): every change to
-- a room is one atomic call, so every node sees one order. ARGV[1] names the operation.
--
-- Keys of room R (its name is [A-Za-z0-9_.-], so it needs no escaping), prefix P:
--   P{R}:meta  hash: epoch, seq (the last one given), bytes (kept in :log), lost (the newest
--              event that fell out of the history)
--   P{R}:log   stream: entry id "<seq>-0", field j = the event as sent (JSON with seq and ts)
--   P{R}:here  hash: node -> members on that node
--   Pnodes     hash: node -> the time (ms) it stops counting unless it beats again
--   Pnode:N    set: the rooms node N has members in
-- A room's keys expire after a day without an event, so abandoned rooms cost nothing.

local op = ARGV[1]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int(n)
  return string.format('%.0f', n)
end

-- The room's epoch, made (with an empty log) if it has none and `create`.
local function epoch_of(meta, log, now, create)
  local e = redis.call('HGET', meta, 'epoch')
  if e or not create then
    return e
  end
  e = 'r' .. int(now) .. '-' .. int(redis.call('INCR', 'wsrelay:epochs'))
  redis.call('DEL', log)
  redis.call('HSET', meta, 'epoch', e, 'seq', 0, 'bytes', 0, 'lost', 0)
  return e
end

-- Sets this node's members in the room, and returns the room's members on live nodes.
local function count_here(here, nodes, node, n, noderooms, room, now)
  if n > 0 then
    redis.call('HSET', here, node, n)
    redis.call('SADD', noderooms, room)
  else
    redis.call('HDEL', here, node)
    redis.call('SREM', noderooms, room)
  end
  local total = 0
  local all = redis.call('HGETALL', here)
  for i = 1, #all, 2 do
    local alive = all[i] == node or tonumber(redis.call('HGET', nodes, all[i]) or '0') >= now
    if alive then
      total = total + tonumber(all[i + 1])
    end
  end
  return total
end

if op == 'append' then
  -- KEYS: meta, log, here, nodes, noderooms. ARGV: op, draft, kind (m|n), replaces, node,
  -- here, max events, max bytes, channel, ttl ms, room, whether the reply carries the event
  -- (1: a `POST /send` waits for it; else the channel brings it, and the reply stays small).
  local meta, log, here = KEYS[1], KEYS[2], KEYS[3]
  local now = now_ms()
  local epoch = epoch_of(meta, log, now, true)
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  local body = ARGV[2]
  local replaced = 0
  if ARGV[3] == 'n' then
    local n = count_here(here, KEYS[4], ARGV[5], tonumber(ARGV[6]), KEYS[5], ARGV[11], now)
    body = string.gsub(body, '18446744073709551615', int(n))
    local r = tonumber(ARGV[4])
    if r > 0 and r == seq - 1 then
      local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)[1]
      if last and last[1] == int(r) .. '-0' then
        redis.call('XDEL', log, last[1])
        redis.call('HINCRBY', meta, 'bytes', -#last[2][2])
        replaced = r
      end
    end
  end
  local json = string.sub(body, 1, -2) .. ',"seq":' .. int(seq) .. ',"ts":' .. int(now) .. '}'
  local max_events, max_bytes = tonumber(ARGV[7]), tonumber(ARGV[8])
  if max_events == 0 or #json > max_bytes then
    -- Not kept, but counted, so a resuming client learns of the gap.
    redis.call('DEL', log)
    redis.call('HSET', meta, 'bytes', 0, 'lost', seq)
  else
    redis.call('XADD', log, int(seq) .. '-0', 'j', json)
    local bytes = redis.call('HINCRBY', meta, 'bytes', #json)
    local len = redis.call('XLEN', log)
    local lost = nil
    while len > max_events or bytes > max_bytes do
      local first = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
      if not first then
        break
      end
      redis.call('XDEL', log, first[1])
      bytes = redis.call('HINCRBY', meta, 'bytes', -#first[2][2])
      len = len - 1
      lost = first[1]
    end
    if lost then
      redis.call('HSET', meta, 'lost', string.match(lost, '^(%d+)'))
    end
  end
  local ttl = ARGV[10]
  redis.call('PEXPIRE', meta, ttl)
  redis.call('PEXPIRE', log, ttl)
  redis.call('PEXPIRE', here, ttl)
  redis.call('PUBLISH', ARGV[9], epoch .. '\n' .. int(seq) .. '\n' .. int(replaced) .. '\n' .. json)
  if ARGV[12] ~= '1' then
    json = ''
  end
  return { epoch, int(seq), json }
elseif op == 'load' then
  -- KEYS: meta, log. ARGV: op, since (-1: the newest `max events`), max events, create (1|0),
  -- the epoch `since` counts in ('' if none): in another epoch it means nothing, and the
  -- whole stream is read.
  -- Returns epoch ('' if none), last seq, lost, and the entries as seq, json, oldest first.
  local meta, log = KEYS[1], KEYS[2]
  local epoch = epoch_of(meta, log, now_ms(), ARGV[4] == '1')
  if not epoch then
    return { '', '0', '0', {} }
  end
  local since = tonumber(ARGV[2])
  if since > 0 and epoch ~= ARGV[5] then
    since = 0
  end
  local entries
  if since < 0 then
    local newest = redis.call('XREVRANGE', log, '+', '-', 'COUNT', ARGV[3])
    entries = {}
    for i = #newest, 1, -1 do
      entries[#entries + 1] = newest[i]
    end
  else
    entries = redis.call('XRANGE', log, int(since + 1) .. '-0', '+')
  end
  local flat = {}
  for _, e in ipairs(entries) do
    flat[#flat + 1] = string.match(e[1], '^(%d+)')
    flat[#flat + 1] = e[2][2]
  end
  local seq = redis.call('HGET', meta, 'seq') or '0'
  local lost = redis.call('HGET', meta, 'lost') or '0'
  return { epoch, seq, lost, flat }
elseif op == 'beat' then
  -- KEYS: nodes. ARGV: op, node, ttl ms (0: this node is leaving), prefix.
  -- Returns whether this node was known (0: new, or reaped as dead, its counts forgotten),
  -- and room, members for every room a dead node had members in (now forgotten).
  local nodes, node, prefix = KEYS[1], ARGV[2], ARGV[4]
  local now = now_ms()
  local known = redis.call('HGET', nodes, node)
  redis.call('HSET', nodes, node, now + tonumber(ARGV[3]))
  local gone = {}
  local all = redis.call('HGETALL', nodes)
  for i = 1, #all, 2 do
    local dead = all[i]
    if dead ~= node and tonumber(all[i + 1]) < now then
      local set = prefix .. 'node:' .. dead
      for _, room in ipairs(redis.call('SMEMBERS', set)) do
        local here = prefix .. '{' .. room .. '}:here'
        local n = tonumber(redis.call('HGET', here, dead) or '0')
        redis.call('HDEL', here, dead)
        if n > 0 then
          gone[#gone + 1] = room
          gone[#gone + 1] = int(n)
        end
      end
      redis.call('DEL', set)
      redis.call('HDEL', nodes, dead)
    end
  end
  return { known and 1 or 0, gone }
elseif op == 'here' then
  -- KEYS: noderooms. ARGV: op, node, prefix, ttl ms, then room, members for every room this
  -- node has members in: sets this node's counts to exactly these (after its link came back,
  -- or it was reaped), without a notice.
  local node, prefix, ttl = ARGV[2], ARGV[3], ARGV[4]
  for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    redis.call('HDEL', prefix .. '{' .. room .. '}:here', node)
  end
  redis.call('DEL', KEYS[1])
  for i = 5, #ARGV - 1, 2 do
    local here = prefix .. '{' .. ARGV[i] .. '}:here'
    redis.call('HSET', here, node, ARGV[i + 1])
    redis.call('PEXPIRE', here, ttl)
    redis.call('SADD', KEYS[1], ARGV[i])
  end
  return 1
end
return redis.error_reply('wsrelay: unknown operation ' .. tostring(op))
