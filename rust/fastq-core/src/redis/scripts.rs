//! The Lua scripts that make each state change atomic on the server. Redis runs a script without
//! interleaving other clients' commands, so a message is always either in a queue list or in
//! `unacked` (or in a fastq dead-letter list), never in neither.
//!
//! Keys computed from message contents (a restored message's queue) are resolved by the caller
//! and passed in KEYS, so the scripts declare every key they touch.

use ::redis::Script;

/// Pops up to `want` envelopes from the queue lists in order and records each as unacknowledged
/// exactly as kombu's `QoS.append` does (`HSET unacked`, `ZADD unacked_index`), plus `SADD` to
/// the consumer's own set. kombu does the pop and the record in two round trips; a worker dying
/// between them loses the message, which this removes.
///
/// An envelope without a readable `properties.delivery_tag` cannot be acknowledged later, so it
/// is not recorded: it goes to the capped `malformed` list and is still returned (with an empty
/// tag) so the worker can report it.
///
/// The envelope is embedded into the `unacked` value as it is, not re-encoded: it is valid JSON
/// (cjson just read it), and cjson would turn empty lists into objects and round floats. The
/// records of a batch go in one `HSET`, one `ZADD` and one `SADD`: each `redis.call` costs about
/// as much as reading a message's fields.
///
/// The consumer set's TTL is set again with every claim that records something (see `RENEW`).
///
/// A queue key that holds another type than a list (something else wrote there) refuses its
/// `RPOP`: that list is skipped and named in the reply, and the claim goes on with the next.
/// A script stopped by the error would keep the pops before it without recording them: those
/// messages would be in neither a list nor `unacked`.
///
/// KEYS: the queue lists in consume order, then unacked, unacked_index, consumer set, malformed.
/// ARGV: want, now (unix seconds), malformed cap, consumer set TTL (seconds), and optionally the
/// index (1-based) of the list a blocking pop already took an envelope from and that envelope,
/// to be recorded first.
/// Returns `{{{list index, tag or "", envelope}, …}, {{list index, error}, …}, visited}`: the
/// claimed envelopes, the lists that refused, and how many lists (from the first) were looked
/// at to the end.
pub const CLAIM: &str = r#"
local nq = #KEYS - 4
local unacked, index, mine, malformed = KEYS[nq + 1], KEYS[nq + 2], KEYS[nq + 3], KEYS[nq + 4]
local want, now, cap, ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out, hset, zadd, sadd = {}, {unacked}, {index}, {mine}
local find, match = string.find, string.match

-- kombu and fastq write `properties` after `headers`; its three fields are read by plain
-- searches and anchored matches, which avoids decoding the whole envelope (most of a claim's
-- cost). Anything unusual (another key order, escapes, a missing field) falls back to a full
-- decode. Returns the tag and the exchange and routing key as JSON strings.
local function field(raw, name, from)
  local at, stop = find(raw, name, from, true)
  if not at then return nil end
  return match(raw, '^%s*:%s*"([^"\\]*)"', stop + 1)
end

local function fields(raw)
  local _, stop = find(raw, '"properties"', 1, true)
  if stop and match(raw, '^%s*:%s*{', stop + 1) and not find(raw, '"headers"', stop, true) then
    local tag = field(raw, '"delivery_tag"', stop)
    local ex = field(raw, '"exchange"', stop)
    local rk = field(raw, '"routing_key"', stop)
    if tag and tag ~= '' and ex and rk then return tag, '"' .. ex .. '"', '"' .. rk .. '"' end
  end
  local ok, env = pcall(cjson.decode, raw)
  local props = ok and type(env) == 'table' and env.properties
  local tag = type(props) == 'table' and props.delivery_tag
  if type(tag) ~= 'string' or tag == '' then return nil end
  local info, ex, rk = props.delivery_info, '', ''
  if type(info) == 'table' then
    if type(info.exchange) == 'string' then ex = info.exchange end
    if type(info.routing_key) == 'string' then rk = info.routing_key end
  end
  return tag, cjson.encode(ex), cjson.encode(rk)
end

local function claim(k, raw)
  local tag, ex, rk = fields(raw)
  if not tag then
    redis.call('LPUSH', malformed, raw)
    redis.call('LTRIM', malformed, 0, cap - 1)
    out[#out + 1] = {k, '', raw}
    return
  end
  hset[#hset + 1] = tag
  hset[#hset + 1] = '[' .. raw .. ', ' .. ex .. ', ' .. rk .. ']'
  zadd[#zadd + 1] = now
  zadd[#zadd + 1] = tag
  sadd[#sadd + 1] = tag
  out[#out + 1] = {k, tag, raw}
end

if ARGV[5] then claim(tonumber(ARGV[5]), ARGV[6]) end
local k, refused = 1, {}
while #out < want and k <= nq do
  local raw = redis.pcall('RPOP', KEYS[k])
  if type(raw) == 'table' then
    refused[#refused + 1] = {k, raw.err or 'refused'}
    k = k + 1
  elseif raw then
    claim(k, raw)
  else
    k = k + 1
  end
end
if #sadd > 1 then
  redis.call('HSET', unpack(hset))
  redis.call('ZADD', unpack(zadd))
  redis.call('SADD', unpack(sadd))
  redis.call('EXPIRE', mine, ttl)
end
return {out, refused, k - 1}
"#;

/// Moves `unacked` entries back onto queue lists, each only if its entry is still exactly what
/// the caller read (a compare-and-set, in place of kombu's `WATCH unacked`): a tag acked or
/// restored by someone else in between is left alone. The caller has already rewritten each
/// envelope (marked redelivered) and resolved its destination lists; an entry that could not be
/// routed arrives with the dead-letter list as its destination.
///
/// An empty expected value means the caller found no entry: the tag is then dropped from the
/// index if it is still missing from `unacked`, as kombu's restore does, so an orphaned index
/// entry cannot be restored over and over.
///
/// A destination whose key holds something other than a list (Redis would refuse the push with
/// `WRONGTYPE`) holds its tag back: the entry stays in `unacked`, to be restored once the key is
/// a list again, and no copy goes to its other destinations (a later restore would push them a
/// second one). Checked before any push, so one such key neither stops the tags after it nor
/// leaves a tag half moved.
///
/// KEYS: unacked, unacked_index, [consumer set], then the destination lists of every tag in turn.
/// ARGV: LPUSH (back of the queue: reject with requeue) or RPUSH (head: restore), "1" when a
/// consumer set is given, then per tag: tag, expected entry, payload, number of destinations.
/// Returns `{moved tags, held back}`, the latter flat: tag, key, the type the key holds.
pub const MOVE_BACK: &str = r#"
local push, has_set = ARGV[1], ARGV[2] == '1'
local unacked, index = KEYS[1], KEYS[2]
local k = has_set and 4 or 3
local moved, held, kinds = {}, {}, {}
for i = 3, #ARGV, 4 do
  local tag, expected, payload, ndest = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local current = redis.call('HGET', unacked, tag)
  if expected ~= '' and current == expected then
    local blocked = false
    for d = k, k + ndest - 1 do
      local kind = kinds[KEYS[d]]
      if not kind then
        kind = redis.call('TYPE', KEYS[d])['ok']
        kinds[KEYS[d]] = kind
      end
      if kind ~= 'list' and kind ~= 'none' then
        held[#held + 1] = tag
        held[#held + 1] = KEYS[d]
        held[#held + 1] = kind
        blocked = true
        break
      end
    end
    if not blocked then
      for d = k, k + ndest - 1 do redis.call(push, KEYS[d], payload) end
      redis.call('HDEL', unacked, tag)
      redis.call('ZREM', index, tag)
      moved[#moved + 1] = tag
    end
  elseif expected == '' and not current then
    redis.call('ZREM', index, tag)
  end
  if has_set then redis.call('SREM', KEYS[3], tag) end
  k = k + ndest
end
return {moved, held}
"#;

/// Renews the leases of what live consumers hold: every tag in their sets gets `now` as its
/// `unacked_index` score again (`XX`: a tag acked or restored meanwhile is not brought back), so
/// a visibility restore — fastq's or a Celery worker's, which reads the same plain unix times —
/// leaves a long task alone while its worker lives. Each non-empty set also gets a TTL again:
/// the sets of a worker that died outright do not stay in Redis for ever.
///
/// KEYS: unacked_index, then the consumers' sets. ARGV: now (unix seconds), the sets' TTL
/// (seconds). Returns how many tags were renewed.
pub const RENEW: &str = r#"
local index, now, ttl = KEYS[1], ARGV[1], tonumber(ARGV[2])
local renewed = 0
for i = 2, #KEYS do
  local tags = redis.call('SMEMBERS', KEYS[i])
  for first = 1, #tags, 500 do
    local args = {}
    for k = first, math.min(first + 499, #tags) do
      args[#args + 1] = now
      args[#args + 1] = tags[k]
    end
    renewed = renewed + redis.call('ZADD', index, 'XX', 'CH', unpack(args))
  end
  if #tags > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
end
return renewed
"#;

/// Forgets acknowledged tags: `HDEL unacked`, `ZREM unacked_index`, `SREM` the consumer set.
/// On a Redis Cluster acks go through this script rather than a MULTI: while a queue's slot is
/// migrated key by key, a script whose keys are split between the two nodes is refused as a
/// whole (`TRYAGAIN`), where a MULTI would run on whichever node its first key sent it to and
/// leave the entries on the other.
///
/// KEYS: unacked, unacked_index, consumer set. ARGV: the tags.
pub const FORGET: &str = r#"
for first = 1, #ARGV, 500 do
  local last = math.min(first + 499, #ARGV)
  redis.call('HDEL', KEYS[1], unpack(ARGV, first, last))
  redis.call('ZREM', KEYS[2], unpack(ARGV, first, last))
  redis.call('SREM', KEYS[3], unpack(ARGV, first, last))
end
return 0
"#;

/// Releases a lock only if this caller still holds it (redis-py `Lock.release`).
pub const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// The scripts, hashed once (EVALSHA; loaded on the first NOSCRIPT).
pub struct Scripts {
    pub claim: Script,
    pub move_back: Script,
    pub unlock: Script,
    pub renew: Script,
    pub forget: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Scripts {
            claim: Script::new(CLAIM),
            move_back: Script::new(MOVE_BACK),
            unlock: Script::new(UNLOCK),
            renew: Script::new(RENEW),
            forget: Script::new(FORGET),
        }
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Self::new()
    }
}
