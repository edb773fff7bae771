//! Every migration on a machine: the listener, new connections, transfers.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use persist::DomainId;
use persist::migrate::{MigrationId, Refusal, WireMessage};

use super::Progress;
use super::error::{RefusalReason, StartError};
use super::event::Event;
use super::framing::{FrameError, Framed};
use super::host::MigrationHost;
use super::incoming::Incoming;
use super::limits::Limits;
use super::network::{ConnectError, MIGRATION_PORT, Network};
use super::outgoing::Outgoing;
use super::question::{DecideError, Decision, Questions};

/// How long transfers run per main-loop round before domains run again.
const TRANSFER_SLICE_NS: u64 = 5_000_000;

/// The least time between two console lines saying the connection cap is
/// reached (or the heap is short): a peer that keeps the machine there gets
/// one a minute.
const CAP_REPORT_INTERVAL_NS: u64 = 60_000_000_000;

/// Whether the machine listens for the next connection, and if not, why.
#[derive(Debug)]
enum Listening<L> {
    /// A socket waits for the next connection.
    On(L),
    /// Peers hold as many connections as the machine takes.
    Capped,
    /// The heap has no room for another connection.
    NoRoom,
    /// No network card (nothing to say), or listening failed (said once).
    Never,
}

/// Why the machine does not listen for now.
#[derive(Debug, Clone, Copy)]
enum HoldBack {
    Cap { held: usize },
    Room { room_bytes: u64 },
}

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
    listening: Listening<N::Listener>,
    pending: Vec<Pending<N::Connection>>,
    questions: Questions<N::Connection>,
    limits: Limits,
    /// When the cap was last said on the console, and a short heap.
    cap_reported_ns: Option<u64>,
    no_room_reported_ns: Option<u64>,
    /// Said at the first poll (there is no one to tell before).
    unreported: Option<Event>,
}

impl<N: Network, H: MigrationHost> fmt::Debug for Migrations<N, H> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Migrations")
            .field("outgoing", &self.outgoing.len())
            .field("is_incoming", &self.incoming.is_some())
            .field("is_listening", &matches!(self.listening, Listening::On(_)))
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<N: Network, H: MigrationHost> Migrations<N, H> {
    /// Listens for incoming migrations when there is a network card, with
    /// the kernel's caps and deadlines.
    pub fn new(network: N) -> Migrations<N, H> {
        Migrations::with_limits(network, Limits::default())
    }

    /// [`Migrations::new`] with other caps and deadlines (the tests').
    pub fn with_limits(network: N, limits: Limits) -> Migrations<N, H> {
        let mut migrations = Migrations {
            network,
            outgoing: Vec::new(),
            incoming: None,
            listening: Listening::Never,
            pending: Vec::new(),
            questions: Questions::default(),
            limits,
            cap_reported_ns: None,
            no_room_reported_ns: None,
            unreported: None,
        };
        migrations.unreported = migrations.listen();
        migrations
    }

    /// Whether a socket listens for the next connection now.
    pub fn is_listening(&self) -> bool {
        matches!(self.listening, Listening::On(_))
    }

    /// Connections peers make this machine hold now: pending ones, the
    /// incoming migration, the question a parked copy asks.
    pub fn connections_held(&self) -> usize {
        self.pending.len()
            + usize::from(self.incoming.is_some())
            + usize::from(self.questions.is_asking())
    }

    /// The network, for the tests' fakes.
    pub fn network_mut(&mut self) -> &mut N {
        &mut self.network
    }

    /// Whether domain `name` is being sent to another machine now.
    pub fn is_sending(&self, name: &str) -> bool {
        self.outgoing.iter().any(|outgoing| outgoing.name() == name)
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
            Ok(Some(listener)) => {
                self.listening = Listening::On(listener);
                None
            }
            Ok(None) => {
                self.listening = Listening::Never;
                None
            }
            Err(error) => {
                self.listening = Listening::Never;
                Some(Event::CannotListen {
                    port: MIGRATION_PORT,
                    error,
                })
            }
        }
    }

    /// Why the machine may not listen now: peers hold the most connections
    /// it takes, or the heap is short of one more.
    fn hold_back(&self, host: &H) -> Option<HoldBack> {
        let held = self.connections_held();
        if held >= self.limits.max_connections {
            return Some(HoldBack::Cap { held });
        }
        let room_bytes = host
            .heap_room_bytes()
            .saturating_sub(self.limits.heap_margin_bytes);
        (room_bytes < self.limits.connection_heap_bytes).then_some(HoldBack::Room { room_bytes })
    }

    /// Stops listening while the machine is held back, and listens again
    /// once it is not. A listening socket costs its buffers too, and in the
    /// kernel accepts a connection on its own.
    fn keep_within_limits(&mut self, host: &mut H) {
        let hold_back = self.hold_back(host);
        match (&self.listening, hold_back) {
            (Listening::Never, _)
            | (Listening::On(_), None)
            | (Listening::Capped | Listening::NoRoom, Some(_)) => {}
            (Listening::On(_), Some(hold_back)) => self.stop_listening(host, hold_back),
            (Listening::Capped | Listening::NoRoom, None) => {
                let event = self.listen().unwrap_or(Event::ListeningAgain);
                host.report(event);
            }
        }
    }

    fn stop_listening(&mut self, host: &mut H, hold_back: HoldBack) {
        match hold_back {
            HoldBack::Cap { held } => {
                self.listening = Listening::Capped;
                self.report_cap(host, held);
            }
            HoldBack::Room { room_bytes } => {
                self.listening = Listening::NoRoom;
                let now = host.now_ns();
                if is_due(self.no_room_reported_ns, now) {
                    self.no_room_reported_ns = Some(now);
                    host.report(Event::NoRoomToListen { room_bytes });
                }
            }
        }
    }

    /// Says (at most once a minute) that the cap is reached, and who holds
    /// the most connections.
    fn report_cap(&mut self, host: &mut H, held: usize) {
        let now = host.now_ns();
        if !is_due(self.cap_reported_ns, now) {
            return;
        }
        self.cap_reported_ns = Some(now);
        let mut by_peer: BTreeMap<&str, usize> = BTreeMap::new();
        let peers = self
            .pending
            .iter()
            .map(|pending| pending.peer.as_str())
            .chain(self.incoming.as_ref().map(Incoming::peer))
            .chain(self.questions.source());
        for peer in peers {
            *by_peer.entry(peer).or_default() += 1;
        }
        let (busiest, busiest_held) = by_peer
            .into_iter()
            .max_by_key(|(_, count)| *count)
            .map_or((String::new(), 0), |(peer, count)| {
                (String::from(peer), count)
            });
        host.report(Event::ConnectionCap {
            held,
            busiest,
            busiest_held,
        });
    }

    /// An operator's word on the parked copy of `name`, for a source that
    /// does not answer (see [`Decision`]): runs the copy or discards it.
    pub fn decide(
        &mut self,
        host: &mut H,
        name: &str,
        decision: Decision,
    ) -> Result<(), DecideError> {
        super::question::decide(host, name, decision)
    }

    /// `migrate NAME ADDRESS`: starts sending domain `name` to the machine
    /// at `address`.
    pub fn start(&mut self, host: &mut H, name: &str, address: &str) -> Result<(), StartError> {
        if self.is_sending(name) {
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
        let outgoing = Outgoing::start(host, name, address, connection, &self.limits)?;
        self.outgoing.push(outgoing);
        Ok(())
    }

    /// Moves every migration on; true when any has work left.
    pub fn poll(&mut self, host: &mut H) -> bool {
        if let Some(event) = self.unreported.take() {
            host.report(event);
        }
        self.keep_within_limits(host);
        self.accept(host);
        self.poll_pending(host);
        self.poll_transfers_for_a_slice(host);
        let may_ask = self.connections_held() < self.limits.max_connections;
        self.questions
            .poll(host, &mut self.network, &self.limits, may_ask);
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

    /// The listener's next connection becomes pending; the machine stops
    /// listening when it is held back.
    fn accept(&mut self, host: &mut H) {
        if !self.is_listening() {
            return;
        }
        let Listening::On(listener) = &mut self.listening else {
            return;
        };
        let Some((connection, peer)) = self.network.accept(listener) else {
            return;
        };
        self.pending.push(Pending {
            peer,
            framed: Framed::new(connection),
            deadline_ns: host.now_ns() + self.limits.answer_deadline_ns,
            is_answered: false,
        });
        if let Some(hold_back) = self.hold_back(host) {
            self.stop_listening(host, hold_back);
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
        let mut framed = pending.framed;
        if self.incoming.is_some() {
            refuse(&mut framed, Refusal::Busy);
            host.report(Event::Refused {
                peer,
                reason: RefusalReason::Busy,
            });
            return;
        }
        let domain_id = match WireMessage::decode(&frame) {
            Ok(WireMessage::Begin { domain_id, .. }) => Some(domain_id),
            _ => None,
        };
        let Some(spare) = host.take_spare(domain_id) else {
            refuse(&mut framed, Refusal::NoSpare);
            host.report(Event::Refused {
                peer,
                reason: RefusalReason::NoSpare,
            });
            return;
        };
        match Incoming::accept(host, &peer, framed, frame, spare, &self.limits) {
            Ok(incoming) => {
                host.report(Event::IncomingStarted { peer });
                self.incoming = Some(incoming);
            }
            Err(reason) => host.report(Event::Refused { peer, reason }),
        }
    }
}

/// Whether a line last said at `reported_ns` may be said again `now_ns`.
fn is_due(reported_ns: Option<u64>, now_ns: u64) -> bool {
    reported_ns.is_none_or(|reported| now_ns.saturating_sub(reported) >= CAP_REPORT_INTERVAL_NS)
}

/// Tells the source why its migration is refused, as far as the link takes
/// it now (the connection closes next).
fn refuse<L: super::framing::Link>(framed: &mut Framed<L>, reason: Refusal) {
    let mut message = Vec::new();
    if (WireMessage::Refused { reason })
        .encode(&mut message)
        .is_ok()
    {
        framed.queue(&message);
        let _ = framed.flush();
    }
}
