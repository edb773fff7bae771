//! Each domain's own log, as `logs NAME` reads it.

use alloc::string::ToString;
use alloc::vec::Vec;

use super::table::Body;
use super::{DomainError, Domains};

impl Domains {
    /// The log of domain `name` (see persist's `log` module): what its
    /// image keeps and, for a domain the vm holds, the lines printed since
    /// its last commit. Any domain with an image has one: in the rotation,
    /// held out of it (stopped, paused, ended, moved away) or a parked
    /// incoming copy.
    pub fn log_of(&mut self, name: &str) -> Result<Vec<u8>, DomainError> {
        let vm_error = |error| DomainError::Vm {
            name: name.into(),
            error,
        };
        if self.scheduler.domain(name).is_some() {
            return self.scheduled_mut(name)?.log().map_err(vm_error);
        }
        let unknown = || DomainError::NoSuchDomain { name: name.into() };
        let key = self.table.key_of(name).ok_or_else(unknown)?;
        let entry = self.table.get_mut(key).ok_or_else(unknown)?;
        match &mut entry.body {
            Body::Held(domain) => domain.log().map_err(vm_error),
            Body::Parked(image) => image
                .log()
                .map_err(|error| vm_error(vm::Error::Storage(error.to_string()))),
            Body::Scheduled | Body::Empty => Err(unknown()),
        }
    }
}
