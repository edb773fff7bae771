//! A stable port on 127.0.0.1 that follows a domain from machine to machine.
//!
//! Each machine of `cargo xtask run --pair` forwards a domain's port from a
//! host port of its own (QEMU user networking), so after a migration the
//! service answers at another address. A [`Gateway`] listens on one port
//! that does not move and connects each client to the machine that runs
//! the domain now, like a gateway in front of durable workers.
//!
//! QEMU's user networking accepts a host connection before it asks the
//! guest, so a machine the domain has left does not refuse the connect: it
//! accepts it, and closes it (an end of stream or a reset) once the guest
//! has refused. The gateway therefore keeps a new client on probation until
//! the backend sends its first byte. A backend that closes before that is
//! taken for one the domain has left: the gateway connects to the next
//! machine and sends it again what the client has sent so far (at most
//! [`REPLAY_LIMIT_BYTES`]). The machine that answers becomes the current
//! one, which the next client tries first. Once a backend has answered,
//! bytes are copied both ways until one side closes.
//!
//! **Replays are at least once:** a request the old machine took but never
//! answered (the domain moved in between) is made again on the new one.
//! Redis's SET and GET do not mind; INCR would count twice.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Clients served at once; the gateway closes any more at once, with a log
/// line, so that a flood cannot take a thread each without end.
pub const MAX_CLIENTS: usize = 256;

/// How long one connect to a machine's forward may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What a client may send before any backend answers, kept to send again
/// to the next machine. A client that sends more before an answer is not
/// moved to another machine.
pub const REPLAY_LIMIT_BYTES: usize = 64 * 1024;

/// How long a new client waits for some machine to take it (a migration's
/// final pause, a listener not yet bound on the new machine) before the
/// gateway closes it.
pub const FAILOVER_WINDOW: Duration = Duration::from_secs(15);

/// The pause between two rounds over all the machines.
const ROUND_PAUSE: Duration = Duration::from_millis(200);

/// How long a read waits during probation, when the gateway watches the
/// client and the backend in turn.
const PROBATION_POLL: Duration = Duration::from_millis(20);

/// One machine's forward of the service's port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The machine's name in log lines ("A", "B").
    pub machine: String,
    /// Its forward on 127.0.0.1.
    pub address: SocketAddr,
}

/// What the acceptor and the clients' threads share.
#[derive(Debug)]
struct Shared {
    /// The service's name in log lines ("redis").
    service: String,
    backends: Vec<Backend>,
    /// The index in `backends` of the machine that answered last.
    current: AtomicUsize,
    /// Clients being served now.
    client_count: AtomicUsize,
    max_clients: usize,
    is_stopping: AtomicBool,
}

impl Shared {
    fn log(&self, line: &str) {
        // `run --pair` has A's console on this terminal in raw mode, where
        // a line feed alone does not return the carriage.
        eprint!("gateway {}: {line}\r\n", self.service);
    }
}

/// A listener on 127.0.0.1 in front of the backends; stops accepting when
/// dropped (clients being served finish on their own).
#[derive(Debug)]
pub struct Gateway {
    address: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Listens on 127.0.0.1:`port` (0: any free port) for `service` in front
    /// of `backends`, the first of them current.
    pub fn start(service: &str, port: u16, backends: Vec<Backend>) -> Result<Gateway> {
        Gateway::start_bounded(service, port, backends, MAX_CLIENTS)
    }

    /// [`Gateway::start`] serving at most `max_clients` clients at once.
    fn start_bounded(
        service: &str,
        port: u16,
        backends: Vec<Backend>,
        max_clients: usize,
    ) -> Result<Gateway> {
        if backends.is_empty() {
            bail!("a gateway for {service} needs at least one machine");
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .with_context(|| format!("the gateway for {service}: binding 127.0.0.1:{port}"))?;
        let address = listener
            .local_addr()
            .with_context(|| format!("the gateway for {service}: its address"))?;
        let shared = Arc::new(Shared {
            service: service.to_string(),
            backends,
            current: AtomicUsize::new(0),
            client_count: AtomicUsize::new(0),
            max_clients,
            is_stopping: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("gateway {service}"))
                .spawn(move || accept_clients(&listener, &shared))
                .with_context(|| format!("the gateway for {service}: starting its thread"))?
        };
        Ok(Gateway {
            address,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The stable address clients connect to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The machine the next client tries first: the one that answered last.
    pub fn current_machine(&self) -> &str {
        let index = self.shared.current.load(Ordering::SeqCst);
        &self.shared.backends[index].machine
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shared.is_stopping.store(true, Ordering::SeqCst);
        // The acceptor is blocked in accept(): a connection wakes it.
        let _ = TcpStream::connect_timeout(&self.address, CONNECT_TIMEOUT);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Gives back a client's place when its thread ends, on every path.
struct ClientSlot(Arc<Shared>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.client_count.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_clients(listener: &TcpListener, shared: &Arc<Shared>) {
    loop {
        let accepted = listener.accept();
        if shared.is_stopping.load(Ordering::SeqCst) {
            return;
        }
        let (client, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, say: wait rather than spin.
                shared.log(&format!("accepting a client: {error}"));
                thread::sleep(ROUND_PAUSE);
                continue;
            }
        };
        if shared.client_count.fetch_add(1, Ordering::SeqCst) >= shared.max_clients {
            shared.client_count.fetch_sub(1, Ordering::SeqCst);
            shared.log(&format!(
                "{} clients already, closing the one from {peer}",
                shared.max_clients
            ));
            continue;
        }
        let slot = ClientSlot(Arc::clone(shared));
        let spawned = thread::Builder::new()
            .name(format!("gateway {} {peer}", shared.service))
            .spawn(move || {
                let slot = slot;
                serve(client, &slot.0);
            });
        if let Err(error) = spawned {
            shared.log(&format!("no thread for the client from {peer}: {error}"));
        }
    }
}

/// One client, from probation to its last byte.
fn serve(mut client: TcpStream, shared: &Shared) {
    let _ = client.set_nodelay(true);
    if client.set_read_timeout(Some(PROBATION_POLL)).is_err() {
        return;
    }
    match find_backend(&mut client, shared) {
        Found::Answered(backend) => relay(client, backend),
        Found::ClientLeft => {}
        Found::NoMachine => shared.log(&format!(
            "no machine took a client within {} s; closing it",
            FAILOVER_WINDOW.as_secs()
        )),
        Found::TooLongToReplay => shared.log(&format!(
            "a machine closed a client that had sent more than {REPLAY_LIMIT_BYTES} bytes \
             unanswered; closing it"
        )),
    }
}

/// How probation ended.
enum Found {
    /// A backend sent its first bytes, and they are passed on to the client.
    Answered(TcpStream),
    /// The client closed or reset its connection.
    ClientLeft,
    /// No machine answered within [`FAILOVER_WINDOW`].
    NoMachine,
    /// A backend closed, and the client had sent too much to send again.
    TooLongToReplay,
}

/// What the client sent while no backend has answered.
enum Unanswered {
    Held(Vec<u8>),
    /// Past [`REPLAY_LIMIT_BYTES`]: it cannot be sent again.
    Overflowed,
}

/// Whether the client still sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ClientInput {
    Open,
    /// It shut down its sending half: a backend that closes now without
    /// answering has nothing more to say, and is not replaced.
    Ended,
}

/// Tries the machines from the current one on, round after round, until
/// one answers the client.
fn find_backend(client: &mut TcpStream, shared: &Shared) -> Found {
    let deadline = Instant::now() + FAILOVER_WINDOW;
    let count = shared.backends.len();
    let first = shared.current.load(Ordering::SeqCst);
    let mut unanswered = Unanswered::Held(Vec::new());
    let mut input = ClientInput::Open;
    for attempt in 0.. {
        if Instant::now() >= deadline {
            return Found::NoMachine;
        }
        if attempt > 0 && attempt % count == 0 {
            thread::sleep(ROUND_PAUSE);
        }
        let index = (first + attempt) % count;
        let Some(mut backend) = connect(shared.backends[index].address) else {
            continue;
        };
        let Unanswered::Held(sent) = &unanswered else {
            return Found::TooLongToReplay;
        };
        if backend.write_all(sent).is_err() {
            continue;
        }
        if input == ClientInput::Ended {
            let _ = backend.shutdown(Shutdown::Write);
        }
        match watch(client, &mut backend, &mut unanswered, &mut input) {
            Watched::Answered(first_bytes) => {
                let previous = shared.current.swap(index, Ordering::SeqCst);
                if previous != index {
                    let backend = &shared.backends[index];
                    shared.log(&format!("now on {} ({})", backend.machine, backend.address));
                }
                if client.write_all(&first_bytes).is_err() {
                    return Found::ClientLeft;
                }
                return Found::Answered(backend);
            }
            Watched::ClientLeft => return Found::ClientLeft,
            Watched::BackendClosed if input == ClientInput::Ended => return Found::ClientLeft,
            Watched::BackendClosed => {}
        }
    }
    Found::NoMachine
}

/// How watching one backend on probation ended.
enum Watched {
    /// The backend's first bytes, for the client.
    Answered(Vec<u8>),
    BackendClosed,
    ClientLeft,
}

/// Passes the client's bytes to `backend`, keeping them in `unanswered`,
/// until the backend answers or one of them closes.
fn watch(
    client: &mut TcpStream,
    backend: &mut TcpStream,
    unanswered: &mut Unanswered,
    input: &mut ClientInput,
) -> Watched {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        if *input == ClientInput::Open {
            match client.read(&mut buffer) {
                Ok(0) => {
                    *input = ClientInput::Ended;
                    let _ = backend.shutdown(Shutdown::Write);
                }
                Ok(length) => {
                    let bytes = &buffer[..length];
                    if let Unanswered::Held(sent) = unanswered {
                        if sent.len() + length > REPLAY_LIMIT_BYTES {
                            *unanswered = Unanswered::Overflowed;
                        } else {
                            sent.extend_from_slice(bytes);
                        }
                    }
                    if backend.write_all(bytes).is_err() {
                        return Watched::BackendClosed;
                    }
                }
                Err(error) if is_no_data_yet(&error) => {}
                Err(_) => return Watched::ClientLeft,
            }
        }
        match backend.read(&mut buffer) {
            Ok(0) => return Watched::BackendClosed,
            Ok(length) => return Watched::Answered(buffer[..length].to_vec()),
            Err(error) if is_no_data_yet(&error) => {}
            Err(_) => return Watched::BackendClosed,
        }
    }
}

/// A read timeout or an interrupted read: nothing has gone wrong.
fn is_no_data_yet(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// A connection to a machine's forward, set up for probation.
fn connect(address: SocketAddr) -> Option<TcpStream> {
    let stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).ok()?;
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(PROBATION_POLL)).ok()?;
    Some(stream)
}

/// Copies both ways after probation. The client's end of stream is passed
/// on as a half close (a client may shut down its sending half and wait
/// for the answer); the backend's end, or a reset of either, ends both.
fn relay(client: TcpStream, backend: TcpStream) {
    let clones = (client.try_clone(), backend.try_clone());
    let (Ok(client_reader), Ok(backend_writer)) = clones else {
        return;
    };
    if client.set_read_timeout(None).is_err() || backend.set_read_timeout(None).is_err() {
        return;
    }
    let upstream = thread::spawn(move || {
        let (mut from, mut to) = (client_reader, backend_writer);
        match std::io::copy(&mut from, &mut to) {
            Ok(_) => {
                let _ = to.shutdown(Shutdown::Write);
            }
            Err(_) => {
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
            }
        }
    });
    let (mut from, mut to) = (backend, client);
    let _ = std::io::copy(&mut from, &mut to);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    let _ = upstream.join();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    /// How a test backend treats a connection.
    #[derive(Clone, Copy)]
    enum Behaviour {
        /// Answers each line with its name, a colon and the line.
        Serves,
        /// Reads what comes, then closes without a byte back: what a QEMU
        /// forward does when its guest no longer listens.
        AcceptsAndCloses,
    }

    /// A backend on a free port of 127.0.0.1, serving until the listener
    /// is dropped (when `gone` is set and a connection wakes it).
    fn backend(name: &'static str, behaviour: Behaviour) -> (SocketAddr, Arc<AtomicBool>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a backend");
        let address = listener.local_addr().expect("a backend's address");
        let gone = Arc::new(AtomicBool::new(false));
        let is_gone = Arc::clone(&gone);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if is_gone.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                thread::spawn(move || serve_lines(name, behaviour, stream));
            }
        });
        (address, gone)
    }

    fn serve_lines(name: &str, behaviour: Behaviour, stream: TcpStream) {
        let Ok(mut writer) = stream.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|length| length > 0) {
            if let Behaviour::AcceptsAndCloses = behaviour {
                return;
            }
            if writer
                .write_all(format!("{name}:{line}").as_bytes())
                .is_err()
            {
                return;
            }
            line.clear();
        }
    }

    /// Closes the backend at `address` for good: later connects are refused.
    fn take_away(address: SocketAddr, gone: &AtomicBool) {
        gone.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(address);
        // The acceptor returns and drops the listener; wait until it has.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(address).is_ok() {
            assert!(Instant::now() < deadline, "the backend never went away");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// One line through the gateway and its answer.
    fn ask(gateway: &Gateway, line: &str) -> String {
        let mut stream =
            TcpStream::connect_timeout(&gateway.address(), CONNECT_TIMEOUT).expect("connecting");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("a read timeout");
        stream
            .write_all(format!("{line}\n").as_bytes())
            .expect("writing");
        let mut answer = String::new();
        BufReader::new(stream)
            .read_line(&mut answer)
            .expect("reading the answer");
        answer.trim_end().to_string()
    }

    fn backends(a: SocketAddr, b: SocketAddr) -> Vec<Backend> {
        vec![
            Backend {
                machine: "A".into(),
                address: a,
            },
            Backend {
                machine: "B".into(),
                address: b,
            },
        ]
    }

    #[test]
    fn clients_go_to_the_second_backend_once_the_first_goes_away() {
        let (a, a_gone) = backend("A", Behaviour::Serves);
        let (b, _) = backend("B", Behaviour::Serves);
        let gateway = Gateway::start("test", 0, backends(a, b)).expect("starting");
        assert_eq!(ask(&gateway, "one"), "A:one");
        assert_eq!(ask(&gateway, "two"), "A:two");
        assert_eq!(gateway.current_machine(), "A");

        take_away(a, &a_gone);
        assert_eq!(ask(&gateway, "three"), "B:three");
        assert_eq!(gateway.current_machine(), "B");
        assert_eq!(ask(&gateway, "four"), "B:four");
    }

    #[test]
    fn a_backend_that_accepts_and_closes_is_passed_over_with_the_request_sent_again() {
        let (a, _) = backend("A", Behaviour::AcceptsAndCloses);
        let (b, _) = backend("B", Behaviour::Serves);
        let gateway = Gateway::start("test", 0, backends(a, b)).expect("starting");
        assert_eq!(ask(&gateway, "hello"), "B:hello");
        assert_eq!(gateway.current_machine(), "B");
        // One connection carries many requests once a backend has answered.
        let mut stream = TcpStream::connect(gateway.address()).expect("connecting");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("a read timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("a clone"));
        for index in 0..50 {
            stream
                .write_all(format!("k{index}\n").as_bytes())
                .expect("writing");
            let mut answer = String::new();
            reader.read_line(&mut answer).expect("reading");
            assert_eq!(answer, format!("B:k{index}\n"));
        }
    }

    #[test]
    fn a_client_that_shuts_down_its_sending_half_still_gets_the_answer() {
        let (a, _) = backend("A", Behaviour::AcceptsAndCloses);
        let (b, _) = backend("B", Behaviour::Serves);
        let gateway = Gateway::start("test", 0, backends(a, b)).expect("starting");
        assert_eq!(ask(&gateway, "first"), "B:first");
        let mut stream = TcpStream::connect(gateway.address()).expect("connecting");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("a read timeout");
        stream.write_all(b"last\n").expect("writing");
        stream.shutdown(Shutdown::Write).expect("a half close");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("reading");
        assert_eq!(answer, "B:last\n");
    }

    #[test]
    fn a_client_past_the_limit_is_closed_and_the_others_are_served() {
        let (a, _) = backend("A", Behaviour::Serves);
        let (b, _) = backend("B", Behaviour::Serves);
        let gateway = Gateway::start_bounded("test", 0, backends(a, b), 2).expect("starting");
        let held: Vec<TcpStream> = (0..2)
            .map(|_| TcpStream::connect(gateway.address()).expect("connecting"))
            .collect();
        // The acceptor counts a client once it has taken it: give it time.
        let deadline = Instant::now() + Duration::from_secs(10);
        while gateway.shared.client_count.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "the two clients were not taken");
            thread::sleep(Duration::from_millis(10));
        }
        let mut third = TcpStream::connect(gateway.address()).expect("connecting");
        third
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("a read timeout");
        let _ = third.write_all(b"three\n");
        let mut answer = Vec::new();
        let _ = third.read_to_end(&mut answer);
        assert!(answer.is_empty(), "the third client got {answer:?}");
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(10);
        while gateway.shared.client_count.load(Ordering::SeqCst) > 0 {
            assert!(Instant::now() < deadline, "the places were not given back");
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(ask(&gateway, "four"), "A:four");
    }

    #[test]
    fn the_gateway_listens_on_loopback_only() {
        let (a, _) = backend("A", Behaviour::Serves);
        let gateway = Gateway::start("test", 0, backends(a, a)).expect("starting");
        assert_eq!(gateway.address().ip(), Ipv4Addr::LOCALHOST);
    }
}
