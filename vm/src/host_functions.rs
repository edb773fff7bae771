//! A linker being filled with host functions, which remembers their names.

use alloc::vec::Vec;

use wasmi::{IntoFunc, Linker};

use crate::host_state::HostState;

/// The host functions of one import module as they go into a linker.
///
/// It notes each name, so that [`crate::defined_imports`] can say what the
/// vm defines (a wasmi `Linker` cannot list its definitions) and a test can
/// hold that against `abi::IMPORTS`.
pub(crate) struct HostFunctions<'a> {
    linker: &'a mut Linker<HostState>,
    module: &'static str,
    defined: &'a mut Vec<(&'static str, &'static str)>,
}

impl<'a> HostFunctions<'a> {
    /// Functions of import module `module`, noted in `defined`.
    pub(crate) fn new(
        linker: &'a mut Linker<HostState>,
        module: &'static str,
        defined: &'a mut Vec<(&'static str, &'static str)>,
    ) -> Self {
        Self {
            linker,
            module,
            defined,
        }
    }

    /// Defines `module.name` as `func` (wasmi's `Linker::func_wrap`).
    pub(crate) fn func_wrap<Params, Args>(
        &mut self,
        name: &'static str,
        func: impl IntoFunc<HostState, Params, Args>,
    ) -> Result<&mut Self, wasmi::Error> {
        self.linker.func_wrap(self.module, name, func)?;
        self.defined.push((self.module, name));
        Ok(self)
    }
}
