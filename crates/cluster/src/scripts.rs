//! The Lua scripts that keep presence consistent: each runs atomically in Redis, so a check and
//! the write it decides are one step (no two nodes can both see a roll free and both take it).
//!
//! Keys (see [`crate::keys`]): a seat `…seat:<course>:<division>:<roll>` holds
//! `"<owner> <token>"` and expires after the lease unless its owner renews it; a token
//! `…token:<hex>` is a hash of what a resume on another node needs (the student, the time served,
//! the class length, the owner), kept for the lease plus the resume grace, so a seat of a node
//! that died can still be resumed elsewhere after its seat key expired.

use redis::Script;

/// KEYS: seat, token. ARGV: owner, token, lease_ms, ttl_ms, course, division, name, roll,
/// served_ms, length_ms. Returns 2 (taken now), 1 (already this owner's: the node's own hub
/// decides; the key now names the new token, and the next renewal names the token the hub
/// kept) or 0 (another owner's).
pub(crate) fn claim() -> Script {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
local mine = cur and string.match(cur, '^(%S+)') == ARGV[1]
if cur and not mine then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[3])
if ARGV[2] ~= '0' then
  redis.call('HSET', KEYS[2], 'course', ARGV[5], 'division', ARGV[6], 'name', ARGV[7],
    'roll', ARGV[8], 'owner', ARGV[1], 'served_ms', ARGV[9], 'length_ms', ARGV[10],
    'ttl_ms', ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
if mine then return 1 end
return 2
",
    )
}

/// KEYS: seat₁, token₁, seat₂, token₂, … ARGV: owner, lease_ms, then per seat: token, ttl_ms,
/// served_ms. Renews each seat this owner still holds, and takes back a seat whose key expired
/// while nobody else took it (its token not resumed by another owner): 1 each. A seat another
/// owner holds now, or whose token another owner resumed, is lost: 0.
pub(crate) fn renew() -> Script {
    Script::new(
        r"
local owner, lease = ARGV[1], ARGV[2]
local out = {}
for i = 1, #KEYS / 2 do
  local seat, tok = KEYS[2 * i - 1], KEYS[2 * i]
  local t, ttl, served = ARGV[3 * i], ARGV[3 * i + 1], ARGV[3 * i + 2]
  local cur = redis.call('GET', seat)
  local ok = 0
  if cur then
    if string.match(cur, '^(%S+)') == owner then ok = 1 end
  elseif t == '0' then
    ok = 1
  else
    local o = redis.call('HGET', tok, 'owner')
    if (not o) or o == owner then ok = 1 end
  end
  if ok == 1 then
    redis.call('SET', seat, owner .. ' ' .. t, 'PX', lease)
    if t ~= '0' and redis.call('EXISTS', tok) == 1 then
      redis.call('HSET', tok, 'served_ms', served)
      redis.call('PEXPIRE', tok, ttl)
    end
  end
  out[i] = ok
end
return out
",
    )
}

/// KEYS: seat, token. ARGV: owner, token. Deletes the seat if this owner holds it under that
/// token (not a newer seat of the same roll taken here since), and the token if it is this
/// owner's.
pub(crate) fn release() -> Script {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] .. ' ' .. ARGV[2] then redis.call('DEL', KEYS[1]) end
if redis.call('HGET', KEYS[2], 'owner') == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
",
    )
}

/// KEYS: token. ARGV: owner, lease_ms, seat key prefix, token. Takes the token's seat for this
/// owner, if the roll is not held under another token: { course, division, name, roll,
/// served_ms, length_ms, previous owner }, or nil.
pub(crate) fn resume() -> Script {
    Script::new(
        r"
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return false end
local f = {}
for i = 1, #h, 2 do f[h[i]] = h[i + 1] end
local seat = ARGV[3] .. f.course .. ':' .. f.division .. ':' .. f.roll
local cur = redis.call('GET', seat)
if cur and string.match(cur, '^%S+ (%S+)$') ~= ARGV[4] then return false end
redis.call('SET', seat, ARGV[1] .. ' ' .. ARGV[4], 'PX', ARGV[2])
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
redis.call('PEXPIRE', KEYS[1], f.ttl_ms or ARGV[2])
return { f.course, f.division, f.name, f.roll, f.served_ms, f.length_ms, f.owner }
",
    )
}

/// KEYS: the node set. ARGV: node key prefix, own owner. The connections of every other live
/// node (a node whose key expired is dropped from the set).
pub(crate) fn clients() -> Script {
    Script::new(
        r"
local total = 0
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if n ~= ARGV[2] then
    local c = redis.call('GET', ARGV[1] .. n)
    if c then total = total + tonumber(c) else redis.call('SREM', KEYS[1], n) end
  end
end
return total
",
    )
}

/// The scripts, each hashed once.
pub(crate) struct Scripts {
    pub(crate) claim: Script,
    pub(crate) renew: Script,
    pub(crate) release: Script,
    pub(crate) resume: Script,
    pub(crate) clients: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            claim: claim(),
            renew: renew(),
            release: release(),
            resume: resume(),
            clients: clients(),
        }
    }
}
