//! Helpers of the vm integration tests: a manual platform and WAT domains.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vm::persist::{BlockDevice, DeviceError, FaultPlan, FaultyDevice, MemoryDevice};
use vm::{
    Domain, DomainRecord, DomainStatus, HashedHeapBacking, MemoryStorage, Platform, Scheduler,
    Storage, Stream,
};

/// A platform whose clock moves only when told, and which records output.
#[derive(Debug, Default)]
pub struct TestPlatform {
    pub now_ns: AtomicU64,
    pub lines: Mutex<Vec<String>>,
}

impl TestPlatform {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn advance_ns(&self, ns: u64) {
        self.now_ns.fetch_add(ns, Ordering::SeqCst);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Platform for TestPlatform {
    fn monotonic_ns(&self) -> u64 {
        self.now_ns.load(Ordering::SeqCst)
    }

    fn realtime_ns(&self) -> u64 {
        1_700_000_000_000_000_000 + self.monotonic_ns()
    }

    fn fill_random(&self, bytes: &mut [u8]) {
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = (index as u8).wrapping_mul(31).wrapping_add(7);
        }
    }

    fn output(&self, domain_name: &str, stream: Stream, text: &str) {
        let tag = match stream {
            Stream::Stdout => "out",
            Stream::Stderr => "err",
            Stream::Log(_) => "log",
        };
        self.lines
            .lock()
            .unwrap()
            .push(format!("[{domain_name}] {tag}: {text}"));
    }
}

/// The bytes of a WAT module.
pub fn wasm(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).expect("test WAT parses")
}

/// A record for a new domain.
pub fn record(name: &str, id: u8, module: Vec<u8>) -> DomainRecord {
    DomainRecord::new(vm::DomainId::from_le_bytes([id; 16]), name, module)
}

/// Opens a domain over `storage`.
pub fn open_with(
    engine: &vm::wasmi::Engine,
    platform: &Arc<TestPlatform>,
    storage: Box<dyn Storage>,
) -> Result<Domain, vm::Error> {
    Domain::open(
        engine,
        platform.clone(),
        storage,
        Box::new(HashedHeapBacking::new()),
    )
}

/// Opens a new domain named `name` running `wat`.
pub fn open(
    engine: &vm::wasmi::Engine,
    platform: &Arc<TestPlatform>,
    name: &str,
    id: u8,
    wat: &str,
) -> Result<Domain, vm::Error> {
    let storage = MemoryStorage::new(record(name, id, wasm(wat)));
    open_with(engine, platform, Box::new(storage))
}

/// Runs rounds until every domain has ended or `rounds` pass, advancing the
/// clock 1 ms per round.
pub fn run_rounds<H: Clone, S: Storage>(
    scheduler: &mut Scheduler<H, S>,
    platform: &TestPlatform,
    rounds: usize,
) {
    for _ in 0..rounds {
        if scheduler.is_finished() {
            return;
        }
        scheduler.run_round();
        platform.advance_ns(1_000_000);
    }
}

/// Runs one domain alone until it ends (or panics after many rounds).
pub fn run_to_end(domain: &mut Domain, platform: &TestPlatform) -> DomainStatus {
    for _ in 0..100_000 {
        if let vm::RunOutcome::Halted(status) = domain.run(100_000) {
            return status;
        }
        platform.advance_ns(1_000_000);
    }
    panic!("domain {} did not end", domain.name());
}

/// The trap reason of a status, or a panic naming what it was.
pub fn trap_reason(status: &DomainStatus) -> &str {
    match status {
        DomainStatus::Trapped(reason) => reason,
        other => panic!("expected a trap, got {other:?}"),
    }
}

/// A block device the test keeps a handle on while a domain's image owns it:
/// a memory disk with a volatile write cache, which the test can cut the
/// power of.
#[derive(Clone)]
pub struct SharedDevice(Arc<Mutex<Option<FaultyDevice<MemoryDevice>>>>);

impl SharedDevice {
    /// A blank disk of `blocks` blocks.
    pub fn new(blocks: u64) -> Self {
        let faulty = FaultyDevice::new(MemoryDevice::new(blocks), FaultPlan::default());
        Self(Arc::new(Mutex::new(Some(faulty))))
    }

    /// Loses power after `writes` more writes (see [`FaultPlan`]).
    pub fn power_off_after_writes(&self, writes: u64) {
        self.with(|device| {
            device.set_plan(FaultPlan {
                power_off_after_writes: Some(writes),
                ..FaultPlan::default()
            })
        });
    }

    /// Cuts the power: unflushed writes land or not as `seed` decides, and
    /// the disk comes back powered, with no faults planned.
    pub fn power_cut(&self, seed: u64) {
        let mut slot = self.0.lock().unwrap();
        let faulty = slot.take().unwrap();
        let durable = faulty.power_cut(seed).unwrap();
        *slot = Some(FaultyDevice::new(durable, FaultPlan::default()));
    }

    fn with<T>(&self, operation: impl FnOnce(&mut FaultyDevice<MemoryDevice>) -> T) -> T {
        operation(self.0.lock().unwrap().as_mut().unwrap())
    }
}

impl BlockDevice for SharedDevice {
    fn read_block(&mut self, index: u64, buffer: &mut [u8; 4096]) -> Result<(), DeviceError> {
        self.with(|device| device.read_block(index, buffer))
    }
    fn write_block(&mut self, index: u64, buffer: &[u8; 4096]) -> Result<(), DeviceError> {
        self.with(|device| device.write_block(index, buffer))
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        self.with(|device| device.flush())
    }
    fn block_count(&self) -> u64 {
        self.with(|device| device.block_count())
    }
}
