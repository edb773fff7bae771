//! The keyspace and the commands that read and change it.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

use crate::glob;
use crate::resp::Reply;

/// Bytes counted for each key besides its own bytes (the map's node, the
/// entry): an estimate, so that many tiny keys cannot slip past the limit.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// Bytes counted for each list element besides its own bytes.
const ELEMENT_OVERHEAD_BYTES: usize = 32;

/// The most keys one `SCAN` call looks at, whatever `COUNT` asks.
const MAX_SCAN_COUNT: usize = 10_000;

/// How much the store may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Commands that add data are refused (`-OOM`) once the keyspace holds
    /// more than this, as Redis does at `maxmemory` with no eviction: the
    /// domain's memory is a quota, and an allocation failure would end it.
    pub max_bytes: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_bytes: 32 << 20,
        }
    }
}

/// A key, ordered by a hash of its bytes first: `SCAN`'s cursor is a
/// position in that order, so every key present for a whole scan is
/// returned whatever is added or removed meanwhile (as Redis's
/// reverse-binary cursor guarantees).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    hash: u64,
    bytes: Vec<u8>,
}

impl Key {
    fn new(bytes: &[u8]) -> Key {
        Key {
            hash: scan_hash(bytes),
            bytes: bytes.to_vec(),
        }
    }
}

/// FNV-1a, 63 bits: a cursor is the next hash plus one, and 0 stays free
/// to mean "start" and "done".
fn scan_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash >> 1
}

#[derive(Debug, Clone)]
enum Value {
    String(Vec<u8>),
    List(VecDeque<Vec<u8>>),
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::List(_) => "list",
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Value::String(bytes) => bytes.len(),
            Value::List(items) => items
                .iter()
                .map(|item| item.len() + ELEMENT_OVERHEAD_BYTES)
                .sum(),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    value: Value,
    /// When the key expires, in the caller's milliseconds.
    expires_at_ms: Option<u64>,
}

/// What one command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The reply to send.
    pub reply: Reply,
    /// Whether the connection ends after the reply (`QUIT`).
    pub close: bool,
}

impl From<Reply> for Outcome {
    fn from(reply: Reply) -> Outcome {
        Outcome {
            reply,
            close: false,
        }
    }
}

/// The keyspace: one database, strings and lists, with expiry.
#[derive(Debug, Clone, Default)]
pub struct Store {
    map: BTreeMap<Key, Entry>,
    /// What the keyspace holds, by the estimate of [`ENTRY_OVERHEAD_BYTES`].
    bytes: usize,
    limits: StoreLimits,
}

fn wrong_type() -> Reply {
    Reply::Error("WRONGTYPE Operation against a key holding the wrong kind of value".to_string())
}

fn not_an_integer() -> Reply {
    Reply::error("value is not an integer or out of range")
}

fn syntax_error() -> Reply {
    Reply::error("syntax error")
}

fn out_of_memory() -> Reply {
    Reply::Error("OOM command not allowed when used memory > 'maxmemory'.".to_string())
}

/// An integer as Redis reads one: an optional `-`, digits, no leading zero
/// or `+`, no blanks, within i64.
fn parse_integer(bytes: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let digits = text.strip_prefix('-').unwrap_or(text);
    let is_canonical = !digits.is_empty()
        && digits.bytes().all(|byte| byte.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && text != "-0";
    if !is_canonical {
        return None;
    }
    text.parse().ok()
}

/// Says how many arguments each command takes, as Redis's arity: `n` is
/// exactly n (the name counted), `-n` at least n.
fn arity(name: &[u8]) -> Option<i32> {
    Some(match name {
        b"get" | b"incr" | b"decr" | b"strlen" | b"llen" | b"type" | b"ttl" | b"pttl"
        | b"persist" | b"keys" | b"echo" | b"select" => 2,
        b"incrby" | b"decrby" | b"append" | b"expire" | b"pexpire" => 3,
        b"lrange" => 4,
        b"dbsize" => 1,
        b"ping" | b"flushdb" | b"flushall" | b"command" | b"info" | b"quit" => -1,
        b"del" | b"exists" | b"mget" | b"lpop" | b"rpop" | b"scan" | b"config" | b"client" => -2,
        b"set" | b"mset" | b"lpush" | b"rpush" => -3,
        _ => return None,
    })
}

impl Store {
    /// An empty store within `limits`.
    pub fn new(limits: StoreLimits) -> Store {
        Store {
            limits,
            ..Store::default()
        }
    }

    /// How many keys the store holds, expired ones not yet removed included.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// What the keyspace holds, in the bytes [`StoreLimits::max_bytes`]
    /// counts.
    pub fn used_bytes(&self) -> usize {
        self.bytes
    }

    /// Removes every key expired at `now_ms`, looking at most at `budget`
    /// keys with an expiry; says how many it removed. Reads remove expired
    /// keys they meet; this frees the ones nobody reads.
    pub fn purge_expired(&mut self, now_ms: u64, budget: usize) -> usize {
        let expired: Vec<Key> = self
            .map
            .iter()
            .filter(|(_, entry)| entry.expires_at_ms.is_some())
            .take(budget)
            .filter(|(_, entry)| is_expired(entry, now_ms))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &expired {
            self.remove(key);
        }
        expired.len()
    }

    /// Executes one command (its name first, in any case) at `now_ms` on
    /// the caller's clock, which expiry times are in.
    pub fn execute(&mut self, command: &[Vec<u8>], now_ms: u64) -> Outcome {
        let Some((name, arguments)) = command.split_first() else {
            return Reply::error("empty command").into();
        };
        let lower = name.to_ascii_lowercase();
        let Some(arity) = arity(&lower) else {
            return Reply::error(format!(
                "unknown command '{}', with args beginning with: {}",
                String::from_utf8_lossy(name),
                arguments
                    .iter()
                    .take(8)
                    .map(|argument| format!("'{}' ", String::from_utf8_lossy(argument)))
                    .collect::<String>()
            ))
            .into();
        };
        let count = i32::try_from(command.len()).unwrap_or(i32::MAX);
        if (arity > 0 && count != arity) || (arity < 0 && count < -arity) {
            return Reply::error(format!(
                "wrong number of arguments for '{}' command",
                String::from_utf8_lossy(&lower)
            ))
            .into();
        }
        if lower == b"quit" {
            return Outcome {
                reply: Reply::OK,
                close: true,
            };
        }
        self.run(&lower, arguments, now_ms).into()
    }

    fn run(&mut self, name: &[u8], arguments: &[Vec<u8>], now_ms: u64) -> Reply {
        let grows = matches!(
            name,
            b"set" | b"mset" | b"append" | b"lpush" | b"rpush" | b"incr" | b"incrby"
        );
        if grows && self.bytes > self.limits.max_bytes {
            return out_of_memory();
        }
        match name {
            b"ping" => match arguments {
                [] => Reply::Status("PONG"),
                [message] => Reply::bulk(message.clone()),
                _ => Reply::error("wrong number of arguments for 'ping' command"),
            },
            b"echo" => Reply::bulk(arguments[0].clone()),
            b"get" => match self.live(&arguments[0], now_ms).map(|entry| &entry.value) {
                None => Reply::Bulk(None),
                Some(Value::String(bytes)) => Reply::bulk(bytes.clone()),
                Some(Value::List(_)) => wrong_type(),
            },
            b"set" => self.set(arguments, now_ms),
            b"del" => {
                let removed = arguments
                    .iter()
                    .filter(|key| {
                        let live = self.live(key, now_ms).is_some();
                        live && self.remove(&Key::new(key)).is_some()
                    })
                    .count();
                Reply::Integer(removed as i64)
            }
            b"exists" => {
                let present = arguments
                    .iter()
                    .filter(|key| self.live(key, now_ms).is_some())
                    .count();
                Reply::Integer(present as i64)
            }
            b"incr" => self.increment(&arguments[0], 1, now_ms),
            b"decr" => self.increment(&arguments[0], -1, now_ms),
            b"incrby" | b"decrby" => match parse_integer(&arguments[1]) {
                None => not_an_integer(),
                Some(by) if name == b"incrby" => self.increment(&arguments[0], by, now_ms),
                Some(by) => match by.checked_neg() {
                    Some(by) => self.increment(&arguments[0], by, now_ms),
                    None => Reply::error("decrement would overflow"),
                },
            },
            b"append" => self.append(&arguments[0], &arguments[1], now_ms),
            b"strlen" => match self.live(&arguments[0], now_ms).map(|entry| &entry.value) {
                None => Reply::Integer(0),
                Some(Value::String(bytes)) => Reply::Integer(bytes.len() as i64),
                Some(Value::List(_)) => wrong_type(),
            },
            b"mget" => {
                let values = arguments
                    .iter()
                    .map(
                        |key| match self.live(key, now_ms).map(|entry| &entry.value) {
                            Some(Value::String(bytes)) => Reply::bulk(bytes.clone()),
                            _ => Reply::Bulk(None),
                        },
                    )
                    .collect();
                Reply::Array(Some(values))
            }
            b"mset" => {
                if !arguments.len().is_multiple_of(2) {
                    return Reply::error("wrong number of arguments for 'mset' command");
                }
                for pair in arguments.chunks_exact(2) {
                    self.put(&pair[0], Value::String(pair[1].clone()), None);
                }
                Reply::OK
            }
            b"keys" => {
                let keys = self
                    .map
                    .iter()
                    .filter(|(key, entry)| {
                        !is_expired(entry, now_ms) && glob::matches(&arguments[0], &key.bytes)
                    })
                    .map(|(key, _)| key.bytes.clone());
                Reply::bulks(keys.collect::<Vec<_>>())
            }
            b"scan" => self.scan(arguments, now_ms),
            b"dbsize" => Reply::Integer(
                self.map
                    .values()
                    .filter(|entry| !is_expired(entry, now_ms))
                    .count() as i64,
            ),
            b"flushdb" | b"flushall" => match arguments {
                [] => self.flush(),
                [mode]
                    if mode.eq_ignore_ascii_case(b"sync")
                        || mode.eq_ignore_ascii_case(b"async") =>
                {
                    self.flush()
                }
                _ => syntax_error(),
            },
            b"lpush" | b"rpush" => self.push(name == b"lpush", arguments, now_ms),
            b"lpop" | b"rpop" => self.pop(name == b"lpop", arguments, now_ms),
            b"lrange" => self.range(arguments, now_ms),
            b"llen" => match self.live(&arguments[0], now_ms).map(|entry| &entry.value) {
                None => Reply::Integer(0),
                Some(Value::List(items)) => Reply::Integer(items.len() as i64),
                Some(Value::String(_)) => wrong_type(),
            },
            b"type" => Reply::Status(
                self.live(&arguments[0], now_ms)
                    .map_or("none", |entry| entry.value.type_name()),
            ),
            b"expire" | b"pexpire" => {
                let unit_ms = if name == b"expire" { 1000 } else { 1 };
                self.expire(&arguments[0], &arguments[1], unit_ms, now_ms)
            }
            b"ttl" | b"pttl" => {
                let unit_ms = if name == b"ttl" { 1000 } else { 1 };
                match self.live(&arguments[0], now_ms) {
                    None => Reply::Integer(-2),
                    Some(Entry {
                        expires_at_ms: None,
                        ..
                    }) => Reply::Integer(-1),
                    Some(Entry {
                        expires_at_ms: Some(at),
                        ..
                    }) => {
                        let left_ms = at.saturating_sub(now_ms);
                        Reply::Integer((left_ms.div_ceil(unit_ms)) as i64)
                    }
                }
            }
            b"persist" => match self.live_mut(&arguments[0], now_ms) {
                Some(entry) if entry.expires_at_ms.is_some() => {
                    entry.expires_at_ms = None;
                    Reply::Integer(1)
                }
                _ => Reply::Integer(0),
            },
            b"select" => match parse_integer(&arguments[0]) {
                Some(0) => Reply::OK,
                Some(_) => Reply::error("DB index is out of range"),
                None => not_an_integer(),
            },
            b"config" => config(arguments),
            b"command" => command_info(arguments),
            b"client" => client(arguments),
            b"info" => self.info(now_ms),
            _ => Reply::error("unknown command"),
        }
    }

    /// The entry at `key` if it has not expired; an expired one is removed.
    fn live(&mut self, key: &[u8], now_ms: u64) -> Option<&Entry> {
        self.live_mut(key, now_ms).map(|entry| &*entry)
    }

    fn live_mut(&mut self, key: &[u8], now_ms: u64) -> Option<&mut Entry> {
        let key = Key::new(key);
        if self
            .map
            .get(&key)
            .is_some_and(|entry| is_expired(entry, now_ms))
        {
            self.remove(&key);
            return None;
        }
        self.map.get_mut(&key)
    }

    fn remove(&mut self, key: &Key) -> Option<Entry> {
        let entry = self.map.remove(key)?;
        self.bytes = self
            .bytes
            .saturating_sub(key.bytes.len() + ENTRY_OVERHEAD_BYTES + entry.value.bytes());
        Some(entry)
    }

    /// Sets `key` to `value`, replacing any old value.
    fn put(&mut self, key: &[u8], value: Value, expires_at_ms: Option<u64>) {
        let key = Key::new(key);
        self.remove(&key);
        self.bytes += key.bytes.len() + ENTRY_OVERHEAD_BYTES + value.bytes();
        self.map.insert(
            key,
            Entry {
                value,
                expires_at_ms,
            },
        );
    }

    fn flush(&mut self) -> Reply {
        self.map.clear();
        self.bytes = 0;
        Reply::OK
    }

    /// `SET key value [NX | XX] [GET] [EX s | PX ms | EXAT s | PXAT ms |
    /// KEEPTTL]`.
    fn set(&mut self, arguments: &[Vec<u8>], now_ms: u64) -> Reply {
        let (key, value) = (&arguments[0], &arguments[1]);
        let mut condition: Option<bool> = None;
        let mut want_old = false;
        let mut expiry: Option<Option<u64>> = None;
        let mut keep_ttl = false;
        let mut options = arguments[2..].iter();
        while let Some(option) = options.next() {
            let option = option.to_ascii_lowercase();
            match option.as_slice() {
                b"nx" | b"xx" if condition.is_none() => condition = Some(option == b"nx"),
                b"get" => want_old = true,
                b"keepttl" if expiry.is_none() => keep_ttl = true,
                b"ex" | b"px" | b"exat" | b"pxat" if expiry.is_none() && !keep_ttl => {
                    let Some(amount) = options.next().and_then(|amount| parse_integer(amount))
                    else {
                        return not_an_integer();
                    };
                    if amount <= 0 {
                        return Reply::error("invalid expire time in 'set' command");
                    }
                    let amount = amount.unsigned_abs();
                    let at = match option.as_slice() {
                        b"ex" => amount
                            .checked_mul(1000)
                            .and_then(|ms| now_ms.checked_add(ms)),
                        b"px" => now_ms.checked_add(amount),
                        b"exat" => amount.checked_mul(1000),
                        _ => Some(amount),
                    };
                    let Some(at) = at else {
                        return Reply::error("invalid expire time in 'set' command");
                    };
                    expiry = Some(Some(at));
                }
                _ => return syntax_error(),
            }
        }
        let old = self.live(key, now_ms).cloned();
        let old_reply = match old.as_ref().map(|entry| &entry.value) {
            None => Reply::Bulk(None),
            Some(Value::String(bytes)) => Reply::bulk(bytes.clone()),
            Some(Value::List(_)) if want_old => return wrong_type(),
            Some(Value::List(_)) => Reply::Bulk(None),
        };
        if let Some(only_if_absent) = condition
            && only_if_absent == old.is_some()
        {
            return if want_old {
                old_reply
            } else {
                Reply::Bulk(None)
            };
        }
        let expires_at_ms = match expiry {
            Some(at) => at,
            None if keep_ttl => old.and_then(|entry| entry.expires_at_ms),
            None => None,
        };
        self.put(key, Value::String(value.clone()), expires_at_ms);
        if want_old { old_reply } else { Reply::OK }
    }

    fn increment(&mut self, key: &[u8], by: i64, now_ms: u64) -> Reply {
        let (current, expires_at_ms) = match self.live(key, now_ms) {
            None => (0, None),
            Some(Entry {
                value: Value::String(bytes),
                expires_at_ms,
            }) => match parse_integer(bytes) {
                Some(current) => (current, *expires_at_ms),
                None => return not_an_integer(),
            },
            Some(_) => return wrong_type(),
        };
        let Some(next) = current.checked_add(by) else {
            return Reply::error("increment or decrement would overflow");
        };
        self.put(
            key,
            Value::String(next.to_string().into_bytes()),
            expires_at_ms,
        );
        Reply::Integer(next)
    }

    fn append(&mut self, key: &[u8], suffix: &[u8], now_ms: u64) -> Reply {
        let length = match self.live_mut(key, now_ms).map(|entry| &mut entry.value) {
            None => None,
            Some(Value::String(bytes)) => {
                bytes.extend_from_slice(suffix);
                Some(bytes.len())
            }
            Some(Value::List(_)) => return wrong_type(),
        };
        match length {
            Some(length) => {
                self.bytes += suffix.len();
                Reply::Integer(length as i64)
            }
            None => {
                self.put(key, Value::String(suffix.to_vec()), None);
                Reply::Integer(suffix.len() as i64)
            }
        }
    }

    fn push(&mut self, front: bool, arguments: &[Vec<u8>], now_ms: u64) -> Reply {
        let key = &arguments[0];
        let items = &arguments[1..];
        let added: usize = items
            .iter()
            .map(|item| item.len() + ELEMENT_OVERHEAD_BYTES)
            .sum();
        let length = match self.live_mut(key, now_ms).map(|entry| &mut entry.value) {
            Some(Value::List(list)) => {
                for item in items {
                    if front {
                        list.push_front(item.clone());
                    } else {
                        list.push_back(item.clone());
                    }
                }
                Some(list.len())
            }
            Some(Value::String(_)) => return wrong_type(),
            None => None,
        };
        match length {
            Some(length) => {
                self.bytes += added;
                Reply::Integer(length as i64)
            }
            None => {
                let mut list = VecDeque::with_capacity(items.len());
                for item in items {
                    if front {
                        list.push_front(item.clone());
                    } else {
                        list.push_back(item.clone());
                    }
                }
                self.put(key, Value::List(list), None);
                Reply::Integer(items.len() as i64)
            }
        }
    }

    /// `LPOP`/`RPOP key [count]`: one element (or nil), or with a count an
    /// array of up to that many (or a nil array).
    fn pop(&mut self, front: bool, arguments: &[Vec<u8>], now_ms: u64) -> Reply {
        let count = match arguments {
            [_] => None,
            [_, count] => match parse_integer(count) {
                Some(count) if count >= 0 => Some(usize::try_from(count).unwrap_or(usize::MAX)),
                _ => return Reply::error("value is out of range, must be positive"),
            },
            _ => return syntax_error(),
        };
        let key = &arguments[0];
        let (popped, is_empty) = match self.live_mut(key, now_ms).map(|entry| &mut entry.value) {
            None => {
                return if count.is_some() {
                    Reply::Array(None)
                } else {
                    Reply::Bulk(None)
                };
            }
            Some(Value::String(_)) => return wrong_type(),
            Some(Value::List(list)) => {
                let take = count.unwrap_or(1).min(list.len());
                let popped: Vec<Vec<u8>> = if front {
                    list.drain(..take).collect()
                } else {
                    let mut tail: Vec<Vec<u8>> = list.drain(list.len() - take..).collect();
                    tail.reverse();
                    tail
                };
                (popped, list.is_empty())
            }
        };
        let freed: usize = popped
            .iter()
            .map(|item| item.len() + ELEMENT_OVERHEAD_BYTES)
            .sum();
        self.bytes = self.bytes.saturating_sub(freed);
        if is_empty {
            self.remove(&Key::new(key));
        }
        match count {
            None => Reply::Bulk(popped.into_iter().next()),
            Some(_) => Reply::bulks(popped),
        }
    }

    fn range(&mut self, arguments: &[Vec<u8>], now_ms: u64) -> Reply {
        let (Some(start), Some(stop)) =
            (parse_integer(&arguments[1]), parse_integer(&arguments[2]))
        else {
            return not_an_integer();
        };
        let list = match self.live(&arguments[0], now_ms).map(|entry| &entry.value) {
            None => return Reply::Array(Some(Vec::new())),
            Some(Value::String(_)) => return wrong_type(),
            Some(Value::List(list)) => list,
        };
        let length = list.len() as i64;
        let resolve = |index: i64| if index < 0 { length + index } else { index };
        let start = resolve(start).max(0);
        let stop = resolve(stop).min(length - 1);
        if start > stop {
            return Reply::Array(Some(Vec::new()));
        }
        let (start, stop) = (start as usize, stop as usize);
        Reply::bulks(list.range(start..=stop).cloned().collect::<Vec<_>>())
    }

    fn expire(&mut self, key: &[u8], amount: &[u8], unit_ms: u64, now_ms: u64) -> Reply {
        let Some(amount) = parse_integer(amount) else {
            return not_an_integer();
        };
        if self.live(key, now_ms).is_none() {
            return Reply::Integer(0);
        }
        if amount <= 0 {
            self.remove(&Key::new(key));
            return Reply::Integer(1);
        }
        let Some(at) = amount
            .unsigned_abs()
            .checked_mul(unit_ms)
            .and_then(|ms| now_ms.checked_add(ms))
        else {
            return Reply::error("invalid expire time in 'expire' command");
        };
        if let Some(entry) = self.live_mut(key, now_ms) {
            entry.expires_at_ms = Some(at);
        }
        Reply::Integer(1)
    }

    /// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.
    fn scan(&mut self, arguments: &[Vec<u8>], now_ms: u64) -> Reply {
        let Some(cursor) = std::str::from_utf8(&arguments[0])
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
        else {
            return Reply::error("invalid cursor");
        };
        let mut pattern: Option<&[u8]> = None;
        let mut count = 10;
        let mut type_name: Option<Vec<u8>> = None;
        let mut options = arguments[1..].iter();
        while let Some(option) = options.next() {
            let Some(value) = options.next() else {
                return syntax_error();
            };
            match option.to_ascii_lowercase().as_slice() {
                b"match" => pattern = Some(value),
                b"count" => match parse_integer(value) {
                    Some(asked) if asked >= 1 => {
                        count = usize::try_from(asked)
                            .unwrap_or(usize::MAX)
                            .min(MAX_SCAN_COUNT);
                    }
                    Some(_) => return syntax_error(),
                    None => return not_an_integer(),
                },
                b"type" => type_name = Some(value.to_ascii_lowercase()),
                _ => return syntax_error(),
            }
        }
        // Cursor c resumes at hash c - 1: 0 starts, and 0 comes back when
        // the scan is done. A page ends at a hash boundary, so keys sharing
        // a hash are never split between pages and a scan always advances.
        let start = Key {
            hash: cursor.saturating_sub(1),
            bytes: Vec::new(),
        };
        let mut keys = Vec::new();
        let mut next_cursor = 0;
        let mut last_hash = None;
        for (looked, (key, entry)) in self
            .map
            .range((Bound::Included(&start), Bound::Unbounded))
            .enumerate()
        {
            if looked >= count && last_hash != Some(key.hash) {
                next_cursor = key.hash + 1;
                break;
            }
            last_hash = Some(key.hash);
            let wanted = !is_expired(entry, now_ms)
                && pattern.is_none_or(|pattern| glob::matches(pattern, &key.bytes))
                && type_name
                    .as_deref()
                    .is_none_or(|name| name == entry.value.type_name().as_bytes());
            if wanted {
                keys.push(key.bytes.clone());
            }
        }
        Reply::Array(Some(vec![
            Reply::bulk(next_cursor.to_string()),
            Reply::bulks(keys),
        ]))
    }

    /// `INFO`: what clients and tools read at connection time.
    fn info(&self, now_ms: u64) -> Reply {
        let live = self.map.values().filter(|entry| !is_expired(entry, now_ms));
        let (keys, expires) = live.fold((0, 0), |(keys, expires), entry| {
            (
                keys + 1,
                expires + usize::from(entry.expires_at_ms.is_some()),
            )
        });
        let mut text = String::from(
            "# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\n\
             amber:redis-core\r\n\r\n",
        );
        text.push_str(&format!(
            "# Memory\r\nused_memory:{}\r\nmaxmemory:{}\r\n\r\n",
            self.bytes, self.limits.max_bytes
        ));
        text.push_str("# Keyspace\r\n");
        if keys > 0 {
            text.push_str(&format!("db0:keys={keys},expires={expires},avg_ttl=0\r\n"));
        }
        Reply::bulk(text)
    }
}

fn is_expired(entry: &Entry, now_ms: u64) -> bool {
    entry.expires_at_ms.is_some_and(|at| at <= now_ms)
}

/// `CONFIG GET`: `redis-benchmark` asks for `save` and `appendonly` before
/// it starts. Persistence is the machine's, not the app's: neither RDB
/// snapshots nor an append-only file exist, every change is in memory that
/// the kernel checkpoints.
fn config(arguments: &[Vec<u8>]) -> Reply {
    let sub = arguments[0].to_ascii_lowercase();
    match (sub.as_slice(), &arguments[1..]) {
        (b"get", patterns) if !patterns.is_empty() => {
            let known: [(&str, &str); 4] = [
                ("save", ""),
                ("appendonly", "no"),
                ("databases", "1"),
                ("maxmemory-policy", "noeviction"),
            ];
            let mut pairs = Vec::new();
            for (name, value) in known {
                if patterns
                    .iter()
                    .any(|pattern| glob::matches(&pattern.to_ascii_lowercase(), name.as_bytes()))
                {
                    pairs.push(name.as_bytes().to_vec());
                    pairs.push(value.as_bytes().to_vec());
                }
            }
            Reply::bulks(pairs)
        }
        (b"set" | b"resetstat" | b"rewrite", _) => {
            Reply::error("CONFIG changes are not supported: the app's image sets its limits")
        }
        _ => Reply::error(format!(
            "unknown subcommand '{}'",
            String::from_utf8_lossy(&arguments[0])
        )),
    }
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND DOCS`: `redis-cli` asks for the
/// docs to show hints and does without them.
fn command_info(arguments: &[Vec<u8>]) -> Reply {
    match arguments
        .first()
        .map(|sub| sub.to_ascii_lowercase())
        .as_deref()
    {
        Some(b"count") => Reply::Integer(COMMAND_NAMES.len() as i64),
        None | Some(b"docs" | b"info") => Reply::Array(Some(Vec::new())),
        Some(_) => Reply::error("unknown subcommand"),
    }
}

/// Every command [`arity`] knows, for `COMMAND COUNT`.
const COMMAND_NAMES: &[&str] = &[
    "get", "incr", "decr", "strlen", "llen", "type", "ttl", "pttl", "persist", "keys", "echo",
    "select", "incrby", "decrby", "append", "expire", "pexpire", "lrange", "dbsize", "ping",
    "flushdb", "flushall", "command", "info", "quit", "del", "exists", "mget", "lpop", "rpop",
    "scan", "config", "client", "set", "mset", "lpush", "rpush",
];

/// `CLIENT SETNAME`, `SETINFO` (clients announce themselves), `GETNAME`,
/// `ID`: accepted, names not kept.
fn client(arguments: &[Vec<u8>]) -> Reply {
    match arguments[0].to_ascii_lowercase().as_slice() {
        b"setname" | b"setinfo" => Reply::OK,
        b"getname" => Reply::Bulk(None),
        b"id" => Reply::Integer(1),
        _ => Reply::error("unknown subcommand"),
    }
}

#[cfg(test)]
mod tests;
