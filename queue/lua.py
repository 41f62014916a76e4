"""Every Lua script taskrank runs in Redis.

Every script of a project touches only that project's keys, which share the hash tag
``{pid}``: one Redis Cluster slot, so EVALSHA goes to the one master that holds them all.
Every key the caller can name before the script runs is declared in KEYS: the project's
own keys, the pool sets it reads, the task of a task id it gives, the items of item ids it
gives, the keys of an expert it knows.  The keys a script only finds out as it runs (an
item picked from a pool, a lease the sweep finds expired) are built inside it from the
project's prefixes passed in ARGV, by one helper (``built_key`` in ``COMMON``).  ``run``
refuses a declared key or a prefix outside the project's slot.  No script reads a global
key: what a claim needs of the expert across projects (declared skills, daily hours) is
read before it and passed in ARGV.

Each script checks everything it needs before it writes anything: Redis has no rollback.
Every project script starts with the preamble (keys and prefixes as locals) and ``COMMON``:
the helpers that keep an item's pool membership and the per-status counts consistent with
its label counts, the lease sweep, and the release of a closed lease's budget reservation.
The one script over global keys (``ADD_EXPERT_SECONDS``) runs without them (``run_global``).

A rankable item sits in one sorted set per skill tag it requires, or in the untagged set;
there is no global pool.  Re-scores write those sets directly (``ZADD XX``, see
``rescore.rescore_items``), so an item hash's ``pr`` is the priority it had when it was
stored, claimed or set, not always the live one: the live priority of a pending item is
its score in its sets.
"""

from __future__ import annotations

import redis

from taskrank.queue import keys as K
from taskrank.queue.connection import DataClient

# Shared helpers. They read these locals, which every script declares first (_PREAMBLE):
#   P_ITEM (item hash prefix), P_TASK (task hash prefix), P_XLEASE (per-expert lease set
#   prefix), P_TAG (per-tag pool prefix), P_SKILL (per-expert skill record prefix),
#   K_COUNTERS, K_UNTAGGED, K_LEASES.
COMMON = r"""
-- The name of a key under one of the project's prefixes (P_ITEM, P_TASK, P_XLEASE, P_TAG,
-- P_SKILL): `prefix .. id .. suffix`.  The scripts build every key of an item, a task or an
-- expert with it, because many of them are found out only as the script runs (an item read
-- from a pool set, a lease the sweep finds expired, the expert a lease names, the tags
-- stored on an item): the caller cannot name those before the script runs, so they cannot
-- be among KEYS.  The prefixes carry the project's hash tag (lua.run checks), so a built
-- key is in the slot of the declared keys.  The keys the caller can name (the items of a
-- batch, a task id it gives, the asking expert's keys) it declares in KEYS as well, under
-- the same names, and the helpers below build them alike.
local function built_key(prefix, id, suffix)
  return prefix .. id .. (suffix or '')
end

local function split_tags(s)
  local tags = {}
  if s then for tag in string.gmatch(s, '[^,]+') do tags[#tags + 1] = tag end end
  return tags
end

local function depool(iid, tags)
  if #tags == 0 then redis.call('ZREM', K_UNTAGGED, iid) end
  for _, tag in ipairs(tags) do redis.call('ZREM', built_key(P_TAG, tag), iid) end
end

local function enpool(iid, tags, priority)
  if #tags == 0 then redis.call('ZADD', K_UNTAGGED, priority, iid) end
  for _, tag in ipairs(tags) do redis.call('ZADD', built_key(P_TAG, tag), priority, iid) end
end

-- Gold items (answer known) live in their own sets, one per skill ('_general' when
-- untagged), under the tag-pool prefix after 'gold:' (no tag holds a ':').
local function gold_sets(tags)
  local sets = {}
  if #tags == 0 then tags = {'_general'} end
  for _, tag in ipairs(tags) do sets[#sets + 1] = built_key(P_TAG, 'gold:' .. tag) end
  return sets
end

-- An item is rankable while fewer than `want` labels are out or in (and it is neither
-- gold nor withdrawn).  The counters hash keeps the number of items per status
-- ('n:pending'...), moved here on every change.
-- An item pending before and after stays in its sets at its live score (a re-score may
-- have moved it past 'pr'); `repool` puts it back at 'pr' (an upsert took it out).
local function refresh_status(iid, repool)
  local ikey = built_key(P_ITEM, iid)
  local f = redis.call('HMGET', ikey, 'out', 'done', 'want', 's', 'pr', 'st', 'g', 'wd')
  local out, done, want = tonumber(f[1]) or 0, tonumber(f[2]) or 0, tonumber(f[3]) or 1
  local tags, old = split_tags(f[4]), f[6]
  local status = 'pending'
  if f[8] == '1' then status = 'withdrawn'  -- for good (WITHDRAW)
  elseif f[7] and f[7] ~= '' then status = 'gold'  -- never pooled: CLAIM serves it as a check
  elseif done >= want then status = 'labeled' elseif out + done >= want then status = 'leased' end
  if status ~= old then
    redis.call('HSET', ikey, 'st', status)
    if old then redis.call('HINCRBY', K_COUNTERS, 'n:' .. old, -1) end
    redis.call('HINCRBY', K_COUNTERS, 'n:' .. status, 1)
  end
  if status ~= 'pending' then depool(iid, tags)
  elseif old ~= 'pending' or repool then enpool(iid, tags, tonumber(f[5]) or 0) end
  return status
end

-- Labels wanted: never fewer than are out or in, so every label handed out still counts;
-- 'wt' is the target an early stop asked for (SET_WANT), reached as leases close.
local function fit_want(iid, target)
  local ikey = built_key(P_ITEM, iid)
  local f = redis.call('HMGET', ikey, 'out', 'done', 'want', 'wt')
  target = target or tonumber(f[4])
  if target == nil then return end
  local floor = (tonumber(f[1]) or 0) + (tonumber(f[2]) or 0)
  local want = math.max(target, floor)
  if want ~= tonumber(f[3]) then redis.call('HSET', ikey, 'want', want) end
end

-- An open lease reserves its predicted cost ('pc', set by CLAIM) against the project's
-- budget until it closes: labeled (LABEL charges what it cost), released or expired.
local function release_reservation(tkey)
  local pc = tonumber(redis.call('HGET', tkey, 'pc'))
  if not pc or pc == 0 then return end
  local left = tonumber(redis.call('HINCRBYFLOAT', K_COUNTERS, 'reserved_usd', -pc))
  -- Float sums of +x and -x leave dust; reservations are whole micro-dollars, so less
  -- than half of one is none.
  if math.abs(left) < 5e-7 then redis.call('HSET', K_COUNTERS, 'reserved_usd', 0) end
end

-- Close an open lease (expired or released): the item gets its slot back.
local function close_lease(tid, state)
  local tkey = built_key(P_TASK, tid)
  local t = redis.call('HMGET', tkey, 'item', 'expert', 'st')
  if t[3] ~= 'open' then return false end
  redis.call('HSET', tkey, 'st', state)
  release_reservation(tkey)
  redis.call('ZREM', K_LEASES, tid)
  redis.call('ZREM', built_key(P_XLEASE, t[2]), tid)
  redis.call('HINCRBY', built_key(P_ITEM, t[1]), 'out', -1)
  fit_want(t[1])
  refresh_status(t[1])
  return true
end

local function sweep(now, limit)
  local expired = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', now, 'LIMIT', 0, limit)
  for _, tid in ipairs(expired) do close_lease(tid, 'expired') end
  return #expired
end
"""

# The prefix/key globals every script receives first: KEYS[1..3] and ARGV[1..5].
_PREAMBLE = r"""
local K_COUNTERS, K_UNTAGGED, K_LEASES = KEYS[1], KEYS[2], KEYS[3]
local P_ITEM, P_TASK, P_XLEASE, P_TAG, P_SKILL = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
"""

# Upsert a batch of scored items (ingest).
# KEYS[4] set of all item ids, KEYS[5] set of the project's skill tags, KEYS[6..] declared
# only (built alike): the items' hashes, the pool sets of their tags and the gold sets of the
# gold items (the sets an updated item leaves are found on it).
# ARGV[6] now, ARGV[7] labels wanted per new item, ARGV[8] number of fields per item,
# then per item: id, predictions JSON, features JSON, payload JSON, tags (comma-joined),
# boost, gold, priority, breakdown JSON, model version and strategy version (of the
# breakdown), pool-map cluster (-1: none).  A withdrawn item is left as it is (WITHDRAW).
# Returns {created, updated, {ids of the withdrawn items left alone}}.
UPSERT_ITEMS = _PREAMBLE + COMMON + r"""
local now, want, width = ARGV[6], ARGV[7], tonumber(ARGV[8])
local created, updated, withdrawn = 0, 0, {}

local function upsert(i, iid, old_tags, old_gold)
  local ikey = built_key(P_ITEM, iid)
  if old_tags then
    updated = updated + 1
    -- Tags may change: leave the old tag sets before joining the new ones.
    depool(iid, split_tags(old_tags))
    if old_gold and old_gold ~= '' then
      for _, set in ipairs(gold_sets(split_tags(old_tags))) do redis.call('ZREM', set, iid) end
    end
  else
    created = created + 1
    redis.call('HSET', ikey, 'out', 0, 'done', 0, 'want', want, 'ca', now)
    redis.call('SADD', KEYS[4], iid)
  end
  redis.call('HSET', ikey, 'p', ARGV[i+1], 'f', ARGV[i+2], 'pl', ARGV[i+3], 's', ARGV[i+4],
             'b', ARGV[i+5], 'g', ARGV[i+6], 'pr', ARGV[i+7], 'bd', ARGV[i+8], 'mv', ARGV[i+9],
             'sv', ARGV[i+10], 'cl', ARGV[i+11], 'ua', now)
  for _, tag in ipairs(split_tags(ARGV[i+4])) do redis.call('SADD', KEYS[5], tag) end
  if ARGV[i+6] ~= '' then
    for _, set in ipairs(gold_sets(split_tags(ARGV[i+4]))) do redis.call('ZADD', set, 0, iid) end
  end
  refresh_status(iid, true)
end

for i = 9, #ARGV, width do
  local iid = ARGV[i]
  local old = redis.call('HMGET', built_key(P_ITEM, iid), 's', 'g', 'wd')
  if old[3] == '1' then withdrawn[#withdrawn + 1] = iid else upsert(i, iid, old[1], old[2]) end
end
return {created, updated, withdrawn}
"""

# Lease the best eligible items to one expert: up to one per task id given, one after the
# other in the one atomic claim (each sees the leases before it: capacity, budget,
# diversity, the items already leased to the expert).
# KEYS[4] the expert's lease set, KEYS[5] leases per pool-map cluster since the last
# re-rank (hash), KEYS[6] what the project learned of the expert (keys.expert_skill_key),
# KEYS[7] the project's experts by their last claim (sorted set), KEYS[8] the request's
# idempotency key (see below), KEYS[9..8+ARGV[31]] the pool sets to read (untagged + one
# per tag the expert may get), then, declared only (built alike): the new tasks' hashes,
# the lease sets of the experts the hold-back compares with (ARGV[19]) and the gold sets
# of the expert's skills.
# ARGV[6] now, ARGV[7] expert id, ARGV[8] new task ids (comma-joined), ARGV[9] lease seconds,
# ARGV[10] capacity, ARGV[11] depth (candidates per page), ARGV[12] pages at most,
# ARGV[13] fit exponent, ARGV[14] JSON {tag: fit} of the expert, ARGV[15] fit of untagged
# items, ARGV[16] sweep limit, ARGV[17] hold-back seconds (0: off), ARGV[18] hold-back
# margin, ARGV[19] JSON {tag: [[expert, worth, capacity], ...]} of the best working
# experts per tag (worth = fit^a / cost^b per label, learning.routing.worth),
# ARGV[20] exploration share, ARGV[21] its decay (labels), ARGV[22] diversity factor,
# ARGV[23] the expert's cost per hour, ARGV[24] cost exponent, ARGV[25] the project's
# budget_usd ('': no budget), ARGV[26] JSON {tag: predicted seconds of one label} of the
# expert (with '_general' for untagged items), ARGV[27] JSON {tag: 1} of the skills on
# which the expert must answer gold before real items (the qualification gate),
# ARGV[28] JSON {tag: gold share}, ARGV[29] JSON {tag: spot-check share}, ARGV[30] seconds
# to keep the answer under KEYS[8] ('' when the request had no Idempotency-Key), ARGV[31]
# the number of pool sets in KEYS.
# Idempotency: KEYS[8] (keys.claim_idempotency_key, or a dummy key of the project) holds
# the answers of the leases granted to this request; a retry with the same key gets those
# answers again, so leases whose response was lost are not granted twice.
# The rules are learning.routing's (eligible, item_fit, value, worth, hold_back), held to
# it by tests/queue/test_lua_rules.py; every number they use arrives through ARGV.
# Cost: an item costs the hourly rate x the predicted seconds of its slowest skill.
# Hold-back: a tagged item is skipped when, on each of its tags, an expert who claimed in
# this project within the hold-back seconds and has spare capacity is better value per
# dollar (worth) than the asking one by more than the margin (relative), so the work goes
# to whoever labels it best for the money while they are working.
# Gold: when the chosen item needs a skill the expert has not yet qualified on, or the
# expert's gold share of that skill comes due (a running 'gold_debt' in KEYS[6] gains the
# share at each claim; a gold item is due at 1), a gold item of the skill the expert has
# not seen is leased instead, whatever its priority (task field 'gold').  The task keeps
# the spot-check share of the item's skills ('rv') for LABEL.
# Exploration (once the project has a model): a share / sqrt(max(1, labels / decay)) of
# claims, spread evenly by a claim counter, leases an eligible item drawn uniformly from
# the expert's pool sets (a rank drawn from a hash of the counter: O(log n), no scan, and
# reproducible), whatever its priority; the task is marked 'ex'.
# Diversity: an item's value is multiplied by the factor once per lease handed out in its
# cluster ('cl') since the last re-rank, so concurrent claims spread over the pool.
# Budget: a lease reserves its item's predicted cost (item_cost, in US dollars) in the
# counters' 'reserved_usd' until it closes, and the task keeps it ('pc') with the hourly
# rate ('rate') LABEL charges by.  No lease is granted when the dollars spent, those
# reserved and this item's predicted cost together pass the budget.
# Returns a list with one answer per lease granted, {'ok', task id, item id, priority, fit,
# value, payload, expires_at, tags, explored (1 or 0), gold (1 or 0)}, then, when fewer
# were granted than asked, why not: {'capacity', open leases} or {'budget', budget, spent,
# reserved, predicted cost (0 when refused before choosing)} or {'empty'}.
CLAIM = _PREAMBLE + COMMON + r"""
local now, eid = tonumber(ARGV[6]), ARGV[7]
local lease, capacity = tonumber(ARGV[9]), tonumber(ARGV[10])
local depth, pages, fit_exponent = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local fits, default_fit = cjson.decode(ARGV[14]), tonumber(ARGV[15])
local hold_seconds, hold_margin = tonumber(ARGV[17]), tonumber(ARGV[18])
local best_by_tag = hold_seconds > 0 and cjson.decode(ARGV[19]) or {}
local explore_share, explore_decay = tonumber(ARGV[20]), tonumber(ARGV[21])
local diversity = tonumber(ARGV[22])
local cost_per_hour, cost_exponent = tonumber(ARGV[23]), tonumber(ARGV[24])
local budget = tonumber(ARGV[25])
local seconds_of, gated = cjson.decode(ARGV[26]), cjson.decode(ARGV[27])
local gold_share, review_share = cjson.decode(ARGV[28]), cjson.decode(ARGV[29])
local K_CLAIMED, K_SKILL, K_WORKING, K_IDEM, FIRST_POOL = KEYS[5], KEYS[6], KEYS[7], KEYS[8], 9
local LAST_POOL = FIRST_POOL + tonumber(ARGV[31]) - 1
local keep_seconds = tonumber(ARGV[30])
if keep_seconds then
  local stored = redis.call('GET', K_IDEM)
  if stored then return cjson.decode(stored) end
end
sweep(now, tonumber(ARGV[16]))
redis.call('ZADD', K_WORKING, now, eid)
local held = redis.call('ZCARD', KEYS[4])

-- The refusal when the spend so far, the reservations of open leases and `cost` pass the
-- budget (also when nothing at all is left: then no item need be read), else nil.
local function over_budget(cost)
  if not budget then return nil end
  local c = redis.call('HMGET', K_COUNTERS, 'spent_usd', 'reserved_usd')
  local spent, reserved = tonumber(c[1]) or 0, tonumber(c[2]) or 0
  if spent + reserved >= budget or spent + reserved + cost > budget then
    return {'budget', tostring(budget), tostring(spent), tostring(reserved), tostring(cost)}
  end
  return nil
end
-- The weakest required skill limits the answer: fit is the minimum over the item's tags
-- (learning.routing.item_fit).
local function item_fit(tags)
  if #tags == 0 then return default_fit end
  local lowest = math.huge
  for _, tag in ipairs(tags) do
    local fit = fits[tag]
    if fit == nil then return nil end  -- the expert lacks a required skill
    if fit < lowest then lowest = fit end
  end
  return lowest
end

local function seconds_for(tags)
  if #tags == 0 then return seconds_of['_general'] end
  local slowest = 0
  for _, tag in ipairs(tags) do
    slowest = math.max(slowest, seconds_of[tag] or seconds_of['_general'])
  end
  return slowest
end

-- US dollars of one label of an item with these tags by this expert
-- (learning.routing.label_cost over the slowest skill's predicted seconds).
local function item_cost(tags)
  return cost_per_hour * seconds_for(tags) / 3600
end
local min_cost = math.huge  -- the lowest item_cost of any item
for _, s in pairs(seconds_of) do min_cost = math.min(min_cost, cost_per_hour * s / 3600) end

-- fit^a / cost^b of one skill (learning.routing.worth).
local function worth(tag)
  return fits[tag] ^ fit_exponent / item_cost({tag}) ^ cost_exponent
end

local function better_expert_waits(tag)
  local mine = worth(tag)
  for _, other in ipairs(best_by_tag[tag] or {}) do
    if other[1] ~= eid and other[2] > mine * (1 + hold_margin)
        and redis.call('ZCARD', built_key(P_XLEASE, other[1])) < other[3] then
      return true
    end
  end
  return false
end

local function held_back(tags)
  if hold_seconds <= 0 or #tags == 0 then return false end
  for _, tag in ipairs(tags) do
    if not better_expert_waits(tag) then return false end
  end
  return true
end

-- value = priority x fit^a / cost^b (learning.routing.value): the one place the claim
-- prices an item.
local function item_value(priority, fit, tags)
  return priority * fit ^ fit_exponent / item_cost(tags) ^ cost_exponent
end

-- Early stop: a pool set is read by falling priority, an item's fit is at most the
-- expert's best fit and its cost at least the lowest, so once this bound is not above
-- the best value found, no further candidate of the set can win (ties keep the first, as
-- the full scan does).
local max_fit = default_fit or 0
for _, fit in pairs(fits) do if fit > max_fit then max_fit = fit end end
local function value_bound(priority)
  if fit_exponent < 0 then return math.huge end
  if priority < 0 then return 0 end  -- its value lies in [priority / cost^b, 0]
  return priority * max_fit ^ fit_exponent / min_cost ^ cost_exponent
end

-- The item's fit when this expert may take it, else nil; f = HMGET 's', 'ca', 'cl'.
local function eligible_fit(iid, f)
  local tags = split_tags(f[1])
  local fit = item_fit(tags)
  if fit and redis.call('SISMEMBER', built_key(P_ITEM, iid, ':experts'), eid) == 0
      and not held_back(tags) then
    return fit, tags
  end
  return nil
end

local claimed = {}
local function diversity_factor(cluster)
  if diversity >= 1 or not cluster or cluster == '-1' then return 1 end
  if claimed[cluster] == nil then
    claimed[cluster] = tonumber(redis.call('HGET', K_CLAIMED, cluster)) or 0
  end
  return diversity ^ claimed[cluster]
end

local function explore_turn()
  if explore_share <= 0 then return nil end
  local c = redis.call('HMGET', K_COUNTERS, 'counted', 'mv')
  if not c[2] then return nil end  -- no model yet: the cold-start order covers the pool
  local share = explore_share / math.sqrt(math.max(1, (tonumber(c[1]) or 0) / explore_decay))
  local turn = redis.call('HINCRBY', K_COUNTERS, 'claims', 1)
  if math.floor(turn * share) > math.floor((turn - 1) * share) then return turn end
  return nil
end

-- An eligible item drawn uniformly from the expert's pool sets (a few draws at most).
local function explore_pick(turn)
  local sizes, total = {}, 0
  for k = FIRST_POOL, LAST_POOL do
    sizes[k] = redis.call('ZCARD', KEYS[k])
    total = total + sizes[k]
  end
  for draw = 1, (total > 0 and 4 or 0) do
    local hash = redis.sha1hex(P_ITEM .. turn .. ':' .. draw)
    local at = math.floor(tonumber(string.sub(hash, 1, 8), 16) / 4294967296 * total)
    for k = FIRST_POOL, LAST_POOL do
      if at < sizes[k] then
        local rows = redis.call('ZRANGE', KEYS[k], at, at, 'WITHSCORES')
        local iid = rows[1]
        local f = redis.call('HMGET', built_key(P_ITEM, iid), 's', 'ca', 'cl')
        local fit, tags = eligible_fit(iid, f)
        if fit then return iid, tonumber(rows[2]), fit, tags, f[3] end
        break
      end
      at = at - sizes[k]
    end
  end
  return nil
end

-- The first gold item of `tag` this expert has not seen (its answers so far in the skill,
-- 'gn:<tag>', say where to start reading).
local function unseen_gold(tag)
  local set = built_key(P_TAG, 'gold:' .. tag)
  local start = math.max(0, (tonumber(redis.call('HGET', K_SKILL, 'gn:' .. tag)) or 0) - 8)
  for _, iid in ipairs(redis.call('ZRANGE', set, start, start + 63)) do
    if redis.call('SISMEMBER', built_key(P_ITEM, iid, ':experts'), eid) == 0 then return iid end
  end
  return nil
end

-- The gold item to lease instead of the chosen one, or nil.
local function gold_instead(tags)
  if #tags == 0 then tags = {'_general'} end
  for _, tag in ipairs(tags) do
    if gated[tag] then
      local iid = unseen_gold(tag)
      if iid then return iid end
    end
  end
  local share, widest = 0, nil
  for _, tag in ipairs(tags) do
    if (gold_share[tag] or 0) > share then share, widest = gold_share[tag], tag end
  end
  if share <= 0 then return nil end
  if tonumber(redis.call('HINCRBYFLOAT', K_SKILL, 'gold_debt', share)) < 1 then return nil end
  local iid = unseen_gold(widest)
  if iid then redis.call('HINCRBYFLOAT', K_SKILL, 'gold_debt', -1) end
  return iid
end

-- One lease, with task id `tid`: the item of highest value for the expert now (or a
-- gold item, or an exploration draw), or why there is none.
local function claim_one(tid)
  if held >= capacity then return {'capacity', held} end
  local refusal = over_budget(0)
  if refusal then return refusal end
  local best, best_value, best_fit, best_priority, best_tags, best_cluster
  local explored = 0
  local turn = explore_turn()
  if turn then
    best, best_priority, best_fit, best_tags, best_cluster = explore_pick(turn)
    if best then
      explored = 1
      best_value = item_value(best_priority, best_fit, best_tags)
    end
  end
  local seen = {}
  -- A page's best may have been marked down by diversity while a candidate further down is
  -- not: then the next page is read too (the value bound still stops each set early).
  local penalized = false
  for page = 0, (best and 0 or pages) - 1 do
    penalized = false
    for k = FIRST_POOL, LAST_POOL do
      local rows = redis.call('ZREVRANGE', KEYS[k], page * depth, (page + 1) * depth - 1,
                              'WITHSCORES')
      for j = 1, #rows, 2 do
        local iid, priority = rows[j], tonumber(rows[j + 1])
        if best_value ~= nil and value_bound(priority) <= best_value then break end
        if not seen[iid] then
          seen[iid] = true
          local f = redis.call('HMGET', built_key(P_ITEM, iid), 's', 'ca', 'cl')
          local fit, tags = eligible_fit(iid, f)
          if fit then
            local value = item_value(priority, fit, tags)
            if value > 0 then
              local factor = diversity_factor(f[3])
              if factor < 1 then penalized = true end
              value = value * factor
            end
            if best_value == nil or value > best_value then
              best, best_value, best_fit, best_priority, best_tags = iid, value, fit, priority, tags
              best_cluster = f[3]
            end
          end
        end
      end
    end
    if best and not penalized then break end
  end
  if not best then return {'empty'} end

  local gold = 0
  if explored == 0 then
    local gold_item = gold_instead(best_tags)
    if gold_item then
      gold, best, best_cluster = 1, gold_item, nil
      best_tags = split_tags(redis.call('HGET', built_key(P_ITEM, gold_item), 's'))
      best_fit = item_fit(best_tags) or default_fit or 0
      best_priority = tonumber(redis.call('HGET', built_key(P_ITEM, gold_item), 'pr')) or 0
      best_value = item_value(best_priority, best_fit, best_tags)
    end
  end
  local review = 0
  for _, tag in ipairs(#best_tags > 0 and best_tags or {'_general'}) do
    review = math.max(review, review_share[tag] or 0)
  end
  -- Whole micro-dollars, so that releasing a reservation takes back exactly what it added.
  local predicted = tonumber(string.format('%.6f', item_cost(best_tags)))
  refusal = over_budget(predicted)
  if refusal then return refusal end
  if best_cluster and best_cluster ~= '-1' then
    claimed[best_cluster] = redis.call('HINCRBY', K_CLAIMED, best_cluster, 1)
  end

  local expires = now + lease
  local ikey = built_key(P_ITEM, best)
  -- 'fit': the fit this lease was granted with; LABEL's one-vote aggregation uses it.
  local tkey = built_key(P_TASK, tid)
  redis.call('HSET', tkey, 'item', best, 'expert', eid, 'exp', expires, 'st', 'open',
             'ca', now, 'fit', best_fit, 'rate', cost_per_hour, 'pc', predicted, 'rv', review)
  if gold == 1 then redis.call('HSET', tkey, 'gold', 1) end
  redis.call('HINCRBYFLOAT', K_COUNTERS, 'reserved_usd', predicted)
  if explored == 1 then redis.call('HSET', tkey, 'ex', 1) end
  redis.call('ZADD', K_LEASES, expires, tid)
  redis.call('ZADD', KEYS[4], expires, tid)
  redis.call('SADD', built_key(P_ITEM, best, ':experts'), eid)
  redis.call('HINCRBY', ikey, 'out', 1)
  redis.call('HSET', ikey, 'pr', string.format('%.17g', best_priority))  -- returns at this score
  refresh_status(best)
  held = held + 1
  return {'ok', tid, best, tostring(best_priority), tostring(best_fit),
          tostring(best_value), redis.call('HGET', ikey, 'pl') or false, tostring(expires),
          table.concat(best_tags, ','), explored, gold}
end

local answers = {}
for tid in string.gmatch(ARGV[8], '[^,]+') do
  local answer = claim_one(tid)
  answers[#answers + 1] = answer
  if answer[1] ~= 'ok' then break end
end
if keep_seconds and answers[1][1] == 'ok' then
  redis.call('SET', K_IDEM, cjson.encode(answers), 'EX', keep_seconds)
end
return answers
"""

# What a counted label changes, shared by LABEL (through a lease) and IMPORT_LABELS
# (without one).  The helpers read these locals, which both scripts declare first:
#   K_STREAM (labels stream), K_LABELED (labeled items, sorted set), N_CLASSES and
#   ACCURACY_MIN, ACCURACY_MAX (learning.aggregation.ACCURACY_BOUNDS); and P_SKILL (prefix
#   of what the project learned of each expert, keys.expert_skill_prefix) of the preamble.
LABEL_COMMON = r"""
-- Append a label to the stream; `extra`: optional fields as a flat {name, value, ...} list.
local function log_label(tid, iid, eid, label, seconds, counted, at, extra)
  local fields = {'task', tid, 'item', iid, 'expert', eid, 'label', label,
                  'seconds', seconds, 'counted', counted, 'at', at}
  for _, value in ipairs(extra) do fields[#fields + 1] = value end
  redis.call('XADD', K_STREAM, '*', unpack(fields))
end

-- The optional stream fields of a label: comment 'cm', answer 'an' (JSON) and, without a
-- lease, 'll' = 1, the source record id 'src' and when it was answered 'aa' (epoch).
local function label_extras(comment, answer, source, answered)
  local extra = {}
  if source then extra = {'ll', 1} end
  for _, pair in ipairs({{'cm', comment}, {'an', answer}, {'src', source}, {'aa', answered}}) do
    if pair[2] and pair[2] ~= '' then
      extra[#extra + 1], extra[#extra + 2] = pair[1], pair[2]
    end
  end
  return extra
end

-- One more counted label on the item, by `voter` ('' when no expert is known): its count
-- and its vote.  Returns the item's labels done and its votes.
local function add_vote(iid, voter, label)
  local done = redis.call('HINCRBY', built_key(P_ITEM, iid), 'done', 1)
  return done, redis.call('RPUSH', built_key(P_ITEM, iid, ':labels'), voter .. '\t' .. label)
end

-- `n` more counted labels in the project's counters; the counted labels since the last
-- retrain.
local function count_labels(n, now)
  redis.call('HINCRBY', K_COUNTERS, 'counted', n)
  -- Per-minute counts for labels per hour; the bucket an hour old is dropped as we go.
  local minute = math.floor(now / 60)
  redis.call('HINCRBY', K_COUNTERS, 'm:' .. minute, n)
  redis.call('HDEL', K_COUNTERS, 'm:' .. (minute - 61))
  return redis.call('HINCRBY', K_COUNTERS, 'since_retrain', n)
end

-- A gold answer in the expert's per-skill record: answered 'gn:', right 'gr:'.
local function learn_gold(eid, tags, label, gold)
  local skill = built_key(P_SKILL, eid)
  for _, tag in ipairs(tags) do
    redis.call('HINCRBY', skill, 'gn:' .. tag, 1)
    if label == gold then redis.call('HINCRBY', skill, 'gr:' .. tag, 1) end
  end
end

-- The item's skills as the per-skill records name them ('_general' when untagged).
local function skill_tags(iid)
  local tags = split_tags(redis.call('HGET', built_key(P_ITEM, iid), 's'))
  if #tags == 0 then tags = {'_general'} end  -- experts.GENERAL
  return tags
end

-- The one-coin vote over a single label (learning.aggregation.weighted_vote with one
-- vote, held to it by tests/queue/test_lua_rules.py): the posterior of the given label
-- is its expert's accuracy a (clipped into the accuracy bounds), each other class gets
-- (1 - a) / (k - 1).  The label wins when a > 1/k; otherwise (a tie, another class, or
-- no recorded fit) false: aggregate.py decides.  The confidence is written as Python
-- writes round(a, 6).
local function vote_alone(iid, label, fit, status)
  if fit == nil then return false end
  local a = math.min(ACCURACY_MAX, math.max(ACCURACY_MIN, fit))
  if a * N_CLASSES <= 1 then return false end
  local confidence = (string.format('%.6f', a):gsub('0+$', ''))
  redis.call('HSET', built_key(P_ITEM, iid), 'al', label, 'ac', confidence)
  if status == 'labeled' then
    redis.call('ZADD', K_LABELED, 0, iid)  -- score 0: ordered by id for export cursors
    redis.call('HSETNX', built_key(P_ITEM, iid), 'learned', 1)
  end
  return true
end
"""

# Record a label for a lease.  Counted when the lease is open; kept for the record (not
# counted) when it expired, was released or its item withdrawn.  When it is the item's
# only label (no gold), its aggregation is done here too (body.aggregated = true), and a
# finished item joins the labeled set in the same atomic step, so the request needs no
# further round trip; every other case is aggregated by queue/aggregate.py, which adds the
# item to the labeled set only after adaptive redundancy has decided it is finished.
# A counted label on an exploration lease (task field 'ex' = '1', set by CLAIM) queues its
# item for an unbiased accuracy estimate (queue/quality.py), unless the item was already in
# the labeled set: a model may have trained on it then, so it would not be a fair test.
# Every recorded label, counted or late, is charged: the hourly rate the lease was granted
# at x the seconds spent (the expert was paid either way), into the counters' 'spent_usd'
# and the spend hash's breakdowns (keys.spend_key); a counted label also gives back its
# lease's reservation (CLAIM), as close_lease does for a lease released or expired.
# KEYS[4] labels stream, KEYS[5] counters hash, KEYS[6] idempotency key (or a dummy key
# of the project when none was sent), KEYS[7] labeled items (sorted set), KEYS[8] the
# exploration labels not yet evaluated (list of item ids), KEYS[9] the spend hash,
# KEYS[10] the items whose aggregation waits for queue/aggregate.py (keys.followup_key):
# a counted label that does not aggregate here adds its item, in the same write; KEYS[11]
# the task's hash (its item and expert are found on it).
# ARGV[6] now, ARGV[7] task id, ARGV[8] label, ARGV[9] seconds spent, ARGV[10] request
# fingerprint ('' when no Idempotency-Key), ARGV[11] idempotency TTL seconds,
# ARGV[12] number of classes k, ARGV[13] and ARGV[14] the accuracy bounds
# (learning.aggregation.ACCURACY_BOUNDS), ARGV[15] the UTC day of now (YYYY-MM-DD),
# ARGV[16] comment ('' none), ARGV[17] answer (JSON, '' none).
# A counted label adds, per skill of the item ('_general' when untagged), to the expert's
# labels 'n:', seconds 'sec:' and dollars 'usd:' there; on a gold item (a check, never
# aggregated: body.gold) also to its gold answers 'gn:' and the right ones 'gr:'.
# Spot check: a label that finishes a non-gold item alone sends the item back to the pool
# for a second label when a draw from the item id's hash falls below the lease's
# spot-check share ('rv', set by CLAIM); body.spot_check, item field 'rc'.
# Returns a JSON string {"status": HTTP status, "body": {...}}; the body of a charged
# label carries 'charged_usd' and 'day' (a replay answers the first request's).
LABEL = _PREAMBLE + COMMON + r"""
local K_STREAM, K_LABELED = KEYS[4], KEYS[7]
local N_CLASSES, ACCURACY_MIN, ACCURACY_MAX = tonumber(ARGV[12]), tonumber(ARGV[13]),
                                              tonumber(ARGV[14])
""" + LABEL_COMMON + r"""
local now, tid, label, seconds = tonumber(ARGV[6]), ARGV[7], ARGV[8], ARGV[9]
local fingerprint, day = ARGV[10], ARGV[15]
local extra = label_extras(ARGV[16], ARGV[17])

-- The label in the expert's per-skill record (its skills and dollars as `charge` found
-- them); on gold, whether it was right.
local function learn_skill(eid, tags, usd, gold)
  local skill = built_key(P_SKILL, eid)
  for _, tag in ipairs(tags) do
    redis.call('HINCRBY', skill, 'n:' .. tag, 1)
    redis.call('HINCRBYFLOAT', skill, 'sec:' .. tag, seconds)
    redis.call('HINCRBYFLOAT', skill, 'usd:' .. tag, usd)
  end
  if gold then learn_gold(eid, tags, label, gold) end
end

-- Whether this only label of a finished item gets a second one (see above).
local function spot_check(tkey, iid)
  local share = tonumber(redis.call('HGET', tkey, 'rv')) or 0
  if share <= 0 then return false end
  local draw = tonumber(string.sub(redis.sha1hex(iid), 1, 8), 16) / 4294967296
  if draw >= share then return false end
  redis.call('HSET', built_key(P_ITEM, iid), 'want', 2, 'wt', 2, 'rc', 1)
  return true
end

-- Dollars, seconds and one label into the total and the breakdowns by expert, by skill
-- (an item requiring several skills counts under each) and by day; the dollars charged
-- and the item's skills ('_general' when untagged).
local function charge(tkey, iid, eid)
  local usd = (tonumber(redis.call('HGET', tkey, 'rate')) or 0) * tonumber(seconds) / 3600
  redis.call('HINCRBYFLOAT', K_COUNTERS, 'spent_usd', usd)
  local tags = skill_tags(iid)
  local parts = {'', ':e:' .. eid, ':d:' .. day}
  for _, tag in ipairs(tags) do parts[#parts + 1] = ':s:' .. tag end
  for _, part in ipairs(parts) do
    redis.call('HINCRBYFLOAT', KEYS[9], 'usd' .. part, usd)
    redis.call('HINCRBYFLOAT', KEYS[9], 'sec' .. part, seconds)
    redis.call('HINCRBY', KEYS[9], 'n' .. part, 1)
  end
  return usd, tags
end

if fingerprint ~= '' then
  local stored = redis.call('GET', KEYS[6])
  if stored then
    local answer = cjson.decode(stored)
    if answer.fingerprint ~= fingerprint then
      return cjson.encode({status = 422, conflict = true})
    end
    return stored
  end
end
local tkey = KEYS[11]
local t = redis.call('HMGET', tkey, 'item', 'expert', 'st', 'exp', 'label', 'fit', 'ex')
if not t[1] then return cjson.encode({status = 404}) end
local iid, eid = t[1], t[2]
if t[3] == 'open' and tonumber(t[4]) < now then close_lease(tid, 'expired') end
local state = redis.call('HGET', tkey, 'st')
local body = {task_id = tid, item_id = iid, expert_id = eid, label = label}
local status
if state == 'open' then
  log_label(tid, iid, eid, label, seconds, 1, ARGV[6], extra)
  redis.call('HSET', tkey, 'st', 'labeled', 'label', label)
  release_reservation(tkey)
  local usd, tags = charge(tkey, iid, eid)
  body.charged_usd, body.day = usd, day
  redis.call('ZREM', K_LEASES, tid)
  redis.call('ZREM', built_key(P_XLEASE, eid), tid)
  redis.call('HINCRBY', built_key(P_ITEM, iid), 'out', -1)
  local done, n_votes = add_vote(iid, eid, label)
  body.since_retrain = count_labels(1, now)
  if t[7] == '1' and not redis.call('ZSCORE', K_LABELED, iid) then
    redis.call('RPUSH', KEYS[8], iid)
  end
  local gold = redis.call('HGET', built_key(P_ITEM, iid), 'g')
  if gold == '' then gold = false end
  learn_skill(eid, tags, usd, gold)
  body.counted, body.n_labels, body.item_status = true, done, refresh_status(iid)
  if gold then
    body.gold, body.aggregated = true, true  -- a check: nothing to aggregate
  else
    if n_votes == 1 and body.item_status == 'labeled' and spot_check(tkey, iid) then
      body.spot_check, body.item_status = true, refresh_status(iid)
    end
    body.aggregated = n_votes == 1 and vote_alone(iid, label, tonumber(t[6]),
                                                  body.item_status)
    if not body.aggregated then redis.call('SADD', KEYS[10], iid) end
  end
  status = 201
elseif state == 'labeled' then
  body.counted, body.reason = false, 'this task was already labeled (' .. t[5] .. ')'
  return cjson.encode({status = 409, body = body})
else
  if t[5] then
    body.counted, body.reason = false, 'a late label for this task was already recorded'
    return cjson.encode({status = 409, body = body})
  end
  log_label(tid, iid, eid, label, seconds, 0, ARGV[6], extra)
  redis.call('HSET', tkey, 'label', label)
  redis.call('HINCRBY', K_COUNTERS, 'late', 1)
  body.charged_usd, body.day = charge(tkey, iid, eid), day
  body.counted = false
  body.reason = 'the lease was ' .. state ..
                ' before the label arrived: it is recorded, not counted'
  body.item_status = redis.call('HGET', built_key(P_ITEM, iid), 'st')
  status = 409
end
local answer = cjson.encode({status = status, body = body, fingerprint = fingerprint})
if fingerprint ~= '' then redis.call('SET', KEYS[6], answer, 'EX', ARGV[11]) end
return answer
"""

# Record labels that came without a lease (POST /v1/projects/{pid}/labels), each as a
# lease's label is recorded (LABEL_COMMON), under a task id of its own that its record key
# fixes (queue/label_import.py: (item, expert) or (item, source record)), so a retry finds
# it and is not counted twice.  Per record, checked before anything is written:
# - no such item: refused;
# - that task id recorded already: a duplicate (same label, comment and answer), else
#   refused as a conflict; likewise when the expert gave the item a label through a lease
#   (the same label: a duplicate);
# - a gold item's label without an expert teaches nothing: refused;
# - a withdrawn item: recorded (stream, 'late' counter), not counted (task state 'recorded').
# Otherwise it counts: the expert (if any) joins the item's experts (never served it) and
# an open lease it holds on the item ends ('released'); the item's labels wanted rise to
# the labels out and in when it got more than it wanted (the target 'wt' stays, so they
# fall back as its leases close: fit_want); a gold item's label is a gold answer of its
# expert ('gn:'/'gr:'); another item's only label is voted here at the fit given for it
# (the expert's learned accuracy on the item's weakest skill, or the fit of a label without
# an expert), else aggregate.py votes it (the item joins keys.followup_key, as after
# LABEL, so the workers' upkeep does it when the request's follow-up fails).  Never
# charged (no lease, no rate), nor counted as the expert's labels 'n:' (its predicted
# seconds learn from leased labels only).
# KEYS[4] labels stream, KEYS[5] labeled items (sorted set), KEYS[6] keys.followup_key,
# KEYS[7..] declared only (built alike): per record its task's hash, its item's hash and the
# item's experts and labels sets; per expert its lease set and per-skill record.
# ARGV[6] now, ARGV[7] number of classes k, ARGV[8] and ARGV[9] the accuracy bounds,
# ARGV[10] JSON {expert: {tag: fit, '_general': fit}},
# ARGV[11] fit of a label without an expert, ARGV[12] fields per record, then per record:
# task id, item id, expert id ('' none), label, source record id ('' none), answered at
# (epoch seconds, '' none), comment ('' none), answer (JSON, '' none).
# Returns a JSON string {"results": [[outcome, detail], ...], "since_retrain": n}, one per
# record: 'counted' (detail 1 when nothing is left to aggregate), 'duplicate',
# 'withdrawn', 'no_item', 'conflict' (detail: the label recorded), 'gold_without_expert'.
IMPORT_LABELS = _PREAMBLE + COMMON + r"""
local K_STREAM, K_LABELED = KEYS[4], KEYS[5]
local N_CLASSES, ACCURACY_MIN, ACCURACY_MAX = tonumber(ARGV[7]), tonumber(ARGV[8]),
                                              tonumber(ARGV[9])
""" + LABEL_COMMON + r"""
local now, fits, anonymous_fit = tonumber(ARGV[6]), cjson.decode(ARGV[10]), tonumber(ARGV[11])
local width = tonumber(ARGV[12])
local counted_now = 0

-- The fit a label is voted at: its expert's learned accuracy on the item's weakest skill
-- (a skill it lacks counts at its '_general'), as aggregate.py's vote takes it.
local function label_fit(eid, tags)
  if eid == '' then return anonymous_fit end
  local of = fits[eid]
  if #tags == 0 then return of['_general'] end
  local lowest = math.huge
  for _, tag in ipairs(tags) do lowest = math.min(lowest, of[tag] or of['_general']) end
  return lowest
end

-- The label the expert already gave the item (through a lease), or nil.
local function given_label(iid, eid)
  for _, entry in ipairs(redis.call('LRANGE', built_key(P_ITEM, iid, ':labels'), 0, -1)) do
    local tab = string.find(entry, '\t', 1, true)
    if string.sub(entry, 1, tab - 1) == eid then return string.sub(entry, tab + 1) end
  end
  return nil
end

-- End the expert's open lease on the item, if it holds one: its label came without it.
local function end_own_lease(iid, eid)
  for _, tid in ipairs(redis.call('ZRANGE', built_key(P_XLEASE, eid), 0, -1)) do
    if redis.call('HGET', built_key(P_TASK, tid), 'item') == iid then
      close_lease(tid, 'released')
      return
    end
  end
end

-- What stops the record (an outcome), or nil when it may be recorded.
local function refusal(tkey, iid, eid, label, fingerprint, status, gold)
  if not status then return {'no_item', ''} end
  local duplicate = {'duplicate', ''}
  local prior = redis.call('HMGET', tkey, 'label', 'fp')
  if prior[1] then
    if prior[2] == fingerprint then return duplicate end
    return {'conflict', prior[1]}
  end
  if eid ~= '' and redis.call('SISMEMBER', built_key(P_ITEM, iid, ':experts'), eid) == 1 then
    local given = given_label(iid, eid)
    if given == label then return duplicate end
    if given then return {'conflict', given} end
  end
  if gold and eid == '' then return {'gold_without_expert', ''} end
  return nil
end

local function count(iid, eid, label, gold, tags)
  if eid ~= '' then
    local joined = redis.call('SADD', built_key(P_ITEM, iid, ':experts'), eid)
    if joined == 0 then end_own_lease(iid, eid) end
  end
  local _, n_votes = add_vote(iid, eid, label)
  counted_now = counted_now + 1
  if gold then
    learn_gold(eid, #tags > 0 and tags or {'_general'}, label, gold)
    refresh_status(iid)
    return {'counted', 1}  -- a check: nothing to aggregate
  end
  local f = redis.call('HMGET', built_key(P_ITEM, iid), 'out', 'done', 'want')
  if tonumber(f[1]) + tonumber(f[2]) > tonumber(f[3]) then  -- more than it wanted
    redis.call('HSETNX', built_key(P_ITEM, iid), 'wt', f[3])  -- the target stays
    fit_want(iid)
  end
  local status = refresh_status(iid)
  local voted = n_votes == 1 and vote_alone(iid, label, label_fit(eid, tags), status)
  if not voted then redis.call('SADD', KEYS[6], iid) end
  return {'counted', voted and 1 or 0}
end

local function import(tid, iid, eid, label, source, answered, comment, answer)
  local f = redis.call('HMGET', built_key(P_ITEM, iid), 'st', 'g', 's')
  local gold = f[2] and f[2] ~= '' and f[2] or nil
  local tkey = built_key(P_TASK, tid)
  local fingerprint = redis.sha1hex(label .. '\n' .. comment .. '\n' .. answer)
  local refused = refusal(tkey, iid, eid, label, fingerprint, f[1], gold)
  if refused then return refused end
  local counted = f[1] ~= 'withdrawn'
  redis.call('HSET', tkey, 'item', iid, 'expert', eid, 'label', label, 'fp', fingerprint,
             'ca', now, 'exp', now, 'll', 1, 'st', counted and 'labeled' or 'recorded')
  log_label(tid, iid, eid, label, 0, counted and 1 or 0, ARGV[6],
            label_extras(comment, answer, source, answered))
  if not counted then
    redis.call('HINCRBY', K_COUNTERS, 'late', 1)
    return {'withdrawn', ''}
  end
  return count(iid, eid, label, gold, split_tags(f[3]))
end

local results = {}
for i = 13, #ARGV, width do
  results[#results + 1] = import(ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4],
                                 ARGV[i+5], ARGV[i+6], ARGV[i+7])
end
local since_retrain = counted_now > 0 and count_labels(counted_now, now) or 0
return cjson.encode({results = results, since_retrain = since_retrain})
"""

# Withdraw an item (DELETE /v1/projects/{pid}/items/{iid}): for good, it leaves the pool
# and the gold sets (status 'withdrawn', which UPSERT_ITEMS and refresh_status keep), and
# its open leases end (state 'withdrawn': a label on one is recorded, not counted, as on
# an expired lease).  Its counted labels stay: in the stream, and, for a finished item,
# in the labeled set (training, aggregated export).  Its open leases are found through
# the experts who leased it (the item's experts set) and their lease sets.
# KEYS[4] the item's hash, KEYS[5] its experts set.  ARGV[6] now, ARGV[7] item id.
# Returns {'missing'} or {'ok', 1 when withdrawn now (0: already), {task ids ended}}.
WITHDRAW = _PREAMBLE + COMMON + r"""
local now, iid = ARGV[6], ARGV[7]
local ikey = KEYS[4]
local f = redis.call('HMGET', ikey, 'st', 's', 'wd')
if not f[1] then return {'missing'} end
if f[3] == '1' then return {'ok', 0, {}} end
redis.call('HSET', ikey, 'wd', 1, 'wa', now)
for _, set in ipairs(gold_sets(split_tags(f[2]))) do redis.call('ZREM', set, iid) end
local ended = {}
for _, eid in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  for _, tid in ipairs(redis.call('ZRANGE', built_key(P_XLEASE, eid), 0, -1)) do
    local item = redis.call('HGET', built_key(P_TASK, tid), 'item')
    if item == iid and close_lease(tid, 'withdrawn') then
      ended[#ended + 1] = tid
    end
  end
end
refresh_status(iid)
return {'ok', 1, ended}
"""

# Extend an open lease (heartbeat).
# KEYS[4] the task's hash.  ARGV[6] now, ARGV[7] task id, ARGV[8] lease seconds.
# Returns {state, expires_at} after the call ('' state when no such task).
EXTEND = _PREAMBLE + COMMON + r"""
local now, tid = tonumber(ARGV[6]), ARGV[7]
local tkey = KEYS[4]
local t = redis.call('HMGET', tkey, 'expert', 'st', 'exp')
if not t[2] then return {'', ''} end
if t[2] == 'open' and tonumber(t[3]) < now then close_lease(tid, 'expired') end
local state = redis.call('HGET', tkey, 'st')
if state ~= 'open' then return {state, t[3]} end
local expires = now + tonumber(ARGV[8])
redis.call('HSET', tkey, 'exp', expires)
redis.call('ZADD', K_LEASES, expires, tid)
redis.call('ZADD', built_key(P_XLEASE, t[1]), expires, tid)
return {'open', tostring(expires)}
"""

# Give a leased item back.  KEYS[4] the task's hash.  ARGV[6] now, ARGV[7] task id.
# Returns the task's state after the call ('' when no such task).
RELEASE = _PREAMBLE + COMMON + r"""
local now, tid = tonumber(ARGV[6]), ARGV[7]
local tkey = KEYS[4]
local t = redis.call('HMGET', tkey, 'st', 'exp')
if not t[1] then return '' end
if t[1] == 'open' and tonumber(t[2]) < now then close_lease(tid, 'expired')
elseif t[1] == 'open' then close_lease(tid, 'released') end
return redis.call('HGET', tkey, 'st')
"""

# Change how many labels an item wants (adaptive redundancy).  KEYS[4] the item's hash.
# ARGV[6] item id, ARGV[7] labels wanted.  An early stop does not take back leases already
# handed out: 'want' stays at the labels out or in, and falls to the target as those leases
# close unlabeled, so an item never holds more counted labels than it wants.
# Returns the item's status after the change.
SET_WANT = _PREAMBLE + COMMON + r"""
redis.call('HSET', KEYS[4], 'wt', ARGV[7])
fit_want(ARGV[6], tonumber(ARGV[7]))
return refresh_status(ARGV[6])
"""

# Mark one re-score chunk done and count it, once: two copies of a chunk (a retry racing
# a slow first attempt) must not count twice and finish the run early.
# KEYS[4] the run's progress hash.  ARGV[6] chunk index, ARGV[7] items updated,
# ARGV[8] items in the chunk.  Returns 1 when counted now, 0 when already done.
FINISH_CHUNK = _PREAMBLE + COMMON + r"""
if redis.call('HSETNX', KEYS[4], 'done:' .. ARGV[6], ARGV[7]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[4], 'items_done', ARGV[8])
redis.call('HINCRBY', KEYS[4], 'chunks_done', 1)
return 1
"""

# Return expired leases of one project to the pool.  ARGV[6] now, ARGV[7] limit.
SWEEP = _PREAMBLE + COMMON + r"""
return sweep(tonumber(ARGV[6]), tonumber(ARGV[7]))
"""

# Set priorities computed outside taskrank (``taskrank backfill --from``), only for items
# still pending: a leased or labeled item must never come back into the pool.  The
# breakdown becomes {"external": priority}, recorded as of the current model and strategy
# versions (so it is shown as stored, not recomputed).
# KEYS[4..] declared only (built alike): the items' hashes.  ARGV[6] current model
# version, ARGV[7] strategy version, ARGV[8..] pairs: item id, priority.
# Returns {updated, not pending, {0-based positions of the pairs whose item does not
# exist}}.
SET_PRIORITIES = _PREAMBLE + COMMON + r"""
for i = 8, #ARGV, 2 do
  if tonumber(ARGV[i+1]) == nil then
    return redis.error_reply('priority of ' .. ARGV[i] .. ' is not a number: ' .. ARGV[i+1])
  end
end
local updated, skipped, unknown = 0, 0, {}
for i = 8, #ARGV, 2 do
  local iid, priority = ARGV[i], tonumber(ARGV[i+1])
  local f = redis.call('HMGET', built_key(P_ITEM, iid), 'st', 's')
  if not f[1] then
    unknown[#unknown + 1] = (i - 8) / 2
  elseif f[1] ~= 'pending' then
    skipped = skipped + 1
  else
    redis.call('HSET', built_key(P_ITEM, iid), 'pr', ARGV[i+1],
               'bd', cjson.encode({external = priority}), 'mv', ARGV[6], 'sv', ARGV[7])
    enpool(iid, split_tags(f[2]), priority)
    updated = updated + 1
  end
end
return {updated, skipped, unknown}
"""

# Add a counted label's seconds to its expert's UTC day, across projects (for the
# expert's max_hours_per_day), once per task: a replayed label adds nothing.  Global keys
# only, so no project preamble; one key, so one Cluster slot.
# KEYS[1] keys.expert_day_key.  ARGV[1] task id, ARGV[2] seconds, ARGV[3] TTL seconds.
# Returns the day's total seconds.
ADD_EXPERT_SECONDS = r"""
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('HINCRBYFLOAT', KEYS[1], '_total', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return redis.call('HGET', KEYS[1], '_total')
"""

# Record a webhook event in the project's outbox once (queue/events.py): unless field
# ARGV[6] of hash KEYS[4] (the event's once-marker) already holds ARGV[7], set it and
# append the event to the outbox stream KEYS[5] (fields 'type' ARGV[8], 'body' ARGV[9]),
# in one step, so an event is never marked without being recorded nor recorded twice.
# Then, unless KEYS[6] names a drain job still waiting, set it to ARGV[10] for ARGV[11]
# seconds: the caller queues that job.
# Returns 0 (sent before), 1 (recorded; a drain is waiting) or 2 (recorded; queue ARGV[10]).
EMIT_EVENT = _PREAMBLE + COMMON + r"""
if redis.call('HGET', KEYS[4], ARGV[6]) == ARGV[7] then return 0 end
redis.call('HSET', KEYS[4], ARGV[6], ARGV[7])
redis.call('XADD', KEYS[5], '*', 'type', ARGV[8], 'body', ARGV[9])
if redis.call('SET', KEYS[6], ARGV[10], 'NX', 'EX', ARGV[11]) then return 2 end
return 1
"""


SCRIPTS = {"upsert_items": UPSERT_ITEMS, "claim": CLAIM, "label": LABEL,
           "import_labels": IMPORT_LABELS, "withdraw": WITHDRAW,
           "extend": EXTEND, "release": RELEASE, "sweep": SWEEP, "set_want": SET_WANT,
           "finish_chunk": FINISH_CHUNK,
           "set_priorities": SET_PRIORITIES, "add_expert_seconds": ADD_EXPERT_SECONDS,
           "emit_event": EMIT_EVENT}


def run(r: DataClient, name: str, pid: str, keys: list[str] | tuple = (),
        args: list | tuple = ()) -> object:
    """Run script ``name`` for project ``pid`` with the shared KEYS/ARGV preamble; raises
    ValueError when a key or prefix lies outside the project's slot (module docstring)."""
    script_keys, script_args = _project_call(name, pid, keys, args)
    return _registered(r, name)(keys=script_keys, args=script_args, client=r)


def run_many(r: DataClient, name: str, pid: str, calls: list[tuple[list, list]]) -> list:
    """Run script ``name`` of project ``pid`` once per (keys, args) of ``calls``, in one round
    trip; the replies in order."""
    if not calls:
        return []
    try:
        return _pipelined(r, name, pid, calls)
    except redis.exceptions.NoScriptError:
        # A cluster pipeline cannot load a script (redis-py leaves NOSCRIPT to the caller):
        # the master never had it or restarted.  No call ran (one project: one master).
        r.script_load(SCRIPTS[name])
        return _pipelined(r, name, pid, calls)


def _pipelined(r: DataClient, name: str, pid: str, calls: list[tuple[list, list]]) -> list:
    with r.pipeline(transaction=False) as pipe:
        script = _registered(pipe, name)
        for keys, args in calls:
            script_keys, script_args = _project_call(name, pid, keys, args)
            script(keys=script_keys, args=script_args, client=pipe)
        return pipe.execute()


def _project_call(name: str, pid: str, keys: list[str] | tuple, args: list | tuple
                  ) -> tuple[list, list]:
    """The KEYS and ARGV of a project script: the preamble's, then the caller's."""
    preamble_keys = [K.counters_key(pid), K.pool_untagged_key(pid), K.leases_key(pid)]
    preamble_args = [K.item_prefix(pid), K.task_prefix(pid), K.expert_leases_prefix(pid),
                     K.pool_tag_key(pid, ""), K.expert_skill_prefix(pid)]
    tag = K.project_prefix(pid)
    stray = [key for key in (*preamble_keys, *preamble_args, *keys) if not key.startswith(tag)]
    if stray:
        # A key of another slot would make EVALSHA fail on a cluster, and a key of the same
        # slot built elsewhere would escape keys.py: refused the same on a single Redis.
        raise ValueError(f"script {name} of project {pid!r} was given keys outside the "
                         f"project's slot ({tag}...): {stray[:3]}")
    return preamble_keys + list(keys), preamble_args + list(args)


def run_global(r: DataClient, name: str, keys: list[str], args: list) -> object:
    """Run script ``name``, which touches only the global ``keys`` (no project preamble):
    exactly one key, so one Cluster slot."""
    if len(keys) != 1:
        raise ValueError(f"script {name} runs on one global key, got {len(keys)}")
    return _registered(r, name)(keys=keys, args=args, client=r)


def _registered(r: redis.Redis, name: str) -> redis.commands.core.Script:
    # Script objects cache the SHA; EVALSHA falls back to EVAL after a Redis restart.
    cache = r.__dict__.setdefault("_taskrank_scripts", {})
    if name not in cache:
        script = cache[name] = r.register_script(SCRIPTS[name])
        # Always called with client=: without its back-reference, a client and its scripts
        # make no reference cycle, so a client dropped (a job's) closes its socket at once
        # instead of at a garbage collection (a ResourceWarning when the socket goes first).
        script.registered_client = None
    return cache[name]
