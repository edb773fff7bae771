//! A Redis-compatible server on port 6379: redis-core over `amber::net`.
//!
//! One thread serves every client through `amber::net::serve` (a `poll`
//! loop). The keyspace is a `redis_core::Store`, a plain `BTreeMap` in the
//! domain's linear memory: there is no persistence code, the domain's
//! commits are the persistence. Expiry is on the domain's clock, which
//! carries on across reboots and moves.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use amber::net::{Flow, ServerLimits, Service, TcpListener, serve};
use redis_core::{Limits, Session, Store, StoreLimits};

/// The port the image declares (Cargo.toml, `[package.metadata.amber]`).
const PORT: u16 = 6379;

/// How many keys with an expiry one tick looks at.
const PURGE_BUDGET_KEYS: usize = 256;

/// The keyspace, shared by every connection.
#[derive(Debug)]
struct Redis {
    store: Store,
    limits: Limits,
}

fn now_ms() -> u64 {
    amber::now_ns() / 1_000_000
}

impl Service for Redis {
    type Session = Session;

    fn open(&mut self) -> Session {
        Session::new(self.limits)
    }

    fn receive(&mut self, session: &mut Session, bytes: &[u8], out: &mut Vec<u8>) -> Flow {
        match session.receive(bytes, &mut self.store, now_ms(), out) {
            redis_core::Flow::KeepOpen => Flow::KeepOpen,
            redis_core::Flow::Close => Flow::Close,
        }
    }

    fn tick(&mut self, now_ns: u64) {
        self.store
            .purge_expired(now_ns / 1_000_000, PURGE_BUDGET_KEYS);
    }
}

fn main() -> ExitCode {
    let listener = match TcpListener::bind(PORT) {
        Ok(listener) => listener,
        Err(error) => {
            amber::error!("redis: cannot listen on port {PORT}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut redis = Redis {
        store: Store::new(StoreLimits::default()),
        limits: Limits::default(),
    };
    amber::info!("redis ready on port {PORT}");
    match serve(&listener, &mut redis, ServerLimits::default()) {
        Ok(never) => match never {},
        Err(error) => {
            amber::error!("redis: serving port {PORT} failed: {error}");
            ExitCode::FAILURE
        }
    }
}
