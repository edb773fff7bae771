//! Fakes for the migration tests: links, a network, disks, a machine.

#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod disk;
pub mod host;
pub mod network;
pub mod secure;

use std::cell::RefCell;
use std::rc::Rc;

use kernel_core::migration::{ClusterSecret, Limits, Migrations, SecureNetwork};
use persist::{BlockDevice, DomainId, Image, NewDomain, PAGE_SIZE, StoredStatus};

pub use disk::Disk;
pub use host::{DomainState, FakeHost};
pub use network::{FakeNetwork, Switch};
pub use secure::{TestEntropy, TestNetwork};

/// Blocks of every disk in the tests.
pub const DISK_BLOCKS: u64 = 512;

/// Pages the pretend domain stores at first.
pub const PAGES: u64 = 40;

/// The domain that migrates.
pub const NAME: &str = "counter";
pub const DOMAIN_ID: DomainId = DomainId(0xc0ff_ee00_0000_0000_0000_0000_0000_0001);

/// The machines' addresses.
pub const A: &str = "10.0.0.1";
pub const B: &str = "10.0.0.2";

/// A page whose bytes derive from `seed`, never all zero.
pub fn page(seed: u64) -> [u8; PAGE_SIZE] {
    let mut page = [0u8; PAGE_SIZE];
    for (index, byte) in page.iter_mut().enumerate() {
        *byte = (seed as usize * 131 + index * 7 + 1) as u8 | 1;
    }
    page
}

/// A disk holding the domain that migrates, committed once.
pub fn domain_disk() -> Disk {
    domain_disk_as(NAME, DOMAIN_ID, StoredStatus::Running, Vec::new())
}

/// A disk holding a domain called `name` with ID `id`, committed once with
/// `status`, and `args` after its name (long ones make its metadata span
/// several chunks).
pub fn domain_disk_as(name: &str, id: DomainId, status: StoredStatus, args: Vec<String>) -> Disk {
    let disk = Disk::blank();
    let module: Vec<u8> = b"\0asm\x01\0\0\0"
        .iter()
        .copied()
        .chain((0..20_000u32).map(|index| (index * 31 % 251) as u8))
        .collect();
    let mut image = Image::create(
        disk.clone(),
        NewDomain {
            id,
            name,
            module: &module,
            memory_pages: 2,
            memory_max_pages: 4,
            args: std::iter::once(name.into()).chain(args).collect(),
            env: Vec::new(),
            network: Default::default(),
        },
    )
    .expect("a blank disk takes an image");
    for page_index in 0..PAGES {
        image
            .stage_page(page_index, &page(page_index))
            .expect("a page fits");
    }
    image.metadata_mut().status = status;
    image.commit().expect("a memory disk commits");
    disk
}

/// One machine of a test: its migrations and everything else.
#[derive(Debug)]
pub struct Machine {
    pub address: String,
    pub migrations: Migrations<TestNetwork, FakeHost>,
    pub host: FakeHost,
}

impl Machine {
    /// A machine on `switch`, speaking plaintext frames, or through the
    /// secure link with the cluster's secret if the switch is a secure
    /// cluster's ([`Switch::secure`]).
    pub fn boot(switch: &Rc<RefCell<Switch>>, address: &str, disks: Vec<Disk>) -> Machine {
        Machine::boot_with(switch, address, disks, Limits::default())
    }

    /// A machine with caps and deadlines of the test's choosing.
    pub fn boot_with(
        switch: &Rc<RefCell<Switch>>,
        address: &str,
        disks: Vec<Disk>,
        limits: Limits,
    ) -> Machine {
        let network = FakeNetwork::new(switch, address);
        let cluster_secret = switch.borrow().cluster_secret.clone();
        let network = match cluster_secret {
            None => TestNetwork::Plain(network),
            Some(secret) => {
                TestNetwork::Secure(SecureNetwork::new(network, Some(secret), TestEntropy))
            }
        };
        Machine::boot_on(network, address, disks, limits)
    }

    /// A machine through the secure link with `secret`, or none.
    pub fn boot_with_secret(
        switch: &Rc<RefCell<Switch>>,
        address: &str,
        disks: Vec<Disk>,
        secret: Option<ClusterSecret>,
    ) -> Machine {
        let network = FakeNetwork::new(switch, address);
        let network = TestNetwork::Secure(SecureNetwork::new(network, secret, TestEntropy));
        Machine::boot_on(network, address, disks, Limits::default())
    }

    fn boot_on(network: TestNetwork, address: &str, disks: Vec<Disk>, limits: Limits) -> Machine {
        Machine {
            address: address.into(),
            migrations: Migrations::with_limits(network, limits),
            host: FakeHost::boot(disks),
        }
    }

    /// The migration ID this machine's `OutgoingStarted` announced.
    pub fn started_migration_id(&self) -> persist::migrate::MigrationId {
        self.host
            .events
            .iter()
            .find_map(|event| match event {
                kernel_core::migration::Event::OutgoingStarted { migration_id, .. } => {
                    Some(*migration_id)
                }
                _ => None,
            })
            .expect("the migration started")
    }

    pub fn poll(&mut self) -> bool {
        self.migrations.poll(&mut self.host)
    }

    /// Lets fake time pass (domains run; nothing else happens).
    pub fn idle(&mut self, nanoseconds: u64) {
        self.host.idle(nanoseconds);
    }
}

/// Machine A with the domain, machine B with a spare, on one switch.
pub fn two_machines() -> (Rc<RefCell<Switch>>, Machine, Machine, Disk) {
    two_machines_on(Switch::new())
}

/// The same, on `switch` (plain or a secure cluster's).
pub fn two_machines_on(
    switch: Rc<RefCell<Switch>>,
) -> (Rc<RefCell<Switch>>, Machine, Machine, Disk) {
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
