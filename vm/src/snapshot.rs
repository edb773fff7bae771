//! Commit a domain's state to its storage, and lay committed state back.

use alloc::string::ToString;
use alloc::vec::Vec;

use wasmi::Val;

use crate::blocking::BlockingCall;
use crate::domain::Domain;
use crate::error::Error;
use crate::memory_backing::{PAGE_BYTES, module_fingerprint};
use crate::storage::{BlockingImport, Commit, DomainStatus, GlobalValue, SavedGlobal, Storage};

/// Commits the domain as it is now, with `status`; says how many pages of
/// memory the commit wrote.
pub fn commit<S: Storage>(domain: &mut Domain<S>, status: DomainStatus) -> Result<usize, Error> {
    let state = domain.store.data();
    let suspension = state.suspension.clone();
    // Globals matter only to a suspended stack: without one the module
    // restarts at its entry with its globals' initial values.
    let globals = if suspension.is_some() {
        saved_globals(domain)
    } else {
        Vec::new()
    };
    let state = domain.store.data();
    let mut record = domain.record.clone();
    record.memory_pages = domain.memory.size(&domain.store) as u32;
    record.is_initialized = true;
    record.globals = globals;
    record.suspension = suspension;
    record.status = status;
    record.mailbox = state.mailbox.iter().cloned().collect();
    record.sent = state.sent.clone();
    record.accepted = state.accepted.clone();
    record.outbox = state.outbox.to_record();
    record.network = state.sockets.to_record();
    if let Some(connecting) = state.connecting {
        // Not yet the guest's: a restored guest connects again.
        record
            .network
            .connections
            .retain(|&number| number != connecting);
        record
            .network
            .nonblocking
            .retain(|&number| number != connecting);
    }
    record.clock_ns = state.now_ns();
    record.fuel_used = domain.fuel_used;
    record.commits = record.commits.saturating_add(1);
    // The lines printed since the last commit go to the storage's log now,
    // whatever the commit does: a failed one keeps them staged for the
    // next.
    let log = domain.store.data_mut().console.log.take();
    domain.storage.stage_log(&log);
    // Memory the pager could not keep is never committed: the record
    // (status, mailbox) still is, over the last good memory.
    let is_memory_trusted = domain.backing.failure().is_none();
    if is_memory_trusted {
        domain.backing.before_commit(&mut domain.storage)?;
    }
    let memory = domain.memory.data(&domain.store);
    let dirty = if is_memory_trusted {
        domain.backing.dirty_pages(memory)
    } else {
        record.memory_pages = domain.record.memory_pages;
        Vec::new()
    };
    let pages_written = dirty.len();
    let pages: Vec<(u64, &[u8])> = dirty
        .iter()
        .map(|&page_index| {
            let start = page_index as usize * PAGE_BYTES;
            let end = (start + PAGE_BYTES).min(memory.len());
            (page_index, &memory[start..end])
        })
        .collect();
    let commit = Commit {
        record: &record,
        pages: &pages,
    };
    let mut result = domain.storage.commit(&commit);
    // Blocks a pager keeps for page-outs are free space too: a disk is full
    // only when the commit fails without them.
    if matches!(result, Err(Error::DiskFull { .. }))
        && domain.backing.release_reserve(&mut domain.storage) > 0
    {
        result = domain.storage.commit(&commit);
    }
    result?;
    let state = domain.store.data_mut();
    state.held.commit_succeeded();
    state.replies_held_since_ns = None;
    let platform = state.platform.clone();
    let sent = state.held.release(platform.network());
    state.charge_later(crate::fuel::copy(sent));
    domain.backing.commit_succeeded();
    domain.record = record;
    domain.is_commit_unannounced = true;
    if is_memory_trusted {
        domain.backing.after_commit(&mut domain.storage)?;
    }
    Ok(pages_written)
}

fn saved_globals<S: Storage>(domain: &Domain<S>) -> Vec<SavedGlobal> {
    let mut globals = Vec::new();
    for (index, name) in &domain.global_exports {
        let Some(global) = domain.instance.get_global(&domain.store, name) else {
            continue;
        };
        if !global.ty(&domain.store).mutability().is_mut() {
            continue;
        }
        let value = match global.get(&domain.store) {
            Val::I32(value) => GlobalValue::I32(value),
            Val::I64(value) => GlobalValue::I64(value),
            Val::F32(value) => GlobalValue::F32(value.to_bits()),
            Val::F64(value) => GlobalValue::F64(value.to_bits()),
            // Reference and vector globals cannot be saved; asyncified Rust
            // has none.
            _ => continue,
        };
        globals.push(SavedGlobal {
            index: *index,
            value,
        });
    }
    globals
}

/// Lays the committed memory, globals and suspension over a fresh instance.
pub fn restore<S: Storage>(domain: &mut Domain<S>) -> Result<(), Error> {
    let record = domain.record.clone();
    if let Some(suspension) = &record.suspension {
        if suspension.module_fingerprint != module_fingerprint(&record.module) {
            return Err(Error::ModuleFingerprintMismatch);
        }
        if domain.store.data().asyncify.is_none() {
            return Err(Error::BadSavedGlobal(
                "a suspended stack but no asyncify exports".into(),
            ));
        }
    }
    let current_pages = domain.memory.size(&domain.store);
    let wanted_pages = u64::from(record.memory_pages);
    if wanted_pages > current_pages {
        domain
            .memory
            .grow(&mut domain.store, wanted_pages - current_pages)
            .map_err(|error| Error::Instantiation(error.to_string()))?;
    }
    // Data segments were applied at instantiation; the image, not the module,
    // says what memory holds: a demand-paged backing drops what they wrote
    // and reads pages from the image as they are touched; otherwise zero
    // everything, then copy the stored pages.
    let is_lazy = domain
        .backing
        .restore_lazily(domain.memory.data(&domain.store), &mut domain.storage)?;
    if is_lazy {
        return finish_restore(domain, &record);
    }
    let stored = domain.storage.stored_pages()?;
    let written = domain
        .backing
        .pages_written_since_creation(domain.memory.data(&domain.store));
    let memory = domain.memory.data_mut(&mut domain.store);
    match written {
        // Only what instantiation wrote (data segments) is not zero yet.
        Some(pages) => {
            for page_index in pages {
                let start = page_index as usize * PAGE_BYTES;
                let end = (start + PAGE_BYTES).min(memory.len());
                if let Some(bytes) = memory.get_mut(start..end) {
                    bytes.fill(0);
                }
            }
        }
        None => memory.fill(0),
    }
    let mut page = [0u8; PAGE_BYTES];
    for page_index in stored {
        let start = page_index as usize * PAGE_BYTES;
        if start >= memory.len() {
            return Err(Error::Storage(alloc::format!(
                "page {page_index} lies beyond memory of {} bytes",
                memory.len()
            )));
        }
        domain.storage.read_page(page_index, &mut page)?;
        let end = (start + PAGE_BYTES).min(memory.len());
        memory[start..end].copy_from_slice(&page[..end - start]);
    }
    domain.backing.reset_to(memory);
    finish_restore(domain, &record)
}

/// Globals and the suspension, once memory reads as the image.
fn finish_restore<S: Storage>(
    domain: &mut Domain<S>,
    record: &crate::storage::DomainRecord,
) -> Result<(), Error> {
    if record.suspension.is_some() {
        restore_globals(domain, &record.globals)?;
    }
    let state = domain.store.data_mut();
    state.suspension = record.suspension.clone();
    state.save_buffer = record
        .suspension
        .as_ref()
        .map(|suspension| suspension.save_buffer);
    Ok(())
}

fn restore_globals<S: Storage>(
    domain: &mut Domain<S>,
    globals: &[SavedGlobal],
) -> Result<(), Error> {
    for saved in globals {
        let export = domain
            .global_exports
            .iter()
            .find(|(index, _)| *index == saved.index);
        let Some(global) =
            export.and_then(|(_, name)| domain.instance.get_global(&domain.store, name))
        else {
            return Err(Error::BadSavedGlobal(alloc::format!(
                "the module exports no global {}",
                saved.index
            )));
        };
        let value = match saved.value {
            GlobalValue::I32(value) => Val::I32(value),
            GlobalValue::I64(value) => Val::I64(value),
            GlobalValue::F32(bits) => Val::F32(wasmi::F32::from_bits(bits)),
            GlobalValue::F64(bits) => Val::F64(wasmi::F64::from_bits(bits)),
        };
        global.set(&mut domain.store, value).map_err(|error| {
            Error::BadSavedGlobal(alloc::format!("global {}: {error}", saved.index))
        })?;
    }
    Ok(())
}

/// A stand-in call for readiness checks of a suspended import (the real
/// arguments come back when the guest re-enters the import).
pub fn call_for(import: BlockingImport) -> BlockingCall {
    match import {
        BlockingImport::AmberSleep => BlockingCall::Sleep,
        BlockingImport::AmberYield => BlockingCall::Yield,
        BlockingImport::AmberRecv => BlockingCall::Recv {
            buffer: 0,
            capacity: 0,
            from: 0,
        },
        BlockingImport::AmberCheckpoint => BlockingCall::Checkpoint,
        BlockingImport::WasiSchedYield => BlockingCall::SchedYield,
        BlockingImport::WasiPollOneoff => BlockingCall::PollOneoff {
            subscriptions: 0,
            events: 0,
            count: 0,
            events_written: 0,
        },
        // A network call's stand-in has no socket: the domain wakes at
        // once and re-enters the call with its arguments (Domain::wake).
        BlockingImport::AmberTcpAccept | BlockingImport::WasiSockAccept => {
            BlockingCall::TcpAccept { listener: u32::MAX }
        }
        BlockingImport::AmberTcpConnect => BlockingCall::TcpConnect {
            address: [0; 4],
            port: 0,
        },
        BlockingImport::AmberTcpRead
        | BlockingImport::WasiFdRead
        | BlockingImport::WasiSockRecv => BlockingCall::TcpRead {
            socket: u32::MAX,
            buffer: 0,
            capacity: 0,
        },
        BlockingImport::AmberTcpWrite
        | BlockingImport::WasiFdWrite
        | BlockingImport::WasiSockSend => BlockingCall::TcpWrite {
            socket: u32::MAX,
            bytes: 0,
            length: 0,
        },
        BlockingImport::AmberNetPoll => BlockingCall::NetPoll {
            entries: 0,
            count: 0,
        },
    }
}
