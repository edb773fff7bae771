//! Opening every crash state with persist: no commit lost, none torn.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::Result;
use persist::{Error, Image};

use super::disk::{CrashDevice, SparseDisk};
use super::states::{CrashState, Plan, StateKind, for_each_state};
use super::trace::{Durability, Recording};

/// A crash state that broke a promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// It opened at a commit older than one that was durable.
    Lost {
        cut: usize,
        required: u64,
        opened: u64,
        state: String,
    },
    /// It did not open, or opened and failed `verify` or metadata checks,
    /// although its superblock said the commit was whole.
    Torn {
        cut: usize,
        required: Option<u64>,
        error: String,
        state: String,
    },
    /// The console said committed with no superblock written since the ask.
    UnbackedConfirmation { position: usize },
}

impl fmt::Display for Finding {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Lost {
                cut,
                required,
                opened,
                state,
            } => write!(
                formatter,
                "lost commit: a crash after event {cut} opens at commit {opened}, but commit \
                 {required} was durable ({state})"
            ),
            Finding::Torn {
                cut,
                required,
                error,
                state,
            } => write!(
                formatter,
                "torn commit: a crash after event {cut} (commit {required:?} durable) gives \
                 {error} ({state})"
            ),
            Finding::UnbackedConfirmation { position } => write!(
                formatter,
                "the console confirmed a commit at event {position} but no superblock was \
                 written since it was asked for"
            ),
        }
    }
}

/// What checking one recording found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Crash states opened and checked.
    pub states: usize,
    pub states_by_kind: BTreeMap<StateKind, usize>,
    /// States that opened at each commit sequence (none: a blank disk).
    pub opened: BTreeMap<Option<u64>, usize>,
    /// The newest commit any cut required.
    pub newest_required: Option<u64>,
    pub findings: Vec<Finding>,
}

impl CheckReport {
    pub fn lost(&self) -> usize {
        self.count(|finding| matches!(finding, Finding::Lost { .. }))
    }

    pub fn torn(&self) -> usize {
        self.count(|finding| !matches!(finding, Finding::Lost { .. }))
    }

    fn count(&self, is_counted: impl Fn(&Finding) -> bool) -> usize {
        self.findings
            .iter()
            .filter(|finding| is_counted(finding))
            .count()
    }

    /// One line: states, outcomes, findings.
    pub fn summary(&self) -> String {
        let opened: Vec<String> = self
            .opened
            .iter()
            .map(|(sequence, count)| match sequence {
                Some(sequence) => format!("{count} at commit {sequence}"),
                None => format!("{count} blank"),
            })
            .collect();
        format!(
            "{} crash states ({:?}); opened {}; newest required commit {:?}; {} lost, {} torn",
            self.states,
            self.states_by_kind,
            opened.join(", "),
            self.newest_required,
            self.lost(),
            self.torn()
        )
    }
}

/// Builds the crash states of `recording` by `plan` and checks each.
pub fn check_recording(recording: &Recording, plan: &Plan) -> Result<CheckReport> {
    let durability = Durability::of(recording);
    let mut report = CheckReport {
        findings: durability
            .unbacked_confirmations
            .iter()
            .map(|&position| Finding::UnbackedConfirmation { position })
            .collect(),
        ..CheckReport::default()
    };
    report.states = for_each_state(recording, plan, |base, state| {
        let required = durability.required.get(state.cut).copied().flatten();
        report.newest_required = report.newest_required.max(required);
        *report.states_by_kind.entry(state.kind).or_default() += 1;
        match check_state(base, state, required) {
            Ok(opened) => *report.opened.entry(opened).or_default() += 1,
            Err(finding) => report.findings.push(finding),
        }
        Ok(())
    })?;
    Ok(report)
}

/// Opens one state as the kernel would at boot and checks it: the commit
/// it opens at (none: a blank disk, allowed while no commit is required).
pub fn check_state(
    base: &SparseDisk,
    state: &CrashState,
    required: Option<u64>,
) -> Result<Option<u64>, Finding> {
    let torn = |error: String| Finding::Torn {
        cut: state.cut,
        required,
        error,
        state: state.description.clone(),
    };
    let mut image = match Image::open(CrashDevice::new(base, &state.overlay)) {
        Ok(image) => image,
        Err(Error::NotAnImage | Error::NoValidSuperblock) if required.is_none() => {
            return Ok(None);
        }
        Err(error) => return Err(torn(format!("open failed: {error}"))),
    };
    let opened = image.sequence();
    if let Some(required) = required
        && opened < required
    {
        return Err(Finding::Lost {
            cut: state.cut,
            required,
            opened,
            state: state.description.clone(),
        });
    }
    image
        .verify()
        .map_err(|error| torn(format!("commit {opened} fails verify: {error}")))?;
    persist::validate(image.metadata())
        .map_err(|error| torn(format!("commit {opened} has invalid metadata: {error}")))?;
    image
        .module()
        .map_err(|error| torn(format!("commit {opened}'s module is unreadable: {error}")))?;
    Ok(Some(opened))
}
