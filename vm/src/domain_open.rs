//! Opening a domain: module checks, instantiation over an imported memory.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use wasmi::{Engine, ExternType, Linker, Memory, MemoryType, Module, Store};

use crate::asyncify::AsyncifyExports;
use crate::domain::{Domain, Execution};
use crate::error::Error;
use crate::held_replies::HeldReplies;
use crate::host_functions::HostFunctions;
use crate::host_state::HostState;
use crate::memory_backing::{MemoryBacking, WASM_PAGE_BYTES, module_fingerprint};
use crate::outbox::Outbox;
use crate::output::GuestConsole;
use crate::platform::{LineBuffer, Platform};
use crate::sockets::SocketTable;
use crate::storage::{DomainId, DomainRecord, DomainStatus, Storage};
use crate::{abi_amber, abi_tcp, abi_wasi, snapshot, wasi_sockets};
use abi::StatusCode;

/// The export a domain runs (a WASI command's entry point).
pub const ENTRY_EXPORT: &str = "_start";

/// The largest module a domain may have: the ABI's bound, which a
/// migration's target also enforces before it buffers a module.
pub use abi::MAX_MODULE_BYTES;

/// An engine configured for domains: fuel metering on, eager compilation,
/// wasmi's strict limits on module shape.
///
/// Lazy translation charges the fuel of compiling a function at its first
/// call, and wasmi 2.0 reports running out of fuel there as a plain error
/// that cannot be resumed: a domain whose slice ended inside a first call
/// would trap. Compiling at `Module::new` avoids it.
///
/// `EnforcedLimits::strict` (wasmi's preset for untrusted modules: at most
/// 10,000 functions averaging at least 40 bytes, 1,000 globals, data and
/// element segments, one memory) bounds what compiling costs beside the
/// module's size: a 4 MB module of a million empty functions once took
/// more than the whole kernel heap to compile.
pub fn new_engine() -> Engine {
    let mut config = wasmi::Config::default();
    config.consume_fuel(true);
    // Not lazily: wasmi charges fuel for translating a function on its
    // first call, and a slice that cannot pay for it ends the domain with
    // "all fuel consumed" instead of pausing it (seen with bigmem).
    config.compilation_mode(wasmi::CompilationMode::Eager);
    config.enforced_limits(wasmi::EnforcedLimits::strict());
    Engine::new(&config)
}

/// Adds every host function a domain may import to `linker` (the `amber`
/// module and the WASI subset) and says which, as `(module, name)`.
fn define_host_functions(
    linker: &mut Linker<HostState>,
) -> Result<Vec<(&'static str, &'static str)>, wasmi::Error> {
    let mut defined = Vec::new();
    abi_amber::define(&mut HostFunctions::new(
        linker,
        abi::AMBER_MODULE,
        &mut defined,
    ))?;
    abi_tcp::define(&mut HostFunctions::new(
        linker,
        abi::AMBER_MODULE,
        &mut defined,
    ))?;
    abi_wasi::define(&mut HostFunctions::new(
        linker,
        abi::WASI_MODULE,
        &mut defined,
    ))?;
    wasi_sockets::define(&mut HostFunctions::new(
        linker,
        abi::WASI_MODULE,
        &mut defined,
    ))?;
    Ok(defined)
}

/// Every host function the vm defines for a domain, as `(module, name)`:
/// the `amber` module and the WASI subset, without the stubs that stand in
/// for other WASI functions a module imports. `vm/tests/host_abi.rs` holds
/// this against `abi::IMPORTS`.
pub fn defined_imports() -> Result<Vec<(&'static str, &'static str)>, Error> {
    let engine = Engine::default();
    let mut linker = Linker::<HostState>::new(&engine);
    define_host_functions(&mut linker).map_err(|error| Error::Instantiation(error.to_string()))
}

/// A module compiled before its domain is opened, with the bytes it came
/// from: a migration target compiles the module while the pages are still
/// arriving, so that running the domain once it is handed over does not
/// wait for the compiler (the longest part of opening a domain).
#[derive(Debug)]
pub struct CompiledModule {
    bytes: Vec<u8>,
    module: Module,
}

impl CompiledModule {
    /// Compiles `bytes` with `engine` (the engine the domain will run on).
    pub fn new(engine: &Engine, bytes: &[u8]) -> Result<Self, Error> {
        check_size(bytes)?;
        let module = compile(engine, bytes)?;
        Ok(Self {
            bytes: bytes.to_vec(),
            module,
        })
    }
}

/// Checks `bytes` as the vm does when it opens a domain of them, short of
/// instantiating: the size bound, no start section, wasmi's compilation
/// (with [`new_engine`]'s limits), the memory imported as `env.memory`,
/// only imports the host ABI provides, and a `_start` export. `image new`
/// calls it so that an image the kernel would refuse is refused when it is
/// made, with the same [`Error`] and so the same words.
pub fn check_module(bytes: &[u8]) -> Result<(), Error> {
    check_size(bytes)?;
    inspect_module(bytes)?;
    let module = compile(&new_engine(), bytes)?;
    imported_memory_type(&module)?;
    check_imports(&module)?;
    let has_entry = module
        .exports()
        .any(|export| export.name() == ENTRY_EXPORT && export.ty().func().is_some());
    if !has_entry {
        return Err(Error::MissingEntry);
    }
    Ok(())
}

/// Refuses a module larger than [`MAX_MODULE_BYTES`].
fn check_size(bytes: &[u8]) -> Result<(), Error> {
    if bytes.len() > MAX_MODULE_BYTES {
        return Err(Error::ModuleTooLarge {
            len_bytes: bytes.len() as u64,
        });
    }
    Ok(())
}

/// Refuses an import the host ABI does not provide: anything outside the
/// `amber` and WASI modules but `env.memory` (unknown WASI functions get
/// stubs that return ENOSYS).
fn check_imports(module: &Module) -> Result<(), Error> {
    for import in module.imports() {
        let is_known = matches!(import.module(), abi::AMBER_MODULE | abi::WASI_MODULE)
            || (import.module() == abi::MEMORY_MODULE && import.name() == abi::MEMORY_NAME);
        if !is_known {
            return Err(Error::UnknownImport {
                module: import.module().into(),
                name: import.name().into(),
            });
        }
    }
    Ok(())
}

/// Compiles a module (eagerly, see [`new_engine`]).
fn compile(engine: &Engine, bytes: &[u8]) -> Result<Module, Error> {
    Module::new(engine, bytes).map_err(|error| Error::InvalidModule(error.to_string()))
}

impl Domain {
    /// Opens the domain `storage` holds: instantiates its module and, if it
    /// ran before, lays its committed memory, globals and stack over it.
    pub fn open(
        engine: &Engine,
        platform: Arc<dyn Platform>,
        storage: Box<dyn Storage>,
        backing: Box<dyn MemoryBacking>,
    ) -> Result<Self, Error> {
        Self::open_compiled(engine, platform, storage, backing, None)
    }
}

impl<S: Storage> Domain<S> {
    /// [`Domain::open`] over storage of any type `S` (the embedder's own,
    /// which it gets back through [`Domain::storage_mut`]), with the module
    /// compiled already: `compiled` is used when its bytes are exactly the
    /// stored module's, and the stored module is compiled otherwise.
    pub fn open_compiled(
        engine: &Engine,
        platform: Arc<dyn Platform>,
        mut storage: S,
        mut backing: Box<dyn MemoryBacking>,
        compiled: Option<CompiledModule>,
    ) -> Result<Self, Error> {
        let record = storage.load()?;
        check_size(&record.module)?;
        let global_exports = inspect_module(&record.module)?;
        let module = match compiled {
            Some(compiled) if compiled.bytes == record.module => compiled.module,
            _ => compile(engine, &record.module)?,
        };
        let memory_type = imported_memory_type(&module)?;
        let minimum_pages = memory_type.minimum();
        let maximum_pages = memory_type
            .maximum()
            .unwrap_or(65536)
            .min(record.memory_maximum_pages.map_or(u64::MAX, u64::from));
        if maximum_pages < minimum_pages {
            return Err(Error::MemoryTooLarge {
                pages: minimum_pages as u32,
                maximum_pages: maximum_pages as u32,
            });
        }
        let saved_pages = u64::from(record.memory_pages);
        if record.is_initialized && saved_pages > maximum_pages {
            return Err(Error::MemoryTooLarge {
                pages: record.memory_pages,
                maximum_pages: maximum_pages as u32,
            });
        }
        let initial_pages = if record.is_initialized {
            minimum_pages.max(saved_pages)
        } else {
            minimum_pages
        };
        let platform_origin_ns = platform.monotonic_ns();
        let sockets = SocketTable::from_record(&record.network)?;
        let state = HostState {
            name: record.name.clone(),
            id: record.id,
            args: record.args.clone(),
            environment: environment_of(&record),
            platform,
            memory: None,
            clock_origin_ns: record.clock_ns,
            platform_origin_ns,
            mailbox: record.mailbox.iter().cloned().collect::<VecDeque<_>>(),
            mailbox_bytes: record
                .mailbox
                .iter()
                .map(|message| message.bytes.len())
                .sum(),
            sent: sent_counts(&record),
            accepted: record.accepted.clone(),
            outbox: Outbox::from_record(&record.outbox),
            stdout: LineBuffer::default(),
            stderr: LineBuffer::default(),
            console: GuestConsole::new(&record.name, record.clock_ns, platform_origin_ns),
            fuel_debt: 0,
            asyncify: None,
            module_fingerprint: module_fingerprint(&record.module),
            save_buffer: None,
            suspension: None,
            is_rewinding: false,
            checkpoint_status: StatusCode::Ok,
            is_checkpoint_wanted: false,
            sockets,
            poll_interest: Vec::new(),
            connecting: None,
            waiting: None,
            held: HeldReplies::default(),
            replies_held_since_ns: None,
        };
        let mut store = Store::new(engine, state);
        fn instantiation(error: impl core::fmt::Display) -> Error {
            Error::Instantiation(error.to_string())
        }
        let new_type = MemoryType::new(initial_pages as u32, Some(maximum_pages as u32));
        let memory = match backing.static_buffer(maximum_pages * WASM_PAGE_BYTES as u64) {
            Some(buffer) => Memory::new_static(&mut store, new_type, buffer),
            None => Memory::new(&mut store, new_type),
        }
        .map_err(instantiation)?;
        store.data_mut().memory = Some(memory);
        let mut linker = Linker::<HostState>::new(engine);
        define_host_functions(&mut linker).map_err(instantiation)?;
        abi_wasi::stub_unknown_imports(&mut linker, &module).map_err(instantiation)?;
        linker
            .define("env", "memory", memory)
            .map_err(instantiation)?;
        check_imports(&module)?;
        // No start section (rejected above), so this runs no guest code; it
        // applies the data segments.
        let instance = linker
            .instantiate_and_start(&mut store, &module)
            .map_err(instantiation)?;
        let entry = instance
            .get_func(&store, ENTRY_EXPORT)
            .ok_or(Error::MissingEntry)?;
        let asyncify = AsyncifyExports::find(&mut store, &instance);
        store.data_mut().asyncify = asyncify;
        let mut domain = Self {
            store,
            instance,
            memory,
            entry,
            execution: Execution::Start,
            record,
            storage,
            backing,
            pause: None,
            fuel_used: 0,
            global_exports,
            is_commit_unannounced: false,
        };
        domain.fuel_used = domain.record.fuel_used;
        if domain.record.is_initialized {
            snapshot::restore(&mut domain)?;
            domain.execution = match &domain.record.status {
                DomainStatus::Running if domain.store.data().suspension.is_some() => {
                    Execution::Unwound
                }
                DomainStatus::Running => Execution::Start,
                other => Execution::Halted(other.clone()),
            };
        } else {
            // The first commit holds memory as instantiation left it, so that a
            // restore never applies data segments again.
            domain.commit()?;
        }
        // A stopped domain listens once it is resumed; an ended one never.
        if !matches!(domain.execution, Execution::Halted(_)) {
            domain.bind_network()?;
        }
        Ok(domain)
    }
}

/// Refuses a start section and lists the exported globals as (index, name):
/// a global's index is what an image stores, its export is how wasmi reaches it.
fn inspect_module(module: &[u8]) -> Result<Vec<(u32, String)>, Error> {
    let invalid = |error: wasmparser::BinaryReaderError| Error::InvalidModule(error.to_string());
    let mut global_exports = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        match payload.map_err(invalid)? {
            wasmparser::Payload::StartSection { .. } => return Err(Error::StartSection),
            wasmparser::Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(invalid)?;
                    if export.kind == wasmparser::ExternalKind::Global {
                        global_exports.push((export.index, String::from(export.name)));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(global_exports)
}

/// The environment the guest sees: the image's, and `LISTEN_FDS` when
/// it declares listeners (as wasmtime's `--tcplisten` sets it), unless the
/// image sets it itself.
fn environment_of(record: &DomainRecord) -> Vec<String> {
    let mut environment = record.environment.clone();
    let listeners = record.network.listen.len();
    let is_set = environment
        .iter()
        .any(|variable| variable.starts_with("LISTEN_FDS="));
    if listeners > 0 && !is_set {
        environment.push(alloc::format!("LISTEN_FDS={listeners}"));
    }
    environment
}

/// The committed send counts, raised to the outbox's numbers: a number in
/// the outbox is taken, whatever a damaged record says, or a later message
/// would reuse it and be dropped as a resend.
fn sent_counts(record: &DomainRecord) -> BTreeMap<DomainId, u64> {
    let mut sent = record.sent.clone();
    for message in &record.outbox {
        let count = sent.entry(message.to).or_insert(0);
        *count = (*count).max(message.sequence);
    }
    sent
}

fn imported_memory_type(module: &Module) -> Result<MemoryType, Error> {
    let mut memory_type = None;
    for import in module.imports() {
        if let ExternType::Memory(ty) = import.ty() {
            if import.module() != "env" || import.name() != "memory" {
                return Err(Error::MemoryNotImported);
            }
            memory_type = Some(*ty);
        }
    }
    let memory_type = memory_type.ok_or(Error::MemoryNotImported)?;
    if memory_type.is_64() {
        return Err(Error::InvalidModule(
            "64-bit memories are not supported".into(),
        ));
    }
    Ok(memory_type)
}
