//! Checks a metadata record against the ABI's limits before anything uses it.
//!
//! A record is refused when it holds what no domain run by the vm under the
//! ABI's limits could have committed. The same check applies wherever a
//! record comes from outside the code that wrote it: an image opened from a
//! disk ([`crate::Image::open`]) and a migration's incoming metadata
//! ([`crate::migrate::Target`]), so an image from elsewhere is refused the
//! same way whichever door it comes through.
//!
//! # The rules, and why each holds for every record the vm writes
//!
//! - **Name**: what [`check_name`] allows (1 to 255 ASCII letters, digits,
//!   `-`, `_` and `.`: what [`crate::Image::create`] stores).
//! - **Memory**: `memory_pages <= memory_max_pages` (linear memory never
//!   grows past its maximum).
//! - **Mailbox**: at most [`MAX_MAILBOX_MESSAGES`] messages and
//!   [`MAX_MAILBOX_BYTES`] bytes, each message at most [`MAX_MESSAGE_BYTES`].
//!   `send` refuses a message past these with `MailboxFull`, and a
//!   redelivery from an outbox goes through the same check, so a committed
//!   mailbox never holds more.
//! - **Outbox**, per receiver: at most [`MAX_OUTBOX_MESSAGES`] messages and
//!   [`MAX_OUTBOX_BYTES`] bytes (a sender hears `MailboxFull` past them),
//!   each message at most [`MAX_MESSAGE_BYTES`]; never to the domain itself
//!   (a message to itself is committed with its mailbox, with no copy);
//!   numbers start at 1 and strictly ascend per receiver (the vm numbers
//!   messages to a receiver 1, 2, 3, ... and keeps them oldest first); and
//!   none is above the domain's send count to that receiver (a number is
//!   counted as sent when the receiver takes it, before the copy is kept),
//!   so every outbox message is below the domain's next number.
//! - **Counts**: no peer listed twice in `sent` or in `accepted`; the
//!   domain accepted no more of its own messages than it sent itself; and
//!   the messages it sent, summed over receivers, are at most the fuel it
//!   used (each `send` is a call, and every call costs fuel), so no count
//!   claims more sends than the domain ever ran instructions for.
//! - **Globals**: no index twice, and a 32-bit value zero-extended (what
//!   the vm stores).
//! - **Status**: a trap reason of at most [`MAX_TRAP_REASON_BYTES`].
//! - **Network**: the listen ports pass [`check_listen`] (at most
//!   [`MAX_LISTEN_PORTS`], each nonzero, none twice: what `image new` and
//!   [`crate::Image::create_from`] store, and nothing changes them later).
//!   At most [`MAX_CONNECTIONS_PER_DOMAIN`] connections, none listed twice,
//!   each numbered from the first socket after the listeners
//!   (`FIRST_LISTENER_FD + listen.len()`) to below [`connection_sockets_end`]:
//!   a connection takes the lowest free number above the listeners, and
//!   with at most `MAX_CONNECTIONS_PER_DOMAIN` open at once (the reset ones
//!   of a restore included, until closed) one of the first
//!   `MAX_CONNECTIONS_PER_DOMAIN` numbers is always free for it, and a
//!   number never changes while the connection is open. Nonblocking
//!   sockets are open ones (a listener or a listed connection), none
//!   twice: closing a socket forgets its flags.
//!
//! These rules bound what a record can make a machine hold and keep its
//! counts coherent; they cannot tell a forged domain ID from a real one.
//! What keeps a forger from posing as a domain the machine knows is the
//! name and ID check before a migration is accepted, and what keeps anyone
//! outside the cluster from sending a record at all is the authenticated
//! link. The receiving side of a redelivery adds its own bound: the vm
//! delivers an outbox message as the domain that owns the outbox, through
//! the receiver's mailbox limits.

use alloc::collections::BTreeMap;
use alloc::collections::BTreeSet;
use core::fmt;

use abi::{
    FIRST_LISTENER_FD, MAX_CONNECTIONS_PER_DOMAIN, MAX_LISTEN_PORTS, MAX_MAILBOX_BYTES,
    MAX_MAILBOX_MESSAGES, MAX_MESSAGE_BYTES, MAX_OUTBOX_BYTES, MAX_OUTBOX_MESSAGES, ValueType,
};

use crate::metadata::{DomainId, Metadata, NameError, NetworkRecord, StoredStatus, check_name};
use crate::network::{ListenError, check_listen};

/// One past the highest socket number a connection of a domain with
/// `listen_ports` declared ports can have (see the module docs: the
/// lowest free number above the listeners, with at most
/// [`MAX_CONNECTIONS_PER_DOMAIN`] open).
pub const fn connection_sockets_end(listen_ports: usize) -> u32 {
    // Both terms are small constants' worth (a checked list is at most
    // MAX_LISTEN_PORTS long), so the sum cannot overflow.
    let listen_ports = if listen_ports < MAX_LISTEN_PORTS {
        listen_ports
    } else {
        MAX_LISTEN_PORTS
    };
    FIRST_LISTENER_FD + listen_ports as u32 + MAX_CONNECTIONS_PER_DOMAIN as u32
}

/// The longest trap reason a record may hold, in bytes. The vm's reasons
/// are one line; this bound is generous and keeps a record from carrying
/// megabytes in a status.
pub const MAX_TRAP_REASON_BYTES: usize = 4096;

/// Which list of a record a message is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageList {
    /// Messages accepted and not yet received.
    Mailbox,
    /// Messages sent and not yet committed by their receivers.
    Outbox,
}

impl fmt::Display for MessageList {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Mailbox => "mailbox",
            Self::Outbox => "outbox",
        })
    }
}

/// Which per-peer count of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountList {
    /// Per receiver: how many of this domain's messages it accepted.
    Sent,
    /// Per sender: the highest number this domain accepted from it.
    Accepted,
}

impl fmt::Display for CountList {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Sent => "sent",
            Self::Accepted => "accepted",
        })
    }
}

/// Why a metadata record was refused: which rule of [`validate`] it breaks,
/// with the figures that break it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataError {
    /// The name is not one a domain can have ([`check_name`]).
    Name(NameError),
    /// More pages in use than the memory's maximum.
    MemoryPastMaximum {
        /// Pages in use.
        memory_pages: u64,
        /// The maximum.
        memory_max_pages: u64,
    },
    /// One message longer than [`MAX_MESSAGE_BYTES`].
    MessageTooLarge {
        /// Where it is.
        list: MessageList,
        /// Its length.
        len_bytes: usize,
    },
    /// A mailbox past [`MAX_MAILBOX_MESSAGES`] or [`MAX_MAILBOX_BYTES`].
    MailboxTooLarge {
        /// Messages in it.
        messages: usize,
        /// Bytes of messages in it.
        len_bytes: usize,
    },
    /// The messages to one receiver past [`MAX_OUTBOX_MESSAGES`] or
    /// [`MAX_OUTBOX_BYTES`].
    OutboxTooLarge {
        /// The receiver.
        receiver: DomainId,
        /// Messages to it.
        messages: usize,
        /// Bytes of messages to it.
        len_bytes: usize,
    },
    /// An outbox message to the domain itself.
    OutboxToItself,
    /// An outbox message numbered 0, or not above the one before it to the
    /// same receiver.
    OutboxOutOfOrder {
        /// The receiver.
        receiver: DomainId,
        /// The message's number.
        sequence: u64,
    },
    /// An outbox message numbered above the domain's send count to its
    /// receiver: a number never sent.
    OutboxPastSentCount {
        /// The receiver.
        receiver: DomainId,
        /// The message's number.
        sequence: u64,
        /// The send count (0 when the receiver is not counted).
        sent: u64,
    },
    /// A peer listed twice in one count list.
    DuplicateCount {
        /// Which list.
        list: CountList,
        /// The peer.
        peer: DomainId,
    },
    /// The domain accepted more of its own messages than it sent itself.
    AcceptedOwnPastSent {
        /// Its own messages accepted.
        accepted: u64,
        /// Its own messages sent.
        sent: u64,
    },
    /// More messages sent than the domain used fuel for.
    SentPastFuel {
        /// Messages sent, summed over receivers (saturating).
        sent_total: u64,
        /// Fuel used since creation.
        fuel_used: u64,
    },
    /// A global index listed twice.
    DuplicateGlobal {
        /// The index.
        index: u32,
    },
    /// A 32-bit global whose bits do not fit 32 bits.
    GlobalTooWide {
        /// The global's index.
        index: u32,
    },
    /// A trap reason longer than [`MAX_TRAP_REASON_BYTES`].
    TrapReasonTooLong {
        /// Its length.
        len_bytes: usize,
    },
    /// Listen ports no image can declare ([`check_listen`]).
    Listen(ListenError),
    /// More open connections than [`MAX_CONNECTIONS_PER_DOMAIN`].
    TooManyConnections {
        /// How many the record lists.
        count: usize,
    },
    /// A connection's socket number listed twice.
    DuplicateConnection {
        /// The socket number.
        socket: u32,
    },
    /// A connection numbered where no connection can be: a listener's or
    /// standard stream's number, or past [`connection_sockets_end`].
    ConnectionOutOfRange {
        /// The socket number.
        socket: u32,
        /// The first number a connection can have.
        first: u32,
        /// One past the last.
        end: u32,
    },
    /// A socket set nonblocking that is neither a listener nor an open
    /// connection.
    NonblockingNotOpen {
        /// The socket number.
        socket: u32,
    },
    /// A socket listed twice as nonblocking.
    DuplicateNonblocking {
        /// The socket number.
        socket: u32,
    },
}

impl fmt::Display for MetadataError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(error) => write!(formatter, "{error}"),
            Self::MemoryPastMaximum {
                memory_pages,
                memory_max_pages,
            } => write!(
                formatter,
                "{memory_pages} memory pages in use past a maximum of {memory_max_pages}"
            ),
            Self::MessageTooLarge { list, len_bytes } => write!(
                formatter,
                "a {list} message of {len_bytes} bytes (at most {MAX_MESSAGE_BYTES} allowed)"
            ),
            Self::MailboxTooLarge {
                messages,
                len_bytes,
            } => write!(
                formatter,
                "a mailbox of {messages} messages and {len_bytes} bytes (at most \
                 {MAX_MAILBOX_MESSAGES} messages and {MAX_MAILBOX_BYTES} bytes allowed)"
            ),
            Self::OutboxTooLarge {
                receiver,
                messages,
                len_bytes,
            } => write!(
                formatter,
                "an outbox of {messages} messages and {len_bytes} bytes to {receiver} (at most \
                 {MAX_OUTBOX_MESSAGES} messages and {MAX_OUTBOX_BYTES} bytes allowed)"
            ),
            Self::OutboxToItself => write!(formatter, "an outbox message to the domain itself"),
            Self::OutboxOutOfOrder { receiver, sequence } => write!(
                formatter,
                "outbox message {sequence} to {receiver} is 0 or not above the one before it"
            ),
            Self::OutboxPastSentCount {
                receiver,
                sequence,
                sent,
            } => write!(
                formatter,
                "outbox message {sequence} to {receiver} is past the {sent} messages sent to it"
            ),
            Self::DuplicateCount { list, peer } => {
                write!(formatter, "{peer} is counted twice in the {list} counts")
            }
            Self::AcceptedOwnPastSent { accepted, sent } => write!(
                formatter,
                "{accepted} of its own messages accepted but only {sent} sent"
            ),
            Self::SentPastFuel {
                sent_total,
                fuel_used,
            } => write!(
                formatter,
                "{sent_total} messages sent with only {fuel_used} fuel used"
            ),
            Self::DuplicateGlobal { index } => write!(formatter, "global {index} is listed twice"),
            Self::GlobalTooWide { index } => {
                write!(formatter, "32-bit global {index} holds more than 32 bits")
            }
            Self::TrapReasonTooLong { len_bytes } => write!(
                formatter,
                "a trap reason of {len_bytes} bytes (at most {MAX_TRAP_REASON_BYTES} allowed)"
            ),
            Self::Listen(error) => write!(formatter, "{error}"),
            Self::TooManyConnections { count } => write!(
                formatter,
                "{count} open connections (at most {MAX_CONNECTIONS_PER_DOMAIN} allowed)"
            ),
            Self::DuplicateConnection { socket } => {
                write!(formatter, "connection socket {socket} is listed twice")
            }
            Self::ConnectionOutOfRange { socket, first, end } => write!(
                formatter,
                "connection socket {socket} is outside the connection sockets {first} to {}",
                end.saturating_sub(1)
            ),
            Self::NonblockingNotOpen { socket } => write!(
                formatter,
                "socket {socket} is set nonblocking but is neither a listener nor an open \
                 connection"
            ),
            Self::DuplicateNonblocking { socket } => {
                write!(formatter, "socket {socket} is set nonblocking twice")
            }
        }
    }
}

impl core::error::Error for MetadataError {}

/// Checks `metadata` against the rules in this module's documentation and
/// returns the first one it breaks.
pub fn validate(metadata: &Metadata) -> Result<(), MetadataError> {
    check_name(&metadata.name).map_err(MetadataError::Name)?;
    if metadata.memory_pages > metadata.memory_max_pages {
        return Err(MetadataError::MemoryPastMaximum {
            memory_pages: metadata.memory_pages,
            memory_max_pages: metadata.memory_max_pages,
        });
    }
    validate_mailbox(metadata)?;
    let sent = counts(&metadata.message_counts.sent, CountList::Sent)?;
    let accepted = counts(&metadata.message_counts.accepted, CountList::Accepted)?;
    validate_outbox(metadata, &sent)?;
    let sent_own = sent.get(&metadata.id).copied().unwrap_or(0);
    let accepted_own = accepted.get(&metadata.id).copied().unwrap_or(0);
    if accepted_own > sent_own {
        return Err(MetadataError::AcceptedOwnPastSent {
            accepted: accepted_own,
            sent: sent_own,
        });
    }
    let sent_total = sent
        .values()
        .fold(0u64, |total, count| total.saturating_add(*count));
    if sent_total > metadata.counters.fuel_used {
        return Err(MetadataError::SentPastFuel {
            sent_total,
            fuel_used: metadata.counters.fuel_used,
        });
    }
    validate_globals(metadata)?;
    if let StoredStatus::Trapped(reason) = &metadata.status
        && reason.len() > MAX_TRAP_REASON_BYTES
    {
        return Err(MetadataError::TrapReasonTooLong {
            len_bytes: reason.len(),
        });
    }
    validate_network(&metadata.network)
}

/// Checks a network record against the network rules of this module's
/// documentation. Every list is bounded before it is walked: a hostile
/// record costs at most a few hundred comparisons.
pub fn validate_network(network: &NetworkRecord) -> Result<(), MetadataError> {
    check_listen(&network.listen).map_err(MetadataError::Listen)?;
    let count = network.connections.len();
    if count > MAX_CONNECTIONS_PER_DOMAIN {
        return Err(MetadataError::TooManyConnections { count });
    }
    // At most MAX_LISTEN_PORTS, checked above.
    let listeners_end = FIRST_LISTENER_FD + network.listen.len() as u32;
    let end = connection_sockets_end(network.listen.len());
    let mut connections = BTreeSet::new();
    for &socket in &network.connections {
        if !(listeners_end..end).contains(&socket) {
            return Err(MetadataError::ConnectionOutOfRange {
                socket,
                first: listeners_end,
                end,
            });
        }
        if !connections.insert(socket) {
            return Err(MetadataError::DuplicateConnection { socket });
        }
    }
    // Open sockets are distinct, so this list is at most as long as they
    // are many by the time it has passed.
    let mut nonblocking = BTreeSet::new();
    for &socket in &network.nonblocking {
        let is_listener = (FIRST_LISTENER_FD..listeners_end).contains(&socket);
        if !is_listener && !connections.contains(&socket) {
            return Err(MetadataError::NonblockingNotOpen { socket });
        }
        if !nonblocking.insert(socket) {
            return Err(MetadataError::DuplicateNonblocking { socket });
        }
    }
    Ok(())
}

fn validate_mailbox(metadata: &Metadata) -> Result<(), MetadataError> {
    let mut len_bytes = 0usize;
    for message in &metadata.mailbox {
        check_message_len(MessageList::Mailbox, message.bytes.len())?;
        len_bytes = len_bytes.saturating_add(message.bytes.len());
    }
    let messages = metadata.mailbox.len();
    if messages > MAX_MAILBOX_MESSAGES || len_bytes > MAX_MAILBOX_BYTES {
        return Err(MetadataError::MailboxTooLarge {
            messages,
            len_bytes,
        });
    }
    Ok(())
}

/// Per receiver: (messages, bytes, last number).
type OutboxTotals = BTreeMap<DomainId, (usize, usize, u64)>;

fn validate_outbox(
    metadata: &Metadata,
    sent: &BTreeMap<DomainId, u64>,
) -> Result<(), MetadataError> {
    let mut totals = OutboxTotals::new();
    for message in &metadata.outbox {
        let receiver = message.receiver;
        check_message_len(MessageList::Outbox, message.bytes.len())?;
        if receiver == metadata.id {
            return Err(MetadataError::OutboxToItself);
        }
        let (messages, len_bytes, last) = totals.entry(receiver).or_insert((0, 0, 0));
        if message.sequence <= *last {
            return Err(MetadataError::OutboxOutOfOrder {
                receiver,
                sequence: message.sequence,
            });
        }
        let sent_to = sent.get(&receiver).copied().unwrap_or(0);
        if message.sequence > sent_to {
            return Err(MetadataError::OutboxPastSentCount {
                receiver,
                sequence: message.sequence,
                sent: sent_to,
            });
        }
        *last = message.sequence;
        *messages += 1;
        *len_bytes = len_bytes.saturating_add(message.bytes.len());
        if *messages > MAX_OUTBOX_MESSAGES || *len_bytes > MAX_OUTBOX_BYTES {
            return Err(MetadataError::OutboxTooLarge {
                receiver,
                messages: *messages,
                len_bytes: *len_bytes,
            });
        }
    }
    Ok(())
}

fn check_message_len(list: MessageList, len_bytes: usize) -> Result<(), MetadataError> {
    if len_bytes > MAX_MESSAGE_BYTES {
        return Err(MetadataError::MessageTooLarge { list, len_bytes });
    }
    Ok(())
}

fn counts(
    list: &[(DomainId, u64)],
    which: CountList,
) -> Result<BTreeMap<DomainId, u64>, MetadataError> {
    let mut map = BTreeMap::new();
    for &(peer, count) in list {
        if map.insert(peer, count).is_some() {
            return Err(MetadataError::DuplicateCount { list: which, peer });
        }
    }
    Ok(map)
}

fn validate_globals(metadata: &Metadata) -> Result<(), MetadataError> {
    let mut seen = BTreeSet::new();
    for global in &metadata.globals {
        if !seen.insert(global.index) {
            return Err(MetadataError::DuplicateGlobal {
                index: global.index,
            });
        }
        let is_32_bit = matches!(global.value_type, ValueType::I32 | ValueType::F32);
        if is_32_bit && global.bits > u64::from(u32::MAX) {
            return Err(MetadataError::GlobalTooWide {
                index: global.index,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{
        Counters, MessageCounts, StoredGlobal, StoredMessage, StoredOutboxMessage,
    };
    use alloc::string::ToString;
    use alloc::vec;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    const OWN: DomainId = DomainId(1);
    const VICTIM: DomainId = DomainId(2);

    fn metadata() -> Metadata {
        Metadata {
            id: OWN,
            name: "sender".into(),
            memory_pages: 1,
            memory_max_pages: 2,
            globals: vec![],
            status: StoredStatus::Running,
            suspension: vec![],
            mailbox: vec![],
            clock_ns: 0,
            counters: Counters {
                commits: 1,
                fuel_used: 1_000_000,
            },
            args: vec![],
            env: vec![],
            migration: None,
            message_counts: MessageCounts::default(),
            outbox: vec![],
            network: NetworkRecord::default(),
        }
    }

    fn outbox(
        receiver: DomainId,
        sequences: core::ops::RangeInclusive<u64>,
        len: usize,
    ) -> Vec<StoredOutboxMessage> {
        sequences
            .map(|sequence| StoredOutboxMessage {
                receiver,
                sequence,
                bytes: vec![7; len],
            })
            .collect()
    }

    #[test]
    fn the_reviews_record_is_refused_for_its_outbox() {
        // 2,001 messages of 1 KiB to one victim, numbered up to u64::MAX - 1.
        let mut record = metadata();
        let first = u64::MAX - 2001;
        record.outbox = outbox(VICTIM, first..=u64::MAX - 1, 1024);
        record.message_counts.sent = vec![(VICTIM, u64::MAX - 1)];
        record.counters.fuel_used = u64::MAX;
        assert_eq!(
            validate(&record),
            Err(MetadataError::OutboxTooLarge {
                receiver: VICTIM,
                messages: 257,
                len_bytes: 257 * 1024,
            })
        );
        // Within the outbox caps, the huge count needs as much fuel.
        record.outbox = outbox(VICTIM, u64::MAX - 10..=u64::MAX - 1, 1024);
        record.counters.fuel_used = 5_000;
        assert_eq!(
            validate(&record),
            Err(MetadataError::SentPastFuel {
                sent_total: u64::MAX - 1,
                fuel_used: 5_000,
            })
        );
    }

    #[test]
    fn a_record_the_vm_could_write_passes() {
        let mut record = metadata();
        record.mailbox = vec![
            StoredMessage {
                sender: VICTIM,
                bytes: vec![1; MAX_MESSAGE_BYTES],
            };
            4
        ];
        record.outbox = outbox(VICTIM, 3..=6, MAX_MESSAGE_BYTES);
        record.message_counts = MessageCounts {
            sent: vec![(VICTIM, 6), (OWN, 2)],
            accepted: vec![(VICTIM, 9), (OWN, 2)],
        };
        record.globals = vec![StoredGlobal {
            index: 3,
            value_type: ValueType::I32,
            bits: u64::from(u32::MAX),
        }];
        record.network = NetworkRecord {
            listen: vec![6379, 80],
            durable_replies: true,
            // Sockets 3 and 4 are the listeners; 5 to 68 the connections.
            connections: (5..5 + MAX_CONNECTIONS_PER_DOMAIN as u32).rev().collect(),
            nonblocking: vec![4, 68, 3],
        };
        assert_eq!(validate(&record), Ok(()));
    }

    #[test]
    fn each_hostile_network_record_is_refused_by_name() {
        let refused = |change: &dyn Fn(&mut NetworkRecord)| {
            let mut record = metadata();
            record.network.listen = vec![6379];
            change(&mut record.network);
            validate(&record).unwrap_err()
        };
        assert_eq!(
            refused(&|network| network.listen = (1..=MAX_LISTEN_PORTS as u16 + 1).collect()),
            MetadataError::Listen(ListenError::TooManyPorts {
                count: MAX_LISTEN_PORTS + 1
            })
        );
        assert_eq!(
            refused(&|network| network.listen = vec![0]),
            MetadataError::Listen(ListenError::PortZero)
        );
        assert_eq!(
            refused(&|network| network.listen = vec![80, 443, 80]),
            MetadataError::Listen(ListenError::DuplicatePort { port: 80 })
        );
        // A million connections claimed: refused on the count, unwalked.
        assert_eq!(
            refused(&|network| network.connections = vec![4; 1_000_000]),
            MetadataError::TooManyConnections { count: 1_000_000 }
        );
        assert_eq!(
            refused(&|network| network.connections = vec![4, 9, 4]),
            MetadataError::DuplicateConnection { socket: 4 }
        );
        // The listener's own number, a standard stream's, and one past the
        // last a connection can take (3 + 1 listener + 64).
        for socket in [3, 0, 68, u32::MAX] {
            assert_eq!(
                refused(&|network| network.connections = vec![socket]),
                MetadataError::ConnectionOutOfRange {
                    socket,
                    first: 4,
                    end: 68
                }
            );
        }
        assert_eq!(
            refused(&|network| {
                network.connections = vec![4];
                network.nonblocking = vec![4, 3, 5];
            }),
            MetadataError::NonblockingNotOpen { socket: 5 }
        );
        assert_eq!(
            refused(&|network| network.nonblocking = vec![1]),
            MetadataError::NonblockingNotOpen { socket: 1 }
        );
        assert_eq!(
            refused(&|network| network.nonblocking = vec![3, 3]),
            MetadataError::DuplicateNonblocking { socket: 3 }
        );
        let words = refused(&|network| network.connections = vec![70]).to_string();
        assert_eq!(
            words,
            "connection socket 70 is outside the connection sockets 4 to 67"
        );
    }

    #[test]
    fn each_rule_names_what_it_refuses() {
        let refused = |change: &dyn Fn(&mut Metadata)| {
            let mut record = metadata();
            change(&mut record);
            validate(&record).unwrap_err()
        };
        assert_eq!(
            refused(&|record| record.name.clear()),
            MetadataError::Name(NameError::Length { len_bytes: 0 })
        );
        assert_eq!(
            refused(&|record| record.memory_pages = 3),
            MetadataError::MemoryPastMaximum {
                memory_pages: 3,
                memory_max_pages: 2
            }
        );
        assert_eq!(
            refused(&|record| record.mailbox = vec![
                StoredMessage {
                    sender: VICTIM,
                    bytes: vec![]
                };
                MAX_MAILBOX_MESSAGES + 1
            ]),
            MetadataError::MailboxTooLarge {
                messages: MAX_MAILBOX_MESSAGES + 1,
                len_bytes: 0
            }
        );
        assert_eq!(
            refused(&|record| record.mailbox = vec![StoredMessage {
                sender: VICTIM,
                bytes: vec![0; MAX_MESSAGE_BYTES + 1]
            }]),
            MetadataError::MessageTooLarge {
                list: MessageList::Mailbox,
                len_bytes: MAX_MESSAGE_BYTES + 1
            }
        );
        assert_eq!(
            refused(&|record| {
                record.outbox = outbox(OWN, 1..=1, 1);
                record.message_counts.sent = vec![(OWN, 1)];
            }),
            MetadataError::OutboxToItself
        );
        assert_eq!(
            refused(&|record| {
                record.outbox = outbox(VICTIM, 0..=1, 1);
                record.message_counts.sent = vec![(VICTIM, 1)];
            }),
            MetadataError::OutboxOutOfOrder {
                receiver: VICTIM,
                sequence: 0
            }
        );
        assert_eq!(
            refused(&|record| {
                record.outbox = outbox(VICTIM, 4..=5, 1);
                record.outbox.extend(outbox(VICTIM, 5..=5, 1));
                record.message_counts.sent = vec![(VICTIM, 5)];
            }),
            MetadataError::OutboxOutOfOrder {
                receiver: VICTIM,
                sequence: 5
            }
        );
        assert_eq!(
            refused(&|record| {
                record.outbox = outbox(VICTIM, 4..=5, 1);
                record.message_counts.sent = vec![(VICTIM, 4)];
            }),
            MetadataError::OutboxPastSentCount {
                receiver: VICTIM,
                sequence: 5,
                sent: 4
            }
        );
        assert_eq!(
            refused(&|record| record.message_counts.accepted = vec![(VICTIM, 1), (VICTIM, 2)]),
            MetadataError::DuplicateCount {
                list: CountList::Accepted,
                peer: VICTIM
            }
        );
        assert_eq!(
            refused(&|record| record.message_counts.accepted = vec![(OWN, 1)]),
            MetadataError::AcceptedOwnPastSent {
                accepted: 1,
                sent: 0
            }
        );
        assert_eq!(
            refused(&|record| record.globals = vec![
                StoredGlobal {
                    index: 0,
                    value_type: ValueType::I64,
                    bits: 1
                };
                2
            ]),
            MetadataError::DuplicateGlobal { index: 0 }
        );
        assert_eq!(
            refused(&|record| record.globals = vec![StoredGlobal {
                index: 1,
                value_type: ValueType::F32,
                bits: 1 << 32
            }]),
            MetadataError::GlobalTooWide { index: 1 }
        );
        assert_eq!(
            refused(&|record| record.status =
                StoredStatus::Trapped("x".repeat(MAX_TRAP_REASON_BYTES + 1))),
            MetadataError::TrapReasonTooLong {
                len_bytes: MAX_TRAP_REASON_BYTES + 1
            }
        );
    }

    proptest! {
        /// Any sockets a domain can hold pass: unique nonzero ports within
        /// the cap, connections anywhere in their range, any open socket
        /// nonblocking.
        #[test]
        fn every_network_a_domain_can_hold_passes(
            ports in proptest::collection::btree_set(1u16.., 0..=MAX_LISTEN_PORTS),
            picks in proptest::collection::btree_set(
                0u32..MAX_CONNECTIONS_PER_DOMAIN as u32,
                0..=MAX_CONNECTIONS_PER_DOMAIN,
            ),
            every in 1usize..5,
        ) {
            let listen: Vec<u16> = ports.into_iter().collect();
            let first = FIRST_LISTENER_FD + listen.len() as u32;
            let connections: Vec<u32> = picks.into_iter().map(|pick| first + pick).collect();
            let open = (FIRST_LISTENER_FD..first).chain(connections.iter().copied());
            let network = NetworkRecord {
                listen,
                durable_replies: every % 2 == 0,
                nonblocking: open.step_by(every).collect(),
                connections,
            };
            prop_assert_eq!(validate_network(&network), Ok(()));
        }

        /// Whatever a network record claims, a passing one holds no more
        /// sockets than a domain can, each where a domain can have it.
        #[test]
        fn a_passing_network_record_is_within_every_bound(
            listen in proptest::collection::vec(0u16..12, 0..11),
            connections in proptest::collection::vec(0u32..90, 0..80),
            nonblocking in proptest::collection::vec(0u32..90, 0..12),
        ) {
            let network = NetworkRecord {
                listen,
                durable_replies: false,
                connections,
                nonblocking,
            };
            if validate_network(&network).is_ok() {
                prop_assert!(network.listen.len() <= MAX_LISTEN_PORTS);
                prop_assert!(!network.listen.contains(&0));
                prop_assert!(network.connections.len() <= MAX_CONNECTIONS_PER_DOMAIN);
                let first = FIRST_LISTENER_FD + network.listen.len() as u32;
                for socket in &network.connections {
                    prop_assert!(*socket >= first);
                    prop_assert!(*socket < first + MAX_CONNECTIONS_PER_DOMAIN as u32);
                }
                for socket in &network.nonblocking {
                    prop_assert!(
                        (FIRST_LISTENER_FD..first).contains(socket)
                            || network.connections.contains(socket)
                    );
                }
            }
        }

        /// Any outbox the vm keeps (per receiver: ascending numbers up to
        /// the send count, within the caps) passes, and a mailbox passes
        /// exactly when it is within its caps.
        #[test]
        fn outboxes_within_the_caps_pass(
            receivers in proptest::collection::vec(
                (3u128..20, 1u64..1_000, 0usize..64, 1usize..2_000),
                0..6,
            ),
            mailbox in proptest::collection::vec(0usize..70_000, 0..300),
        ) {
            let mut record = metadata();
            let mut sent = BTreeMap::new();
            for (receiver, first, count, len) in receivers {
                let receiver = DomainId(receiver);
                if sent.contains_key(&receiver) {
                    continue;
                }
                let count = count.min(MAX_OUTBOX_BYTES / len) as u64;
                let last = first + count;
                record.outbox.extend(outbox(receiver, first + 1..=last, len));
                sent.insert(receiver, last);
            }
            record.message_counts.sent = sent.into_iter().collect();
            record.mailbox = mailbox
                .iter()
                .map(|&len| StoredMessage { sender: VICTIM, bytes: vec![0; len] })
                .collect();
            let mailbox_bytes: usize = mailbox.iter().sum();
            let is_within = mailbox.len() <= MAX_MAILBOX_MESSAGES
                && mailbox_bytes <= MAX_MAILBOX_BYTES
                && mailbox.iter().all(|&len| len <= MAX_MESSAGE_BYTES);
            prop_assert_eq!(validate(&record).is_ok(), is_within);
        }

        /// Whatever the record claims, a passing one holds no more than the
        /// caps allow and no outbox number past its send count.
        #[test]
        fn a_passing_record_is_within_every_cap(
            outbox_messages in proptest::collection::vec(
                (1u128..4, 0u64..8, 0usize..100_000),
                0..40,
            ),
            sent in proptest::collection::vec((1u128..4, 0u64..8), 0..4),
            fuel_used in 0u64..40,
        ) {
            let mut record = metadata();
            record.counters.fuel_used = fuel_used;
            record.outbox = outbox_messages
                .iter()
                .map(|&(receiver, sequence, len)| StoredOutboxMessage {
                    receiver: DomainId(receiver),
                    sequence,
                    bytes: vec![0; len],
                })
                .collect();
            record.message_counts.sent = sent.iter().map(|&(peer, count)| (DomainId(peer), count)).collect();
            if validate(&record).is_ok() {
                let total: u64 = sent.iter().map(|(_, count)| count).sum();
                prop_assert!(total <= fuel_used);
                for message in &record.outbox {
                    prop_assert!(message.receiver != OWN);
                    prop_assert!(message.bytes.len() <= MAX_MESSAGE_BYTES);
                    let sent_to = sent.iter().find(|(peer, _)| DomainId(*peer) == message.receiver);
                    prop_assert!(message.sequence >= 1);
                    prop_assert!(message.sequence <= sent_to.map_or(0, |(_, count)| *count));
                }
                let to_two: usize = record.outbox.iter().filter(|message| message.receiver == VICTIM).map(|message| message.bytes.len()).sum();
                prop_assert!(to_two <= MAX_OUTBOX_BYTES);
            }
        }
    }
}
