//! Every migration on a machine: the listener, new connections, transfers.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use persist::DomainId;
use persist::migrate::{MigrationId, WireMessage};

use super::Progress;
use super::error::{RefusalReason, StartError};
use super::event::Event;
use super::framing::{FrameError, Framed};
use super::host::MigrationHost;
use super::incoming::Incoming;
use super::network::{ConnectError, MIGRATION_PORT, Network};
use super::outgoing::Outgoing;
use super::question::Questions;

/// How long a connection may take to say what it wants, and a parked copy's
/// question to be answered.
pub(super) const ANSWER_DEADLINE_NS: u64 = 10_000_000_000;

/// How long transfers run per main-loop round before domains run again.
const TRANSFER_SLICE_NS: u64 = 5_000_000;

/// A connection on the migration port whose purpose is not known yet: a
/// migration (its first message is `Begin`) or a parked copy's question.
#[derive(Debug)]
struct Pending<C> {
    peer: String,
    framed: Framed<C>,
    deadline_ns: u64,
    is_answered: bool,
}

/// What a pending connection did in one poll.
#[derive(Debug)]
enum PendingStep {
    /// Nothing yet.
    Waiting,
    /// Its answer is sent, or its time is up: close it.
    Over,
    /// Its bytes cannot be framed: close it.
    Failed(FrameError),
    /// It said what it wants.
    Frame(Vec<u8>),
}

impl<C: super::framing::Link> Pending<C> {
    fn poll(&mut self, now_ns: u64) -> PendingStep {
        let is_flushed = self.framed.flush().unwrap_or(true);
        if (self.is_answered && is_flushed) || now_ns >= self.deadline_ns {
            return PendingStep::Over;
        }
        match self.framed.next_frame() {
            Ok(Some(frame)) => PendingStep::Frame(frame),
            Ok(None) => PendingStep::Waiting,
            Err(error) => PendingStep::Failed(error),
        }
    }
}

/// Every migration in flight on this machine, the listener for the next
/// incoming one, and the questions of parked copies.
pub struct Migrations<N: Network, H: MigrationHost> {
    network: N,
    outgoing: Vec<Outgoing<N::Connection>>,
    incoming: Option<Incoming<N::Connection, H>>,
    listener: Option<N::Listener>,
    pending: Vec<Pending<N::Connection>>,
    questions: Questions<N::Connection>,
    /// Said at the first poll (there is no one to tell before).
    unreported: Option<Event>,
}

impl<N: Network, H: MigrationHost> fmt::Debug for Migrations<N, H> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Migrations")
            .field("outgoing", &self.outgoing.len())
            .field("is_incoming", &self.incoming.is_some())
            .field("is_listening", &self.listener.is_some())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<N: Network, H: MigrationHost> Migrations<N, H> {
    /// Listens for incoming migrations when there is a network card.
    pub fn new(network: N) -> Migrations<N, H> {
        let mut migrations = Migrations {
            network,
            outgoing: Vec::new(),
            incoming: None,
            listener: None,
            pending: Vec::new(),
            questions: Questions::default(),
            unreported: None,
        };
        migrations.unreported = migrations.listen();
        migrations
    }

    /// The network, for the tests' fakes.
    pub fn network_mut(&mut self) -> &mut N {
        &mut self.network
    }

    /// Whether any migration, connection or question has work left.
    pub fn is_busy(&self) -> bool {
        !self.outgoing.is_empty()
            || self.incoming.is_some()
            || !self.pending.is_empty()
            || self.questions.is_asking()
    }

    /// Listens for the next connection; what to say if it cannot.
    fn listen(&mut self) -> Option<Event> {
        match self.network.listen() {
            Ok(listener) => {
                self.listener = listener;
                None
            }
            Err(error) => Some(Event::CannotListen {
                port: MIGRATION_PORT,
                error,
            }),
        }
    }

    /// `migrate NAME ADDRESS`: starts sending domain `name` to the machine
    /// at `address`.
    pub fn start(&mut self, host: &mut H, name: &str, address: &str) -> Result<(), StartError> {
        if self.outgoing.iter().any(|outgoing| outgoing.name() == name) {
            return Err(StartError::AlreadyMigrating { name: name.into() });
        }
        let connection = self.network.connect(address).map_err(|error| match error {
            ConnectError::NotAnAddress => StartError::NotAnAddress {
                address: address.into(),
            },
            ConnectError::Failed(reason) => StartError::Unreachable {
                address: address.into(),
                reason,
            },
        })?;
        let outgoing = Outgoing::start(host, name, address, connection)?;
        self.outgoing.push(outgoing);
        Ok(())
    }

    /// Moves every migration on; true when any has work left.
    pub fn poll(&mut self, host: &mut H) -> bool {
        if let Some(event) = self.unreported.take() {
            host.report(event);
        }
        self.accept(host);
        self.poll_pending(host);
        self.poll_transfers_for_a_slice(host);
        self.questions.poll(host, &mut self.network);
        self.is_busy()
    }

    /// Transfers get a slice of the loop, with the network polled in
    /// between: one poll per main-loop round would leave the link idle
    /// while domains run.
    fn poll_transfers_for_a_slice(&mut self, host: &mut H) {
        let slice_end_ns = host.now_ns() + TRANSFER_SLICE_NS;
        loop {
            self.poll_transfers(host);
            let is_transferring = !self.outgoing.is_empty() || self.incoming.is_some();
            if !is_transferring || host.now_ns() >= slice_end_ns {
                break;
            }
            self.network.poll();
        }
    }

    fn poll_transfers(&mut self, host: &mut H) {
        self.outgoing
            .retain_mut(|outgoing| outgoing.poll(host) == Progress::Working);
        if let Some(incoming) = self.incoming.as_mut()
            && incoming.poll(host) == Progress::Done
        {
            self.incoming = None;
        }
    }

    /// A listener that got a connection becomes pending; a new one listens.
    fn accept(&mut self, host: &mut H) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        match self.network.accept(listener) {
            Err(listener) => self.listener = Some(listener),
            Ok((connection, peer)) => {
                self.pending.push(Pending {
                    peer,
                    framed: Framed::new(connection),
                    deadline_ns: host.now_ns() + ANSWER_DEADLINE_NS,
                    is_answered: false,
                });
                if let Some(event) = self.listen() {
                    host.report(event);
                }
            }
        }
    }

    /// Answers questions; turns a `Begin` into the incoming migration.
    fn poll_pending(&mut self, host: &mut H) {
        let mut index = 0;
        while index < self.pending.len() {
            let frame = match self.pending[index].poll(host.now_ns()) {
                PendingStep::Waiting => {
                    index += 1;
                    continue;
                }
                PendingStep::Over => None,
                PendingStep::Failed(error) => {
                    let peer = self.pending[index].peer.clone();
                    host.report(Event::BadConnection { peer, error });
                    None
                }
                PendingStep::Frame(frame) => Some(frame),
            };
            let pending = self.pending.remove(index);
            let Some(frame) = frame else {
                continue;
            };
            if let Ok(WireMessage::Query {
                migration_id,
                domain_id,
            }) = WireMessage::decode(&frame)
            {
                if let Some(answering) = self.answer(host, pending, migration_id, domain_id) {
                    self.pending.insert(index, answering);
                    index += 1;
                }
                continue;
            }
            self.begin(host, pending, frame);
        }
    }

    /// Answers a parked copy's question about `migration_id`; the
    /// connection, to send the answer on, unless it cannot be encoded.
    fn answer(
        &mut self,
        host: &mut H,
        mut pending: Pending<N::Connection>,
        migration_id: MigrationId,
        domain_id: DomainId,
    ) -> Option<Pending<N::Connection>> {
        let verdict = match self
            .outgoing
            .iter_mut()
            .find(|outgoing| outgoing.migration_id() == migration_id)
        {
            Some(outgoing) => outgoing.answer(migration_id),
            None => host.answer_query(migration_id, domain_id),
        };
        host.report(Event::Asked {
            peer: pending.peer.clone(),
            migration_id,
            verdict,
        });
        let mut answer = Vec::new();
        WireMessage::Answer {
            migration_id,
            verdict,
        }
        .encode(&mut answer)
        .ok()?;
        pending.framed.queue(&answer);
        pending.is_answered = true;
        Some(pending)
    }

    /// Starts the incoming migration whose first message is `frame`, unless
    /// one is coming in already.
    fn begin(&mut self, host: &mut H, pending: Pending<N::Connection>, frame: Vec<u8>) {
        let peer = pending.peer;
        if self.incoming.is_some() {
            host.report(Event::Refused {
                peer,
                reason: RefusalReason::Busy,
            });
            return;
        }
        match Incoming::accept(host, &peer, pending.framed, frame) {
            Ok(incoming) => {
                host.report(Event::IncomingStarted { peer });
                self.incoming = Some(incoming);
            }
            Err(reason) => host.report(Event::Refused { peer, reason }),
        }
    }
}
