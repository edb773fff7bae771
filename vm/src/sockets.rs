//! A domain's socket numbers: declared listeners, connections, their flags.
//!
//! Socket numbers are shared by the `amber` TCP calls and WASI's fds. The
//! image's declared ports are listeners at `abi::FIRST_LISTENER_FD`, 3, 4,
//! ... in declaration order; a connection takes the lowest free number
//! above them. What a commit keeps is [`persist::NetworkRecord`]: the
//! declared ports, the connections' numbers and the nonblocking set. A
//! connection does not survive a restore: it comes back as
//! [`ConnectionState::Reset`], which reads and writes as reset until the
//! guest closes it, so a restored guest never waits on a peer that is gone.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use abi::{FIRST_LISTENER_FD, MAX_CONNECTIONS_PER_DOMAIN, MAX_LISTEN_PORTS, readiness};
use persist::NetworkRecord;

use crate::error::Error;
use crate::net::{ConnectionId, Network};
use crate::storage::DomainId;

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectionState {
    /// Open on the machine's network.
    Live(ConnectionId),
    /// Reset by the peer, or open at the commit the domain was restored
    /// from: every read and write reports the reset until it is closed.
    Reset,
}

/// What a socket number stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketKind {
    /// A declared port the domain listens on.
    Listener { port: u16 },
    /// A connection, accepted or connected.
    Connection {
        state: ConnectionState,
        /// `shutdown` ended its writing side.
        is_write_shut: bool,
    },
}

/// One open socket number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Socket {
    pub(crate) kind: SocketKind,
    /// WASI calls on it return `AGAIN` instead of waiting.
    pub(crate) is_nonblocking: bool,
}

/// The socket numbers of one domain, keyed by number.
#[derive(Debug, Clone, Default)]
pub(crate) struct SocketTable {
    /// The declared ports, in the order of their numbers.
    listen: Vec<u16>,
    durable_replies: bool,
    sockets: BTreeMap<u32, Socket>,
}

impl SocketTable {
    /// The table a committed record describes: every declared listener
    /// open, every committed connection reset. Refuses a record no image
    /// could hold (too many ports or connections, duplicates, numbers
    /// outside the connections' range, flags on nothing).
    pub(crate) fn from_record(record: &NetworkRecord) -> Result<Self, Error> {
        let bad = |what: &str| Error::BadNetworkRecord(String::from(what));
        if record.listen.len() > MAX_LISTEN_PORTS {
            return Err(bad("more declared ports than an image may have"));
        }
        if record.connections.len() > MAX_CONNECTIONS_PER_DOMAIN {
            return Err(bad("more connections than a domain may hold"));
        }
        let mut table = Self {
            listen: record.listen.clone(),
            durable_replies: record.durable_replies,
            sockets: BTreeMap::new(),
        };
        for (index, &port) in record.listen.iter().enumerate() {
            if port == 0 || record.listen[..index].contains(&port) {
                return Err(bad("a declared port is zero or declared twice"));
            }
            let socket = Socket {
                kind: SocketKind::Listener { port },
                is_nonblocking: false,
            };
            table.sockets.insert(listener_number(index), socket);
        }
        let first_connection = table.first_connection_number();
        for &number in &record.connections {
            let socket = Socket {
                kind: SocketKind::Connection {
                    state: ConnectionState::Reset,
                    is_write_shut: false,
                },
                is_nonblocking: false,
            };
            if number < first_connection || table.sockets.insert(number, socket).is_some() {
                return Err(bad("a connection's number is a listener's or taken twice"));
            }
        }
        if record.nonblocking.len() > table.sockets.len() {
            return Err(bad("more nonblocking sockets than sockets"));
        }
        for number in &record.nonblocking {
            let socket = table
                .sockets
                .get_mut(number)
                .ok_or_else(|| bad("a nonblocking flag on no socket"))?;
            socket.is_nonblocking = true;
        }
        Ok(table)
    }

    /// What a commit keeps of the table.
    pub(crate) fn to_record(&self) -> NetworkRecord {
        NetworkRecord {
            listen: self.listen.clone(),
            durable_replies: self.durable_replies,
            connections: self
                .sockets
                .iter()
                .filter(|(_, socket)| matches!(socket.kind, SocketKind::Connection { .. }))
                .map(|(&number, _)| number)
                .collect(),
            nonblocking: self
                .sockets
                .iter()
                .filter(|(_, socket)| socket.is_nonblocking)
                .map(|(&number, _)| number)
                .collect(),
        }
    }

    /// Whether replies are held until a commit (`crate::held_replies`).
    pub(crate) fn has_durable_replies(&self) -> bool {
        self.durable_replies
    }

    /// Frees socket `number` without closing anything on the network.
    pub(crate) fn remove(&mut self, number: u32) -> Option<Socket> {
        self.sockets.remove(&number)
    }

    /// The declared ports, in the order of their numbers.
    pub(crate) fn declared_ports(&self) -> &[u16] {
        &self.listen
    }

    /// The number of the declared listener on `port`, if declared.
    pub(crate) fn listener_for(&self, port: u16) -> Option<u32> {
        let index = self.listen.iter().position(|&declared| declared == port)?;
        Some(listener_number(index))
    }

    /// Reopens the declared listener on `port` (after the guest closed
    /// it); returns its number.
    pub(crate) fn reopen_listener(&mut self, port: u16) -> Option<u32> {
        let number = self.listener_for(port)?;
        self.sockets.entry(number).or_insert(Socket {
            kind: SocketKind::Listener { port },
            is_nonblocking: false,
        });
        Some(number)
    }

    /// The socket `number`, if open.
    pub(crate) fn get(&self, number: u32) -> Option<&Socket> {
        self.sockets.get(&number)
    }

    /// The socket `number`, mutably.
    pub(crate) fn get_mut(&mut self, number: u32) -> Option<&mut Socket> {
        self.sockets.get_mut(&number)
    }

    /// How many connections are open (reset ones included: they hold a
    /// number until closed).
    pub(crate) fn connection_count(&self) -> usize {
        self.sockets
            .values()
            .filter(|socket| matches!(socket.kind, SocketKind::Connection { .. }))
            .count()
    }

    /// Whether another connection may be opened.
    pub(crate) fn has_room(&self) -> bool {
        self.connection_count() < MAX_CONNECTIONS_PER_DOMAIN
    }

    /// Gives `connection` the lowest free number above the listeners.
    pub(crate) fn insert_connection(
        &mut self,
        connection: ConnectionId,
        is_nonblocking: bool,
    ) -> u32 {
        let mut number = self.first_connection_number();
        // At most MAX_CONNECTIONS_PER_DOMAIN are taken, so this ends soon.
        while self.sockets.contains_key(&number) {
            number = number.saturating_add(1);
        }
        let socket = Socket {
            kind: SocketKind::Connection {
                state: ConnectionState::Live(connection),
                is_write_shut: false,
            },
            is_nonblocking,
        };
        self.sockets.insert(number, socket);
        number
    }

    /// Closes socket `number` on the network and frees the number.
    pub(crate) fn close(&mut self, network: &dyn Network, domain: DomainId, number: u32) -> bool {
        let Some(socket) = self.sockets.remove(&number) else {
            return false;
        };
        match socket.kind {
            SocketKind::Listener { port } => network.unlisten(domain, port),
            SocketKind::Connection {
                state: ConnectionState::Live(connection),
                ..
            } => network.close(connection),
            SocketKind::Connection { .. } => {}
        }
        true
    }

    /// Marks every live connection reset (the network forgot them).
    pub(crate) fn reset_all(&mut self) {
        for socket in self.sockets.values_mut() {
            if let SocketKind::Connection { state, .. } = &mut socket.kind {
                *state = ConnectionState::Reset;
            }
        }
    }

    /// What socket `number` can do now, as `abi::readiness` bits, or
    /// `None` when no socket has the number.
    pub(crate) fn readiness(
        &self,
        network: &dyn Network,
        domain: DomainId,
        number: u32,
    ) -> Option<u16> {
        let socket = self.sockets.get(&number)?;
        Some(match socket.kind {
            SocketKind::Listener { port } => {
                if network.listener_has_client(domain, port) {
                    readiness::READABLE
                } else {
                    0
                }
            }
            SocketKind::Connection {
                state: ConnectionState::Live(connection),
                ..
            } => {
                let now = network.connection_readiness(connection);
                let mut bits = 0;
                if now.readable {
                    bits |= readiness::READABLE;
                }
                if now.writable {
                    bits |= readiness::WRITABLE;
                }
                if now.hangup {
                    bits |= readiness::HANGUP;
                }
                bits
            }
            // A read or write completes at once, with the reset.
            SocketKind::Connection {
                state: ConnectionState::Reset,
                ..
            } => readiness::READABLE | readiness::WRITABLE | readiness::HANGUP,
        })
    }

    fn first_connection_number(&self) -> u32 {
        listener_number(self.listen.len())
    }
}

/// The number of the `index`-th declared listener.
fn listener_number(index: usize) -> u32 {
    // index <= MAX_LISTEN_PORTS, checked when the table is made.
    FIRST_LISTENER_FD.saturating_add(index as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(listen: &[u16], connections: &[u32], nonblocking: &[u32]) -> NetworkRecord {
        NetworkRecord {
            listen: listen.to_vec(),
            durable_replies: false,
            connections: connections.to_vec(),
            nonblocking: nonblocking.to_vec(),
        }
    }

    #[test]
    fn a_record_round_trips_with_connections_reset() {
        let original = record(&[80, 443], &[5, 7], &[3, 7]);
        let table = SocketTable::from_record(&original).expect("a valid record");
        assert_eq!(table.to_record(), original);
        assert_eq!(table.listener_for(443), Some(4));
        let reset = table.get(7).map(|socket| socket.kind);
        assert_eq!(
            reset,
            Some(SocketKind::Connection {
                state: ConnectionState::Reset,
                is_write_shut: false
            })
        );
    }

    #[test]
    fn connections_take_the_lowest_free_number_above_the_listeners() {
        let mut table = SocketTable::from_record(&record(&[80], &[5], &[])).expect("valid");
        assert_eq!(table.insert_connection(1, false), 4);
        assert_eq!(table.insert_connection(2, false), 6);
    }

    #[test]
    fn hostile_records_are_refused() {
        let too_many_ports: Vec<u16> = (1..=9).collect();
        let too_many_connections: Vec<u32> = (4..4 + 65).collect();
        for bad in [
            record(&too_many_ports, &[], &[]),
            record(&[80], &too_many_connections, &[]),
            record(&[80, 80], &[], &[]),
            record(&[0], &[], &[]),
            record(&[80], &[3], &[]),
            record(&[80], &[4, 4], &[]),
            record(&[80], &[], &[9]),
        ] {
            assert!(SocketTable::from_record(&bad).is_err(), "{bad:?}");
        }
    }
}
