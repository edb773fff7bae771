//! What the machine does for a migration: its domains, spare disks, clock.

use alloc::string::String;
use core::fmt;

use persist::migrate::{MigrationId, Verdict};
use persist::{BlockDevice, DomainId, Image};

use super::error::HostError;
use super::event::Event;
use super::timing::Counters;

/// The machine's side of migration: the kernel's domain table, spare disks,
/// the module compiler and the clock. The state machines ask it for what
/// the protocol needs and tell it what happened ([`MigrationHost::report`]);
/// they keep no domain state of their own.
pub trait MigrationHost {
    /// The disks domains live on.
    type Disk: BlockDevice;
    /// A compiled module, ready to run the domain (wasm in the kernel;
    /// anything in the tests).
    type Compiled;

    /// Time since boot.
    fn now_ns(&self) -> u64;

    /// The clock and the disk and network counters, for time reports.
    fn counters(&self) -> Counters;

    /// Whether domain `name` runs here (in the rotation, not ended).
    fn is_running(&self, name: &str) -> bool;

    /// A fresh, random migration ID.
    fn new_migration_id(&self) -> MigrationId;

    /// The image of domain `name`, running or stopped.
    fn image_of(&mut self, name: &str) -> Result<&mut Image<Self::Disk>, HostError>;

    /// Asks domain `name` to commit at its next safe point (the next
    /// pre-copy round sends what that commit changed).
    fn checkpoint(&mut self, name: &str) -> Result<(), HostError>;

    /// Holds domain `name` at a safe point, committed as running, for the
    /// final round.
    fn hold_for_migration(&mut self, name: &str) -> Result<(), HostError>;

    /// Domain `name` is the target's now: it must never run here again.
    fn mark_moved(&mut self, name: &str);

    /// Resumes domain `name` after a failed final round.
    fn start(&mut self, name: &str) -> Result<(), HostError>;

    /// A blank disk to receive domain `domain_id` on, if any is left. A
    /// domain coming back to a machine it left takes the disk of its own
    /// tombstone there, blanked: the sender runs the domain, so the
    /// migration that left the tombstone was decided and nobody asks it
    /// again. `None` for `domain_id` when the first message says none.
    fn take_spare(&mut self, domain_id: Option<DomainId>) -> Option<Self::Disk>;

    /// A disk blank again (a discarded copy).
    fn return_spare(&mut self, disk: Self::Disk);

    /// Compiles an incoming domain's module while its pages still arrive.
    fn compile(&self, module: &[u8]) -> Result<Self::Compiled, HostError>;

    /// Runs the domain of an image that just became this machine's; returns
    /// its name. `compiled` is its module when compiled already.
    fn adopt(
        &mut self,
        image: Image<Self::Disk>,
        compiled: Option<Self::Compiled>,
    ) -> Result<String, HostError>;

    /// Keeps a complete copy that must wait for its source's word.
    fn park(&mut self, image: Image<Self::Disk>);

    /// Parked copy `index` (in the order they were parked), if there is one.
    fn parked_mut(&mut self, index: usize) -> Option<&mut Image<Self::Disk>>;

    /// Takes parked copy `index` out, to run or discard it.
    fn unpark(&mut self, index: usize) -> Option<Image<Self::Disk>>;

    /// Answers a parked copy's question about a migration of `domain_id`
    /// from this machine's images (none of this machine's migrations in
    /// flight knows it).
    fn answer_query(&mut self, migration_id: MigrationId, domain_id: DomainId) -> Verdict;

    /// Heap bytes free now: the target checks them (less a margin) before
    /// each large allocation an incoming migration asks of it.
    fn heap_room_bytes(&self) -> u64;

    /// The domain this machine knows that an incoming domain called `name`
    /// with ID `id` would clash with, if any: running, stopped, paused,
    /// migrating, moved away, ended, or a parked copy.
    fn clash(&self, name: &str, id: DomainId) -> Option<Clash>;

    /// Something happened that the console or the log should say.
    fn report(&mut self, event: Event);
}

/// What an incoming domain's name or ID clashes with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClashKind {
    /// A domain has that name.
    Name,
    /// A domain has that ID (under another name).
    Id,
}

/// A domain this machine knows that an incoming one clashes with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clash {
    /// Whether the name or the ID is taken.
    pub kind: ClashKind,
    /// The name of the domain here.
    pub name: String,
    /// Its state, as `ps` says it ("running", "stopped", "moved away").
    pub state: String,
}

/// The clash as the target's console says it.
impl fmt::Display for Clash {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ClashKind::Name => write!(
                formatter,
                "a domain named {} is here already ({})",
                self.name, self.state
            ),
            ClashKind::Id => write!(
                formatter,
                "a domain with that ID is here already ({}, {})",
                self.name, self.state
            ),
        }
    }
}
