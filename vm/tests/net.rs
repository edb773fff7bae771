//! TCP for domains over an in-memory network: sockets, restore, poll, WASI.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vm::abi::{DomainId, StatusCode, errno};
use vm::net::{ConnectionId, NetError, Network, Readiness};
use vm::{
    Domain, DomainRecord, DomainStatus, HashedHeapBacking, MemoryStorage, Platform, RunOutcome,
    Storage, Stream, Wake, new_engine,
};

#[derive(Debug, Default)]
struct FakeConnection {
    domain: Option<DomainId>,
    /// From the client to the domain.
    inbound: VecDeque<u8>,
    /// From the domain to the client.
    outbound: Vec<u8>,
    is_reset: bool,
    is_shut: bool,
    is_closed: bool,
}

#[derive(Debug, Default)]
struct Inner {
    listeners: BTreeMap<u16, DomainId>,
    backlog: BTreeMap<u16, VecDeque<ConnectionId>>,
    connections: BTreeMap<ConnectionId, FakeConnection>,
    next_id: ConnectionId,
}

/// The machine's network, in memory; the test plays the clients.
#[derive(Debug, Default)]
struct FakeNetwork(Mutex<Inner>);

impl FakeNetwork {
    fn client_connect(&self, port: u16) -> ConnectionId {
        let mut inner = self.0.lock().unwrap();
        inner.next_id += 1;
        let id = inner.next_id;
        inner.connections.insert(id, FakeConnection::default());
        inner.backlog.entry(port).or_default().push_back(id);
        id
    }

    fn client_send(&self, id: ConnectionId, bytes: &[u8]) {
        let mut inner = self.0.lock().unwrap();
        let connection = inner.connections.get_mut(&id).unwrap();
        connection.inbound.extend(bytes);
    }

    fn client_received(&self, id: ConnectionId) -> Vec<u8> {
        self.0.lock().unwrap().connections[&id].outbound.clone()
    }

    fn listener_of(&self, port: u16) -> Option<DomainId> {
        self.0.lock().unwrap().listeners.get(&port).copied()
    }

    fn is_closed(&self, id: ConnectionId) -> bool {
        self.0.lock().unwrap().connections[&id].is_closed
    }
}

impl Network for FakeNetwork {
    fn listen(&self, domain: DomainId, port: u16) -> Result<(), NetError> {
        let mut inner = self.0.lock().unwrap();
        match inner.listeners.get(&port) {
            Some(holder) if *holder != domain => Err(NetError::PortTaken),
            _ => {
                inner.listeners.insert(port, domain);
                Ok(())
            }
        }
    }

    fn unlisten(&self, domain: DomainId, port: u16) {
        let mut inner = self.0.lock().unwrap();
        if inner.listeners.get(&port) == Some(&domain) {
            inner.listeners.remove(&port);
        }
    }

    fn accept(&self, domain: DomainId, port: u16) -> Result<ConnectionId, NetError> {
        let mut inner = self.0.lock().unwrap();
        if inner.listeners.get(&port) != Some(&domain) {
            return Err(NetError::NotListening);
        }
        let id = inner
            .backlog
            .get_mut(&port)
            .and_then(VecDeque::pop_front)
            .ok_or(NetError::WouldBlock)?;
        inner.connections.get_mut(&id).unwrap().domain = Some(domain);
        Ok(id)
    }

    fn listener_has_client(&self, domain: DomainId, port: u16) -> bool {
        let inner = self.0.lock().unwrap();
        inner.listeners.get(&port) == Some(&domain)
            && inner
                .backlog
                .get(&port)
                .is_some_and(|queue| !queue.is_empty())
    }

    fn connect(
        &self,
        _domain: DomainId,
        _address: [u8; 4],
        _port: u16,
    ) -> Result<ConnectionId, NetError> {
        Err(NetError::Refused)
    }

    fn read(&self, connection: ConnectionId, buffer: &mut [u8]) -> Result<usize, NetError> {
        let mut inner = self.0.lock().unwrap();
        let connection = inner
            .connections
            .get_mut(&connection)
            .ok_or(NetError::Closed)?;
        if connection.is_closed {
            return Err(NetError::Closed);
        }
        if connection.is_reset {
            return Err(NetError::Reset);
        }
        if connection.inbound.is_empty() {
            return Err(NetError::WouldBlock);
        }
        let count = buffer.len().min(connection.inbound.len());
        for (slot, byte) in buffer.iter_mut().zip(connection.inbound.drain(..count)) {
            *slot = byte;
        }
        Ok(count)
    }

    fn write(&self, connection: ConnectionId, bytes: &[u8]) -> Result<usize, NetError> {
        let mut inner = self.0.lock().unwrap();
        let connection = inner
            .connections
            .get_mut(&connection)
            .ok_or(NetError::Closed)?;
        if connection.is_closed || connection.is_shut {
            return Err(NetError::Closed);
        }
        connection.outbound.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn shutdown(&self, connection: ConnectionId) {
        if let Some(connection) = self.0.lock().unwrap().connections.get_mut(&connection) {
            connection.is_shut = true;
        }
    }

    fn close(&self, connection: ConnectionId) {
        if let Some(connection) = self.0.lock().unwrap().connections.get_mut(&connection) {
            connection.is_closed = true;
        }
    }

    fn connection_readiness(&self, connection: ConnectionId) -> Readiness {
        let inner = self.0.lock().unwrap();
        match inner.connections.get(&connection) {
            None
            | Some(FakeConnection {
                is_closed: true, ..
            }) => Readiness {
                hangup: true,
                ..Readiness::default()
            },
            Some(connection) => Readiness {
                readable: !connection.inbound.is_empty(),
                writable: true,
                hangup: connection.is_reset,
            },
        }
    }

    fn forget_domain(&self, domain: DomainId) {
        let mut inner = self.0.lock().unwrap();
        inner.listeners.retain(|_, holder| *holder != domain);
        for connection in inner.connections.values_mut() {
            if connection.domain == Some(domain) {
                connection.is_closed = true;
            }
        }
    }
}

/// A platform with a manual clock and the fake network.
#[derive(Debug, Default)]
struct NetPlatform {
    now_ns: AtomicU64,
    network: FakeNetwork,
}

impl Platform for NetPlatform {
    fn monotonic_ns(&self) -> u64 {
        self.now_ns.load(Ordering::SeqCst)
    }
    fn realtime_ns(&self) -> u64 {
        self.monotonic_ns()
    }
    fn fill_random(&self, bytes: &mut [u8]) {
        bytes.fill(7);
    }
    fn output(&self, _domain_name: &str, _stream: Stream, _line: &str) {}
    fn network(&self) -> &dyn Network {
        &self.network
    }
}

fn record(id: u8, wat: &str, listen: &[u16]) -> DomainRecord {
    let module = wat::parse_str(wat).expect("test WAT parses");
    let mut record = DomainRecord::new(DomainId::from_le_bytes([id; 16]), "net", module);
    record.network.listen = listen.to_vec();
    record
}

fn open(platform: &Arc<NetPlatform>, storage: Box<dyn Storage>) -> Result<Domain, vm::Error> {
    Domain::open(
        &new_engine(),
        platform.clone(),
        storage,
        Box::new(HashedHeapBacking::new()),
    )
}

fn open_new(platform: &Arc<NetPlatform>, id: u8, wat: &str, listen: &[u16]) -> Domain {
    let storage = MemoryStorage::new(record(id, wat, listen));
    open(platform, Box::new(storage)).expect("domain opens")
}

fn word(domain: &Domain, offset: usize) -> i32 {
    let bytes = &domain.memory_bytes()[offset..offset + 4];
    i32::from_le_bytes(bytes.try_into().unwrap())
}

const AMBER: &str = r#"
    (import "amber" "tcp_listener" (func $listener (param i32) (result i32)))
    (import "amber" "tcp_accept" (func $accept (param i32 i64) (result i32)))
    (import "amber" "tcp_read" (func $read (param i32 i32 i32 i64) (result i32)))
    (import "amber" "tcp_write" (func $write (param i32 i32 i32 i64) (result i32)))
    (import "amber" "tcp_shutdown" (func $shutdown (param i32) (result i32)))
    (import "amber" "tcp_close" (func $close (param i32) (result i32)))
    (import "amber" "net_poll" (func $poll (param i32 i32 i64) (result i32)))
    (import "env" "memory" (memory 1))
"#;

fn amber_module(body: &str) -> String {
    format!("(module {AMBER} (func (export \"_start\") (local $c i32) (local $n i32) {body}))")
}

#[test]
fn accept_read_write_close_round_trip_and_a_blocked_read_wakes_on_data() {
    let platform = Arc::new(NetPlatform::default());
    let wat = amber_module(
        "(i32.store (i32.const 0) (call $listener (i32.const 8080)))
         (local.set $c (call $accept (i32.load (i32.const 0)) (i64.const -1)))
         (i32.store (i32.const 4) (local.get $c))
         (local.set $n (call $read (local.get $c) (i32.const 100) (i32.const 64) (i64.const -1)))
         (i32.store (i32.const 8) (local.get $n))
         (i32.store (i32.const 12)
            (call $write (local.get $c) (i32.const 100) (local.get $n) (i64.const -1)))
         (i32.store (i32.const 16) (call $shutdown (local.get $c)))
         (i32.store (i32.const 20) (call $close (local.get $c)))",
    );
    let mut domain = open_new(&platform, 1, &wat, &[8080]);
    assert_eq!(platform.network.listener_of(8080), Some(domain.id()));
    assert_eq!(domain.run(100_000), RunOutcome::Waiting);
    assert_eq!(domain.wake(), Wake::OnMessage, "accept waits for a client");
    let client = platform.network.client_connect(8080);
    assert_eq!(domain.wake(), Wake::Now);
    assert_eq!(domain.run(100_000), RunOutcome::Waiting);
    assert_eq!(domain.wake(), Wake::OnMessage, "the read waits for data");
    platform.network.client_send(client, b"ping");
    assert_eq!(domain.wake(), Wake::Now, "data wakes the read");
    assert_eq!(
        domain.run(100_000),
        RunOutcome::Halted(DomainStatus::Exited(0))
    );
    assert_eq!(
        word(&domain, 0),
        3,
        "the first declared listener is socket 3"
    );
    assert_eq!(
        word(&domain, 4),
        4,
        "the first connection takes the next number"
    );
    assert_eq!(word(&domain, 8), 4);
    assert_eq!(word(&domain, 12), 4);
    assert_eq!(word(&domain, 16), StatusCode::Ok.code());
    assert_eq!(word(&domain, 20), StatusCode::Ok.code());
    assert_eq!(platform.network.client_received(client), b"ping");
    assert!(platform.network.is_closed(client));
    assert_eq!(
        platform.network.listener_of(8080),
        None,
        "an exited domain's port is free again"
    );
}

#[test]
fn an_undeclared_port_is_refused() {
    let platform = Arc::new(NetPlatform::default());
    let wat = amber_module(
        "(i32.store (i32.const 0) (call $listener (i32.const 9090)))
         (i32.store (i32.const 4) (call $listener (i32.const 70000)))
         (i32.store (i32.const 8) (call $listener (i32.const -1)))",
    );
    let mut domain = open_new(&platform, 1, &wat, &[8080]);
    assert_eq!(
        domain.run(100_000),
        RunOutcome::Halted(DomainStatus::Exited(0))
    );
    for offset in [0, 4, 8] {
        assert_eq!(word(&domain, offset), StatusCode::PortNotDeclared.negated());
    }
    assert_eq!(platform.network.listener_of(9090), None);
}

#[test]
fn a_port_another_domain_holds_refuses_the_open() {
    let platform = Arc::new(NetPlatform::default());
    let wat = amber_module("(drop (call $accept (i32.const 3) (i64.const -1)))");
    let first = open_new(&platform, 1, &wat, &[8080]);
    let storage = MemoryStorage::new(record(2, &wat, &[8081, 8080]));
    let error = open(&platform, Box::new(storage)).expect_err("the port is taken");
    assert_eq!(error, vm::Error::PortTaken { port: 8080 });
    let message = error.to_string();
    assert!(
        message.contains("8080") && message.contains("another domain"),
        "{message}"
    );
    assert_eq!(platform.network.listener_of(8080), Some(first.id()));
    assert_eq!(
        platform.network.listener_of(8081),
        None,
        "a refused open keeps no port"
    );
}

#[test]
fn a_restored_domain_listens_again_and_its_old_connection_reads_as_reset() {
    let platform = Arc::new(NetPlatform::default());
    // First run: accept and wait reading. After the restore (memory[200]
    // set), read the old connection's number: reset at once, then closed.
    let wat = amber_module(
        "(if (i32.eqz (i32.load (i32.const 200)))
           (then
             (i32.store (i32.const 200) (i32.const 1))
             (local.set $c (call $accept (i32.const 3) (i64.const -1)))
             (drop (call $read (local.get $c) (i32.const 100) (i32.const 64) (i64.const -1)))
             (unreachable)))
         (i32.store (i32.const 0) (call $read (i32.const 4) (i32.const 100) (i32.const 64) (i64.const -1)))
         (i32.store (i32.const 4) (call $write (i32.const 4) (i32.const 100) (i32.const 1) (i64.const -1)))
         (i32.store (i32.const 8) (call $close (i32.const 4)))
         (i32.store (i32.const 12) (call $read (i32.const 4) (i32.const 100) (i32.const 64) (i64.const -1)))",
    );
    let mut domain = open_new(&platform, 1, &wat, &[8080]);
    let client = platform.network.client_connect(8080);
    assert_eq!(domain.run(100_000), RunOutcome::Waiting);
    domain.commit().expect("commit at the blocked read");
    assert_eq!(domain.record().network.listen, [8080]);
    assert_eq!(domain.record().network.connections, [4]);
    domain.release_network();
    assert_eq!(platform.network.listener_of(8080), None);
    assert!(platform.network.is_closed(client));
    let storage = domain.into_storage();
    let mut restored = open(&platform, storage).expect("the restore opens");
    assert_eq!(platform.network.listener_of(8080), Some(restored.id()));
    assert_eq!(
        restored.run(100_000),
        RunOutcome::Halted(DomainStatus::Exited(0))
    );
    assert_eq!(word(&restored, 0), StatusCode::ConnectionReset.negated());
    assert_eq!(word(&restored, 4), StatusCode::ConnectionReset.negated());
    assert_eq!(word(&restored, 8), StatusCode::Ok.code());
    assert_eq!(word(&restored, 12), StatusCode::NoSuchSocket.negated());
}

#[test]
fn net_poll_reports_the_ready_sockets_among_several() {
    let platform = Arc::new(NetPlatform::default());
    // Entries at 300: {socket u32, interest u16, ready u16} x 3.
    let wat = amber_module(
        "(drop (call $accept (i32.const 3) (i64.const -1)))
         (drop (call $accept (i32.const 3) (i64.const -1)))
         (i32.store (i32.const 300) (i32.const 3))
         (i32.store16 (i32.const 304) (i32.const 1))
         (i32.store (i32.const 308) (i32.const 4))
         (i32.store16 (i32.const 312) (i32.const 1))
         (i32.store (i32.const 316) (i32.const 5))
         (i32.store16 (i32.const 320) (i32.const 1))
         (i32.store (i32.const 0) (call $poll (i32.const 300) (i32.const 3) (i64.const -1)))
         (i32.store (i32.const 4) (call $poll (i32.const 300) (i32.const 3) (i64.const 0)))",
    );
    let mut domain = open_new(&platform, 1, &wat, &[8080]);
    let _first = platform.network.client_connect(8080);
    let second = platform.network.client_connect(8080);
    assert_eq!(domain.run(100_000), RunOutcome::Waiting);
    assert_eq!(domain.wake(), Wake::OnMessage);
    platform.network.client_send(second, b"x");
    assert_eq!(domain.wake(), Wake::Now);
    assert_eq!(
        domain.run(100_000),
        RunOutcome::Halted(DomainStatus::Exited(0))
    );
    assert_eq!(word(&domain, 0), 1);
    assert_eq!(word(&domain, 4), 1, "a zero timeout polls once");
    let ready = |offset: usize| {
        u16::from_le_bytes(
            domain.memory_bytes()[offset..offset + 2]
                .try_into()
                .unwrap(),
        )
    };
    assert_eq!((ready(306), ready(314), ready(322)), (0, 0, 1));
}

#[test]
fn hostile_arguments_are_refused_without_panics() {
    let platform = Arc::new(NetPlatform::default());
    let wat = amber_module(
        "(i32.store (i32.const 0) (call $read (i32.const 99) (i32.const 100) (i32.const 4) (i64.const -1)))
         (i32.store (i32.const 4) (call $close (i32.const -1)))
         (i32.store (i32.const 8) (call $accept (i32.const 0) (i64.const -1)))
         (i32.store (i32.const 12) (call $read (i32.const 3) (i32.const 100) (i32.const 4) (i64.const -1)))
         (i32.store (i32.const 16) (call $poll (i32.const 300) (i32.const 1025) (i64.const 0)))
         (i32.store (i32.const 20) (call $poll (i32.const 300) (i32.const -1) (i64.const 0)))
         (i32.store (i32.const 300) (i32.const 77))
         (i32.store (i32.const 24) (call $poll (i32.const 300) (i32.const 1) (i64.const 0)))
         (i32.store (i32.const 28) (call $shutdown (i32.const 3)))
         (i32.store (i32.const 32) (call $write (i32.const 12345) (i32.const 0) (i32.const 1) (i64.const 0)))
         (drop (call $read (i32.const 3) (i32.const 100) (i32.const 0x7fffffff) (i64.const -1)))",
    );
    let mut domain = open_new(&platform, 1, &wat, &[8080]);
    let status = domain.run(100_000);
    let RunOutcome::Halted(DomainStatus::Trapped(reason)) = status else {
        let words: Vec<i32> = (0..9).map(|index| word(&domain, index * 4)).collect();
        panic!("a huge length traps, got {status:?} after {words:?}");
    };
    assert!(reason.contains("tcp_read"), "{reason}");
    let expected = [
        StatusCode::NoSuchSocket.negated(),
        StatusCode::NoSuchSocket.code(),
        StatusCode::NoSuchSocket.negated(),
        StatusCode::WrongSocket.negated(),
        StatusCode::TooLarge.negated(),
        StatusCode::TooLarge.negated(),
        StatusCode::NoSuchSocket.negated(),
        StatusCode::WrongSocket.code(),
        StatusCode::NoSuchSocket.negated(),
    ];
    for (index, status) in expected.iter().enumerate() {
        assert_eq!(word(&domain, index * 4), *status, "result {index}");
    }
}

#[test]
fn the_connection_cap_refuses_one_more() {
    let platform = Arc::new(NetPlatform::default());
    let wat = amber_module(
        "(loop $again
           (local.set $c (call $accept (i32.const 3) (i64.const 0)))
           (i32.store (i32.const 0) (local.get $c))
           (br_if $again (i32.gt_s (local.get $c) (i32.const 0))))",
    );
    let mut domain = open_new(&platform, 1, &wat, &[8080]);
    for _ in 0..=vm::abi::MAX_CONNECTIONS_PER_DOMAIN {
        platform.network.client_connect(8080);
    }
    assert_eq!(
        domain.run(1_000_000),
        RunOutcome::Halted(DomainStatus::Exited(0))
    );
    assert_eq!(word(&domain, 0), StatusCode::LimitReached.negated());
}

#[test]
fn reading_charges_fuel_for_the_bytes() {
    let fuel_for = |length: usize| {
        let platform = Arc::new(NetPlatform::default());
        let wat = amber_module(
            "(local.set $c (call $accept (i32.const 3) (i64.const -1)))
             (drop (call $read (local.get $c) (i32.const 1024) (i32.const 32768) (i64.const -1)))
             (drop (call $read (local.get $c) (i32.const 1024) (i32.const 32768) (i64.const -1)))",
        );
        let mut domain = open_new(&platform, 1, &wat, &[8080]);
        let client = platform.network.client_connect(8080);
        platform.network.client_send(client, &vec![b'x'; length]);
        assert_eq!(domain.run(1_000_000), RunOutcome::Waiting);
        domain.fuel_used()
    };
    let small = fuel_for(1);
    let large = fuel_for(16 * 1024);
    assert!(
        large - small >= (16 * 1024 - 1) / 4,
        "16 KiB read cost {large}, 1 byte {small}"
    );
}

const WASI: &str = r#"
    (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "sock_shutdown" (func $shutdown (param i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
    (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fdstat (param i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "fd_fdstat_set_flags" (func $setflags (param i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ (param i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
    (import "env" "memory" (memory 1))
"#;

fn wasi_module(body: &str) -> String {
    format!("(module {WASI} (func (export \"_start\") (local $c i32) {body}))")
}

#[test]
fn a_wasi_server_accepts_reads_writes_and_closes_as_std_does() {
    let platform = Arc::new(NetPlatform::default());
    // iovec at 400: {buf 500, len 64}; the accepted fd at 40, lengths at 44, 48.
    let wat = wasi_module(
        "(i32.store (i32.const 400) (i32.const 500))
         (i32.store (i32.const 404) (i32.const 64))
         (i32.store (i32.const 0) (call $environ (i32.const 52) (i32.const 56)))
         (i32.store (i32.const 4) (call $prestat (i32.const 3) (i32.const 60)))
         (i32.store (i32.const 8) (call $accept (i32.const 3) (i32.const 0) (i32.const 40)))
         (local.set $c (i32.load (i32.const 40)))
         (i32.store (i32.const 12) (call $read (local.get $c) (i32.const 400) (i32.const 1) (i32.const 44)))
         (i32.store (i32.const 404) (i32.load (i32.const 44)))
         (i32.store (i32.const 16) (call $write (local.get $c) (i32.const 400) (i32.const 1) (i32.const 48)))
         (i32.store (i32.const 20) (call $fdstat (local.get $c) (i32.const 64)))
         (i32.store (i32.const 24) (call $shutdown (local.get $c) (i32.const 2)))
         (i32.store (i32.const 28) (call $close (local.get $c)))
         (i32.store (i32.const 32) (call $close (local.get $c)))",
    );
    let mut domain = open_new(&platform, 1, &wat, &[8080]);
    assert_eq!(domain.run(100_000), RunOutcome::Waiting);
    let client = platform.network.client_connect(8080);
    assert_eq!(domain.run(100_000), RunOutcome::Waiting);
    platform.network.client_send(client, b"hello");
    assert_eq!(domain.wake(), Wake::Now);
    assert_eq!(
        domain.run(100_000),
        RunOutcome::Halted(DomainStatus::Exited(0))
    );
    assert_eq!(word(&domain, 0), errno::SUCCESS);
    assert_eq!(word(&domain, 52), 1, "one variable: LISTEN_FDS");
    assert_eq!(word(&domain, 56), "LISTEN_FDS=1\0".len() as i32);
    assert_eq!(word(&domain, 4), errno::BADF, "no preopen at the socket");
    assert_eq!(word(&domain, 8), errno::SUCCESS);
    assert_eq!(word(&domain, 40), 4);
    assert_eq!((word(&domain, 12), word(&domain, 44)), (errno::SUCCESS, 5));
    assert_eq!((word(&domain, 16), word(&domain, 48)), (errno::SUCCESS, 5));
    assert_eq!(word(&domain, 20), errno::SUCCESS);
    assert_eq!(domain.memory_bytes()[64], 6, "a stream socket");
    assert_eq!(word(&domain, 24), errno::SUCCESS);
    assert_eq!(word(&domain, 28), errno::SUCCESS);
    assert_eq!(word(&domain, 32), errno::BADF);
    assert_eq!(platform.network.client_received(client), b"hello");
}

#[test]
fn a_nonblocking_wasi_socket_returns_again_and_poll_oneoff_waits_on_it() {
    let platform = Arc::new(NetPlatform::default());
    // Subscription at 1000: userdata 9, tag 1 (fd_read), fd 3. Event at 2000.
    let wat = wasi_module(
        "(i32.store (i32.const 0) (call $setflags (i32.const 3) (i32.const 4)))
         (i32.store (i32.const 4) (call $accept (i32.const 3) (i32.const 0) (i32.const 40)))
         (i32.store (i32.const 8) (call $fdstat (i32.const 3) (i32.const 64)))
         (i64.store (i32.const 1000) (i64.const 9))
         (i32.store8 (i32.const 1008) (i32.const 1))
         (i32.store (i32.const 1016) (i32.const 3))
         (i32.store (i32.const 12) (call $poll (i32.const 1000) (i32.const 2000) (i32.const 1) (i32.const 44)))
         (i32.store (i32.const 16) (call $accept (i32.const 3) (i32.const 4) (i32.const 40)))
         (i32.store (i32.const 20) (call $setflags (i32.const 3) (i32.const 1)))
         (i32.store (i32.const 24) (call $setflags (i32.const 1) (i32.const 4)))",
    );
    let mut domain = open_new(&platform, 1, &wat, &[8080]);
    assert_eq!(domain.run(100_000), RunOutcome::Waiting, "the poll waits");
    assert_eq!(domain.wake(), Wake::OnMessage);
    platform.network.client_connect(8080);
    assert_eq!(domain.wake(), Wake::Now);
    assert_eq!(
        domain.run(100_000),
        RunOutcome::Halted(DomainStatus::Exited(0))
    );
    assert_eq!(word(&domain, 0), errno::SUCCESS);
    assert_eq!(word(&domain, 4), errno::AGAIN);
    assert_eq!(word(&domain, 8), errno::SUCCESS);
    let fdstat = &domain.memory_bytes()[64..68];
    assert_eq!(
        (fdstat[0], fdstat[2]),
        (6, 4),
        "a nonblocking stream socket"
    );
    assert_eq!(word(&domain, 12), errno::SUCCESS);
    assert_eq!(word(&domain, 44), 1, "one event");
    assert_eq!(word(&domain, 2000), 9, "the subscription's userdata");
    assert_eq!(domain.memory_bytes()[2010], 1, "an fd_read event");
    assert_eq!(word(&domain, 16), errno::SUCCESS);
    assert_eq!(word(&domain, 40), 4);
    assert_eq!(word(&domain, 20), errno::NOTSUP);
    assert_eq!(word(&domain, 24), errno::NOTSUP);
    assert_eq!(domain.record().network.nonblocking, [3, 4]);
}

/// Asyncified by hand (see persistence.rs' `COUNTER`): `_start` holds no
/// state across the call, so a rewind simply calls `tcp_accept` again.
const ASYNC_ACCEPT: &str = r#"(module
    (import "amber" "tcp_accept" (func $accept (param i32 i64) (result i32)))
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
    (func (export "_start") (local $socket i32)
        (local.set $socket (call $accept (i32.const 3) (i64.const -1)))
        (if (i32.eq (global.get $state) (i32.const 1)) (then (return)))
        (i32.store (i32.const 0) (local.get $socket))))"#;

#[test]
fn an_unwound_accept_sleeps_until_a_client_comes_and_survives_a_restore() {
    let platform = Arc::new(NetPlatform::default());
    let mut domain = open_new(&platform, 1, ASYNC_ACCEPT, &[8080]);
    assert!(domain.has_asyncify());
    assert_eq!(domain.run(100_000), RunOutcome::Waiting);
    assert_eq!(domain.wake(), Wake::OnMessage, "no busy rewinding");
    assert_eq!(domain.request_checkpoint(), Ok(true));
    domain.release_network();
    let mut restored = open(&platform, domain.into_storage()).expect("the restore opens");
    assert_eq!(
        restored.wake(),
        Wake::Now,
        "restored in a network call: re-enter it to learn its socket"
    );
    assert_eq!(restored.run(100_000), RunOutcome::Waiting);
    assert_eq!(restored.wake(), Wake::OnMessage);
    platform.network.client_connect(8080);
    assert_eq!(restored.wake(), Wake::Now);
    assert_eq!(
        restored.run(100_000),
        RunOutcome::Halted(DomainStatus::Exited(0))
    );
    assert_eq!(word(&restored, 0), 4);
}

#[test]
fn a_refused_connect_keeps_no_socket_and_wasi_calls_on_other_fds_are_refused() {
    let platform = Arc::new(NetPlatform::default());
    let wat = r#"(module
        (import "amber" "tcp_connect" (func $connect (param i32 i32 i64) (result i32)))
        (import "amber" "tcp_close" (func $close (param i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "sock_recv"
            (func $recv (param i32 i32 i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "sock_shutdown" (func $shutdown (param i32 i32) (result i32)))
        (import "env" "memory" (memory 1))
        (func (export "_start")
            (i32.store (i32.const 100) (i32.const 0x0100007f))
            (i32.store (i32.const 0) (call $connect (i32.const 100) (i32.const 80) (i64.const -1)))
            (i32.store (i32.const 4) (call $close (i32.const 4)))
            (i32.store (i32.const 8) (call $read (i32.const 9) (i32.const 200) (i32.const 1) (i32.const 300)))
            (i32.store (i32.const 12)
                (call $recv (i32.const 1) (i32.const 200) (i32.const 1) (i32.const 0) (i32.const 300) (i32.const 304)))
            (i32.store (i32.const 16) (call $shutdown (i32.const 3) (i32.const 2)))
            (i32.store (i32.const 20) (call $shutdown (i32.const 3) (i32.const 9)))))"#;
    let mut domain = open_new(&platform, 1, wat, &[8080]);
    assert_eq!(
        domain.run(100_000),
        RunOutcome::Halted(DomainStatus::Exited(0))
    );
    assert_eq!(word(&domain, 0), StatusCode::ConnectionRefused.negated());
    assert_eq!(word(&domain, 4), StatusCode::NoSuchSocket.code());
    assert_eq!(word(&domain, 8), errno::BADF);
    assert_eq!(word(&domain, 12), errno::NOTSOCK);
    assert_eq!(
        word(&domain, 16),
        errno::NOTCONN,
        "a listener has no writing side"
    );
    assert_eq!(word(&domain, 20), errno::INVAL);
}

#[test]
fn a_stopped_domain_gives_its_port_back_and_takes_it_again_when_resumed() {
    let platform = Arc::new(NetPlatform::default());
    let wat = amber_module("(drop (call $accept (i32.const 3) (i64.const -1)))");
    let mut domain = open_new(&platform, 1, &wat, &[8080]);
    assert_eq!(domain.run(100_000), RunOutcome::Waiting);
    assert_eq!(domain.stop(), Ok(true));
    assert_eq!(platform.network.listener_of(8080), None);
    let other = open_new(&platform, 2, &wat, &[8080]);
    assert_eq!(domain.resume(), Err(vm::Error::PortTaken { port: 8080 }));
    drop(other);
    platform
        .network
        .forget_domain(DomainId::from_le_bytes([2; 16]));
    assert_eq!(domain.resume(), Ok(()));
    assert_eq!(platform.network.listener_of(8080), Some(domain.id()));
}

#[test]
fn durable_replies_reach_the_network_only_after_the_commit_they_ask_for() {
    let platform = Arc::new(NetPlatform::default());
    // Write, compute for several slices (no safe point), then wait reading.
    let wat = amber_module(
        "(local.set $c (call $accept (i32.const 3) (i64.const -1)))
         (i32.store (i32.const 100) (i32.const 0x676e6f70))
         (i32.store (i32.const 0) (call $write (local.get $c) (i32.const 100) (i32.const 4) (i64.const -1)))
         (i32.store (i32.const 4) (call $close (local.get $c)))
         (local.set $n (i32.const 200000))
         (loop $busy
           (local.set $n (i32.sub (local.get $n) (i32.const 1)))
           (br_if $busy (local.get $n)))
         (drop (call $accept (i32.const 3) (i64.const -1)))",
    );
    let mut storage_record = record(1, &wat, &[8080]);
    storage_record.network.durable_replies = true;
    let mut domain =
        open(&platform, Box::new(MemoryStorage::new(storage_record))).expect("domain opens");
    let client = platform.network.client_connect(8080);
    assert_eq!(domain.run(10_000), RunOutcome::Preempted);
    assert_eq!(word(&domain, 0), 4, "the write took every byte");
    assert_eq!(word(&domain, 4), StatusCode::Ok.code());
    assert!(
        domain.is_checkpoint_pending(),
        "held bytes ask for a commit"
    );
    let commits = domain.record().commits;
    assert!(platform.network.client_received(client).is_empty());
    assert!(!platform.network.is_closed(client), "the close waits too");
    let mut outcome = RunOutcome::Preempted;
    for _ in 0..1000 {
        outcome = domain.run(10_000);
        if outcome != RunOutcome::Preempted {
            break;
        }
        assert!(platform.network.client_received(client).is_empty());
    }
    assert_eq!(outcome, RunOutcome::Waiting);
    assert_eq!(domain.record().commits, commits + 1, "one commit");
    assert_eq!(platform.network.client_received(client), b"pong");
    assert!(platform.network.is_closed(client));
}

/// Group commit: a server that finds several requests ready serves them
/// all, and one commit, when it next waits, releases every reply; one that
/// keeps finding work stops for the commit once its replies have waited
/// 2 ms (`REPLY_HOLD_NS`).
#[test]
fn durable_replies_to_ready_requests_share_one_commit() {
    let platform = Arc::new(NetPlatform::default());
    let serve_one = "(local.set $c (call $accept (i32.const 3) (i64.const -1)))
         (drop (call $read (local.get $c) (i32.const 200) (i32.const 16) (i64.const -1)))
         (drop (call $write (local.get $c) (i32.const 100) (i32.const 4) (i64.const -1)))";
    let wat = amber_module(&format!(
        "(i32.store (i32.const 100) (i32.const 0x676e6f70))
         {serve_one} {serve_one} {serve_one}
         (drop (call $accept (i32.const 3) (i64.const -1)))"
    ));
    let mut storage_record = record(1, &wat, &[8080]);
    storage_record.network.durable_replies = true;
    let mut domain =
        open(&platform, Box::new(MemoryStorage::new(storage_record))).expect("domain opens");
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let client = platform.network.client_connect(8080);
            platform.network.client_send(client, b"ping");
            client
        })
        .collect();
    let commits = domain.record().commits;
    assert_eq!(domain.run(1_000_000), RunOutcome::Waiting);
    assert_eq!(
        domain.record().commits,
        commits + 1,
        "one commit for three replies"
    );
    for client in clients {
        assert_eq!(platform.network.client_received(client), b"pong");
    }

    // Requests always ready: after 2 ms on the clock the next blocking
    // call stops for the commit.
    let wat = amber_module(
        "(i32.store (i32.const 100) (i32.const 0x676e6f70))
         (local.set $c (call $accept (i32.const 3) (i64.const -1)))
         (loop $serve
           (drop (call $read (local.get $c) (i32.const 200) (i32.const 4) (i64.const -1)))
           (drop (call $write (local.get $c) (i32.const 100) (i32.const 4) (i64.const -1)))
           (br $serve))",
    );
    let platform = Arc::new(NetPlatform::default());
    let mut storage_record = record(2, &wat, &[8080]);
    storage_record.network.durable_replies = true;
    let mut domain =
        open(&platform, Box::new(MemoryStorage::new(storage_record))).expect("domain opens");
    let client = platform.network.client_connect(8080);
    platform.network.client_send(client, &[b'x'; 4 * 64]);
    let commits = domain.record().commits;
    assert_eq!(domain.run(20_000), RunOutcome::Preempted);
    assert!(
        platform.network.client_received(client).is_empty(),
        "not yet due"
    );
    assert_eq!(domain.record().commits, commits);
    platform.now_ns.fetch_add(2_000_000, Ordering::SeqCst);
    let mut released = false;
    for _ in 0..100 {
        domain.run(20_000);
        if !platform.network.client_received(client).is_empty() {
            released = true;
            break;
        }
    }
    assert!(released, "replies held past 2 ms were never committed");
    assert!(domain.record().commits > commits);
}

#[test]
fn the_scheduler_runs_a_reader_again_once_its_data_arrives() {
    let platform = Arc::new(NetPlatform::default());
    let wat = amber_module(
        "(local.set $c (call $accept (i32.const 3) (i64.const -1)))
         (i32.store (i32.const 0)
            (call $read (local.get $c) (i32.const 100) (i32.const 64) (i64.const -1)))",
    );
    let domain = open_new(&platform, 1, &wat, &[8080]);
    let mut scheduler: vm::Scheduler<u32> = vm::Scheduler::new(vm::DEFAULT_FUEL_SLICE);
    scheduler.add(domain, 7).expect("the domain joins");
    let client = platform.network.client_connect(8080);
    for _ in 0..10 {
        assert!(scheduler.run_round().is_empty());
    }
    assert_eq!(
        scheduler.next_wake(),
        None,
        "nothing to do until data comes"
    );
    platform.network.client_send(client, b"abc");
    assert_eq!(scheduler.next_wake(), Some(Wake::Now));
    let events = scheduler.run_round();
    assert!(
        matches!(
            events.as_slice(),
            [vm::SchedulerEvent::Halted {
                status: DomainStatus::Exited(0),
                ..
            }]
        ),
        "{events:?}"
    );
}

#[test]
fn a_hostile_network_record_is_refused_when_opened() {
    let platform = Arc::new(NetPlatform::default());
    let wat = amber_module("");
    let mut hostile = record(1, &wat, &[8080]);
    hostile.network.connections = vec![3];
    let error = open(&platform, Box::new(MemoryStorage::new(hostile))).expect_err("refused");
    assert!(matches!(error, vm::Error::BadNetworkRecord(_)), "{error}");
    let mut too_many = record(1, &wat, &(1..=9).collect::<Vec<u16>>());
    too_many.network.nonblocking = vec![3];
    let error = open(&platform, Box::new(MemoryStorage::new(too_many))).expect_err("refused");
    assert!(matches!(error, vm::Error::BadNetworkRecord(_)), "{error}");
    assert_eq!(platform.network.listener_of(1), None, "nothing was bound");
}

#[test]
fn a_write_after_shutdown_is_refused_and_a_peer_reset_shows_in_net_poll() {
    let platform = Arc::new(NetPlatform::default());
    let wat = amber_module(
        "(local.set $c (call $accept (i32.const 3) (i64.const -1)))
         (i32.store (i32.const 0) (call $shutdown (local.get $c)))
         (i32.store (i32.const 4) (call $write (local.get $c) (i32.const 100) (i32.const 1) (i64.const -1)))
         (i32.store (i32.const 300) (local.get $c))
         (i32.store16 (i32.const 304) (i32.const 1))
         (i32.store (i32.const 8) (call $poll (i32.const 300) (i32.const 1) (i64.const -1)))
         (i32.store (i32.const 12) (call $read (local.get $c) (i32.const 100) (i32.const 1) (i64.const -1)))",
    );
    let mut domain = open_new(&platform, 1, &wat, &[8080]);
    let client = platform.network.client_connect(8080);
    assert_eq!(domain.run(100_000), RunOutcome::Waiting, "the poll waits");
    platform
        .network
        .0
        .lock()
        .unwrap()
        .connections
        .get_mut(&client)
        .unwrap()
        .is_reset = true;
    assert_eq!(domain.wake(), Wake::Now);
    assert_eq!(
        domain.run(100_000),
        RunOutcome::Halted(DomainStatus::Exited(0))
    );
    assert_eq!(word(&domain, 0), StatusCode::Ok.code());
    assert_eq!(word(&domain, 4), StatusCode::WrongSocket.negated());
    assert_eq!(word(&domain, 8), 1);
    let ready = u16::from_le_bytes(domain.memory_bytes()[306..308].try_into().unwrap());
    assert_eq!(ready, vm::abi::readiness::HANGUP);
    assert_eq!(word(&domain, 12), StatusCode::ConnectionReset.negated());
}
