//! Why a migration, its start, or an incoming connection failed.

use alloc::string::String;
use core::fmt;

use persist::migrate;

use super::framing::{FrameError, LinkError};
use super::host::Clash;

/// What the machine said went wrong (a domain table operation, compiling a
/// module), in its own words: the kernel's errors are its own business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError(pub String);

impl fmt::Display for HostError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl From<String> for HostError {
    fn from(reason: String) -> Self {
        HostError(reason)
    }
}

/// Why a migration in flight ended early, on either side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationError {
    /// Sending to the peer failed.
    Send {
        /// The peer.
        peer: String,
        /// Why.
        error: LinkError,
    },
    /// No frame could be taken from the peer.
    Receive(FrameError),
    /// The protocol (or an image under it) failed.
    Protocol(migrate::Error),
    /// The machine could not do what the migration asked of it.
    Host(HostError),
    /// The source's protocol says the migration is aborted.
    Aborted,
    /// The source told the target it aborted the migration.
    PeerAborted {
        /// The peer.
        peer: String,
    },
    /// A message arrived after the incoming migration ended.
    MessageAfterEnd,
    /// The peer said nothing (sent nothing, took nothing) for too long.
    Silent {
        /// The peer.
        peer: String,
        /// How long, in whole seconds.
        silent_s: u64,
    },
    /// The incoming domain's name or ID is taken here: refused before
    /// `Durable`, so the source keeps it.
    Clash {
        /// The incoming domain.
        name: String,
        /// What it clashes with.
        clash: Clash,
    },
}

impl fmt::Display for MigrationError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MigrationError::Send { peer, error } => write!(formatter, "link to {peer}: {error}"),
            MigrationError::Receive(error) => write!(formatter, "{error}"),
            MigrationError::Protocol(error) => write!(formatter, "{error}"),
            MigrationError::Host(error) => write!(formatter, "{error}"),
            MigrationError::Aborted => formatter.write_str("the migration was aborted"),
            MigrationError::PeerAborted { peer } => {
                write!(formatter, "{peer} aborted the migration")
            }
            MigrationError::MessageAfterEnd => {
                formatter.write_str("a message after the migration ended")
            }
            MigrationError::Silent { peer, silent_s } => {
                write!(formatter, "{peer} said nothing for {silent_s} s")
            }
            MigrationError::Clash { name, clash } => write!(formatter, "refused {name}: {clash}"),
        }
    }
}

impl From<FrameError> for MigrationError {
    fn from(error: FrameError) -> Self {
        MigrationError::Receive(error)
    }
}

impl From<migrate::Error> for MigrationError {
    fn from(error: migrate::Error) -> Self {
        MigrationError::Protocol(error)
    }
}

impl From<HostError> for MigrationError {
    fn from(error: HostError) -> Self {
        MigrationError::Host(error)
    }
}

/// Why `migrate NAME ADDRESS` could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// The domain is on its way out already.
    AlreadyMigrating {
        /// The domain.
        name: String,
    },
    /// The address is not one the network can connect to.
    NotAnAddress {
        /// What was given.
        address: String,
    },
    /// Connecting failed at once.
    Unreachable {
        /// The address.
        address: String,
        /// Why, in the network's words.
        reason: String,
    },
    /// Only a running domain migrates live.
    NotRunning {
        /// The domain.
        name: String,
    },
    /// The machine could not give the domain's image.
    Host(HostError),
    /// The protocol refused to start (the image, the peer's name).
    Protocol {
        /// The domain.
        name: String,
        /// Why.
        error: migrate::Error,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::AlreadyMigrating { name } => {
                write!(formatter, "{name} is migrating already")
            }
            StartError::NotAnAddress { address } => {
                write!(formatter, "'{address}' is not an IPv4 address")
            }
            StartError::Unreachable { address, reason } => {
                write!(formatter, "cannot reach {address}: {reason}")
            }
            StartError::NotRunning { name } => write!(
                formatter,
                "{name} is not running here: only a running domain migrates live \
                 (a stopped one moves by copying its image)"
            ),
            StartError::Host(error) => write!(formatter, "{error}"),
            StartError::Protocol { name, error } => {
                write!(formatter, "{name}: cannot start the migration: {error}")
            }
        }
    }
}

/// Why an incoming migration was refused before it began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalReason {
    /// Another migration is coming in (one at a time).
    Busy,
    /// No spare disk is left to receive a domain on.
    NoSpare,
    /// The spare disk cannot hold a domain image.
    SpareUnusable(migrate::Error),
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefusalReason::Busy => formatter.write_str("one is already coming in"),
            RefusalReason::NoSpare => formatter.write_str("no spare disk to receive a domain on"),
            RefusalReason::SpareUnusable(error) => {
                write!(formatter, "the spare disk cannot take a domain: {error}")
            }
        }
    }
}
