//! Parked copies ask their source whether it handed the domain over.

use alloc::string::String;
use alloc::vec::Vec;

use persist::migrate::{self, MigrationId, Ownership, Resolution, Verdict, WireMessage};

use super::event::{DecidedBy, Event};
use super::framing::{FrameError, Framed, Link};
use super::host::MigrationHost;
use super::limits::Limits;
use super::network::{ConnectError, Network};

/// Time between questions of a parked copy whose source did not answer.
const ASK_AGAIN_NS: u64 = 3_000_000_000;

/// A parked copy asking its source.
#[derive(Debug)]
struct Question<C> {
    migration_id: MigrationId,
    source: String,
    framed: Framed<C>,
    deadline_ns: u64,
}

/// What a question got in one poll.
#[derive(Debug)]
enum Reply {
    Waiting,
    TimedOut,
    Failed(FrameError),
    Answer(Vec<u8>),
}

impl<C: Link> Question<C> {
    fn poll(&mut self, now_ns: u64) -> Reply {
        let answer = match self.framed.flush() {
            Ok(_) => self.framed.next_frame(),
            Err(error) => Err(FrameError::Link(error)),
        };
        match answer {
            Ok(Some(answer)) => Reply::Answer(answer),
            Ok(None) if now_ns < self.deadline_ns => Reply::Waiting,
            Ok(None) => Reply::TimedOut,
            Err(error) => Reply::Failed(error),
        }
    }
}

/// The question in flight, one at a time, about each parked copy in turn:
/// a source that never answers delays the others' questions, never stops
/// them.
#[derive(Debug)]
pub(super) struct Questions<C> {
    question: Option<Question<C>>,
    next_question_ns: u64,
    /// The parked copy asked about next (modulo how many are parked).
    next_index: usize,
}

impl<C> Default for Questions<C> {
    fn default() -> Self {
        Questions {
            question: None,
            next_question_ns: 0,
            next_index: 0,
        }
    }
}

impl<C: Link> Questions<C> {
    /// Whether a question waits for its answer.
    pub(super) fn is_asking(&self) -> bool {
        self.question.is_some()
    }

    /// The source being asked, if any.
    pub(super) fn source(&self) -> Option<&str> {
        self.question
            .as_ref()
            .map(|question| question.source.as_str())
    }

    /// Asks the source of each parked copy in turn whether it handed the
    /// domain over (a question every few seconds while any is parked), and
    /// acts on the answer. A new question is asked only when `may_ask`
    /// (the machine holds fewer connections than it takes).
    pub(super) fn poll<H, N>(
        &mut self,
        host: &mut H,
        network: &mut N,
        limits: &Limits,
        may_ask: bool,
    ) where
        H: MigrationHost,
        N: Network<Connection = C>,
    {
        let now = host.now_ns();
        let Some(question) = self.question.as_mut() else {
            if may_ask && now >= self.next_question_ns {
                self.next_question_ns = now + ASK_AGAIN_NS;
                let parked = parked_count(host);
                if parked > 0 {
                    let index = self.next_index % parked;
                    self.next_index = index + 1;
                    self.question = ask_parked(host, network, index, limits);
                }
            }
            return;
        };
        let answer = match question.poll(now) {
            Reply::Waiting => return,
            Reply::TimedOut => {
                let source = question.source.clone();
                host.report(Event::NoAnswer { source });
                self.question = None;
                return;
            }
            Reply::Failed(error) => {
                let source = question.source.clone();
                host.report(Event::AskFailed { source, error });
                self.question = None;
                return;
            }
            Reply::Answer(answer) => answer,
        };
        if let Some(question) = self.question.take() {
            resolve(
                host,
                &question.source,
                question.migration_id,
                &answer,
                DecidedBy::Source,
            );
        }
    }
}

/// How many copies are parked.
fn parked_count<H: MigrationHost>(host: &mut H) -> usize {
    let mut count = 0;
    while host.parked_mut(count).is_some() {
        count += 1;
    }
    count
}

/// Connects to the source of parked copy `index` and sends its question.
fn ask_parked<H, N>(
    host: &mut H,
    network: &mut N,
    index: usize,
    limits: &Limits,
) -> Option<Question<N::Connection>>
where
    H: MigrationHost,
    N: Network,
{
    let metadata = host.parked_mut(index)?.metadata();
    let Ownership::Parked {
        migration_id,
        source,
    } = migrate::ownership(metadata)
    else {
        return None;
    };
    let query = migrate::query_for(metadata)?;
    let source = String::from(source);
    let mut message = Vec::new();
    query.encode(&mut message).ok()?;
    let connection = match network.connect(&source) {
        Ok(connection) => connection,
        Err(ConnectError::NotAnAddress) => {
            host.report(Event::CannotAsk { source });
            return None;
        }
        Err(ConnectError::Failed(_)) => return None,
    };
    let mut framed = Framed::new(connection);
    framed.queue(&message);
    Some(Question {
        migration_id,
        source,
        framed,
        deadline_ns: host.now_ns() + limits.answer_deadline_ns,
    })
}

/// The index of the parked copy of `migration_id` from `source`: the
/// answer of one source never decides another's copy, whatever IDs they
/// chose.
fn parked_index<H: MigrationHost>(
    host: &mut H,
    source: &str,
    migration_id: MigrationId,
) -> Option<usize> {
    let mut index = 0;
    while let Some(image) = host.parked_mut(index) {
        let metadata = image.metadata();
        let is_from_source = matches!(
            migrate::ownership(metadata),
            Ownership::Parked { source: from, .. } if from == source
        );
        let is_it = is_from_source
            && migrate::query_for(metadata).is_some_and(|query| {
                matches!(query, WireMessage::Query { migration_id: asked, .. } if asked == migration_id)
            });
        if is_it {
            return Some(index);
        }
        index += 1;
    }
    None
}

/// What an operator decides for a parked copy whose source does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The source handed the domain over (or is gone for good): the copy
    /// becomes the owner and runs here.
    Run,
    /// The source keeps the domain: the copy is discarded, its disk a spare.
    Discard,
}

/// Why an operator's decision was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecideError {
    /// No copy of that name is parked here.
    NotParked {
        /// The name given.
        name: String,
    },
}

impl core::fmt::Display for DecideError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotParked { name } => write!(formatter, "no copy of '{name}' is parked here"),
        }
    }
}

/// Decides the parked copy of `name` as its source's answer would: `Run`
/// as `HandedOver` (the copy takes ownership durably, then runs), `Discard`
/// as `Aborted`. The protocol cannot tell a source that is down for a
/// while from one that is gone, so a copy whose source never answers stays
/// parked until an operator who knows says which; saying `Run` while the
/// source still runs the domain runs it twice. A question in flight about
/// the copy finds it gone when its answer comes, and changes nothing.
pub fn decide<H: MigrationHost>(
    host: &mut H,
    name: &str,
    decision: Decision,
) -> Result<(), DecideError> {
    let not_parked = || DecideError::NotParked { name: name.into() };
    let mut index = 0;
    let (source, migration_id) = loop {
        let image = host.parked_mut(index).ok_or_else(not_parked)?;
        let metadata = image.metadata();
        if let Ownership::Parked {
            migration_id,
            source,
        } = migrate::ownership(metadata)
            && metadata.name == name
        {
            break (String::from(source), migration_id);
        }
        index += 1;
    };
    let verdict = match decision {
        Decision::Run => Verdict::HandedOver,
        Decision::Discard => Verdict::Aborted,
    };
    let mut answer = Vec::new();
    WireMessage::Answer {
        migration_id,
        verdict,
    }
    .encode(&mut answer)
    .map_err(|_| not_parked())?;
    resolve(host, &source, migration_id, &answer, DecidedBy::Operator);
    Ok(())
}

/// Applies `source`'s answer about `migration_id` to its parked copy: runs
/// it, discards it, or leaves it parked.
fn resolve<H: MigrationHost>(
    host: &mut H,
    source: &str,
    migration_id: MigrationId,
    answer: &[u8],
    by: DecidedBy,
) {
    let Some(index) = parked_index(host, source, migration_id) else {
        return;
    };
    let Some(image) = host.parked_mut(index) else {
        return;
    };
    let source = String::from(source);
    match migrate::apply_answer(image, answer) {
        Ok(Resolution::Run) => {
            let Some(image) = host.unpark(index) else {
                return;
            };
            match host.adopt(image, None) {
                Ok(name) => host.report(Event::ParkedRuns { source, name, by }),
                Err(error) => host.report(Event::ParkedCannotRun { error }),
            }
        }
        Ok(Resolution::Discard) => {
            let Some(image) = host.unpark(index) else {
                return;
            };
            let name = image.metadata().name.clone();
            match migrate::discard(image) {
                Ok(disk) => {
                    host.report(Event::ParkedDiscarded { source, name, by });
                    host.return_spare(disk);
                }
                Err(error) => host.report(Event::CannotDiscard { name, error }),
            }
        }
        Ok(Resolution::StayParked) => host.report(Event::StaysParked { source }),
        Err(error) => host.report(Event::BadAnswer { source, error }),
    }
}
