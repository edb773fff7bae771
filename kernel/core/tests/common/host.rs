//! A fake machine for migration: domains on disks, spares, a clock that ticks.

use std::cell::Cell;

use kernel_core::migration::{Clash, ClashKind, Counters, Event, HostError, MigrationHost};
use persist::migrate::{self, MigrationId, Ownership, Verdict};
use persist::{DomainId, Image, StoredStatus};

use super::disk::Disk;
use super::{PAGES, page};

/// Fake time that passes on every look at the clock.
const TICK_NS: u64 = 20_000;

/// Where a fake domain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainState {
    Running,
    /// Stopped by an operator (committed so).
    Stopped,
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
    /// Heap bytes free, as `heap_room_bytes` says (plenty unless a test
    /// makes the machine small).
    pub heap_room_bytes: u64,
    next_migration_id: Cell<MigrationId>,
}

impl FakeHost {
    /// A machine as a boot finds `disks`: images that own their domain
    /// run, parked copies wait, incomplete copies are blanked, tombstones
    /// stay (they answer questions), blank disks are spares.
    pub fn boot(disks: Vec<Disk>) -> FakeHost {
        let mut host = FakeHost {
            heap_room_bytes: 64 << 20,
            ..FakeHost::default()
        };
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
            StoredStatus::Running => DomainState::Running,
            StoredStatus::Stopped => DomainState::Stopped,
            _ => DomainState::Moved,
        };
        self.domains.push(FakeDomain {
            name: image.metadata().name.clone(),
            image,
            state,
            steps: 100 * (self.domains.len() as u64 + 1),
        });
    }

    /// Lets fake time pass.
    pub fn idle(&self, nanoseconds: u64) {
        self.clock_ns.set(self.clock_ns.get() + nanoseconds);
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

    fn hold_for_migration(&mut self, name: &str) -> Result<(), HostError> {
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

    fn take_spare(&mut self, domain_id: Option<DomainId>) -> Option<Disk> {
        let tombstone = self.domains.iter().position(|domain| {
            domain.state == DomainState::Moved && Some(domain.image.metadata().id) == domain_id
        });
        if let Some(index) = tombstone {
            let domain = self.domains.remove(index);
            return Some(migrate::discard(domain.image).expect("a tombstone is discarded"));
        }
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

    fn heap_room_bytes(&self) -> u64 {
        self.heap_room_bytes
    }

    fn clash(&self, name: &str, id: DomainId) -> Option<Clash> {
        let domains = self.domains.iter().map(|domain| {
            let state = match domain.state {
                DomainState::Running => "running",
                DomainState::Stopped => "stopped",
                DomainState::Paused => "migrating",
                DomainState::Moved => "moved away",
            };
            (domain.image.metadata(), state)
        });
        let parked = self
            .parked
            .iter()
            .map(|image| (image.metadata(), "parked (incoming)"));
        domains.chain(parked).find_map(|(metadata, state)| {
            let kind = if metadata.name == name {
                ClashKind::Name
            } else if metadata.id == id {
                ClashKind::Id
            } else {
                return None;
            };
            Some(Clash {
                kind,
                name: metadata.name.clone(),
                state: state.into(),
            })
        })
    }

    fn report(&mut self, event: Event) {
        eprintln!("{event}");
        self.events.push(event);
    }
}
