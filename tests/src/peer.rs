//! A hostile peer on a machine's link: a host program with its own TCP/IP.
//!
//! QEMU's `-netdev socket` carries each Ethernet frame over a TCP stream on
//! 127.0.0.1 after a 4-byte big-endian length. A [`PeerListener`] listens
//! on that port before the machine under test boots with
//! `LinkEnd::Connect`; once QEMU connects, the [`Peer`] is a host on the
//! link with an address, ARP, IPv4 and TCP of its own (smoltcp over a
//! [`phy::Device`] on that stream). It opens TCP connections to the
//! machine ([`Connection`], a kernel-core [`Link`]) and says whatever a
//! test wants: plaintext migration frames, a handshake with the wrong
//! secret, or nothing at all.
//!
//! Everything is single-threaded and polled: each call that waits polls
//! the stack until its deadline, so no thread or socket outlives a test.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use kernel_core::migration::{ClusterSecret, Entropy, Framed, Link, LinkError, SecureLink};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use xtask::private::SECRET_BYTES;

/// Ethernet header plus the 1500-byte MTU the kernel uses.
const FRAME_MAX_BYTES: usize = 1514;

/// Each connection's send and receive buffers: enough for a few migration
/// frames in flight, small enough for hundreds of idle connections.
const SOCKET_BUFFER_BYTES: usize = 64 * 1024;

/// The first local port connections use; each new one takes the next.
const FIRST_LOCAL_PORT: u16 = 49152;

/// The machine under test's address on a link whose card has MAC last byte
/// `mac_last_byte` and no `ip=`: 169.254.0.N (kernel/src/net/mod.rs, 1 for
/// 0 and 254 for 255).
pub fn default_address(mac_last_byte: u8) -> Ipv4Address {
    let host = match mac_last_byte {
        0 => 1,
        255 => 254,
        byte => byte,
    };
    Ipv4Address::new(169, 254, 0, host)
}

/// The peer's end of the link before QEMU has connected to it.
#[derive(Debug)]
pub struct PeerListener {
    listener: TcpListener,
    port: u16,
}

impl PeerListener {
    /// Listens on a free port of 127.0.0.1: boot the machine with
    /// `NetLink { end: LinkEnd::Connect, port: listener.port(), .. }`.
    pub fn bind() -> Result<PeerListener> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the peer's link port")?;
        let port = listener
            .local_addr()
            .context("the peer's link port")?
            .port();
        listener
            .set_nonblocking(true)
            .context("making the peer's link port non-blocking")?;
        Ok(PeerListener { listener, port })
    }

    /// The port QEMU must connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits up to `timeout` for QEMU to connect, then becomes a host on
    /// the link at 169.254.0.`host` with MAC 52:54:00:12:34:`mac_last_byte`.
    pub fn accept(self, host: u8, mac_last_byte: u8, timeout: Duration) -> Result<Peer> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match self.listener.accept() {
                Ok((stream, _)) => break stream,
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        bail!("QEMU did not connect to the peer's link within {timeout:?}");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(error) => return Err(error).context("accepting QEMU's link"),
            }
        };
        Peer::over_stream(stream, host, mac_last_byte)
    }
}

/// A host on the machine's link.
#[derive(Debug, Clone)]
pub struct Peer {
    stack: Rc<RefCell<Stack>>,
}

impl Peer {
    /// A host at 169.254.0.`host` with MAC 52:54:00:12:34:`mac_last_byte`
    /// on the link `stream` carries (QEMU's socket netdev framing).
    fn over_stream(stream: TcpStream, host: u8, mac_last_byte: u8) -> Result<Peer> {
        stream
            .set_nonblocking(true)
            .context("making the link non-blocking")?;
        let _ = stream.set_nodelay(true);
        let mut device = StreamDevice {
            stream,
            incoming: Vec::new(),
            frames: VecDeque::new(),
            broken: None,
        };
        let started = Instant::now();
        let mac = EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, mac_last_byte]);
        let mut config = Config::new(HardwareAddress::Ethernet(mac));
        config.random_seed = u64::from(mac_last_byte) << 32 | u64::from(std::process::id());
        let mut interface = Interface::new(config, &mut device, timestamp(started));
        interface.update_ip_addrs(|addresses| {
            let _ = addresses.push(IpCidr::new(
                IpAddress::Ipv4(Ipv4Address::new(169, 254, 0, host)),
                16,
            ));
        });
        Ok(Peer {
            stack: Rc::new(RefCell::new(Stack {
                device,
                interface,
                sockets: SocketSet::new(Vec::new()),
                started,
                next_local_port: FIRST_LOCAL_PORT,
            })),
        })
    }

    /// Another host on the link of a [`PeerListener`] at 127.0.0.1:`port`,
    /// in QEMU's place (the peer's own tests, with no machine).
    pub fn connect_to_link(port: u16, host: u8, mac_last_byte: u8) -> Result<Peer> {
        let stream = TcpStream::connect(("127.0.0.1", port)).context("connecting to a link")?;
        Peer::over_stream(stream, host, mac_last_byte)
    }

    /// A socket listening on TCP `port`: it becomes the connection of the
    /// first peer that connects (the peer's own tests play a machine so).
    pub fn listen_on(&self, port: u16) -> Result<Connection> {
        let mut stack = self.stack.borrow_mut();
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER_BYTES]),
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER_BYTES]),
        );
        socket
            .listen(port)
            .map_err(|error| anyhow!("listening on {port}: {error}"))?;
        let handle = stack.sockets.add(socket);
        Ok(Connection {
            stack: Rc::clone(&self.stack),
            handle,
        })
    }

    /// Starts a TCP connection to `address:port` without waiting for it.
    pub fn open(&self, address: Ipv4Address, port: u16) -> Result<Connection> {
        let mut stack = self.stack.borrow_mut();
        let socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER_BYTES]),
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER_BYTES]),
        );
        let handle = stack.sockets.add(socket);
        let local_port = stack.next_local_port;
        stack.next_local_port = match local_port.checked_add(1) {
            Some(next) => next,
            None => FIRST_LOCAL_PORT,
        };
        let Stack {
            interface, sockets, ..
        } = &mut *stack;
        sockets
            .get_mut::<tcp::Socket>(handle)
            .connect(interface.context(), (address, port), local_port)
            .map_err(|error| anyhow!("connecting to {address}:{port}: {error}"))?;
        drop(stack);
        self.poll()?;
        Ok(Connection {
            stack: Rc::clone(&self.stack),
            handle,
        })
    }

    /// A TCP connection to `address:port`, established within `timeout`.
    pub fn connect(
        &self,
        address: Ipv4Address,
        port: u16,
        timeout: Duration,
    ) -> Result<Connection> {
        let connection = self.open(address, port)?;
        let deadline = Instant::now() + timeout;
        loop {
            match connection.state() {
                tcp::State::Established => return Ok(connection),
                tcp::State::Closed => bail!("{address}:{port} refused the connection"),
                _ if Instant::now() >= deadline => {
                    bail!("no connection to {address}:{port} within {timeout:?}")
                }
                _ => self.wait_a_moment()?,
            }
        }
    }

    /// A migration connection to `address:port`: TCP established within
    /// `timeout`, then framed in `speech`.
    pub fn migration_link(
        &self,
        address: Ipv4Address,
        port: u16,
        speech: Speech,
        timeout: Duration,
    ) -> Result<Framed<PeerLink>> {
        let connection = self.connect(address, port, timeout)?;
        let link = match speech {
            Speech::Plaintext => PeerLink::Plain(connection),
            Speech::Secret(bytes) => {
                let secret = ClusterSecret::from_bytes(bytes)
                    .map_err(|error| anyhow!("the peer's secret: {error}"))?;
                PeerLink::Secure(Box::new(SecureLink::initiator(
                    connection,
                    &secret,
                    &mut HostEntropy,
                )))
            }
        };
        Ok(Framed::new(link))
    }

    /// Moves frames between the link and the sockets once.
    pub fn poll(&self) -> Result<()> {
        self.stack.borrow_mut().poll()
    }

    /// Polls, then sleeps a millisecond so a waiting loop does not spin.
    pub fn wait_a_moment(&self) -> Result<()> {
        self.poll()?;
        std::thread::sleep(Duration::from_millis(1));
        self.poll()
    }

    /// Keeps the link's TCP going (acknowledgements, retransmissions) for
    /// `duration` while a test waits on the machine's console.
    pub fn keep_alive_for(&self, duration: Duration) -> Result<()> {
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            self.wait_a_moment()?;
        }
        Ok(())
    }
}

/// The stack behind a [`Peer`] and its connections.
struct Stack {
    device: StreamDevice,
    interface: Interface,
    sockets: SocketSet<'static>,
    started: Instant,
    next_local_port: u16,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Stack")
            .field("next_local_port", &self.next_local_port)
            .finish_non_exhaustive()
    }
}

impl Stack {
    fn poll(&mut self) -> Result<()> {
        self.device.fill();
        let now = timestamp(self.started);
        self.interface
            .poll(now, &mut self.device, &mut self.sockets);
        match self.device.broken.take() {
            Some(reason) => Err(anyhow!("the peer's link to QEMU broke: {reason}")),
            None => Ok(()),
        }
    }
}

fn timestamp(started: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(started.elapsed().as_micros() as i64)
}

/// One TCP connection from the peer to the machine: a kernel-core [`Link`]
/// that polls the peer's stack on every call. Dropping it aborts the
/// connection (a reset) and frees its socket.
#[derive(Debug)]
pub struct Connection {
    stack: Rc<RefCell<Stack>>,
    handle: SocketHandle,
}

impl Connection {
    /// The connection's TCP state.
    pub fn state(&self) -> tcp::State {
        self.stack
            .borrow_mut()
            .sockets
            .get_mut::<tcp::Socket>(self.handle)
            .state()
    }

    /// Whether the machine has closed or reset the connection.
    pub fn is_closed_by_machine(&self) -> bool {
        let mut stack = self.stack.borrow_mut();
        let socket = stack.sockets.get_mut::<tcp::Socket>(self.handle);
        !socket.may_recv() && !socket.can_recv()
    }

    /// Sends `bytes` whole within `timeout` (raw bytes: no frame header).
    pub fn send_all(&mut self, bytes: &[u8], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut sent = 0;
        while sent < bytes.len() {
            sent += self
                .send(&bytes[sent..])
                .map_err(|error| anyhow!("{error}"))?;
            if sent < bytes.len() {
                if Instant::now() >= deadline {
                    bail!("sent {sent} of {} bytes within {timeout:?}", bytes.len());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.stack.borrow_mut().poll()
    }
}

impl Link for Connection {
    fn send(&mut self, bytes: &[u8]) -> Result<usize, LinkError> {
        let mut stack = self.stack.borrow_mut();
        stack
            .poll()
            .map_err(|error| LinkError::Failed(error.to_string()))?;
        let socket = stack.sockets.get_mut::<tcp::Socket>(self.handle);
        if !socket.may_send() {
            return Err(LinkError::Closed);
        }
        let count = socket
            .send_slice(bytes)
            .map_err(|error| LinkError::Failed(error.to_string()))?;
        stack
            .poll()
            .map_err(|error| LinkError::Failed(error.to_string()))?;
        Ok(count)
    }

    fn receive(&mut self, buffer: &mut [u8]) -> Result<usize, LinkError> {
        let mut stack = self.stack.borrow_mut();
        stack
            .poll()
            .map_err(|error| LinkError::Failed(error.to_string()))?;
        let socket = stack.sockets.get_mut::<tcp::Socket>(self.handle);
        if socket.can_recv() {
            return socket
                .recv_slice(buffer)
                .map_err(|error| LinkError::Failed(error.to_string()));
        }
        if !socket.may_recv() && socket.state() != tcp::State::SynSent {
            return Err(LinkError::Closed);
        }
        Ok(0)
    }

    fn push(&mut self) {
        let _ = self.stack.borrow_mut().poll();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut stack = self.stack.borrow_mut();
        stack.sockets.get_mut::<tcp::Socket>(self.handle).abort();
        // The reset leaves on this poll; then the socket can go.
        let _ = stack.poll();
        stack.sockets.remove(self.handle);
    }
}

/// How the peer speaks on a migration connection.
#[derive(Clone, Copy)]
pub enum Speech {
    /// Frames in clear, as before the links were encrypted.
    Plaintext,
    /// Kernel-core's secure link (the Noise handshake, then ciphertext)
    /// with this secret: the cluster's, or another one on purpose.
    Secret([u8; SECRET_BYTES]),
}

impl std::fmt::Debug for Speech {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret's bytes.
        match self {
            Speech::Plaintext => formatter.write_str("Plaintext"),
            Speech::Secret(_) => formatter.write_str("Secret(..)"),
        }
    }
}

/// A migration connection's link, in one of the peer's [`Speech`]es.
#[derive(Debug)]
pub enum PeerLink {
    /// Bytes in clear.
    Plain(Connection),
    /// Kernel-core's secure link, as the peer's initiator.
    Secure(Box<SecureLink<Connection>>),
}

impl Link for PeerLink {
    fn send(&mut self, bytes: &[u8]) -> Result<usize, LinkError> {
        match self {
            PeerLink::Plain(connection) => connection.send(bytes),
            PeerLink::Secure(link) => link.send(bytes),
        }
    }

    fn receive(&mut self, buffer: &mut [u8]) -> Result<usize, LinkError> {
        match self {
            PeerLink::Plain(connection) => connection.receive(buffer),
            PeerLink::Secure(link) => link.receive(buffer),
        }
    }

    fn push(&mut self) {
        match self {
            PeerLink::Plain(connection) => connection.push(),
            PeerLink::Secure(link) => link.push(),
        }
    }
}

/// The handshake's randomness from the host's random source.
#[derive(Debug)]
struct HostEntropy;

impl Entropy for HostEntropy {
    fn fill(&mut self, bytes: &mut [u8]) {
        // Without randomness the handshake must not go on with guessable
        // keys: a test that cannot read /dev/urandom fails loudly.
        let read =
            std::fs::File::open("/dev/urandom").and_then(|mut random| random.read_exact(bytes));
        if let Err(error) = read {
            panic!("reading /dev/urandom for the peer's handshake: {error}");
        }
    }
}

/// What a [`Framed`] connection gave within a deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A whole frame.
    Frame(Vec<u8>),
    /// The machine closed or reset the connection.
    Closed,
    /// Nothing within the deadline.
    Silence,
}

/// Frames `message` and sends it whole within `timeout`.
pub fn send_frame<L: Link>(
    framed: &mut Framed<L>,
    message: &[u8],
    timeout: Duration,
) -> Result<()> {
    framed.queue(message);
    let deadline = Instant::now() + timeout;
    loop {
        match framed.flush() {
            Ok(true) => return Ok(()),
            Ok(false) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Ok(false) => bail!("a frame did not leave within {timeout:?}"),
            Err(error) => bail!("sending a frame: {error}"),
        }
    }
}

/// The next frame from the machine, its closing, or silence for `timeout`.
pub fn next_reply<L: Link>(framed: &mut Framed<L>, timeout: Duration) -> Reply {
    let deadline = Instant::now() + timeout;
    loop {
        match framed.next_frame() {
            Ok(Some(frame)) => return Reply::Frame(frame),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Ok(None) => return Reply::Silence,
            Err(_) => return Reply::Closed,
        }
    }
}

/// smoltcp's device over QEMU's stream: frames after a 4-byte big-endian
/// length, both ways.
struct StreamDevice {
    stream: TcpStream,
    /// Bytes read and not yet a whole frame.
    incoming: Vec<u8>,
    /// Whole frames waiting for the stack.
    frames: VecDeque<Vec<u8>>,
    /// Why the stream failed, if it did; reported by the next poll.
    broken: Option<String>,
}

impl StreamDevice {
    /// Reads what QEMU has sent and splits it into frames.
    fn fill(&mut self) {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut buffer) {
                Ok(0) => {
                    self.broken = Some("QEMU closed the link".into());
                    break;
                }
                Ok(count) => self.incoming.extend_from_slice(&buffer[..count]),
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => {
                    self.broken = Some(error.to_string());
                    break;
                }
            }
        }
        let mut taken = 0;
        while let Some(header) = self.incoming[taken..].first_chunk::<4>() {
            let length = u32::from_be_bytes(*header) as usize;
            if self.incoming.len() - taken < 4 + length {
                break;
            }
            self.frames
                .push_back(self.incoming[taken + 4..taken + 4 + length].to_vec());
            taken += 4 + length;
        }
        self.incoming.drain(..taken);
    }
}

impl phy::Device for StreamDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let frame = self.frames.pop_front()?;
        Some((
            RxToken(frame),
            TxToken {
                stream: &mut self.stream,
                broken: &mut self.broken,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(TxToken {
            stream: &mut self.stream,
            broken: &mut self.broken,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ethernet;
        capabilities.max_transmission_unit = FRAME_MAX_BYTES;
        capabilities
    }
}

struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.0)
    }
}

struct TxToken<'a> {
    stream: &'a mut TcpStream,
    broken: &'a mut Option<String>,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, length: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut frame = vec![0u8; 4 + length];
        frame[..4].copy_from_slice(&(length as u32).to_be_bytes());
        let result = f(&mut frame[4..]);
        if let Err(error) = write_whole(self.stream, &frame) {
            *self.broken = Some(error.to_string());
        }
        result
    }
}

/// Writes all of `bytes` to a non-blocking stream, waiting out a full
/// socket buffer (QEMU drains it as fast as the guest's card takes frames).
fn write_whole(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(count) => written += count,
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(ErrorKind::TimedOut.into());
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel_core::migration::FrameError;

    #[test]
    fn the_secret_file_xtask_writes_is_one_the_kernel_parses() -> Result<()> {
        let file = xtask::private::ClusterSecretFile::generate()?;
        let text = std::fs::read(file.path())?;
        let parsed = ClusterSecret::parse(&text).map_err(|error| anyhow!("{error}"))?;
        let expected =
            ClusterSecret::from_bytes(file.bytes()).map_err(|error| anyhow!("{error}"))?;
        assert!(parsed == expected);
        Ok(())
    }

    /// Two peers on one link, one playing the machine: the secure link
    /// carries a frame both ways with the same secret, and fails with
    /// another.
    #[test]
    fn two_peers_speak_the_secure_link_over_their_own_tcp() -> Result<()> {
        let secret = [7u8; SECRET_BYTES];
        let listener = PeerListener::bind()?;
        let client = Peer::connect_to_link(listener.port(), 2, 2)?;
        let server = listener.accept(1, 1, Duration::from_secs(5))?;
        let timeout = Duration::from_secs(10);
        let accepted = server.listen_on(7070)?;
        let opened = client.open(Ipv4Address::new(169, 254, 0, 1), 7070)?;
        let deadline = Instant::now() + timeout;
        while opened.state() != tcp::State::Established
            || accepted.state() != tcp::State::Established
        {
            assert!(
                Instant::now() < deadline,
                "no TCP connection between the peers"
            );
            client.wait_a_moment()?;
            server.poll()?;
        }
        let key = ClusterSecret::from_bytes(secret).map_err(|error| anyhow!("{error}"))?;
        let mut initiator = Framed::new(PeerLink::Secure(Box::new(SecureLink::initiator(
            opened,
            &key,
            &mut HostEntropy,
        ))));
        let mut responder = Framed::new(PeerLink::Secure(Box::new(SecureLink::responder(
            accepted,
            &key,
            &mut HostEntropy,
        ))));
        initiator.queue(b"begin");
        let deadline = Instant::now() + timeout;
        let frame = loop {
            let _ = initiator.flush();
            if let Ok(Some(frame)) = responder.next_frame() {
                break frame;
            }
            let _ = responder.flush();
            assert!(
                Instant::now() < deadline,
                "no frame through the secure link"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(frame, b"begin");
        responder.queue(b"refused");
        assert_eq!(
            loop {
                let _ = responder.flush();
                if let Reply::Frame(frame) = next_reply(&mut initiator, Duration::from_millis(5)) {
                    break frame;
                }
                assert!(
                    Instant::now() < deadline,
                    "no answer through the secure link"
                );
            },
            b"refused"
        );

        // Another secret: the responder refuses the first handshake message.
        let accepted = server.listen_on(7071)?;
        let opened = client.open(Ipv4Address::new(169, 254, 0, 1), 7071)?;
        while opened.state() != tcp::State::Established
            || accepted.state() != tcp::State::Established
        {
            assert!(Instant::now() < deadline, "no second TCP connection");
            client.wait_a_moment()?;
            server.poll()?;
        }
        let stranger =
            ClusterSecret::from_bytes([9u8; SECRET_BYTES]).map_err(|error| anyhow!("{error}"))?;
        let mut initiator = Framed::new(PeerLink::Secure(Box::new(SecureLink::initiator(
            opened,
            &stranger,
            &mut HostEntropy,
        ))));
        let mut responder = Framed::new(PeerLink::Secure(Box::new(SecureLink::responder(
            accepted,
            &key,
            &mut HostEntropy,
        ))));
        initiator.queue(b"begin");
        let error = loop {
            let _ = initiator.flush();
            match responder.next_frame() {
                Err(error) => break error,
                Ok(Some(_)) => panic!("a frame passed with another secret"),
                Ok(None) => {}
            }
            assert!(
                Instant::now() < deadline,
                "the wrong secret was not refused"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(error, FrameError::Link(LinkError::NotInCluster));
        Ok(())
    }

    #[test]
    fn the_default_address_follows_the_kernels_rule() {
        assert_eq!(default_address(0), Ipv4Address::new(169, 254, 0, 1));
        assert_eq!(default_address(0x11), Ipv4Address::new(169, 254, 0, 0x11));
        assert_eq!(default_address(255), Ipv4Address::new(169, 254, 0, 254));
    }
}
