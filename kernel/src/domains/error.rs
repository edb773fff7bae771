//! What can go wrong with a domain operation, one variant per cause.
//!
//! Operations on the domain table return these; only the console turns them
//! into text, through `Display`, whose wording the QEMU tests match.

use alloc::boxed::Box;
use alloc::string::String;
use core::fmt;

/// Why an operation on a domain (or on the apps archive, for `spawn`)
/// failed. A variant names the domain or app it is about.
#[derive(Debug)]
pub enum DomainError {
    /// No domain of this name is known here (refused disks have none).
    NoSuchDomain { name: String },
    /// The operation needs the domain in the rotation, and it is stopped.
    IsStopped { name: String },
    /// The operation needs the domain in the rotation, and it is paused.
    IsPaused { name: String },
    /// `start` of a domain that is not stopped.
    NotStopped { name: String },
    /// `kill` of a domain that has ended (or moved away) already.
    HasEnded { name: String },
    /// The domain ran on for the whole grace period without reaching a
    /// safe point, so it could not be committed.
    NoSafePoint { name: String, grace_s: u64 },
    /// The vm refused or failed the operation on the domain.
    Vm { name: String, error: vm::Error },
    /// `start` (or `kill`) of a domain whose disk went out of service.
    DiskFailed {
        name: String,
        disk_index: usize,
        failure: crate::drivers::virtio_blk::Failure,
    },
    /// `start` of a paused domain: the commit it waits for still fails.
    StillPaused { name: String, error: vm::Error },
    /// `checkpoint NAME` failed.
    CheckpointFailed { name: String, error: vm::Error },
    /// A module the kernel heap has no room for (running out of heap would
    /// stop the kernel, and every domain with it).
    HeapTooSmall {
        module_bytes: u64,
        needed_kib: u64,
        free_kib: u64,
    },
    /// The vm could not open (or compile) a domain's module.
    Open(vm::Error),
    /// `spawn` without an apps archive disk.
    NoArchive,
    /// `spawn` of an app the archive does not hold; `apps` lists those it does.
    NoSuchApp { app: String, apps: String },
    /// A name no domain may have (`persist::check_name`).
    InvalidName(persist::NameError),
    /// `spawn` under a name a domain here has already.
    NameTaken { name: String, app: String },
    /// An app whose module is larger than a domain's may be.
    ModuleTooLarge { app: String, len_bytes: u64 },
    /// An app the kernel heap has no room for.
    AppTooLarge {
        app: String,
        reason: Box<DomainError>,
    },
    /// `spawn` with no blank disk left.
    NoSpare,
    /// The first spare disk cannot hold an image.
    SpareSize {
        disk_index: usize,
        blocks: u64,
        min_blocks: u64,
        max_blocks: u64,
    },
    /// The apps archive could not be read.
    Archive(persist::archive::Error),
    /// The archive lost the app between the check and the read.
    NoAppModule { app: String },
    /// Formatting the spare as a new image failed.
    Format {
        disk_index: usize,
        name: String,
        error: persist::Error,
    },
    /// A snapshot operation persist refused or failed (an unknown or
    /// duplicate tag, the table full, a damaged snapshot, the disk).
    Snapshot { name: String, error: persist::Error },
    /// A snapshot operation (`operation`: "snapshotted", "rolled back",
    /// "forked") on a domain in a state that allows none (paused, failed,
    /// migrating, moved away, parked).
    NotNow {
        name: String,
        state: super::State,
        operation: &'static str,
    },
    /// `fork` under a name a domain here has already.
    NameInUse { name: String },
    /// `fork` with a first spare disk too small for the state.
    SpareTooSmall {
        disk_index: usize,
        blocks: u64,
        needed_blocks: u64,
    },
    /// A spawned image is on its disk but its domain cannot run.
    CannotRun {
        name: String,
        disk_index: usize,
        reason: Box<DomainError>,
    },
}

impl fmt::Display for DomainError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchDomain { name } => write!(formatter, "no domain named '{name}' (see ps)"),
            Self::IsStopped { name } => write!(formatter, "{name} is stopped"),
            Self::IsPaused { name } => write!(formatter, "{name} is paused (see ps)"),
            Self::NotStopped { name } => write!(formatter, "{name} is not stopped"),
            Self::HasEnded { name } => write!(formatter, "{name} has ended already"),
            Self::NoSafePoint { name, grace_s } => write!(
                formatter,
                "{name} did not reach a safe point within {grace_s} s; try again"
            ),
            Self::Vm { name, error } => write!(formatter, "{name}: {error}"),
            Self::DiskFailed {
                name,
                disk_index,
                failure,
            } => write!(
                formatter,
                "{name}: disk {disk_index} is out of service ({failure}); nothing more can be \
                 committed there: reboot with a healthy copy of the disk and {name} resumes \
                 from its last commit"
            ),
            Self::StillPaused { name, error } => write!(formatter, "{name}: still paused: {error}"),
            Self::CheckpointFailed { name, error } => {
                write!(formatter, "{name}: checkpoint failed: {error}")
            }
            Self::HeapTooSmall {
                module_bytes,
                needed_kib,
                free_kib,
            } => write!(
                formatter,
                "its {module_bytes}-byte module needs about {needed_kib} KiB of kernel heap; \
                 {free_kib} KiB are free"
            ),
            Self::Open(error) => write!(formatter, "{error}"),
            Self::NoArchive => write!(
                formatter,
                "no apps archive disk (`cargo xtask run` attaches one; \
                 `cargo xtask app archive` builds it)"
            ),
            Self::NoSuchApp { app, apps } => write!(
                formatter,
                "no app '{app}' in the apps archive; it holds: {apps}"
            ),
            Self::InvalidName(error) => write!(formatter, "refused {error}"),
            Self::NameTaken { name, app } => write!(
                formatter,
                "a domain named '{name}' exists already (see ps): `spawn {app} OTHER-NAME`"
            ),
            Self::ModuleTooLarge { app, len_bytes } => write!(
                formatter,
                "{app}'s module is {len_bytes} bytes, more than the {} a domain's module may have",
                vm::MAX_MODULE_BYTES
            ),
            Self::AppTooLarge { app, reason } => write!(formatter, "{app}: {reason}"),
            Self::NoSpare => write!(
                formatter,
                "no spare disk left: every disk holds a domain (attach a blank disk and reboot)"
            ),
            Self::SpareSize {
                disk_index,
                blocks,
                min_blocks,
                max_blocks,
            } => write!(
                formatter,
                "spare disk {disk_index} has {blocks} blocks; an image needs {min_blocks} to \
                 {max_blocks}"
            ),
            Self::Archive(error) => write!(formatter, "apps archive: {error}"),
            Self::NoAppModule { app } => write!(formatter, "no app '{app}' in the apps archive"),
            Self::Format {
                disk_index,
                name,
                error,
            } => write!(
                formatter,
                "formatting spare disk {disk_index} for {name} failed: {error} \
                 (the disk is out of use until a reboot)"
            ),
            Self::Snapshot { name, error } => write!(formatter, "{name}: {error}"),
            Self::NotNow {
                name,
                state,
                operation,
            } => write!(
                formatter,
                "{name} is {state}: only a running, stopped or ended domain can be {operation}"
            ),
            Self::NameInUse { name } => {
                write!(formatter, "a domain named '{name}' exists already (see ps)")
            }
            Self::SpareTooSmall {
                disk_index,
                blocks,
                needed_blocks,
            } => write!(
                formatter,
                "spare disk {disk_index} has {blocks} blocks; the fork needs {needed_blocks}"
            ),
            Self::CannotRun {
                name,
                disk_index,
                reason,
            } => write!(
                formatter,
                "{name}: its image is on disk {disk_index}, but it cannot run: {reason}"
            ),
        }
    }
}
