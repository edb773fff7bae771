//! The gathering layer over a transport that records every request.

use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use super::{Area, BlockTransport, GatherError, Gathering};
use crate::device::BLOCK_SIZE;

/// Blocks per area in these tests: small, so runs fill up quickly.
const RUN: usize = 4;

/// Blocks on the recorded disk.
const DISK_BLOCKS: u64 = 32;

/// A request as the transport saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Read { first: u64, count: usize },
    StartWrite { first: u64, count: usize },
    FinishWrite,
    Flush,
}

/// The error the recording transport injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fault;

/// A transport over a disk in RAM that records each request, fails the ones
/// it is told to, and panics when the layer breaks the contract (a request
/// beside the write in flight, or a touch of that write's area).
#[derive(Debug)]
struct Recording {
    disk: Vec<[u8; BLOCK_SIZE]>,
    areas: [Vec<[u8; BLOCK_SIZE]>; 2],
    in_flight: Option<(Area, u64, usize)>,
    events: Vec<Event>,
    /// Fail the Nth `finish_write` (1-based).
    fail_finish: Option<usize>,
    /// Fail the Nth `start_write` (1-based).
    fail_start: Option<usize>,
    /// Fail the Nth `read` (1-based).
    fail_read: Option<usize>,
}

impl Recording {
    fn new() -> Self {
        Self {
            disk: vec![[0; BLOCK_SIZE]; DISK_BLOCKS as usize],
            areas: [vec![[0; BLOCK_SIZE]; RUN], vec![[0; BLOCK_SIZE]; RUN]],
            in_flight: None,
            events: Vec::new(),
            fail_finish: None,
            fail_start: None,
            fail_read: None,
        }
    }

    fn count(&self, wanted: fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|event| wanted(event)).count()
    }

    fn assert_idle(&self, request: &str) {
        assert!(
            self.in_flight.is_none(),
            "{request} while a write is in flight: {:?}",
            self.events
        );
    }
}

impl BlockTransport for Recording {
    type Error = Fault;

    const RUN_BLOCKS: usize = RUN;

    fn block_count(&self) -> u64 {
        DISK_BLOCKS
    }

    fn slot(&mut self, area: Area, slot: usize) -> Result<&mut [u8; BLOCK_SIZE], Fault> {
        assert!(
            self.in_flight.is_none_or(|(busy, ..)| busy != area),
            "slot {slot} of {area:?} touched while its write is in flight"
        );
        Ok(&mut self.areas[area.index()][slot])
    }

    fn read(&mut self, area: Area, first: u64, count: usize) -> Result<(), Fault> {
        self.assert_idle("read");
        assert!((1..=RUN).contains(&count) && first + count as u64 <= DISK_BLOCKS);
        self.events.push(Event::Read { first, count });
        if self.fail_read == Some(self.count(|event| matches!(event, Event::Read { .. }))) {
            return Err(Fault);
        }
        for slot in 0..count {
            self.areas[area.index()][slot] = self.disk[first as usize + slot];
        }
        Ok(())
    }

    fn start_write(&mut self, area: Area, first: u64, count: usize) -> Result<(), Fault> {
        self.assert_idle("start write");
        assert!((1..=RUN).contains(&count) && first + count as u64 <= DISK_BLOCKS);
        self.events.push(Event::StartWrite { first, count });
        if self.fail_start == Some(self.count(|event| matches!(event, Event::StartWrite { .. }))) {
            return Err(Fault);
        }
        self.in_flight = Some((area, first, count));
        Ok(())
    }

    fn finish_write(&mut self) -> Result<(), Fault> {
        let (area, first, count) = self
            .in_flight
            .take()
            .expect("finish with nothing in flight");
        self.events.push(Event::FinishWrite);
        if self.fail_finish == Some(self.count(|event| *event == Event::FinishWrite)) {
            return Err(Fault);
        }
        for slot in 0..count {
            self.disk[first as usize + slot] = self.areas[area.index()][slot];
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Fault> {
        self.assert_idle("flush");
        self.events.push(Event::Flush);
        Ok(())
    }
}

fn block(value: u8) -> [u8; BLOCK_SIZE] {
    [value; BLOCK_SIZE]
}

fn layer() -> Gathering<Recording> {
    Gathering::new(Recording::new())
}

fn write_all(layer: &mut Gathering<Recording>, indices: &[u64]) {
    for &index in indices {
        layer.write(index, &block(index as u8 + 1)).unwrap();
    }
}

fn read(layer: &mut Gathering<Recording>, index: u64) -> [u8; BLOCK_SIZE] {
    let mut buffer = [0; BLOCK_SIZE];
    layer.read(index, &mut buffer).unwrap();
    buffer
}

fn events(layer: &Gathering<Recording>) -> &[Event] {
    &layer.transport().events
}

use Event::{FinishWrite, Flush, Read, StartWrite};

#[test]
fn consecutive_writes_go_as_one_request_at_flush() {
    let mut layer = layer();
    write_all(&mut layer, &[5, 6, 7]);
    assert_eq!(events(&layer), []);
    layer.flush().unwrap();
    assert_eq!(
        events(&layer),
        [StartWrite { first: 5, count: 3 }, FinishWrite, Flush]
    );
    for index in 5..8 {
        assert_eq!(layer.transport().disk[index], block(index as u8 + 1));
    }
}

#[test]
fn a_full_area_sends_its_run_and_the_next_fills_the_other() {
    let mut layer = layer();
    write_all(&mut layer, &[0, 1, 2, 3, 4, 5]);
    assert_eq!(events(&layer), [StartWrite { first: 0, count: 4 }]);
    layer.flush().unwrap();
    assert_eq!(
        events(&layer),
        [
            StartWrite { first: 0, count: 4 },
            FinishWrite,
            StartWrite { first: 4, count: 2 },
            FinishWrite,
            Flush,
        ]
    );
}

#[test]
fn a_write_elsewhere_breaks_the_run_and_a_rewrite_joins_it() {
    let mut layer = layer();
    write_all(&mut layer, &[3, 4]);
    layer.write(3, &block(99)).unwrap();
    assert_eq!(events(&layer), []);
    write_all(&mut layer, &[9]);
    assert_eq!(events(&layer), [StartWrite { first: 3, count: 2 }]);
    // A write before the run does not extend it either.
    write_all(&mut layer, &[8]);
    layer.flush().unwrap();
    assert_eq!(
        events(&layer),
        [
            StartWrite { first: 3, count: 2 },
            FinishWrite,
            StartWrite { first: 9, count: 1 },
            FinishWrite,
            StartWrite { first: 8, count: 1 },
            FinishWrite,
            Flush,
        ]
    );
    assert_eq!(layer.transport().disk[3], block(99));
    assert_eq!(layer.transport().disk[4], block(5));
}

#[test]
fn a_read_sends_the_run_and_waits_for_it_before_reading() {
    let mut layer = layer();
    write_all(&mut layer, &[3, 4]);
    assert_eq!(read(&mut layer, 20), block(0));
    assert_eq!(
        events(&layer),
        [
            StartWrite { first: 3, count: 2 },
            FinishWrite,
            Read {
                first: 20,
                count: 1
            },
        ]
    );
}

#[test]
fn a_read_of_a_waiting_write_comes_from_the_area() {
    let mut layer = layer();
    write_all(&mut layer, &[3, 4]);
    assert_eq!(read(&mut layer, 4), block(5));
    assert_eq!(events(&layer), []);
}

#[test]
fn a_sequential_read_reads_ahead_and_the_next_reads_come_from_the_area() {
    let mut layer = layer();
    layer.transport.disk[11] = block(11);
    layer.transport.disk[14] = block(14);
    assert_eq!(read(&mut layer, 10), block(0));
    assert_eq!(read(&mut layer, 11), block(11));
    // Out of order but inside the area: no request.
    assert_eq!(read(&mut layer, 13), block(0));
    assert_eq!(read(&mut layer, 12), block(0));
    assert_eq!(read(&mut layer, 14), block(14));
    assert_eq!(
        events(&layer),
        [
            Read {
                first: 10,
                count: 1
            },
            Read {
                first: 11,
                count: RUN
            },
        ]
    );
    // Past the area, the next sequential read reads ahead again, but not
    // past the end of the disk.
    read(&mut layer, 15);
    read(&mut layer, DISK_BLOCKS - 3);
    read(&mut layer, DISK_BLOCKS - 2);
    read(&mut layer, DISK_BLOCKS - 1);
    assert_eq!(
        &events(&layer)[2..],
        [
            Read {
                first: 15,
                count: RUN
            },
            Read {
                first: DISK_BLOCKS - 3,
                count: 1
            },
            Read {
                first: DISK_BLOCKS - 2,
                count: 2
            },
        ]
    );
}

#[test]
fn a_write_replaces_read_ahead_in_the_area() {
    let mut layer = layer();
    layer.transport.disk[13] = block(13);
    read(&mut layer, 10);
    read(&mut layer, 11);
    write_all(&mut layer, &[20]);
    // Block 13 was read ahead into the area the write now fills: it comes
    // from the disk again, after the write is sent.
    assert_eq!(read(&mut layer, 13), block(13));
    assert_eq!(
        &events(&layer)[2..],
        [
            StartWrite {
                first: 20,
                count: 1
            },
            FinishWrite,
            Read {
                first: 13,
                count: 1
            },
        ]
    );
}

#[test]
fn an_uncached_read_is_a_request_of_its_own() {
    let mut layer = layer();
    write_all(&mut layer, &[2]);
    let mut buffer = [0; BLOCK_SIZE];
    for index in [2, 3, 3] {
        layer.read_uncached(index, &mut buffer).unwrap();
    }
    assert_eq!(buffer, block(0));
    layer.read_uncached(2, &mut buffer).unwrap();
    assert_eq!(buffer, block(3));
    assert_eq!(
        events(&layer),
        [
            StartWrite { first: 2, count: 1 },
            FinishWrite,
            Read { first: 2, count: 1 },
            Read { first: 3, count: 1 },
            Read { first: 3, count: 1 },
            Read { first: 2, count: 1 },
        ]
    );
}

#[test]
fn nothing_read_or_flushed_overtakes_a_write_in_flight() {
    let mut layer = layer();
    // Block 1's run goes behind the caller's back when block 7 starts the
    // next one; the recording transport panics if anything comes between
    // that write and its finish.
    write_all(&mut layer, &[1, 7]);
    assert_eq!(events(&layer), [StartWrite { first: 1, count: 1 }]);
    assert_eq!(read(&mut layer, 1), block(2));
    write_all(&mut layer, &[8, 12]);
    layer.flush().unwrap();
    assert_eq!(
        events(&layer),
        [
            StartWrite { first: 1, count: 1 },
            FinishWrite,
            StartWrite { first: 7, count: 1 },
            FinishWrite,
            Read { first: 1, count: 1 },
            StartWrite { first: 8, count: 1 },
            FinishWrite,
            StartWrite {
                first: 12,
                count: 1
            },
            FinishWrite,
            Flush,
        ]
    );
}

#[test]
fn a_failed_write_behind_makes_every_later_request_fail() {
    let mut layer = layer();
    layer.transport.fail_finish = Some(1);
    write_all(&mut layer, &[1, 7]);
    // Sending block 7's run waits for block 1's first, which failed.
    assert_eq!(
        layer.write(12, &block(1)),
        Err(GatherError::Transport(Fault))
    );
    assert!(layer.is_out_of_service());
    let before = events(&layer).len();
    assert_eq!(layer.write(12, &block(1)), Err(GatherError::OutOfService));
    assert_eq!(layer.flush(), Err(GatherError::OutOfService));
    let mut buffer = [0; BLOCK_SIZE];
    assert_eq!(layer.read(7, &mut buffer), Err(GatherError::OutOfService));
    assert_eq!(events(&layer).len(), before, "nothing reached the disk");
}

#[test]
fn a_write_behind_failing_at_flush_fails_that_flush_and_every_later_one() {
    let mut layer = layer();
    layer.transport.fail_finish = Some(1);
    write_all(&mut layer, &[1, 7]);
    assert_eq!(layer.flush(), Err(GatherError::Transport(Fault)));
    assert_eq!(layer.flush(), Err(GatherError::OutOfService));
    assert_eq!(layer.write(3, &block(3)), Err(GatherError::OutOfService));
    assert_eq!(layer.transport().count(|event| *event == Flush), 0);
}

#[test]
fn a_write_the_transport_refuses_to_start_takes_the_layer_out_of_service() {
    let mut layer = layer();
    layer.transport.fail_start = Some(1);
    write_all(&mut layer, &[1]);
    assert_eq!(layer.flush(), Err(GatherError::Transport(Fault)));
    assert_eq!(layer.flush(), Err(GatherError::OutOfService));
}

#[test]
fn a_failed_read_loses_nothing_and_the_layer_goes_on() {
    let mut layer = layer();
    layer.transport.fail_read = Some(1);
    write_all(&mut layer, &[1]);
    let mut buffer = [0; BLOCK_SIZE];
    assert_eq!(
        layer.read(9, &mut buffer),
        Err(GatherError::Transport(Fault))
    );
    assert!(!layer.is_out_of_service());
    assert_eq!(read(&mut layer, 1), block(2));
    layer.flush().unwrap();
}

#[test]
fn out_of_range_blocks_are_refused_before_the_transport_sees_them() {
    let mut layer = layer();
    let out_of_range = Err(GatherError::OutOfRange {
        index: DISK_BLOCKS,
        block_count: DISK_BLOCKS,
    });
    assert_eq!(layer.write(DISK_BLOCKS, &block(1)), out_of_range);
    let mut buffer = [0; BLOCK_SIZE];
    assert_eq!(layer.read(DISK_BLOCKS, &mut buffer), out_of_range);
    assert_eq!(events(&layer), []);
}

/// One call on the layer, for the model check.
#[derive(Debug, Clone, Copy)]
enum Call {
    Write { index: u64, value: u8 },
    Read { index: u64 },
    Flush,
}

fn call() -> impl Strategy<Value = Call> {
    // A narrow range of blocks, so runs, rewrites and sequential reads
    // are common.
    prop_oneof![
        4 => (0..12u64, any::<u8>()).prop_map(|(index, value)| Call::Write { index, value }),
        4 => (0..12u64).prop_map(|index| Call::Read { index }),
        1 => Just(Call::Flush),
    ]
}

proptest! {
    /// Whatever the calls, a read returns what was last written, the
    /// transport's contract holds (it panics otherwise), and after a flush
    /// the disk holds every write.
    #[test]
    fn reads_see_the_last_write_and_a_flush_lands_them_all(
        calls in prop::collection::vec(call(), 1..80),
    ) {
        let mut layer = layer();
        let mut model = vec![0u8; DISK_BLOCKS as usize];
        for call in calls {
            match call {
                Call::Write { index, value } => {
                    layer.write(index, &block(value)).unwrap();
                    model[index as usize] = value;
                }
                Call::Read { index } => {
                    prop_assert_eq!(read(&mut layer, index), block(model[index as usize]));
                }
                Call::Flush => layer.flush().unwrap(),
            }
        }
        layer.flush().unwrap();
        for (index, value) in model.iter().enumerate() {
            prop_assert_eq!(layer.transport().disk[index], block(*value));
        }
    }
}
