//! IPv4 over the virtio-net cards with smoltcp: polling and a small TCP API.
//!
//! Each card is its own smoltcp interface with its own sockets. The *link*
//! card (the migration link, QEMU `-netdev socket`) has one link-local
//! address (`ip=169.254.x.y` on the command line, else 169.254.0.N with N
//! from the MAC's last byte), no gateway, no ARP tricks: two Amber machines
//! on one virtual wire reach each other directly. The *user* card (QEMU
//! user networking, which forwards host ports to domains' listeners) is
//! the one whose MAC is [`USER_CARD_MAC`]; it takes slirp's defaults, guest
//! 10.0.2.15/24 with the host at 10.0.2.2. Listeners of domains
//! ([`domain_sockets`]) accept on every card; a connection goes out through
//! the card whose subnet holds its destination (else the user card, else
//! the link card); the migration listener is on the link card only. The
//! main loop calls [`poll`] once per iteration; it moves frames between the
//! cards and smoltcp's sockets and returns at once when there is no card.
//!
//! The TCP API is non-blocking: a [`TcpConnection`] listens or connects, and
//! `send`/`receive` move what fits now. Dropping a connection closes it
//! gracefully; its socket stays until the close completes (or a deadline
//! passes), so the last bytes and the FIN still go out.

pub mod domain_sockets;

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, IpEndpoint, Ipv4Address};
use spin::Mutex;

use crate::arch::{cpu, timer};
use crate::boot_info::BootInfo;
use crate::drivers::virtio_net::{self, Counters, NetDevice, NicInfo};

pub use smoltcp::socket::tcp::State as TcpState;

/// Bytes of each TCP socket's receive and of its send buffer. Above 64 KiB,
/// smoltcp scales the window (RFC 7323), so one round trip carries this much.
const TCP_BUFFER_BYTES: usize = 128 * 1024;

/// The link-local prefix (RFC 3927) every Amber address is in.
const LINK_LOCAL_PREFIX_LEN: u8 = 16;

/// How long a dropped connection may take to finish closing before its
/// socket is aborted and freed.
const CLOSE_DEADLINE_NS: u64 = 5_000_000_000;

/// Dropped connections left to finish closing at most: each keeps its
/// buffers (2 x [`TCP_BUFFER_BYTES`]) until it does, so a peer that opens
/// and abandons connections faster than they close could otherwise fill
/// the heap. Past it the oldest is aborted at once.
const MAX_CLOSING_SOCKETS: usize = 16;

/// First local port for outgoing connections (the IANA dynamic range).
const FIRST_EPHEMERAL_PORT: u16 = 49152;

/// The MAC address that marks the user-networking card (`cargo xtask run`
/// and the tests give it to that card): locally administered, and it spells
/// the address the card takes, 10.0.2.15.
pub const USER_CARD_MAC: [u8; 6] = [0x02, 0x00, 0x0a, 0x00, 0x02, 0x0f];

/// The user card's address, prefix and gateway: QEMU user networking's
/// defaults.
const USER_ADDRESS: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
const USER_PREFIX_LEN: u8 = 24;
const USER_GATEWAY: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);

static NET: Mutex<Option<Net>> = Mutex::new(None);

/// Set once a card is up, so that `poll` costs one load without one.
static HAS_CARD: AtomicBool = AtomicBool::new(false);

static NEXT_EPHEMERAL_PORT: AtomicU16 = AtomicU16::new(FIRST_EPHEMERAL_PORT);

/// Which network a card is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardKind {
    /// The link between Amber machines (migration).
    Link,
    /// QEMU user networking: the host's forwards to domains.
    User,
}

/// One card with its interface and the sockets that use it.
struct Card {
    kind: CardKind,
    device: NetDevice,
    interface: Interface,
    sockets: SocketSet<'static>,
    address: Ipv4Address,
    prefix_len: u8,
}

/// A socket: the card whose set holds it, and its handle there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SocketRef {
    card: usize,
    handle: SocketHandle,
}

struct Net {
    cards: Vec<Card>,
    /// Dropped connections still closing, with the time (uptime ns) by
    /// which they are aborted.
    closing: Vec<(SocketRef, u64)>,
    /// The domains' listeners and connections.
    domains: domain_sockets::DomainSockets,
}

/// What `net` prints.
#[derive(Debug, Clone, Copy)]
pub struct NetStatus {
    pub nic: NicInfo,
    pub address: Ipv4Address,
    pub prefix_len: u8,
    pub counters: Counters,
}

/// Why a network operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetError {
    /// No virtio-net card was found at boot.
    NoCard,
    Listen(tcp::ListenError),
    Connect(tcp::ConnectError),
    Send(tcp::SendError),
    Receive(tcp::RecvError),
    /// The peer closed its side and every byte it sent has been read.
    Finished,
}

impl fmt::Display for NetError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::NoCard => write!(formatter, "no network card"),
            NetError::Listen(error) => write!(formatter, "listening: {error}"),
            NetError::Connect(error) => write!(formatter, "connecting: {error}"),
            NetError::Send(error) => write!(formatter, "sending: {error}"),
            NetError::Receive(error) => write!(formatter, "receiving: {error}"),
            NetError::Finished => write!(formatter, "the peer closed the connection"),
        }
    }
}

fn now() -> Instant {
    Instant::from_micros((timer::uptime_ns() / 1000) as i64)
}

/// Brings up every virtio-net card: the one with [`USER_CARD_MAC`] on user
/// networking, the others on the link with the address from `ip=` (or the
/// MAC-derived default).
pub fn init(info: &BootInfo) {
    let mut cards = Vec::new();
    for mut device in virtio_net::probe_all() {
        let nic = device.info();
        let (kind, address, prefix_len) = if nic.mac == USER_CARD_MAC {
            (CardKind::User, USER_ADDRESS, USER_PREFIX_LEN)
        } else {
            let address = address_from(info.argument("ip"), nic.mac);
            (CardKind::Link, address, LINK_LOCAL_PREFIX_LEN)
        };
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(nic.mac)));
        config.random_seed = cpu::hardware_random_u64().unwrap_or(0) ^ cpu::read_tsc();
        let mut interface = Interface::new(config, &mut device, now());
        interface.update_ip_addrs(|addresses| {
            if addresses
                .push(IpCidr::new(address.into(), prefix_len))
                .is_err()
            {
                log::error!("net: no room for the interface address");
            }
        });
        if kind == CardKind::User
            && interface
                .routes_mut()
                .add_default_ipv4_route(USER_GATEWAY)
                .is_err()
        {
            log::error!("net: no room for the user card's route");
        }
        log::info!("net: {address}/{prefix_len} ({kind:?} card)");
        cards.push(Card {
            kind,
            device,
            interface,
            sockets: SocketSet::new(Vec::new()),
            address,
            prefix_len,
        });
    }
    if cards.is_empty() {
        return;
    }
    *NET.lock() = Some(Net {
        cards,
        closing: Vec::new(),
        domains: domain_sockets::DomainSockets::new(),
    });
    HAS_CARD.store(true, Ordering::Release);
}

/// The address from `ip=` when it is a valid link-local one, else
/// 169.254.0.N with N the MAC's last byte (1 for 0, 254 for 255).
fn address_from(argument: Option<&str>, mac: [u8; 6]) -> Ipv4Address {
    if let Some(text) = argument {
        match text.parse::<Ipv4Address>() {
            Ok(address) if address.is_link_local() => return address,
            _ => log::warn!("net: ip={text} is not a 169.254.x.y address; using the default"),
        }
    }
    let host = match mac[5] {
        0 => 1,
        255 => 254,
        byte => byte,
    };
    Ipv4Address::new(169, 254, 0, host)
}

/// Moves frames between the card and the sockets, and frees the sockets of
/// dropped connections once closed. Returns whether anything happened (the
/// main loop does not sleep then).
pub fn poll() -> bool {
    if !HAS_CARD.load(Ordering::Acquire) {
        return false;
    }
    let mut guard = NET.lock();
    let Some(net) = guard.as_mut() else {
        return false;
    };
    let mut is_changed = false;
    let timestamp = now();
    for card in &mut net.cards {
        let result = card
            .interface
            .poll(timestamp, &mut card.device, &mut card.sockets);
        is_changed |= result == PollResult::SocketStateChanged;
    }
    if !net.closing.is_empty() {
        net.reap_closed();
    }
    if is_changed {
        net.rearm_listeners();
    }
    is_changed
}

impl Net {
    fn reap_closed(&mut self) {
        let now_ns = timer::uptime_ns();
        let cards = &mut self.cards;
        self.closing.retain(|&(socket_ref, deadline_ns)| {
            let Some(card) = cards.get_mut(socket_ref.card) else {
                return false;
            };
            let socket = card.sockets.get_mut::<tcp::Socket>(socket_ref.handle);
            let is_done = matches!(socket.state(), TcpState::Closed | TcpState::TimeWait);
            if is_done || now_ns > deadline_ns {
                socket.abort();
                card.sockets.remove(socket_ref.handle);
                return false;
            }
            true
        });
    }

    /// The socket behind `socket_ref` (always valid: a handle is dropped
    /// from every list when its socket is removed).
    fn socket(&mut self, socket_ref: SocketRef) -> Option<&mut tcp::Socket<'static>> {
        let card = self.cards.get_mut(socket_ref.card)?;
        Some(card.sockets.get_mut::<tcp::Socket>(socket_ref.handle))
    }

    /// Aborts and frees a socket at once.
    fn remove_socket(&mut self, socket_ref: SocketRef) {
        if let Some(card) = self.cards.get_mut(socket_ref.card) {
            card.sockets
                .get_mut::<tcp::Socket>(socket_ref.handle)
                .abort();
            card.sockets.remove(socket_ref.handle);
        }
    }

    /// Closes a socket gracefully: it is freed once closed, or aborted at
    /// the deadline, or at once when [`MAX_CLOSING_SOCKETS`] others are
    /// already closing.
    fn close_socket(&mut self, socket_ref: SocketRef) {
        if let Some(socket) = self.socket(socket_ref) {
            socket.close();
        }
        if self.closing.len() >= MAX_CLOSING_SOCKETS {
            let (oldest, _) = self.closing.remove(0);
            self.remove_socket(oldest);
        }
        let deadline_ns = timer::uptime_ns() + CLOSE_DEADLINE_NS;
        self.closing.push((socket_ref, deadline_ns));
    }

    /// Every socket on every card.
    fn socket_count(&self) -> usize {
        self.cards
            .iter()
            .map(|card| card.sockets.iter().count())
            .sum()
    }

    /// The first card of `kind`.
    fn card_of(&self, kind: CardKind) -> Option<usize> {
        self.cards.iter().position(|card| card.kind == kind)
    }

    /// The card a connection to `address` goes out through: the one whose
    /// subnet holds it, else the user card (which has a gateway), else the
    /// link card.
    fn route(&self, address: Ipv4Address) -> Option<usize> {
        self.cards
            .iter()
            .position(|card| {
                IpCidr::new(card.address.into(), card.prefix_len).contains_addr(&address.into())
            })
            .or_else(|| self.card_of(CardKind::User))
            .or_else(|| self.card_of(CardKind::Link))
    }
}

/// The link card's (else the first card's) address and counters; None
/// without a card.
pub fn status() -> Option<NetStatus> {
    let guard = NET.lock();
    let net = guard.as_ref()?;
    let card = net.cards.get(net.card_of(CardKind::Link).unwrap_or(0))?;
    Some(NetStatus {
        nic: card.device.info(),
        address: card.address,
        prefix_len: card.prefix_len,
        counters: card.device.counters(),
    })
}

fn with_net<R>(f: impl FnOnce(&mut Net) -> Result<R, NetError>) -> Result<R, NetError> {
    let mut guard = NET.lock();
    let net = guard.as_mut().ok_or(NetError::NoCard)?;
    f(net)
}

fn new_socket() -> tcp::Socket<'static> {
    new_socket_of(TCP_BUFFER_BYTES)
}

fn new_socket_of(buffer_bytes: usize) -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; buffer_bytes]),
        tcp::SocketBuffer::new(vec![0; buffer_bytes]),
    )
}

fn next_ephemeral_port() -> u16 {
    let port = NEXT_EPHEMERAL_PORT.fetch_add(1, Ordering::Relaxed);
    if port == u16::MAX {
        NEXT_EPHEMERAL_PORT.store(FIRST_EPHEMERAL_PORT, Ordering::Relaxed);
    }
    port.max(FIRST_EPHEMERAL_PORT)
}

/// Ephemeral ports tried for one that no socket on the card uses, before
/// taking the next one anyway (smoltcp tells connections apart by the
/// remote end too).
const EPHEMERAL_PORT_TRIES: usize = 64;

impl Net {
    /// An ephemeral port no socket on `card` uses, if one of the next few is.
    fn free_ephemeral_port(&self, card: usize) -> u16 {
        let mut port = next_ephemeral_port();
        let Some(card) = self.cards.get(card) else {
            return port;
        };
        for _ in 0..EPHEMERAL_PORT_TRIES {
            let is_used = card.sockets.iter().any(|(_, socket)| match socket {
                smoltcp::socket::Socket::Tcp(socket) => {
                    socket.local_endpoint().map(|endpoint| endpoint.port) == Some(port)
                }
                #[allow(unreachable_patterns)]
                _ => false,
            });
            if !is_used {
                break;
            }
            port = next_ephemeral_port();
        }
        port
    }

    /// Adds `socket` to `card`, connecting to `address:port`.
    fn connecting_socket(
        &mut self,
        card: usize,
        mut socket: tcp::Socket<'static>,
        address: Ipv4Address,
        port: u16,
    ) -> Result<SocketRef, NetError> {
        let local_port = self.free_ephemeral_port(card);
        let card_state = self.cards.get_mut(card).ok_or(NetError::NoCard)?;
        let remote = IpEndpoint::new(address.into(), port);
        socket
            .connect(card_state.interface.context(), remote, local_port)
            .map_err(NetError::Connect)?;
        let handle = card_state.sockets.add(socket);
        Ok(SocketRef { card, handle })
    }
}

/// One TCP connection (or a listener waiting for one). Progress happens in
/// [`poll`]; every method here returns at once.
#[derive(Debug)]
pub struct TcpConnection {
    socket: SocketRef,
}

impl TcpConnection {
    /// Waits for one incoming connection on `port`, on the link card.
    pub fn listen(port: u16) -> Result<TcpConnection, NetError> {
        with_net(|net| {
            let card = net.card_of(CardKind::Link).ok_or(NetError::NoCard)?;
            let mut socket = new_socket();
            socket.listen(port).map_err(NetError::Listen)?;
            let handle = net.cards[card].sockets.add(socket);
            Ok(TcpConnection {
                socket: SocketRef { card, handle },
            })
        })
    }

    /// Starts connecting to `address:port`, through the card that reaches it.
    pub fn connect(address: Ipv4Address, port: u16) -> Result<TcpConnection, NetError> {
        with_net(|net| {
            let card = net.route(address).ok_or(NetError::NoCard)?;
            let socket = net.connecting_socket(card, new_socket(), address, port)?;
            Ok(TcpConnection { socket })
        })
    }

    fn with_socket<R>(
        &self,
        f: impl FnOnce(&mut tcp::Socket<'static>) -> Result<R, NetError>,
    ) -> Result<R, NetError> {
        with_net(|net| f(net.socket(self.socket).ok_or(NetError::NoCard)?))
    }

    /// The TCP state (RFC 793): `Listen`, `SynSent`, `Established`...
    pub fn state(&self) -> TcpState {
        self.with_socket(|socket| Ok(socket.state()))
            .unwrap_or(TcpState::Closed)
    }

    /// The peer's address and port, once connected.
    pub fn remote(&self) -> Option<IpEndpoint> {
        self.with_socket(|socket| Ok(socket.remote_endpoint()))
            .ok()
            .flatten()
    }

    /// Queues as much of `bytes` as the send buffer takes; returns how much.
    pub fn send(&self, bytes: &[u8]) -> Result<usize, NetError> {
        self.with_socket(|socket| socket.send_slice(bytes).map_err(NetError::Send))
    }

    /// Copies received bytes into `buffer`; returns how many (0 when none
    /// are waiting), or `NetError::Finished` once the peer has closed and
    /// everything it sent has been read.
    pub fn receive(&self, buffer: &mut [u8]) -> Result<usize, NetError> {
        self.with_socket(|socket| {
            socket.recv_slice(buffer).map_err(|error| match error {
                tcp::RecvError::Finished => NetError::Finished,
                error => NetError::Receive(error),
            })
        })
    }

    /// Bytes queued but not yet acknowledged by the peer.
    pub fn unacknowledged_bytes(&self) -> usize {
        self.with_socket(|socket| Ok(socket.send_queue()))
            .unwrap_or(0)
    }

    /// Sends a FIN once everything queued has gone; receiving still works.
    pub fn close(&self) {
        let _ = self.with_socket(|socket| {
            socket.close();
            Ok(())
        });
    }
}

/// A port taking connections: `backlog` smoltcp sockets listen on it at
/// once, because a smoltcp socket that takes a SYN becomes that connection
/// and stops listening. With one, a peer connecting while another's
/// handshake is under way (or before the owner replaced the socket) is
/// reset; with a backlog, each waiting socket takes one, and
/// [`TcpListener::accept`] puts a new one in the place of each it hands
/// out. Dropping the listener closes every socket still waiting.
#[derive(Debug)]
pub struct TcpListener {
    port: u16,
    waiting: Vec<TcpConnection>,
}

impl TcpListener {
    /// Listens on `port` with `backlog` sockets (at least one).
    pub fn bind(port: u16, backlog: usize) -> Result<TcpListener, NetError> {
        let waiting = (0..backlog.max(1))
            .map(|_| TcpConnection::listen(port))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TcpListener { port, waiting })
    }

    /// A connection that has completed its handshake, if one has; a new
    /// socket takes its place in the backlog (while the heap gives one).
    pub fn accept(&mut self) -> Option<TcpConnection> {
        let index = self.waiting.iter().position(|socket| {
            !matches!(socket.state(), TcpState::Listen | TcpState::SynReceived)
        })?;
        let connection = self.waiting.swap_remove(index);
        if let Ok(replacement) = TcpConnection::listen(self.port) {
            self.waiting.push(replacement);
        }
        Some(connection)
    }
}

impl Drop for TcpConnection {
    fn drop(&mut self) {
        let _ = with_net(|net| {
            net.close_socket(self.socket);
            Ok(())
        });
    }
}
