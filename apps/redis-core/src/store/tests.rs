//! The commands against what Redis 7 answers.

use super::*;

fn run(store: &mut Store, line: &str) -> Reply {
    run_at(store, line, 0)
}

fn run_at(store: &mut Store, line: &str, now_ms: u64) -> Reply {
    let command: Vec<Vec<u8>> = line
        .split_whitespace()
        .map(|word| word.as_bytes().to_vec())
        .collect();
    store.execute(&command, now_ms).reply
}

fn bulk(text: &str) -> Reply {
    Reply::bulk(text)
}

fn bulks(items: &[&str]) -> Reply {
    Reply::bulks(items.iter().map(|item| item.as_bytes().to_vec()))
}

#[test]
fn strings_set_get_and_count() {
    let mut store = Store::default();
    assert_eq!(run(&mut store, "PING"), Reply::Status("PONG"));
    assert_eq!(run(&mut store, "ping hi"), bulk("hi"));
    assert_eq!(run(&mut store, "GET k"), Reply::Bulk(None));
    assert_eq!(run(&mut store, "SET k v1"), Reply::OK);
    assert_eq!(run(&mut store, "get k"), bulk("v1"));
    assert_eq!(run(&mut store, "APPEND k 23"), Reply::Integer(4));
    assert_eq!(run(&mut store, "STRLEN k"), Reply::Integer(4));
    assert_eq!(run(&mut store, "APPEND fresh abc"), Reply::Integer(3));
    assert_eq!(run(&mut store, "MSET a 1 b 2"), Reply::OK);
    assert_eq!(
        run(&mut store, "MGET a nothing b"),
        Reply::Array(Some(vec![bulk("1"), Reply::Bulk(None), bulk("2")]))
    );
    assert_eq!(run(&mut store, "EXISTS a b a nothing"), Reply::Integer(3));
    assert_eq!(run(&mut store, "DEL a nothing"), Reply::Integer(1));
    assert_eq!(run(&mut store, "DBSIZE"), Reply::Integer(3));
    assert_eq!(run(&mut store, "TYPE k"), Reply::Status("string"));
    assert_eq!(run(&mut store, "TYPE nothing"), Reply::Status("none"));
    assert_eq!(run(&mut store, "FLUSHDB"), Reply::OK);
    assert_eq!(run(&mut store, "DBSIZE"), Reply::Integer(0));
    assert_eq!(store.used_bytes(), 0);
}

#[test]
fn set_options_follow_redis() {
    let mut store = Store::default();
    assert_eq!(run(&mut store, "SET k 1 XX"), Reply::Bulk(None));
    assert_eq!(run(&mut store, "SET k 1 NX"), Reply::OK);
    assert_eq!(run(&mut store, "SET k 2 NX"), Reply::Bulk(None));
    assert_eq!(run(&mut store, "SET k 3 XX GET"), bulk("1"));
    assert_eq!(run(&mut store, "SET k 4 NX XX"), syntax_error());
    assert_eq!(
        run(&mut store, "SET k 4 EX 0"),
        Reply::error("invalid expire time in 'set' command")
    );
    assert_eq!(run(&mut store, "SET k 4 EX x"), not_an_integer());
    assert_eq!(run(&mut store, "SET k 4 EX 10 KEEPTTL"), syntax_error());
    assert_eq!(run(&mut store, "SET k 4 BOGUS"), syntax_error());
    assert_eq!(run(&mut store, "GET k"), bulk("3"));
}

#[test]
fn counters_check_what_they_add() {
    let mut store = Store::default();
    assert_eq!(run(&mut store, "INCR n"), Reply::Integer(1));
    assert_eq!(run(&mut store, "INCRBY n 41"), Reply::Integer(42));
    assert_eq!(run(&mut store, "DECR n"), Reply::Integer(41));
    assert_eq!(run(&mut store, "DECRBY n 50"), Reply::Integer(-9));
    assert_eq!(run(&mut store, "SET s abc"), Reply::OK);
    assert_eq!(run(&mut store, "INCR s"), not_an_integer());
    for odd in ["+1", "01", " 1", "-0", "1.5", ""] {
        assert_eq!(parse_integer(odd.as_bytes()), None, "{odd:?}");
    }
    assert_eq!(run(&mut store, "SET big 9223372036854775807"), Reply::OK);
    assert_eq!(
        run(&mut store, "INCR big"),
        Reply::error("increment or decrement would overflow")
    );
    assert_eq!(
        run(&mut store, "DECRBY n -9223372036854775808"),
        Reply::error("decrement would overflow")
    );
}

#[test]
fn lists_push_pop_and_range() {
    let mut store = Store::default();
    assert_eq!(run(&mut store, "RPUSH l a b c"), Reply::Integer(3));
    assert_eq!(run(&mut store, "LPUSH l z y"), Reply::Integer(5));
    assert_eq!(
        run(&mut store, "LRANGE l 0 -1"),
        bulks(&["y", "z", "a", "b", "c"])
    );
    assert_eq!(run(&mut store, "LRANGE l -2 100"), bulks(&["b", "c"]));
    assert_eq!(run(&mut store, "LRANGE l 3 1"), bulks(&[]));
    assert_eq!(run(&mut store, "LRANGE nothing 0 -1"), bulks(&[]));
    assert_eq!(run(&mut store, "LLEN l"), Reply::Integer(5));
    assert_eq!(run(&mut store, "LPOP l"), bulk("y"));
    assert_eq!(run(&mut store, "RPOP l 2"), bulks(&["c", "b"]));
    assert_eq!(run(&mut store, "LPOP l 10"), bulks(&["z", "a"]));
    assert_eq!(run(&mut store, "LPOP l"), Reply::Bulk(None));
    assert_eq!(run(&mut store, "LPOP l 1"), Reply::Array(None));
    assert_eq!(
        run(&mut store, "EXISTS l"),
        Reply::Integer(0),
        "an emptied list is gone"
    );
    assert_eq!(
        run(&mut store, "LPOP l -1"),
        Reply::error("value is out of range, must be positive")
    );
    assert_eq!(run(&mut store, "SET s v"), Reply::OK);
    assert_eq!(run(&mut store, "LPUSH s x"), wrong_type());
    assert_eq!(run(&mut store, "RPUSH l x"), Reply::Integer(1));
    assert_eq!(run(&mut store, "GET l"), wrong_type());
    assert_eq!(run(&mut store, "TYPE l"), Reply::Status("list"));
    assert_eq!(
        store.used_bytes(),
        2 * ENTRY_OVERHEAD_BYTES + 3 + 1 + ELEMENT_OVERHEAD_BYTES
    );
}

#[test]
fn keys_expire_on_the_callers_clock() {
    let mut store = Store::default();
    assert_eq!(run_at(&mut store, "SET k v PX 100", 1000), Reply::OK);
    assert_eq!(run_at(&mut store, "PTTL k", 1040), Reply::Integer(60));
    assert_eq!(run_at(&mut store, "TTL k", 1040), Reply::Integer(1));
    assert_eq!(run_at(&mut store, "GET k", 1099), bulk("v"));
    assert_eq!(run_at(&mut store, "GET k", 1100), Reply::Bulk(None));
    assert_eq!(run_at(&mut store, "TTL k", 1100), Reply::Integer(-2));
    assert_eq!(run_at(&mut store, "SET k v", 0), Reply::OK);
    assert_eq!(run_at(&mut store, "TTL k", 0), Reply::Integer(-1));
    assert_eq!(run_at(&mut store, "EXPIRE k 5", 0), Reply::Integer(1));
    assert_eq!(run_at(&mut store, "SET k w KEEPTTL", 10), Reply::OK);
    assert_eq!(run_at(&mut store, "PTTL k", 10), Reply::Integer(4990));
    assert_eq!(run_at(&mut store, "PERSIST k", 10), Reply::Integer(1));
    assert_eq!(run_at(&mut store, "GET k", 1_000_000), bulk("w"));
    assert_eq!(run_at(&mut store, "EXPIRE k 0", 0), Reply::Integer(1));
    assert_eq!(run_at(&mut store, "EXISTS k", 0), Reply::Integer(0));
    assert_eq!(run_at(&mut store, "EXPIRE nothing 5", 0), Reply::Integer(0));
    for index in 0..10 {
        run_at(&mut store, &format!("SET t{index} v EX 1"), 0);
    }
    run_at(&mut store, "SET kept v", 0);
    assert_eq!(store.purge_expired(1000, 100), 10);
    assert_eq!(store.len(), 1);
}

#[test]
fn keys_and_scan_find_what_matches() {
    let mut store = Store::default();
    for index in 0..100 {
        run(&mut store, &format!("SET user:{index} v"));
    }
    run(&mut store, "RPUSH queue a");
    let Reply::Array(Some(keys)) = run(&mut store, "KEYS user:1?") else {
        panic!("KEYS gives an array");
    };
    assert_eq!(keys.len(), 10);
    // A whole scan, small pages, keys removed and added on the way: every
    // key present throughout comes back.
    let mut cursor = "0".to_string();
    let mut seen = std::collections::BTreeSet::new();
    let mut pages = 0;
    loop {
        let Reply::Array(Some(page)) =
            run(&mut store, &format!("SCAN {cursor} MATCH user:* COUNT 7"))
        else {
            panic!("SCAN gives an array");
        };
        let [Reply::Bulk(Some(next)), Reply::Array(Some(keys))] = page.as_slice() else {
            panic!("SCAN gives a cursor and keys: {page:?}");
        };
        for key in keys {
            let Reply::Bulk(Some(key)) = key else {
                panic!("keys are bulk strings");
            };
            seen.insert(String::from_utf8(key.clone()).unwrap());
        }
        pages += 1;
        run(&mut store, &format!("DEL user:{}", 90 + pages % 10));
        run(&mut store, &format!("SET user:new{pages} v"));
        cursor = String::from_utf8(next.clone()).unwrap();
        if cursor == "0" {
            break;
        }
        assert!(pages < 100, "a scan ends");
    }
    for index in 0..90 {
        assert!(
            seen.contains(&format!("user:{index}")),
            "user:{index} was scanned"
        );
    }
    assert!(!seen.contains("queue"));
    let Reply::Array(Some(page)) = run(&mut store, "SCAN 0 TYPE list COUNT 1000") else {
        panic!("SCAN gives an array");
    };
    assert_eq!(page[1], bulks(&["queue"]));
    assert_eq!(run(&mut store, "SCAN x"), Reply::error("invalid cursor"));
    assert_eq!(run(&mut store, "SCAN 0 COUNT 0"), syntax_error());
}

#[test]
fn the_memory_limit_refuses_growth_not_reads_or_deletes() {
    let mut store = Store::new(StoreLimits { max_bytes: 1000 });
    let value = "x".repeat(600);
    assert_eq!(run(&mut store, &format!("SET a {value}")), Reply::OK);
    assert_eq!(run(&mut store, &format!("SET b {value}")), Reply::OK);
    assert_eq!(run(&mut store, "SET c 1"), out_of_memory());
    assert_eq!(run(&mut store, "RPUSH l 1"), out_of_memory());
    assert_eq!(run(&mut store, "GET a"), bulk(&value));
    assert_eq!(run(&mut store, "DEL b"), Reply::Integer(1));
    assert_eq!(run(&mut store, "SET c 1"), Reply::OK);
}

#[test]
fn client_tools_get_what_they_ask_at_start() {
    let mut store = Store::default();
    assert_eq!(
        run(&mut store, "CONFIG GET save"),
        Reply::Array(Some(vec![bulk("save"), bulk("")]))
    );
    assert_eq!(
        run(&mut store, "CONFIG GET appendonly"),
        Reply::Array(Some(vec![bulk("appendonly"), bulk("no")]))
    );
    assert_eq!(run(&mut store, "CONFIG GET nothing"), bulks(&[]));
    assert_eq!(run(&mut store, "COMMAND DOCS"), bulks(&[]));
    assert_eq!(run(&mut store, "CLIENT SETINFO lib-name x"), Reply::OK);
    assert_eq!(run(&mut store, "SELECT 0"), Reply::OK);
    assert_eq!(
        run(&mut store, "SELECT 1"),
        Reply::error("DB index is out of range")
    );
    let Reply::Bulk(Some(info)) = run(&mut store, "INFO") else {
        panic!("INFO gives a bulk string");
    };
    assert!(String::from_utf8(info).unwrap().contains("redis_version:"));
    let quit = store.execute(&[b"QUIT".to_vec()], 0);
    assert_eq!((quit.reply, quit.close), (Reply::OK, true));
    for name in COMMAND_NAMES {
        assert!(arity(name.as_bytes()).is_some(), "{name} has an arity");
    }
}

#[test]
fn wrong_and_unknown_commands_are_errors_naming_them() {
    let mut store = Store::default();
    assert_eq!(
        run(&mut store, "GET"),
        Reply::error("wrong number of arguments for 'get' command")
    );
    assert_eq!(
        run(&mut store, "GET a b"),
        Reply::error("wrong number of arguments for 'get' command")
    );
    assert_eq!(
        run(&mut store, "MSET a"),
        Reply::error("wrong number of arguments for 'mset' command")
    );
    assert_eq!(
        run(&mut store, "MSET a 1 b"),
        Reply::error("wrong number of arguments for 'mset' command")
    );
    assert_eq!(
        run(&mut store, "NOPE x"),
        Reply::error("unknown command 'NOPE', with args beginning with: 'x' ")
    );
    assert_eq!(store.execute(&[], 0).reply, Reply::error("empty command"));
}
