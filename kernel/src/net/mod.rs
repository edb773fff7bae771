//! IPv4 over the virtio-net card with smoltcp: polling and a small TCP API.
//!
//! One interface with one link-local address (`ip=169.254.x.y` on the
//! command line, else 169.254.0.N with N from the MAC's last byte), no
//! gateway, no ARP tricks: two Amber machines on one virtual wire reach each
//! other directly. The main loop calls [`poll`] once per iteration; it moves
//! frames between the card and smoltcp's sockets and returns at once when
//! there is no card.
//!
//! The TCP API is non-blocking: a [`TcpConnection`] listens or connects, and
//! `send`/`receive` move what fits now. Dropping a connection closes it
//! gracefully; its socket stays until the close completes (or a deadline
//! passes), so the last bytes and the FIN still go out.

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

static NET: Mutex<Option<Net>> = Mutex::new(None);

/// Set once a card is up, so that `poll` costs one load without one.
static HAS_CARD: AtomicBool = AtomicBool::new(false);

static NEXT_EPHEMERAL_PORT: AtomicU16 = AtomicU16::new(FIRST_EPHEMERAL_PORT);

struct Net {
    device: NetDevice,
    interface: Interface,
    sockets: SocketSet<'static>,
    address: Ipv4Address,
    /// Dropped connections still closing, with the time (uptime ns) by
    /// which they are aborted.
    closing: Vec<(SocketHandle, u64)>,
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

/// Brings up the first virtio-net card, if any, with the address from
/// `ip=` (or the MAC-derived default).
pub fn init(info: &BootInfo) {
    let Some(mut device) = virtio_net::probe() else {
        return;
    };
    let nic = device.info();
    let address = address_from(info.argument("ip"), nic.mac);
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(nic.mac)));
    config.random_seed = cpu::hardware_random_u64().unwrap_or(0) ^ cpu::read_tsc();
    let mut interface = Interface::new(config, &mut device, now());
    interface.update_ip_addrs(|addresses| {
        if addresses
            .push(IpCidr::new(address.into(), LINK_LOCAL_PREFIX_LEN))
            .is_err()
        {
            log::error!("net: no room for the interface address");
        }
    });
    log::info!("net: {address}/{LINK_LOCAL_PREFIX_LEN}");
    *NET.lock() = Some(Net {
        device,
        interface,
        sockets: SocketSet::new(Vec::new()),
        address,
        closing: Vec::new(),
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
    let result = net.interface.poll(now(), &mut net.device, &mut net.sockets);
    if !net.closing.is_empty() {
        net.reap_closed();
    }
    result == PollResult::SocketStateChanged
}

impl Net {
    fn reap_closed(&mut self) {
        let now_ns = timer::uptime_ns();
        let sockets = &mut self.sockets;
        self.closing.retain(|&(handle, deadline_ns)| {
            let socket = sockets.get_mut::<tcp::Socket>(handle);
            let is_done = matches!(socket.state(), TcpState::Closed | TcpState::TimeWait);
            if is_done || now_ns > deadline_ns {
                socket.abort();
                sockets.remove(handle);
                return false;
            }
            true
        });
    }
}

/// The card, address and counters; None without a card.
pub fn status() -> Option<NetStatus> {
    let guard = NET.lock();
    let net = guard.as_ref()?;
    Some(NetStatus {
        nic: net.device.info(),
        address: net.address,
        prefix_len: LINK_LOCAL_PREFIX_LEN,
        counters: net.device.counters(),
    })
}

fn with_net<R>(f: impl FnOnce(&mut Net) -> Result<R, NetError>) -> Result<R, NetError> {
    let mut guard = NET.lock();
    let net = guard.as_mut().ok_or(NetError::NoCard)?;
    f(net)
}

fn new_socket() -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER_BYTES]),
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER_BYTES]),
    )
}

fn next_ephemeral_port() -> u16 {
    let port = NEXT_EPHEMERAL_PORT.fetch_add(1, Ordering::Relaxed);
    if port == u16::MAX {
        NEXT_EPHEMERAL_PORT.store(FIRST_EPHEMERAL_PORT, Ordering::Relaxed);
    }
    port
}

/// One TCP connection (or a listener waiting for one). Progress happens in
/// [`poll`]; every method here returns at once.
#[derive(Debug)]
pub struct TcpConnection {
    handle: SocketHandle,
}

impl TcpConnection {
    /// Waits for one incoming connection on `port`.
    pub fn listen(port: u16) -> Result<TcpConnection, NetError> {
        with_net(|net| {
            let mut socket = new_socket();
            socket.listen(port).map_err(NetError::Listen)?;
            let handle = net.sockets.add(socket);
            Ok(TcpConnection { handle })
        })
    }

    /// Starts connecting to `address:port`.
    pub fn connect(address: Ipv4Address, port: u16) -> Result<TcpConnection, NetError> {
        with_net(|net| {
            let mut socket = new_socket();
            let remote = IpEndpoint::new(address.into(), port);
            socket
                .connect(net.interface.context(), remote, next_ephemeral_port())
                .map_err(NetError::Connect)?;
            let handle = net.sockets.add(socket);
            Ok(TcpConnection { handle })
        })
    }

    fn with_socket<R>(
        &self,
        f: impl FnOnce(&mut tcp::Socket<'static>) -> Result<R, NetError>,
    ) -> Result<R, NetError> {
        with_net(|net| f(net.sockets.get_mut::<tcp::Socket>(self.handle)))
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
            net.sockets.get_mut::<tcp::Socket>(self.handle).close();
            if net.closing.len() >= MAX_CLOSING_SOCKETS {
                let (oldest, _) = net.closing.remove(0);
                net.sockets.get_mut::<tcp::Socket>(oldest).abort();
                net.sockets.remove(oldest);
            }
            let deadline_ns = timer::uptime_ns() + CLOSE_DEADLINE_NS;
            net.closing.push((self.handle, deadline_ns));
            Ok(())
        });
    }
}
