//! Fakes for the migration tests: links, a network, disks, a machine.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use kernel_core::migration::{
    ConnectError, Counters, Event, HostError, Link, LinkError, MigrationHost, Migrations, Network,
};
use persist::migrate::{self, MigrationId, Ownership, Verdict};
use persist::{
    BLOCK_SIZE, BlockDevice, DeviceError, DomainId, FaultPlan, FaultyDevice, Image, MemoryDevice,
    NewDomain, PAGE_SIZE, Status,
};

/// Blocks of every disk in the tests.
pub const DISK_BLOCKS: u64 = 512;

/// Pages the pretend domain stores at first.
pub const PAGES: u64 = 40;

/// The domain that migrates.
pub const NAME: &str = "counter";
pub const DOMAIN_ID: DomainId = 0xc0ff_ee00_0000_0000_0000_0000_0000_0001;

/// The machines' addresses.
pub const A: &str = "10.0.0.1";
pub const B: &str = "10.0.0.2";

/// Bytes a link holds in each direction before `send` takes no more.
const WINDOW_BYTES: usize = 64 * 1024;

/// Fake time that passes on every look at the clock.
const TICK_NS: u64 = 20_000;

/// A page whose bytes derive from `seed`, never all zero.
pub fn page(seed: u64) -> [u8; PAGE_SIZE] {
    let mut page = [0u8; PAGE_SIZE];
    for (index, byte) in page.iter_mut().enumerate() {
        *byte = (seed as usize * 131 + index * 7 + 1) as u8 | 1;
    }
    page
}

/// The two directions of a connection.
#[derive(Debug, Default)]
pub struct Pipe {
    /// Bytes on their way to side 0 and to side 1.
    queues: [VecDeque<u8>; 2],
    is_closed: bool,
    /// Bytes that may still pass (both directions together) before the
    /// connection breaks; what is past the break is lost.
    pub budget_bytes: Option<usize>,
}

impl Pipe {
    /// The connection is reset: what is on its way is lost.
    pub fn reset(&mut self) {
        self.queues = Default::default();
        self.is_closed = true;
    }
}

/// One end of an in-memory connection. Dropping it closes the connection
/// (what was sent still arrives).
#[derive(Debug)]
pub struct MemoryLink {
    pipe: Rc<RefCell<Pipe>>,
    side: usize,
}

impl MemoryLink {
    /// Both ends of a new connection, and a handle on it.
    pub fn pair() -> (MemoryLink, MemoryLink, Rc<RefCell<Pipe>>) {
        let pipe = Rc::new(RefCell::new(Pipe::default()));
        let end = |side| MemoryLink {
            pipe: Rc::clone(&pipe),
            side,
        };
        (end(0), end(1), Rc::clone(&pipe))
    }

    /// Sends a whole frame (a hostile peer in a test writes what it likes).
    pub fn send_frame(&mut self, message: &[u8]) {
        let mut bytes = (message.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(message);
        self.send_raw(&bytes);
    }

    /// Sends raw bytes, all of them.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let mut pipe = self.pipe.borrow_mut();
        pipe.queues[1 - self.side].extend(bytes);
    }

    /// Every whole frame that has arrived.
    pub fn frames(&mut self) -> Vec<Vec<u8>> {
        let mut pipe = self.pipe.borrow_mut();
        let queue = &mut pipe.queues[self.side];
        let mut frames = Vec::new();
        while queue.len() >= 4 {
            let header: Vec<u8> = queue.iter().take(4).copied().collect();
            let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            if queue.len() < 4 + length {
                break;
            }
            queue.drain(..4);
            frames.push(queue.drain(..length).collect());
        }
        frames
    }

    /// Whether the peer closed the connection.
    pub fn is_closed(&self) -> bool {
        self.pipe.borrow().is_closed
    }
}

impl Drop for MemoryLink {
    fn drop(&mut self) {
        self.pipe.borrow_mut().is_closed = true;
    }
}

impl Link for MemoryLink {
    fn send(&mut self, bytes: &[u8]) -> Result<usize, LinkError> {
        let mut pipe = self.pipe.borrow_mut();
        if pipe.is_closed {
            return Err(LinkError::Closed);
        }
        let room = WINDOW_BYTES.saturating_sub(pipe.queues[1 - self.side].len());
        let mut count = bytes.len().min(room);
        if let Some(budget) = pipe.budget_bytes.as_mut() {
            if count > *budget {
                count = *budget;
                pipe.is_closed = true;
            }
            if let Some(budget) = pipe.budget_bytes.as_mut() {
                *budget -= count;
            }
        }
        pipe.queues[1 - self.side].extend(&bytes[..count]);
        Ok(count)
    }

    fn receive(&mut self, buffer: &mut [u8]) -> Result<usize, LinkError> {
        let mut pipe = self.pipe.borrow_mut();
        let is_closed = pipe.is_closed;
        let queue = &mut pipe.queues[self.side];
        if queue.is_empty() && is_closed {
            return Err(LinkError::Closed);
        }
        let count = buffer.len().min(queue.len());
        for (slot, byte) in buffer.iter_mut().zip(queue.drain(..count)) {
            *slot = byte;
        }
        Ok(count)
    }
}

/// Who is up and who has connected to whom.
#[derive(Debug, Default)]
pub struct Switch {
    /// Connections waiting to be accepted, by address, with the caller's.
    waiting: BTreeMap<String, VecDeque<(MemoryLink, String)>>,
    /// Machines that are up.
    up: Vec<String>,
    /// Every connection made, in order.
    pub pipes: Vec<Rc<RefCell<Pipe>>>,
    /// Applied to the next connection made.
    pub next_budget_bytes: Option<usize>,
}

impl Switch {
    pub fn new() -> Rc<RefCell<Switch>> {
        Rc::new(RefCell::new(Switch::default()))
    }

    /// A peer of the test's own making connects to `address`: the test
    /// writes and reads the returned end.
    pub fn dial(switch: &Rc<RefCell<Switch>>, address: &str, from: &str) -> MemoryLink {
        let (ours, theirs, pipe) = MemoryLink::pair();
        let mut switch = switch.borrow_mut();
        switch.pipes.push(pipe);
        switch
            .waiting
            .entry(address.into())
            .or_default()
            .push_back((theirs, from.into()));
        ours
    }

    pub fn take_down(&mut self, address: &str) {
        self.up.retain(|up| up != address);
        self.waiting.remove(address);
    }
}

/// A machine's view of the switch.
#[derive(Debug)]
pub struct FakeNetwork {
    address: String,
    switch: Rc<RefCell<Switch>>,
}

impl FakeNetwork {
    pub fn new(switch: &Rc<RefCell<Switch>>, address: &str) -> FakeNetwork {
        switch.borrow_mut().up.push(address.into());
        FakeNetwork {
            address: address.into(),
            switch: Rc::clone(switch),
        }
    }
}

impl Network for FakeNetwork {
    type Connection = MemoryLink;
    type Listener = ();

    fn listen(&mut self) -> Result<Option<()>, String> {
        Ok(Some(()))
    }

    fn accept(&mut self, listener: ()) -> Result<(MemoryLink, String), ()> {
        let mut switch = self.switch.borrow_mut();
        let queue = switch.waiting.get_mut(&self.address).ok_or(listener)?;
        queue.pop_front().ok_or(listener)
    }

    fn connect(&mut self, address: &str) -> Result<MemoryLink, ConnectError> {
        if address.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(ConnectError::NotAnAddress);
        }
        let (ours, theirs, pipe) = MemoryLink::pair();
        let mut switch = self.switch.borrow_mut();
        pipe.borrow_mut().budget_bytes = switch.next_budget_bytes.take();
        switch.pipes.push(pipe);
        if switch.up.iter().any(|up| up == address) {
            switch
                .waiting
                .entry(address.into())
                .or_default()
                .push_back((theirs, self.address.clone()));
        }
        // Else `theirs` drops: a machine that is down resets the connection.
        Ok(ours)
    }

    fn poll(&mut self) {}
}

/// A disk the test keeps a handle on, to cut its power.
#[derive(Debug, Clone)]
pub struct Disk {
    device: Rc<RefCell<FaultyDevice<MemoryDevice>>>,
}

impl Disk {
    pub fn blank() -> Disk {
        Disk::from_memory(MemoryDevice::new(DISK_BLOCKS))
    }

    pub fn from_memory(memory: MemoryDevice) -> Disk {
        Disk {
            device: Rc::new(RefCell::new(FaultyDevice::new(
                memory,
                FaultPlan::default(),
            ))),
        }
    }

    /// Loses power after `writes` more writes.
    pub fn power_off_after(&self, writes: u64) {
        let mut device = self.device.borrow_mut();
        let plan = FaultPlan {
            power_off_after_writes: Some(device.write_count() + writes),
            ..FaultPlan::default()
        };
        device.set_plan(plan);
    }

    pub fn write_count(&self) -> u64 {
        self.device.borrow().write_count()
    }

    pub fn is_powered_off(&self) -> bool {
        self.device.borrow().is_powered_off()
    }

    /// The disk as a reboot finds it after a power cut (`seed` picks which
    /// unflushed writes landed): a new handle; the old one is dead.
    pub fn reboot(&self, seed: u64) -> Disk {
        let device = std::mem::replace(
            &mut *self.device.borrow_mut(),
            FaultyDevice::new(MemoryDevice::new(1), FaultPlan::default()),
        );
        let memory = device
            .power_cut(seed)
            .expect("a memory device survives a power cut");
        // The old handle now holds a one-block disk that is powered off.
        self.device.borrow_mut().set_plan(FaultPlan {
            power_off_after_writes: Some(0),
            ..FaultPlan::default()
        });
        Disk::from_memory(memory)
    }

    /// Whether the disk holds no image.
    pub fn is_blank(&self) -> bool {
        Image::open(self.clone()).is_err()
    }
}

impl BlockDevice for Disk {
    fn read_block(&mut self, index: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        self.device.borrow_mut().read_block(index, buffer)
    }

    fn write_block(&mut self, index: u64, buffer: &[u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        self.device.borrow_mut().write_block(index, buffer)
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        self.device.borrow_mut().flush()
    }

    fn block_count(&self) -> u64 {
        self.device.borrow().block_count()
    }
}

/// Where a fake domain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainState {
    Running,
    /// Stopped for a migration's final round.
    Paused,
    /// Handed over: never runs here again.
    Moved,
}

#[derive(Debug)]
pub struct FakeDomain {
    pub name: String,
    pub image: Image<Disk>,
    pub state: DomainState,
    /// Commits the domain made, for its pages to change.
    steps: u64,
}

impl FakeDomain {
    /// The domain runs a little and commits: pages change.
    fn step(&mut self) -> Result<(), HostError> {
        self.steps += 1;
        let step = self.steps;
        let image = &mut self.image;
        let failed = |error: persist::Error| HostError(format!("{error}"));
        for offset in 0..4 {
            image
                .stage_page((step * 3 + offset) % PAGES, &page(1000 * step + offset))
                .map_err(failed)?;
        }
        image.metadata_mut().clock_ns += 1_000_000;
        image.commit().map_err(failed)?;
        Ok(())
    }
}

/// A machine: domains on disks, spare disks, parked copies, a clock.
#[derive(Debug, Default)]
pub struct FakeHost {
    clock_ns: Cell<u64>,
    pub domains: Vec<FakeDomain>,
    pub spares: Vec<Disk>,
    pub parked: Vec<Image<Disk>>,
    pub events: Vec<Event>,
    /// Modules compiled (their lengths stand in for the compiled module).
    pub compiled: Vec<usize>,
    /// Whether each adopted domain came with its module compiled.
    pub adopted_compiled: Vec<bool>,
    pub is_compile_failing: bool,
    next_migration_id: Cell<MigrationId>,
}

impl FakeHost {
    /// A machine as a boot finds `disks`: images that own their domain
    /// run, parked copies wait, incomplete copies are blanked, tombstones
    /// stay (they answer questions), blank disks are spares.
    pub fn boot(disks: Vec<Disk>) -> FakeHost {
        let mut host = FakeHost::default();
        host.next_migration_id
            .set(0x5eed_0000_0000_0000_0000_0000_0000_0001);
        for disk in disks {
            let Ok(image) = Image::open(disk.clone()) else {
                host.spares.push(disk);
                continue;
            };
            match migrate::ownership(image.metadata()) {
                Ownership::Parked { .. } => host.parked.push(image),
                Ownership::Incomplete { .. } => {
                    let blank = migrate::discard(image).expect("an incomplete copy is discarded");
                    host.spares.push(blank);
                }
                Ownership::Owner | Ownership::HandedOver { .. } => host.adopt_image(image),
            }
        }
        host
    }

    fn adopt_image(&mut self, image: Image<Disk>) {
        let state = match image.metadata().status {
            Status::Running => DomainState::Running,
            _ => DomainState::Moved,
        };
        self.domains.push(FakeDomain {
            name: image.metadata().name.clone(),
            image,
            state,
            steps: 100 * (self.domains.len() as u64 + 1),
        });
    }

    /// The domain `name`, wherever it stands.
    pub fn domain(&self, name: &str) -> Option<&FakeDomain> {
        self.domains.iter().find(|domain| domain.name == name)
    }

    pub fn state_of(&self, name: &str) -> Option<DomainState> {
        self.domain(name).map(|domain| domain.state)
    }

    fn domain_mut(&mut self, name: &str) -> Result<&mut FakeDomain, HostError> {
        self.domains
            .iter_mut()
            .find(|domain| domain.name == name && domain.state != DomainState::Moved)
            .ok_or_else(|| HostError(format!("no domain {name}")))
    }

    /// Every line said, as the kernel would print it.
    pub fn lines(&self) -> Vec<String> {
        self.events.iter().map(|event| format!("{event}")).collect()
    }

    pub fn has_said(&self, start: &str) -> bool {
        self.lines().iter().any(|line| line.starts_with(start))
    }
}

impl MigrationHost for FakeHost {
    type Disk = Disk;
    type Compiled = usize;

    fn now_ns(&self) -> u64 {
        let now = self.clock_ns.get() + TICK_NS;
        self.clock_ns.set(now);
        now
    }

    fn counters(&self) -> Counters {
        Counters {
            now_ns: self.now_ns(),
            ..Counters::default()
        }
    }

    fn is_running(&self, name: &str) -> bool {
        self.state_of(name) == Some(DomainState::Running)
    }

    fn new_migration_id(&self) -> MigrationId {
        let id = self.next_migration_id.get();
        self.next_migration_id.set(id + 1);
        id
    }

    fn image_of(&mut self, name: &str) -> Result<&mut Image<Disk>, HostError> {
        Ok(&mut self.domain_mut(name)?.image)
    }

    fn checkpoint(&mut self, name: &str) -> Result<(), HostError> {
        self.domain_mut(name)?.step()
    }

    fn pause_for_migration(&mut self, name: &str) -> Result<(), HostError> {
        let domain = self.domain_mut(name)?;
        domain.step()?;
        domain.state = DomainState::Paused;
        Ok(())
    }

    fn mark_moved(&mut self, name: &str) {
        if let Ok(domain) = self.domain_mut(name) {
            domain.state = DomainState::Moved;
        }
    }

    fn start(&mut self, name: &str) -> Result<(), HostError> {
        let domain = self.domain_mut(name)?;
        domain.state = DomainState::Running;
        Ok(())
    }

    fn take_spare(&mut self) -> Option<Disk> {
        (!self.spares.is_empty()).then(|| self.spares.remove(0))
    }

    fn return_spare(&mut self, disk: Disk) {
        self.spares.push(disk);
    }

    fn compile(&self, module: &[u8]) -> Result<usize, HostError> {
        if self.is_compile_failing {
            return Err(HostError("the module does not validate".into()));
        }
        Ok(module.len())
    }

    fn adopt(&mut self, image: Image<Disk>, compiled: Option<usize>) -> Result<String, HostError> {
        if let Some(length) = compiled {
            self.compiled.push(length);
        }
        self.adopted_compiled.push(compiled.is_some());
        let name = image.metadata().name.clone();
        self.adopt_image(image);
        Ok(name)
    }

    fn park(&mut self, image: Image<Disk>) {
        self.parked.push(image);
    }

    fn parked_mut(&mut self, index: usize) -> Option<&mut Image<Disk>> {
        self.parked.get_mut(index)
    }

    fn unpark(&mut self, index: usize) -> Option<Image<Disk>> {
        (index < self.parked.len()).then(|| self.parked.remove(index))
    }

    fn answer_query(&mut self, migration_id: MigrationId, domain_id: DomainId) -> Verdict {
        migrate::answer_query(
            self.domains.iter().map(|domain| domain.image.metadata()),
            migration_id,
            domain_id,
        )
    }

    fn report(&mut self, event: Event) {
        eprintln!("{event}");
        self.events.push(event);
    }
}

/// A disk holding the domain that migrates, committed once.
pub fn domain_disk() -> Disk {
    let disk = Disk::blank();
    let module: Vec<u8> = b"\0asm\x01\0\0\0"
        .iter()
        .copied()
        .chain((0..20_000u32).map(|index| (index * 31 % 251) as u8))
        .collect();
    let mut image = Image::create(
        disk.clone(),
        NewDomain {
            id: DOMAIN_ID,
            name: NAME,
            module: &module,
            memory_pages: 2,
            memory_max_pages: 4,
            args: vec![NAME.into()],
            env: Vec::new(),
        },
    )
    .expect("a blank disk takes an image");
    for page_index in 0..PAGES {
        image
            .stage_page(page_index, &page(page_index))
            .expect("a page fits");
    }
    image.commit().expect("a memory disk commits");
    disk
}

/// One machine of a test: its migrations and everything else.
#[derive(Debug)]
pub struct Machine {
    pub address: String,
    pub migrations: Migrations<FakeNetwork, FakeHost>,
    pub host: FakeHost,
}

impl Machine {
    pub fn boot(switch: &Rc<RefCell<Switch>>, address: &str, disks: Vec<Disk>) -> Machine {
        Machine {
            address: address.into(),
            migrations: Migrations::new(FakeNetwork::new(switch, address)),
            host: FakeHost::boot(disks),
        }
    }

    pub fn poll(&mut self) -> bool {
        self.migrations.poll(&mut self.host)
    }

    /// Lets fake time pass (domains run; nothing else happens).
    pub fn idle(&mut self, nanoseconds: u64) {
        let now = self.host.clock_ns.get();
        self.host.clock_ns.set(now + nanoseconds);
    }
}

/// Machine A with the domain, machine B with a spare, on one switch.
pub fn two_machines() -> (Rc<RefCell<Switch>>, Machine, Machine, Disk) {
    let switch = Switch::new();
    let a = Machine::boot(&switch, A, vec![domain_disk()]);
    let spare = Disk::blank();
    let b = Machine::boot(&switch, B, vec![spare.clone()]);
    (switch, a, b, spare)
}

/// Polls both machines, each after a millisecond of fake time, until
/// `is_done` or `rounds` rounds; says whether `is_done` came true.
pub fn run_until(
    a: &mut Machine,
    b: &mut Machine,
    rounds: usize,
    mut is_done: impl FnMut(&Machine, &Machine) -> bool,
) -> bool {
    for _ in 0..rounds {
        if is_done(a, b) {
            return true;
        }
        a.idle(1_000_000);
        a.poll();
        b.idle(1_000_000);
        b.poll();
    }
    is_done(a, b)
}

/// Polls until neither machine has anything in flight.
pub fn run_to_quiet(a: &mut Machine, b: &mut Machine) {
    let is_quiet = run_until(a, b, 20_000, |a, b| {
        !a.migrations.is_busy() && !b.migrations.is_busy()
    });
    assert!(
        is_quiet,
        "A said {:#?}\nB said {:#?}",
        a.host.lines(),
        b.host.lines()
    );
}

/// Every stored page of `image` and its bytes.
pub fn pages<D: BlockDevice>(image: &mut Image<D>) -> Vec<(u64, Vec<u8>)> {
    let mut pages = Vec::new();
    for page_index in image.stored_pages().expect("the image reads") {
        let mut bytes = [0u8; PAGE_SIZE];
        image
            .read_page(page_index, &mut bytes)
            .expect("the page reads");
        pages.push((page_index, bytes.to_vec()));
    }
    pages
}
