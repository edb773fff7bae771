//! What an image declares of its network: listen ports and durable replies.
//!
//! The declaration is fixed when an image is made (`image new --listen`, or
//! an apps archive entry for `spawn`) and kept in its [`NetworkRecord`]; the
//! same rules check it wherever it comes from: [`crate::Image::create_from`],
//! [`crate::validate`] (images opened and migrations received) and the apps
//! archive ([`crate::archive`]).

use alloc::vec::Vec;
use core::fmt;

use abi::MAX_LISTEN_PORTS;

use crate::metadata::NetworkRecord;

/// The network part of a new domain ([`crate::NewDomain`]) or an apps
/// archive entry: what the domain may do, not what it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkDeclaration {
    /// The TCP ports it may listen on, in the order of their sockets (the
    /// first is fd [`abi::FIRST_LISTENER_FD`]). See [`check_listen`].
    pub listen: Vec<u16>,
    /// Whether a connection's bytes wait for the commit of the state that
    /// wrote them (see [`NetworkRecord::durable_replies`]).
    pub durable_replies: bool,
}

impl NetworkDeclaration {
    /// The record a new domain of this declaration starts with: no sockets
    /// open yet.
    pub fn to_record(&self) -> NetworkRecord {
        NetworkRecord {
            listen: self.listen.clone(),
            durable_replies: self.durable_replies,
            connections: Vec::new(),
            nonblocking: Vec::new(),
        }
    }
}

impl From<&NetworkRecord> for NetworkDeclaration {
    fn from(record: &NetworkRecord) -> Self {
        Self {
            listen: record.listen.clone(),
            durable_replies: record.durable_replies,
        }
    }
}

/// Why a list of listen ports cannot be a domain's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenError {
    /// More than [`MAX_LISTEN_PORTS`] ports.
    TooManyPorts {
        /// How many the list has.
        count: usize,
    },
    /// Port 0, which names no port (the OS would pick one).
    PortZero,
    /// A port listed twice: two sockets cannot listen on it.
    DuplicatePort {
        /// The port.
        port: u16,
    },
}

impl fmt::Display for ListenError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyPorts { count } => write!(
                formatter,
                "{count} listen ports declared (at most {MAX_LISTEN_PORTS} allowed)"
            ),
            Self::PortZero => write!(formatter, "listen port 0 declared (ports are 1 to 65535)"),
            Self::DuplicatePort { port } => {
                write!(formatter, "listen port {port} declared twice")
            }
        }
    }
}

impl core::error::Error for ListenError {}

/// Whether `ports` can be a domain's listen ports: at most
/// [`MAX_LISTEN_PORTS`], each nonzero, none twice. The count comes first, so
/// a hostile list costs at most [`MAX_LISTEN_PORTS`] squared comparisons.
pub fn check_listen(ports: &[u16]) -> Result<(), ListenError> {
    if ports.len() > MAX_LISTEN_PORTS {
        return Err(ListenError::TooManyPorts { count: ports.len() });
    }
    for (at, &port) in ports.iter().enumerate() {
        if port == 0 {
            return Err(ListenError::PortZero);
        }
        if ports[..at].contains(&port) {
            return Err(ListenError::DuplicatePort { port });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn listen_ports_are_bounded_nonzero_and_unique() {
        assert_eq!(check_listen(&[]), Ok(()));
        let most: Vec<u16> = (1..=MAX_LISTEN_PORTS as u16).collect();
        assert_eq!(check_listen(&most), Ok(()));
        let too_many: Vec<u16> = (1..=MAX_LISTEN_PORTS as u16 + 1).collect();
        assert_eq!(
            check_listen(&too_many),
            Err(ListenError::TooManyPorts {
                count: MAX_LISTEN_PORTS + 1
            })
        );
        assert_eq!(check_listen(&[80, 0]), Err(ListenError::PortZero));
        assert_eq!(
            check_listen(&[6379, 80, 6379]),
            Err(ListenError::DuplicatePort { port: 6379 })
        );
    }

    #[test]
    fn a_declaration_becomes_a_record_without_sockets() {
        let declaration = NetworkDeclaration {
            listen: vec![6379],
            durable_replies: true,
        };
        let record = declaration.to_record();
        assert_eq!(record.listen, [6379]);
        assert!(record.durable_replies);
        assert!(record.connections.is_empty() && record.nonblocking.is_empty());
        assert_eq!(NetworkDeclaration::from(&record), declaration);
    }
}
