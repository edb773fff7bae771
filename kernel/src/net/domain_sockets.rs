//! Domains' TCP listeners and connections over smoltcp: the kernel's
//! [`vm::net::Network`].
//!
//! A port a domain listens on is the domain's alone (another domain's
//! `listen` is `PortTaken`; the migration port is never a domain's). On
//! every card, [`LISTEN_BACKLOG`] smoltcp sockets listen on it at once,
//! because a smoltcp socket that takes a SYN becomes that connection: each
//! waiting socket holds one client until the domain accepts it, and
//! another takes its place (re-armed at accept, or at the next poll when
//! the heap had no room then). A domain has at most
//! [`MAX_CONNECTIONS_PER_DOMAIN`] connections: past it `accept` is
//! `LimitReached` and the client stays in the backlog. Every socket's two
//! buffers are [`SOCKET_BUFFER_BYTES`]; before allocating them the machine
//! must have fewer than [`MAX_DOMAIN_SOCKETS`] sockets and
//! [`MIN_HEAP_ROOM_BYTES`] of heap to spare beyond them, so a flood of
//! clients slows the domains it reaches (their backlogs run dry and clients
//! are refused) and never exhausts the heap.
//!
//! A connection reads 0 once the peer closed and everything it sent was
//! read, and `Reset` once the peer reset it (`Refused` when it never got
//! through). `close` sends a FIN; the socket is freed when the close
//! completes (bounded as the kernel's own connections are, see
//! [`super::MAX_CLOSING_SOCKETS`]).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use kernel_core::migration::MIGRATION_PORT;
use smoltcp::socket::tcp;
use smoltcp::time::Duration;
use smoltcp::wire::Ipv4Address;
use vm::DomainId;
use vm::abi::{MAX_CONNECTIONS_PER_DOMAIN, SOCKET_BUFFER_BYTES};
use vm::net::{ConnectionId, NetError, Network, Readiness};

use super::{NET, Net, SocketRef, TcpState, new_socket_of};
use crate::memory::heap;

/// Sockets listening on one domain port, per card: how many clients may
/// connect at once (between two polls of the network) before the next
/// ones are reset. As many as a domain may hold connections, so that all
/// of them may arrive in one burst: `redis-benchmark -c 50` opens its 50
/// at once, and with 16 here those past the 16th were reset while a
/// durable commit held the domain. Each costs its two buffers (about
/// 33 KiB) while it waits, so a port costs about 2 MiB of heap per card;
/// past the heap's reserve a port gets fewer (see `has_room_for_socket`).
pub const LISTEN_BACKLOG: usize = MAX_CONNECTIONS_PER_DOMAIN;

/// Domain sockets (listening, connected and closing) on the machine at most.
pub const MAX_DOMAIN_SOCKETS: usize = 1024;

/// Heap that must stay free after a socket's buffers are allocated: room
/// for the kernel itself, the migration link and the domains' growth.
pub const MIN_HEAP_ROOM_BYTES: u64 = 16 * 1024 * 1024;

/// How long a connection with unacknowledged data (or a connect with no
/// answer) may hear nothing from the peer before it is reset.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(60);

/// The heap two buffers of one socket take (and a little for the socket).
const SOCKET_COST_BYTES: u64 = 2 * SOCKET_BUFFER_BYTES as u64 + 1024;

/// One domain port.
#[derive(Debug)]
struct Listener {
    domain: DomainId,
    /// The sockets waiting for (or holding) a client, on every card.
    waiting: Vec<SocketRef>,
}

/// One domain connection.
#[derive(Debug)]
struct Connection {
    domain: DomainId,
    socket: SocketRef,
    /// Whether it ever got through, so a closed socket reads as `Reset`
    /// (else `Refused`).
    was_established: bool,
}

/// Every domain's listeners and connections.
#[derive(Debug)]
pub struct DomainSockets {
    listeners: BTreeMap<u16, Listener>,
    connections: BTreeMap<ConnectionId, Connection>,
    next_id: ConnectionId,
}

impl Default for DomainSockets {
    fn default() -> Self {
        DomainSockets::new()
    }
}

impl DomainSockets {
    pub const fn new() -> DomainSockets {
        DomainSockets {
            listeners: BTreeMap::new(),
            connections: BTreeMap::new(),
            next_id: 1,
        }
    }

    fn connections_of(&self, domain: DomainId) -> usize {
        self.connections
            .values()
            .filter(|connection| connection.domain == domain)
            .count()
    }
}

/// Whether a socket past the handshake waits in a backlog.
fn holds_client(state: TcpState) -> bool {
    !matches!(
        state,
        TcpState::Listen | TcpState::SynReceived | TcpState::Closed
    )
}

impl Net {
    /// Whether another domain socket fits: under the machine's cap, with
    /// the heap's reserve left after its buffers.
    fn has_room_for_socket(&self) -> bool {
        if self.socket_count() >= MAX_DOMAIN_SOCKETS {
            return false;
        }
        let stats = heap::stats();
        let room = stats.size_bytes.saturating_sub(stats.allocated_bytes);
        room >= MIN_HEAP_ROOM_BYTES + SOCKET_COST_BYTES
    }

    /// A new socket listening on `port` on `card`, when there is room.
    fn listening_socket(&mut self, card: usize, port: u16) -> Result<SocketRef, NetError> {
        if !self.has_room_for_socket() {
            return Err(NetError::LimitReached);
        }
        let mut socket = new_socket_of(SOCKET_BUFFER_BYTES);
        socket.set_timeout(Some(SILENCE_TIMEOUT));
        socket.listen(port).map_err(|_| NetError::Unsupported)?;
        let card_state = self.cards.get_mut(card).ok_or(NetError::Unsupported)?;
        let handle = card_state.sockets.add(socket);
        Ok(SocketRef { card, handle })
    }

    /// Puts listening sockets back where clients were taken or a backlog
    /// socket was reset before its handshake ended, while there is room.
    pub(super) fn rearm_listeners(&mut self) {
        let ports: Vec<u16> = self.domains.listeners.keys().copied().collect();
        for port in ports {
            for card in 0..self.cards.len() {
                let Some(listener) = self.domains.listeners.get(&port) else {
                    break;
                };
                let waiting: Vec<SocketRef> = listener
                    .waiting
                    .iter()
                    .copied()
                    .filter(|socket| socket.card == card)
                    .collect();
                let mut listening = 0;
                for socket_ref in waiting {
                    let Some(socket) = self.socket(socket_ref) else {
                        continue;
                    };
                    match socket.state() {
                        // A client that reset before being accepted: listen again.
                        TcpState::Closed => {
                            if socket.listen(port).is_ok() {
                                listening += 1;
                            }
                        }
                        TcpState::Listen | TcpState::SynReceived => listening += 1,
                        _ => {}
                    }
                }
                for _ in listening..LISTEN_BACKLOG {
                    let Ok(socket) = self.listening_socket(card, port) else {
                        return;
                    };
                    if let Some(listener) = self.domains.listeners.get_mut(&port) {
                        listener.waiting.push(socket);
                    }
                }
            }
        }
    }

    fn connection(&mut self, id: ConnectionId) -> Option<(&mut tcp::Socket<'static>, &mut bool)> {
        let connection = self.domains.connections.get_mut(&id)?;
        let card = self.cards.get_mut(connection.socket.card)?;
        let socket = card
            .sockets
            .get_mut::<tcp::Socket>(connection.socket.handle);
        if matches!(
            socket.state(),
            TcpState::Established | TcpState::CloseWait | TcpState::FinWait1 | TcpState::FinWait2
        ) {
            connection.was_established = true;
        }
        Some((socket, &mut connection.was_established))
    }
}

fn lost(was_established: bool) -> NetError {
    if was_established {
        NetError::Reset
    } else {
        NetError::Refused
    }
}

/// The kernel's network for domains, over the cards in [`super`].
#[derive(Debug, Default)]
pub struct KernelNetwork;

/// The one instance, which `KernelPlatform::network` returns.
pub static NETWORK: KernelNetwork = KernelNetwork;

fn with_net<R>(default: R, f: impl FnOnce(&mut Net) -> R) -> R {
    let mut guard = NET.lock();
    match guard.as_mut() {
        Some(net) => f(net),
        None => default,
    }
}

impl Network for KernelNetwork {
    fn listen(&self, domain: DomainId, port: u16) -> Result<(), NetError> {
        if port == MIGRATION_PORT || port == 0 {
            return Err(NetError::PortTaken);
        }
        with_net(Err(NetError::Unsupported), |net| {
            if let Some(listener) = net.domains.listeners.get(&port) {
                return if listener.domain == domain {
                    Ok(())
                } else {
                    Err(NetError::PortTaken)
                };
            }
            let mut waiting = Vec::new();
            for card in 0..net.cards.len() {
                for _ in 0..LISTEN_BACKLOG {
                    match net.listening_socket(card, port) {
                        Ok(socket) => waiting.push(socket),
                        Err(_) => break,
                    }
                }
            }
            if waiting.is_empty() {
                return Err(NetError::LimitReached);
            }
            net.domains
                .listeners
                .insert(port, Listener { domain, waiting });
            Ok(())
        })
    }

    fn unlisten(&self, domain: DomainId, port: u16) {
        with_net((), |net| {
            if net
                .domains
                .listeners
                .get(&port)
                .is_some_and(|listener| listener.domain == domain)
                && let Some(listener) = net.domains.listeners.remove(&port)
            {
                for socket in listener.waiting {
                    net.remove_socket(socket);
                }
            }
        })
    }

    fn accept(&self, domain: DomainId, port: u16) -> Result<ConnectionId, NetError> {
        with_net(Err(NetError::NotListening), |net| {
            let waiting = match net.domains.listeners.get(&port) {
                Some(listener) if listener.domain == domain => listener.waiting.clone(),
                _ => return Err(NetError::NotListening),
            };
            let Some(index) = waiting.iter().position(|&socket_ref| {
                net.socket(socket_ref)
                    .is_some_and(|socket| holds_client(socket.state()))
            }) else {
                return Err(NetError::WouldBlock);
            };
            if net.domains.connections_of(domain) >= MAX_CONNECTIONS_PER_DOMAIN {
                return Err(NetError::LimitReached);
            }
            let socket = waiting[index];
            if let Some(listener) = net.domains.listeners.get_mut(&port) {
                listener.waiting.retain(|&other| other != socket);
            }
            let id = net.domains.next_id;
            net.domains.next_id += 1;
            net.domains.connections.insert(
                id,
                Connection {
                    domain,
                    socket,
                    was_established: true,
                },
            );
            if let Ok(replacement) = net.listening_socket(socket.card, port)
                && let Some(listener) = net.domains.listeners.get_mut(&port)
            {
                listener.waiting.push(replacement);
            }
            Ok(id)
        })
    }

    fn listener_has_client(&self, domain: DomainId, port: u16) -> bool {
        with_net(false, |net| {
            let waiting = match net.domains.listeners.get(&port) {
                Some(listener) if listener.domain == domain => listener.waiting.clone(),
                _ => return false,
            };
            waiting.into_iter().any(|socket_ref| {
                net.socket(socket_ref)
                    .is_some_and(|socket| holds_client(socket.state()))
            })
        })
    }

    fn connect(
        &self,
        domain: DomainId,
        address: [u8; 4],
        port: u16,
    ) -> Result<ConnectionId, NetError> {
        let address = Ipv4Address::from_octets(address);
        if port == 0 || address.is_unspecified() || address.is_loopback() {
            return Err(NetError::Refused);
        }
        with_net(Err(NetError::Unsupported), |net| {
            if net.domains.connections_of(domain) >= MAX_CONNECTIONS_PER_DOMAIN
                || !net.has_room_for_socket()
            {
                return Err(NetError::LimitReached);
            }
            let card = net.route(address).ok_or(NetError::Unsupported)?;
            let mut socket = new_socket_of(SOCKET_BUFFER_BYTES);
            socket.set_timeout(Some(SILENCE_TIMEOUT));
            let socket = net
                .connecting_socket(card, socket, address, port)
                .map_err(|_| NetError::Refused)?;
            let id = net.domains.next_id;
            net.domains.next_id += 1;
            net.domains.connections.insert(
                id,
                Connection {
                    domain,
                    socket,
                    was_established: false,
                },
            );
            Ok(id)
        })
    }

    fn read(&self, connection: ConnectionId, buffer: &mut [u8]) -> Result<usize, NetError> {
        with_net(Err(NetError::Closed), |net| {
            let (socket, &mut was_established) =
                net.connection(connection).ok_or(NetError::Closed)?;
            if matches!(socket.state(), TcpState::SynSent | TcpState::SynReceived) {
                return Err(NetError::WouldBlock);
            }
            match socket.recv_slice(buffer) {
                Ok(0) if !buffer.is_empty() => Err(NetError::WouldBlock),
                Ok(count) => Ok(count),
                Err(tcp::RecvError::Finished) => Ok(0),
                Err(tcp::RecvError::InvalidState) => Err(lost(was_established)),
            }
        })
    }

    fn write(&self, connection: ConnectionId, bytes: &[u8]) -> Result<usize, NetError> {
        with_net(Err(NetError::Closed), |net| {
            let (socket, &mut was_established) =
                net.connection(connection).ok_or(NetError::Closed)?;
            match socket.state() {
                TcpState::SynSent | TcpState::SynReceived => return Err(NetError::WouldBlock),
                TcpState::Closed => return Err(lost(was_established)),
                _ => {}
            }
            match socket.send_slice(bytes) {
                Ok(0) if !bytes.is_empty() => Err(NetError::WouldBlock),
                Ok(count) => Ok(count),
                Err(tcp::SendError::InvalidState) => Err(NetError::Closed),
            }
        })
    }

    fn shutdown(&self, connection: ConnectionId) {
        with_net((), |net| {
            if let Some((socket, _)) = net.connection(connection) {
                socket.close();
            }
        })
    }

    fn close(&self, connection: ConnectionId) {
        with_net((), |net| {
            if let Some(connection) = net.domains.connections.remove(&connection) {
                net.close_socket(connection.socket);
            }
        })
    }

    fn connection_readiness(&self, connection: ConnectionId) -> Readiness {
        let gone = Readiness {
            readable: true,
            writable: true,
            hangup: true,
        };
        with_net(gone, |net| {
            let Some((socket, _)) = net.connection(connection) else {
                return gone;
            };
            match socket.state() {
                TcpState::SynSent | TcpState::SynReceived => Readiness::default(),
                TcpState::Closed => gone,
                state => Readiness {
                    readable: socket.can_recv() || !socket.may_recv(),
                    writable: socket.can_send() || !socket.may_send(),
                    hangup: matches!(
                        state,
                        TcpState::CloseWait
                            | TcpState::LastAck
                            | TcpState::Closing
                            | TcpState::TimeWait
                    ),
                },
            }
        })
    }

    fn forget_domain(&self, domain: DomainId) {
        with_net((), |net| {
            let ports: Vec<u16> = net
                .domains
                .listeners
                .iter()
                .filter(|(_, listener)| listener.domain == domain)
                .map(|(&port, _)| port)
                .collect();
            for port in ports {
                if let Some(listener) = net.domains.listeners.remove(&port) {
                    for socket in listener.waiting {
                        net.remove_socket(socket);
                    }
                }
            }
            let ids: Vec<ConnectionId> = net
                .domains
                .connections
                .iter()
                .filter(|(_, connection)| connection.domain == domain)
                .map(|(&id, _)| id)
                .collect();
            for id in ids {
                if let Some(connection) = net.domains.connections.remove(&id) {
                    net.remove_socket(connection.socket);
                }
            }
        })
    }
}
