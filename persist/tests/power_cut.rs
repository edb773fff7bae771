//! Model check: random workloads, power cuts and failed writes always reopen
//! to the last commit that returned Ok (or one that failed after it).
//!
//! Each check runs on the faulty device directly and through the gathering
//! layer (`persist::gather`), the stack the kernel's images write through.

mod common;

use std::collections::BTreeMap;

use common::{fresh, page};
use persist::gather::{DeviceTransport, Gathering};
use persist::{
    BLOCK_SIZE, BlockDevice, DeviceError, Error, FaultPlan, FaultyDevice, Image, MemoryDevice,
    PAGE_SIZE, reachable_blocks,
};
use proptest::prelude::*;

/// One step of a workload.
#[derive(Debug, Clone)]
enum Step {
    /// Stage page `slot` (spread over several page-map leaves) with contents
    /// `seed` (0 = a zero page, which removes it).
    Stage { slot: u16, seed: u8 },
    /// Change the metadata (the logical clock).
    Tick,
    /// Commit.
    Commit,
}

/// What a commit holds: page index to seed, and the clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    pages: BTreeMap<u64, u8>,
    clock_ns: u64,
    commits: u64,
}

fn page_index(slot: u16) -> u64 {
    // 24 slots over a 65,536-page memory: several leaves and middle nodes.
    u64::from(slot) * 2731
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u16..24, 0u8..8).prop_map(|(slot, seed)| Step::Stage { slot, seed }),
        1 => Just(Step::Tick),
        3 => Just(Step::Commit),
    ]
}

fn page_for(seed: u8) -> [u8; PAGE_SIZE] {
    if seed == 0 {
        [0; PAGE_SIZE]
    } else {
        page(u64::from(seed))
    }
}

/// What sits between the image and the faulty device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stack {
    /// The image writes to the faulty device itself.
    Direct,
    /// The image writes through the gathering layer (write gathering,
    /// write-behind, read-ahead) with the kernel's runs of 64 blocks, as the
    /// kernel's images do over virtio-blk.
    Gathered,
    /// The same with runs of 4 blocks, which break and fill up often.
    GatheredShortRuns,
}

/// The gathering layer over `device`, with runs of `RUN_BLOCKS`.
fn gathered<D: BlockDevice, const RUN_BLOCKS: usize>(
    device: D,
) -> Gathering<DeviceTransport<D, RUN_BLOCKS>> {
    Gathering::new(DeviceTransport::new(device))
}

/// Runs `steps` on a fresh image over `stack` and a faulty device with
/// `plan`, cuts the power (resolved by `cut_seed`), reopens over the same
/// stack, and checks the result.
fn run(steps: &[Step], plan: FaultPlan, cut_seed: u64, stack: Stack) -> Result<(), TestCaseError> {
    let faulty = FaultyDevice::new(fresh(256, 4096).into_device(), plan);
    match stack {
        Stack::Direct => {
            let (faulty, candidates) = run_steps(Image::open(faulty).unwrap(), steps);
            check_reopened(faulty.power_cut(cut_seed).unwrap(), &candidates)
        }
        Stack::Gathered => {
            let (layer, candidates) =
                run_steps(Image::open(gathered::<_, 64>(faulty)).unwrap(), steps);
            let device = layer
                .into_transport()
                .into_device()
                .power_cut(cut_seed)
                .unwrap();
            check_reopened(gathered::<_, 64>(device), &candidates)
        }
        Stack::GatheredShortRuns => {
            let (layer, candidates) =
                run_steps(Image::open(gathered::<_, 4>(faulty)).unwrap(), steps);
            let device = layer
                .into_transport()
                .into_device()
                .power_cut(cut_seed)
                .unwrap();
            check_reopened(gathered::<_, 4>(device), &candidates)
        }
    }
}

/// Runs `steps` on `image`; returns its device and the states a reopen may
/// find (the last commit that returned Ok, and every one tried after it).
fn run_steps<D: BlockDevice>(mut image: Image<D>, steps: &[Step]) -> (D, Vec<State>) {
    let mut staged = State::default();
    let mut candidates = vec![State::default()];
    for step in steps {
        match step {
            Step::Stage { slot, seed } => {
                let page_index = page_index(*slot);
                if image.stage_page(page_index, &page_for(*seed)).is_ok() {
                    if *seed == 0 {
                        staged.pages.remove(&page_index);
                    } else {
                        staged.pages.insert(page_index, *seed);
                    }
                }
            }
            Step::Tick => {
                staged.clock_ns += 1;
                image.metadata_mut().clock_ns = staged.clock_ns;
            }
            Step::Commit => {
                let mut attempt = staged.clone();
                attempt.commits += 1;
                match image.commit() {
                    Ok(_) => {
                        staged = attempt.clone();
                        candidates = vec![attempt];
                    }
                    // Failed before the superblock: nothing durable changed.
                    Err(Error::NoSpace { .. }) => {}
                    // A device error may have hit the superblock write.
                    Err(_) => candidates.push(attempt),
                }
            }
        }
    }
    (image.into_device(), candidates)
}

/// Reopens `device` after the cut and checks it holds one of `candidates`,
/// intact, and goes on working.
fn check_reopened<D: BlockDevice>(
    mut device: D,
    candidates: &[State],
) -> Result<(), TestCaseError> {
    let protected = reachable_blocks(&mut device);
    prop_assert!(
        protected.is_ok(),
        "a valid superblock reaches a bad block: {protected:?}"
    );
    let mut image = Image::open(device).unwrap();
    let metadata = image.metadata().clone();
    let stored = image.stored_pages().unwrap();
    let matching = candidates.iter().find(|candidate| {
        candidate.clock_ns == metadata.clock_ns
            && candidate.commits == metadata.counters.commits
            && candidate.pages.keys().copied().collect::<Vec<_>>() == stored
    });
    prop_assert!(
        matching.is_some(),
        "reopened at commit {} with clock {} and pages {stored:?}; expected one of {candidates:?}",
        metadata.counters.commits,
        metadata.clock_ns
    );
    if let Some(state) = matching {
        for (&page_index, &seed) in &state.pages {
            let mut buffer = [0u8; PAGE_SIZE];
            image.read_page(page_index, &mut buffer).unwrap();
            prop_assert!(buffer == page_for(seed), "page {page_index} differs");
        }
    }
    image.verify().unwrap();
    // The image goes on working after the cut.
    image.stage_page(1, &page(99)).unwrap();
    image.commit().unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    /// 600 power cuts at a random write, unflushed writes dropped, reordered
    /// or torn.
    #[test]
    fn power_cuts_reopen_to_the_last_commit(
        steps in prop::collection::vec(step(), 1..40),
        cut_after_writes in 0u64..80,
        cut_seed in any::<u64>(),
    ) {
        let plan = FaultPlan { power_off_after_writes: Some(cut_after_writes), ..FaultPlan::default() };
        run(&steps, plan, cut_seed, Stack::Direct)?;
    }

    /// 400 more cuts, each after a write that failed with an I/O error.
    #[test]
    fn failed_writes_then_power_cuts_reopen_to_a_commit(
        steps in prop::collection::vec(step(), 1..40),
        failed_write in 1u64..60,
        cut_after_extra_writes in 0u64..40,
        cut_seed in any::<u64>(),
    ) {
        let plan = FaultPlan {
            fail_write_number: Some(failed_write),
            power_off_after_writes: Some(failed_write + cut_after_extra_writes),
            fail_flush_number: None,
        };
        // 400 cases: together with the test above, 1,000 cuts per run.
        run(&steps, plan, cut_seed, Stack::Direct)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// 300 power cuts through the gathering layer with the kernel's runs:
    /// writes gathered, sent behind the image's back and read ahead lose
    /// nothing a flush returned Ok for.
    #[test]
    fn power_cuts_through_the_gathering_layer_reopen_to_the_last_commit(
        steps in prop::collection::vec(step(), 1..40),
        cut_after_writes in 0u64..80,
        cut_seed in any::<u64>(),
    ) {
        let plan = FaultPlan { power_off_after_writes: Some(cut_after_writes), ..FaultPlan::default() };
        run(&steps, plan, cut_seed, Stack::Gathered)?;
    }

    /// 300 cuts through the layer with 4-block runs, each after a write
    /// that failed: a failed write-behind surfaces later, at another
    /// request, and must still keep every later commit from claiming it.
    #[test]
    fn failed_writes_behind_the_layer_then_power_cuts_reopen_to_a_commit(
        steps in prop::collection::vec(step(), 1..40),
        failed_write in 1u64..60,
        cut_after_extra_writes in 0u64..40,
        cut_seed in any::<u64>(),
    ) {
        let plan = FaultPlan {
            fail_write_number: Some(failed_write),
            power_off_after_writes: Some(failed_write + cut_after_extra_writes),
            fail_flush_number: None,
        };
        run(&steps, plan, cut_seed, Stack::GatheredShortRuns)?;
    }
}

/// A device that fails the test if anything overwrites a block that either
/// valid superblock reaches (the superblock slot being replaced aside).
#[derive(Debug)]
struct GuardDevice {
    inner: MemoryDevice,
    protected: std::collections::BTreeSet<u64>,
    overwrites: u64,
}

impl GuardDevice {
    fn new(inner: MemoryDevice) -> Self {
        let mut device = Self {
            inner,
            protected: Default::default(),
            overwrites: 0,
        };
        device.refresh();
        device
    }

    fn refresh(&mut self) {
        let mut snapshot = self.inner.clone();
        self.protected = reachable_blocks(&mut snapshot).unwrap();
    }
}

impl BlockDevice for GuardDevice {
    fn read_block(&mut self, index: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        self.inner.read_block(index, buffer)
    }

    fn write_block(&mut self, index: u64, buffer: &[u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        if index > 1 && self.protected.contains(&index) {
            self.overwrites += 1;
        }
        self.inner.write_block(index, buffer)
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        // Superblocks change only just before a flush: recompute then.
        self.refresh();
        self.inner.flush()
    }

    fn block_count(&self) -> u64 {
        self.inner.block_count()
    }
}

#[test]
fn no_block_either_superblock_reaches_is_ever_overwritten() {
    // A small image so that freed blocks are reused as soon as allowed.
    let device = GuardDevice::new(fresh(128, 64).into_device());
    let mut image = Image::open(device).unwrap();
    for round in 0..300u64 {
        for page_number in 0..(round % 5) {
            let page_index = ((round * 7 + page_number * 13) % 40) * 25;
            match image.stage_page(page_index, &page(round)) {
                Ok(()) | Err(Error::NoSpace { .. }) => {}
                Err(error) => panic!("stage {round}: {error}"),
            }
        }
        image.metadata_mut().clock_ns = round;
        match image.commit() {
            Ok(_) | Err(Error::NoSpace { .. }) => {}
            Err(error) => panic!("commit {round}: {error}"),
        }
        if round % 50 == 49 {
            image = Image::open(image.into_device()).unwrap();
        }
    }
    assert_eq!(image.device().overwrites, 0);
    // The guard did guard something: both commits' trees, pages, metadata.
    assert!(image.device().protected.len() > 40);
    image.verify().unwrap();
}
