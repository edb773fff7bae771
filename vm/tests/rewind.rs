//! A guest rewound into a blocking call that returns at once ends its rewind.
//!
//! A restored guest re-enters the import it was suspended in, but the host
//! it finds may differ from the one it left: the socket table is the
//! record's, and a socket the guest holds may be unknown there (a rollback
//! once took the record from the live state rather than the snapshot). The
//! import then answers at once (`NoSuchSocket`, `BADF`), and it must still
//! end the rewind: asyncified code that goes on rewinding reaches
//! `unreachable`, which is how redis trapped after a rollback.

mod common;

use std::sync::Mutex;

use vm::abi::{DomainId, StatusCode, errno};
use vm::net::{ConnectionId, NetError, Network, Readiness};
use vm::{
    Commit, Domain, DomainRecord, DomainStatus, HashedHeapBacking, MemoryStorage, Platform,
    RunOutcome, Storage, Stream, Wake, new_engine,
};

/// A network with one client waiting on every port, which never sends.
#[derive(Debug, Default)]
struct OneClient {
    accepted: Mutex<bool>,
}

impl Network for OneClient {
    fn listen(&self, _domain: DomainId, _port: u16) -> Result<(), NetError> {
        Ok(())
    }
    fn unlisten(&self, _domain: DomainId, _port: u16) {}
    fn accept(&self, _domain: DomainId, _port: u16) -> Result<ConnectionId, NetError> {
        let mut accepted = self.accepted.lock().unwrap();
        if *accepted {
            return Err(NetError::WouldBlock);
        }
        *accepted = true;
        Ok(1)
    }
    fn listener_has_client(&self, _domain: DomainId, _port: u16) -> bool {
        !*self.accepted.lock().unwrap()
    }
    fn connect(&self, _: DomainId, _: [u8; 4], _: u16) -> Result<ConnectionId, NetError> {
        Err(NetError::Refused)
    }
    fn read(&self, _connection: ConnectionId, _buffer: &mut [u8]) -> Result<usize, NetError> {
        Err(NetError::WouldBlock)
    }
    fn write(&self, _connection: ConnectionId, _bytes: &[u8]) -> Result<usize, NetError> {
        Err(NetError::WouldBlock)
    }
    fn shutdown(&self, _connection: ConnectionId) {}
    fn close(&self, _connection: ConnectionId) {}
    fn connection_readiness(&self, _connection: ConnectionId) -> Readiness {
        Readiness::default()
    }
    fn forget_domain(&self, _domain: DomainId) {}
}

#[derive(Debug, Default)]
struct NetPlatform {
    network: OneClient,
}

impl Platform for NetPlatform {
    fn monotonic_ns(&self) -> u64 {
        0
    }
    fn realtime_ns(&self) -> u64 {
        0
    }
    fn fill_random(&self, bytes: &mut [u8]) {
        bytes.fill(7);
    }
    fn output(&self, _domain_name: &str, _stream: Stream, _line: &str) {}
    fn network(&self) -> &dyn Network {
        &self.network
    }
}

/// Memory storage whose record, once loaded, has forgotten the domain's
/// connections (as the live record of a rollback had, when the snapshot's
/// memory still held a connection closed since).
#[derive(Debug)]
struct Forgetful(MemoryStorage);

impl Storage for Forgetful {
    fn load(&mut self) -> Result<DomainRecord, vm::Error> {
        let mut record = self.0.load()?;
        record.network.connections.clear();
        Ok(record)
    }
    fn read_page(&mut self, page_index: u64, page: &mut [u8; 4096]) -> Result<(), vm::Error> {
        self.0.read_page(page_index, page)
    }
    fn stored_pages(&mut self) -> Result<Vec<u64>, vm::Error> {
        self.0.stored_pages()
    }
    fn commit(&mut self, commit: &Commit<'_>) -> Result<(), vm::Error> {
        self.0.commit(commit)
    }
}

/// Asyncified by hand as binaryen does it: while rewinding (`$state` 2)
/// the code before the call is skipped, and code that finds itself still
/// rewinding after the call traps with `unreachable`. `_start` accepts the
/// client (socket 4) and then makes `call`, which waits; its result goes
/// to address 8, and the asyncify state after it to address 12.
fn module(call: &str) -> String {
    format!(
        r#"(module
    (import "amber" "tcp_accept" (func $accept (param i32 i64) (result i32)))
    (import "amber" "net_poll" (func $poll (param i32 i32 i64) (result i32)))
    (import "wasi_snapshot_preview1" "fd_read"
        (func $fd_read (param i32 i32 i32 i32) (result i32)))
    (import "env" "memory" (memory 1 4))
    (global $state (export "amber.global.0") (mut i32) (i32.const 0))
    (global $data (export "amber.global.1") (mut i32) (i32.const 0))
    (func (export "asyncify_start_unwind") (param i32)
        (global.set $state (i32.const 1)) (global.set $data (local.get 0)))
    (func (export "asyncify_stop_unwind") (global.set $state (i32.const 0)))
    (func (export "asyncify_start_rewind") (param i32)
        (global.set $state (i32.const 2)) (global.set $data (local.get 0)))
    (func (export "asyncify_stop_rewind") (global.set $state (i32.const 0)))
    (func (export "asyncify_get_state") (result i32) (global.get $state))
    (func (export "_start") (local $result i32)
        (if (i32.eqz (global.get $state)) (then
            (i32.store (i32.const 0) (call $accept (i32.const 3) (i64.const -1)))
            ;; A poll entry for the connection: socket, READABLE.
            (i32.store (i32.const 100) (i32.load (i32.const 0)))
            (i32.store16 (i32.const 104) (i32.const 1))
            ;; One iovec of 16 bytes at 200.
            (i32.store (i32.const 120) (i32.const 200))
            (i32.store (i32.const 124) (i32.const 16))))
        (local.set $result {call})
        (if (i32.eq (global.get $state) (i32.const 1)) (then (return)))
        (if (i32.eq (global.get $state) (i32.const 2)) (then (unreachable)))
        (i32.store (i32.const 8) (local.get $result))
        (i32.store (i32.const 12) (global.get $state))))"#
    )
}

fn word(memory: &[u8], offset: usize) -> i32 {
    i32::from_le_bytes(memory[offset..offset + 4].try_into().unwrap())
}

/// Runs `call` until it waits on the connection, commits there, and opens
/// the commit again with the connection forgotten; returns what the
/// restored domain ended with and its memory.
fn restored_without_the_connection(call: &str) -> (RunOutcome, Vec<u8>) {
    let platform: std::sync::Arc<NetPlatform> = std::sync::Arc::default();
    let module = common::wasm(&module(call));
    let mut record = DomainRecord::new(DomainId::from_le_bytes([1; 16]), "rewind", module);
    record.network.listen = vec![8080];
    let open = |storage| {
        Domain::open_compiled(
            &new_engine(),
            platform.clone(),
            storage,
            Box::new(HashedHeapBacking::new()),
            None,
        )
        .expect("the domain opens")
    };
    let mut domain = open(Forgetful(MemoryStorage::new(record)));
    assert_eq!(domain.run(100_000), RunOutcome::Waiting);
    assert_eq!(word(domain.memory_bytes(), 0), 4, "the client's socket");
    assert_eq!(domain.wake(), Wake::OnMessage, "waiting on the connection");
    assert_eq!(domain.request_checkpoint(), Ok(true));
    assert_eq!(domain.record().network.connections, [4]);
    assert!(domain.record().suspension.is_some());
    domain.release_network();
    let mut restored = open(domain.into_storage());
    assert_eq!(restored.wake(), Wake::Now, "re-entering the call");
    let outcome = restored.run(100_000);
    (outcome, restored.memory_bytes().to_vec())
}

#[test]
fn a_poll_of_a_socket_the_restored_table_lacks_ends_the_rewind_and_says_no_such_socket() {
    let (outcome, memory) = restored_without_the_connection(
        "(call $poll (i32.const 100) (i32.const 1) (i64.const -1))",
    );
    assert_eq!(outcome, RunOutcome::Halted(DomainStatus::Exited(0)));
    assert_eq!(word(&memory, 8), StatusCode::NoSuchSocket.negated());
    assert_eq!(word(&memory, 12), 0, "the rewind is over");
}

#[test]
fn an_fd_read_of_a_socket_the_restored_table_lacks_ends_the_rewind_and_says_badf() {
    let (outcome, memory) = restored_without_the_connection(
        "(call $fd_read (i32.load (i32.const 0)) (i32.const 120) (i32.const 1) (i32.const 140))",
    );
    assert_eq!(outcome, RunOutcome::Halted(DomainStatus::Exited(0)));
    assert_eq!(word(&memory, 8), errno::BADF);
    assert_eq!(word(&memory, 12), 0, "the rewind is over");
}
