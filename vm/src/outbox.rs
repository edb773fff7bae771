//! Messages a domain sent that their receivers have not yet committed.
//!
//! Delivery between domains does not wait for a disk: the receiver queues a
//! message in memory, and the sender keeps a copy here until a commit of the
//! receiver holds it (the receiver's committed count of the sender's
//! messages reaches its number). The outbox is committed with the sender, so
//! after a power cut every message is in one of two places: in the
//! receiver's committed state, or in the committed outbox of a sender that
//! delivers it again (see `Scheduler::add`). A sender rolled back to before
//! a send has no copy, but then it has not sent the message either: it sends
//! it again as it runs on.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use crate::storage::{DomainId, OutboxMessage};

/// The outbox of one domain: a queue per receiver, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queues: BTreeMap<DomainId, Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    /// (number, bytes), in ascending numbers.
    messages: VecDeque<(u64, Vec<u8>)>,
    bytes: usize,
}

impl Outbox {
    /// The outbox a record holds. Entries are put in order and duplicate
    /// numbers dropped, so that a damaged record cannot break the order
    /// receivers rely on.
    pub(crate) fn from_record(messages: &[OutboxMessage]) -> Self {
        let mut sorted: Vec<&OutboxMessage> = messages.iter().collect();
        sorted.sort_by_key(|message| (message.to, message.sequence));
        sorted.dedup_by_key(|message| (message.to, message.sequence));
        let mut outbox = Self::default();
        for message in sorted {
            outbox.push(message.to, message.sequence, message.bytes.clone());
        }
        outbox
    }

    /// The outbox as a record keeps it.
    pub(crate) fn to_record(&self) -> Vec<OutboxMessage> {
        self.queues
            .iter()
            .flat_map(|(&to, queue)| {
                queue
                    .messages
                    .iter()
                    .map(move |(sequence, bytes)| OutboxMessage {
                        to,
                        sequence: *sequence,
                        bytes: bytes.clone(),
                    })
            })
            .collect()
    }

    /// Keeps message `sequence` to `to` (numbers to one receiver only grow).
    pub(crate) fn push(&mut self, to: DomainId, sequence: u64, bytes: Vec<u8>) {
        let queue = self.queues.entry(to).or_default();
        queue.bytes = queue.bytes.saturating_add(bytes.len());
        queue.messages.push_back((sequence, bytes));
    }

    /// Forgets the messages to `to` numbered up to `committed`: a commit of
    /// the receiver holds them.
    pub(crate) fn acknowledge(&mut self, to: DomainId, committed: u64) {
        let Some(queue) = self.queues.get_mut(&to) else {
            return;
        };
        while let Some((sequence, bytes)) = queue.messages.front() {
            if *sequence > committed {
                break;
            }
            queue.bytes = queue.bytes.saturating_sub(bytes.len());
            queue.messages.pop_front();
        }
        if queue.messages.is_empty() {
            self.queues.remove(&to);
        }
    }

    /// The oldest message to `to` numbered above `accepted`: the next one
    /// to deliver again. Numbers ascend, so it is found by bisection.
    pub(crate) fn first_after(&self, to: DomainId, accepted: u64) -> Option<(u64, &[u8])> {
        let queue = self.queues.get(&to)?;
        let index = queue
            .messages
            .partition_point(|(sequence, _)| *sequence <= accepted);
        let (sequence, bytes) = queue.messages.get(index)?;
        Some((*sequence, bytes.as_slice()))
    }

    /// Whether a message to `to` numbered above `accepted` waits: one the
    /// receiver lost, or one a full mailbox has not taken yet.
    pub(crate) fn has_after(&self, to: DomainId, accepted: u64) -> bool {
        self.queues
            .get(&to)
            .and_then(|queue| queue.messages.back())
            .is_some_and(|(sequence, _)| *sequence > accepted)
    }

    /// How many messages and bytes wait for `to`'s commit.
    pub(crate) fn waiting_for(&self, to: DomainId) -> (usize, usize) {
        self.queues
            .get(&to)
            .map_or((0, 0), |queue| (queue.messages.len(), queue.bytes))
    }

    /// The receivers with messages waiting.
    pub(crate) fn receivers(&self) -> Vec<DomainId> {
        self.queues.keys().copied().collect()
    }

    /// How many messages wait, for all receivers.
    pub(crate) fn len(&self) -> usize {
        self.queues.values().map(|queue| queue.messages.len()).sum()
    }

    /// Whether every message sent is committed by its receiver.
    pub(crate) fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn message(to: u8, sequence: u64) -> OutboxMessage {
        OutboxMessage {
            to: DomainId::from_le_bytes([to; 16]),
            sequence,
            bytes: vec![to, sequence as u8],
        }
    }

    #[test]
    fn a_record_is_put_in_order_and_round_trips() {
        let record = [message(2, 5), message(1, 3), message(2, 4), message(2, 5)];
        let outbox = Outbox::from_record(&record);
        let expected = vec![message(1, 3), message(2, 4), message(2, 5)];
        assert_eq!(outbox.to_record(), expected);
        assert_eq!(outbox.waiting_for(DomainId::from_le_bytes([2; 16])), (2, 4));
    }

    #[test]
    fn a_commit_acknowledges_up_to_its_count() {
        let mut outbox = Outbox::default();
        for sequence in 1..=4 {
            outbox.push(DomainId::from_le_bytes([9; 16]), sequence, vec![0; 10]);
        }
        outbox.acknowledge(DomainId::from_le_bytes([9; 16]), 2);
        assert_eq!(
            outbox.waiting_for(DomainId::from_le_bytes([9; 16])),
            (2, 20)
        );
        assert_eq!(
            outbox.first_after(DomainId::from_le_bytes([9; 16]), 3),
            Some((4, &[0; 10][..]))
        );
        assert_eq!(
            outbox.first_after(DomainId::from_le_bytes([9; 16]), 4),
            None
        );
        assert_eq!(
            (outbox.len(), outbox.receivers()),
            (2, vec![DomainId::from_le_bytes([9; 16])])
        );
        outbox.acknowledge(DomainId::from_le_bytes([9; 16]), 7);
        assert!(outbox.is_empty());
    }
}
