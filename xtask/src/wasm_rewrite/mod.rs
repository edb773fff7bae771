//! Module rewrites for apps and `image new`: exported globals, imported memory.
//!
//! Both rewrites walk the module's sections with wasmparser and copy every
//! section they do not change byte for byte (`RawSection`), so code, data, names
//! and custom sections survive untouched. Only the import, memory and export
//! sections are re-encoded, through wasm-encoder's `reencode` helpers. Input and
//! output are both checked with wasmparser's validator, so a rewrite never hands
//! on a module that wasmi would refuse.

use anyhow::{Context, Result, bail};
use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{
    EntityType, ExportKind, ExportSection, ImportSection, MemoryType, Module, RawSection,
};
use wasmparser::{Encoding, ExternalKind, Parser, Payload, TypeRef, Validator};

/// Prefix of the export names that [`export_mutable_globals`] adds.
///
/// The full name is `amber.global.N`, where N is the decimal index of the global
/// in the module's global index space (imported globals first, as in the Wasm
/// spec, section 2.5.1 "Indices").
pub const GLOBAL_EXPORT_PREFIX: &str = "amber.global.";

/// Module name of the memory import that [`import_memory`] creates.
pub const MEMORY_IMPORT_MODULE: &str = "env";

/// Field name of the memory import that [`import_memory`] creates.
pub const MEMORY_IMPORT_NAME: &str = "memory";

/// The export name [`export_mutable_globals`] gives the global at `global_index`.
pub fn global_export_name(global_index: u32) -> String {
    format!("{GLOBAL_EXPORT_PREFIX}{global_index}")
}

/// Checks that `module` is a valid core Wasm module (default wasmparser features).
pub fn validate(module: &[u8]) -> Result<()> {
    Validator::new()
        .validate_all(module)
        .map(|_| ())
        .context("the module is not valid WebAssembly")
}

/// Exports every mutable global the module defines as `amber.global.N`.
///
/// rustc does not export `__stack_pointer`, and asyncify adds
/// `__asyncify_state` and `__asyncify_data` without exporting them, yet the vm
/// must save and restore all of them with linear memory for a suspended stack to
/// be resumable. wasm-opt renames globals, so the export is by index and this
/// pass must run *after* wasm-opt. Imported globals are the embedder's and are
/// left alone. Running the pass twice is harmless: an existing export with the
/// same name and global is kept; the same name on anything else is an error.
pub fn export_mutable_globals(module: &[u8]) -> Result<Vec<u8>> {
    validate(module)?;
    let sections = core_sections(module)?;

    let mut imported_global_count = 0u32;
    let mut mutable_global_indices = Vec::new();
    for payload in &sections {
        match payload {
            Payload::ImportSection(reader) => {
                for import in reader.clone().into_imports() {
                    if matches!(import?.ty, TypeRef::Global(_)) {
                        imported_global_count += 1;
                    }
                }
            }
            Payload::GlobalSection(reader) => {
                for (defined_index, global) in (0u32..).zip(reader.clone()) {
                    if global?.ty.mutable {
                        mutable_global_indices.push(imported_global_count + defined_index);
                    }
                }
            }
            _ => {}
        }
    }

    let mut new_exports = ExportSection::new();
    let mut existing_names = Vec::new();
    if let Some(Payload::ExportSection(reader)) = sections
        .iter()
        .find(|payload| matches!(payload, Payload::ExportSection(_)))
    {
        RoundtripReencoder
            .parse_export_section(&mut new_exports, reader.clone())
            .context("re-encoding the export section")?;
        for export in reader.clone() {
            let export = export?;
            existing_names.push((export.name.to_owned(), export.kind, export.index));
        }
    }
    for global_index in mutable_global_indices {
        let name = global_export_name(global_index);
        match existing_names
            .iter()
            .find(|(existing, ..)| *existing == name)
        {
            Some((_, ExternalKind::Global, index)) if *index == global_index => {}
            Some(_) => bail!("the module already exports something else as `{name}`"),
            None => {
                new_exports.export(&name, ExportKind::Global, global_index);
            }
        }
    }

    let mut output = Module::new();
    let mut has_written_exports = false;
    for payload in &sections {
        let (id, range) = section_of(payload)?;
        if !has_written_exports && comes_after(id, EXPORT_SECTION_ID) {
            output.section(&new_exports);
            has_written_exports = true;
        }
        if id == EXPORT_SECTION_ID {
            output.section(&new_exports);
            has_written_exports = true;
        } else {
            output.section(&raw_section(module, id, range)?);
        }
    }
    if !has_written_exports {
        output.section(&new_exports);
    }
    finish(output)
}

/// Turns a module that defines its one memory into one that imports it.
///
/// The memory becomes the import `("env", "memory")` with the same limits (and
/// the same 64-bit, shared and page-size settings). With a single memory its
/// index is 0 before and after, so no instruction, export or data segment needs
/// renumbering; the import is appended after the existing ones, which leaves the
/// function, table, global and tag index spaces unchanged because those count
/// only imports of their own kind. A module that already imports its one memory
/// is returned unchanged. A module with no memory is returned unchanged too
/// (there is nothing to place). More than one memory is an error: wasmi backs
/// only one imported memory per domain.
pub fn import_memory(module: &[u8]) -> Result<Vec<u8>> {
    validate(module)?;
    let sections = core_sections(module)?;

    let mut imported_memory_count = 0usize;
    let mut defined_memories = Vec::new();
    for payload in &sections {
        match payload {
            Payload::ImportSection(reader) => {
                for import in reader.clone().into_imports() {
                    if matches!(import?.ty, TypeRef::Memory(_)) {
                        imported_memory_count += 1;
                    }
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader.clone() {
                    defined_memories.push(memory?);
                }
            }
            _ => {}
        }
    }
    let memory_count = imported_memory_count + defined_memories.len();
    if memory_count > 1 {
        bail!("the module has {memory_count} memories; Amber supports at most one");
    }
    let Some(memory) = defined_memories.first().copied() else {
        return Ok(module.to_vec());
    };
    let memory_type: MemoryType = RoundtripReencoder
        .memory_type(memory)
        .context("re-encoding the memory type")?;

    let mut imports = ImportSection::new();
    if let Some(Payload::ImportSection(reader)) = sections
        .iter()
        .find(|payload| matches!(payload, Payload::ImportSection(_)))
    {
        RoundtripReencoder
            .parse_import_section(&mut imports, reader.clone())
            .context("re-encoding the import section")?;
    }
    imports.import(
        MEMORY_IMPORT_MODULE,
        MEMORY_IMPORT_NAME,
        EntityType::Memory(memory_type),
    );

    let mut output = Module::new();
    let mut has_written_imports = false;
    for payload in &sections {
        let (id, range) = section_of(payload)?;
        if !has_written_imports && comes_after(id, IMPORT_SECTION_ID) {
            output.section(&imports);
            has_written_imports = true;
        }
        match id {
            IMPORT_SECTION_ID => {
                output.section(&imports);
                has_written_imports = true;
            }
            // The one memory is now imported: drop its definition.
            MEMORY_SECTION_ID => {}
            _ => {
                output.section(&raw_section(module, id, range)?);
            }
        }
    }
    if !has_written_imports {
        output.section(&imports);
    }
    finish(output)
}

// Section ids from the Wasm spec, section 5.5.2 "Sections".
const TYPE_SECTION_ID: u8 = 1;
const IMPORT_SECTION_ID: u8 = 2;
const FUNCTION_SECTION_ID: u8 = 3;
const TABLE_SECTION_ID: u8 = 4;
const MEMORY_SECTION_ID: u8 = 5;
const GLOBAL_SECTION_ID: u8 = 6;
const EXPORT_SECTION_ID: u8 = 7;
const START_SECTION_ID: u8 = 8;
const ELEMENT_SECTION_ID: u8 = 9;
const CODE_SECTION_ID: u8 = 10;
const DATA_SECTION_ID: u8 = 11;
const DATA_COUNT_SECTION_ID: u8 = 12;
const TAG_SECTION_ID: u8 = 13;

/// Where a non-custom section must appear in a module (spec 5.5.16 "Modules";
/// the tag section of the exception-handling proposal sits between memory and
/// global). Custom sections may appear anywhere and have no position.
fn section_position(id: u8) -> Option<u8> {
    let order = [
        TYPE_SECTION_ID,
        IMPORT_SECTION_ID,
        FUNCTION_SECTION_ID,
        TABLE_SECTION_ID,
        MEMORY_SECTION_ID,
        TAG_SECTION_ID,
        GLOBAL_SECTION_ID,
        EXPORT_SECTION_ID,
        START_SECTION_ID,
        ELEMENT_SECTION_ID,
        DATA_COUNT_SECTION_ID,
        CODE_SECTION_ID,
        DATA_SECTION_ID,
    ];
    (0u8..)
        .zip(order)
        .find(|(_, section_id)| *section_id == id)
        .map(|(position, _)| position)
}

/// Whether section `id` must come after section `other` (false for custom
/// sections, so a new section is placed before the next non-custom one).
fn comes_after(id: u8, other: u8) -> bool {
    match (section_position(id), section_position(other)) {
        (Some(position), Some(other_position)) => position > other_position,
        _ => false,
    }
}

/// The module's sections in order, without the header, the end marker and the
/// individual code entries (the code section is kept whole).
fn core_sections(module: &[u8]) -> Result<Vec<Payload<'_>>> {
    let mut sections = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        let payload = payload.context("parsing the module")?;
        match payload {
            Payload::Version {
                encoding: Encoding::Module,
                ..
            } => {}
            Payload::Version { .. } => bail!("a component, not a core module, was given"),
            Payload::CodeSectionEntry(_) | Payload::End(_) => {}
            section => sections.push(section),
        }
    }
    Ok(sections)
}

/// The id and byte range of the section `payload` stands for.
fn section_of(payload: &Payload<'_>) -> Result<(u8, std::ops::Range<u64>)> {
    payload
        .as_section()
        .context("a module payload is not a section")
}

/// The section `id` whose contents are `module[range]`, to be copied unchanged.
fn raw_section(module: &[u8], id: u8, range: std::ops::Range<u64>) -> Result<RawSection<'_>> {
    let start = usize::try_from(range.start).context("section offset out of range")?;
    let end = usize::try_from(range.end).context("section offset out of range")?;
    let data = module
        .get(start..end)
        .context("a section lies outside the module")?;
    Ok(RawSection { id, data })
}

/// Encodes `output` and validates the result.
fn finish(output: Module) -> Result<Vec<u8>> {
    let bytes = output.finish();
    validate(&bytes).context("the rewritten module is invalid (a bug in wasm_rewrite)")?;
    Ok(bytes)
}

#[cfg(test)]
mod tests;
