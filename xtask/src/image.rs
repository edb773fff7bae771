//! `cargo xtask image`: create, inspect and verify domain images.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use persist::{FileDevice, Image, NewDomain, StoredStatus, WASM_PAGE_SIZE};
use wasmparser::{Parser, Payload, TypeRef};

use crate::{paths, wasm_rewrite};

/// Image subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Create a domain image from a wasm module.
    New(NewArgs),
    /// Print an image's identity, status and space (like `qemu-img info`).
    Inspect(InspectArgs),
    /// Check every checksum of an image; fails naming the first bad block.
    Verify(VerifyArgs),
    /// Open the older commit of an image whose newest commit is damaged,
    /// discarding the damaged one for good (like `zpool import -F`); the
    /// rollback is recorded in the image.
    Rollback(RollbackArgs),
    /// List, create, apply or delete named snapshots (`qemu-img snapshot`'s
    /// `-l`, `-c TAG`, `-a TAG`, `-d TAG`).
    Snapshot(crate::snapshot::SnapshotArgs),
    /// Write one state of an image (its last commit, or `--snapshot TAG`)
    /// as a new compact image without snapshots, which boots.
    Export(crate::snapshot::ExportArgs),
    /// Print the domain's own log: the last lines it printed (about 64 KiB),
    /// kept in its image across reboots, rollbacks and migrations.
    Logs(LogsArgs),
}

/// `image logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The image file.
    pub image: PathBuf,
    /// Only the last N lines.
    #[arg(short = 'n', long = "lines", value_name = "N")]
    pub lines: Option<usize>,
}

/// `image rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The image file.
    pub image: PathBuf,
}

/// `image new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The wasm module. A module that defines its memory is rewritten to
    /// import it (as every Amber domain does).
    #[arg(long)]
    pub wasm: PathBuf,
    /// The domain name.
    #[arg(long)]
    pub name: String,
    /// Maximum linear memory in MiB (default: the module's maximum, or 64 MiB
    /// when it declares none).
    #[arg(long = "memory-max")]
    pub memory_max_mib: Option<u64>,
    /// Image size in MiB (default: three times the maximum memory, so a commit
    /// can rewrite all of it beside the last two, plus the module and 4 MiB).
    /// The file is sparse: unused blocks take no disk space.
    #[arg(long = "size")]
    pub size_mib: Option<u64>,
    /// A WASI argument (repeatable; the name is argument 0).
    #[arg(long = "arg")]
    pub args: Vec<String>,
    /// A WASI environment variable as KEY=VALUE (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// Where to write the image (default: target/amber/disks/NAME.img).
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// A TCP port the domain may listen on (repeatable, at most 8, each
    /// once). The first is the domain's socket (WASI fd) 3, the next 4, ...
    #[arg(long = "listen", value_name = "PORT", value_parser = parse_port)]
    pub listen: Vec<u16>,
    /// Durable replies: nothing the domain writes to a connection leaves
    /// the machine before a commit holds the state that wrote it.
    #[arg(long = "durable-replies")]
    pub durable_replies: bool,
}

/// Reads a `--listen` port: a number from 1 to 65535.
pub fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) => Err("port 0 names no port (ports are 1 to 65535)".into()),
        Ok(port) => Ok(port),
        Err(_) => Err(format!("`{text}` is not a port number (1 to 65535)")),
    }
}

/// `image inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The image file.
    pub image: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `image verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The image file.
    pub image: PathBuf,
}

pub fn run(command: ImageCommand) -> Result<()> {
    match command {
        ImageCommand::New(args) => {
            let path = new(&args)?;
            println!("created {}", path.display());
            Ok(())
        }
        ImageCommand::Inspect(args) => {
            let info = inspect(&args.image)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&info.to_json())?);
            } else {
                print!("{}", info.to_text());
            }
            Ok(())
        }
        ImageCommand::Verify(args) => {
            let (report, rollback) = verify_with_record(&args.image)?;
            println!(
                "{}: ok (commit {}, {} blocks checked, {} pages)",
                args.image.display(),
                report.sequence,
                report.blocks_checked,
                report.pages_checked
            );
            if let Some(record) = rollback {
                println!("rolled back: {record}");
            }
            Ok(())
        }
        ImageCommand::Rollback(args) => {
            println!("{}", rollback(&args.image)?.confirmation());
            Ok(())
        }
        ImageCommand::Snapshot(args) => {
            print!(
                "{}",
                crate::snapshot::snapshot(&args.image, &args.action()?)?
            );
            Ok(())
        }
        ImageCommand::Logs(args) => {
            print!("{}", logs(&args.image, args.lines)?);
            Ok(())
        }
        ImageCommand::Export(args) => {
            let exported =
                crate::snapshot::export(&args.image, args.snapshot.as_deref(), &args.output)?;
            println!(
                "exported {} ({} blocks, {} pages)",
                args.output.display(),
                exported.blocks,
                exported.pages
            );
            Ok(())
        }
    }
}

/// The memory limits a module declares, in 64 KiB pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimits {
    pub initial_pages: u64,
    pub max_pages: Option<u64>,
}

/// Finds the module's one memory (imported or defined) with wasmparser.
pub fn memory_limits(module: &[u8]) -> Result<Option<MemoryLimits>> {
    let mut limits = None;
    for payload in Parser::new(0).parse_all(module) {
        let memory = match payload.context("parsing the wasm module")? {
            Payload::ImportSection(reader) => {
                let mut found = None;
                for import in reader.into_imports() {
                    if let TypeRef::Memory(memory) = import.context("reading an import")?.ty {
                        found = Some(memory);
                    }
                }
                found
            }
            Payload::MemorySection(reader) => reader
                .into_iter()
                .last()
                .transpose()
                .context("reading the memory section")?,
            _ => None,
        };
        if let Some(memory) = memory {
            if memory.memory64 {
                bail!("64-bit memories are not supported: wasmi domains use a 32-bit memory");
            }
            limits = Some(MemoryLimits {
                initial_pages: memory.initial,
                max_pages: memory.maximum,
            });
        }
    }
    Ok(limits)
}

fn random_id() -> Result<abi::DomainId> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("reading /dev/urandom for the domain ID")?;
    Ok(abi::DomainId::from_le_bytes(bytes))
}

/// A module ready for an image: its memory imported, with the memory a
/// domain of it starts with and may grow to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedModule {
    pub module: Vec<u8>,
    /// Initial memory, in 64 KiB WebAssembly pages.
    pub memory_pages: u64,
    /// Maximum memory, in 64 KiB WebAssembly pages.
    pub memory_max_pages: u64,
}

/// Reads the module at `wasm`, rewrites it to import its memory, and picks
/// the maximum memory: `memory_max_mib`, else the module's own maximum, else
/// 64 MiB. `image new` and the apps archive both go through here.
pub fn prepare_module(wasm: &Path, memory_max_mib: Option<u64>) -> Result<PreparedModule> {
    let original =
        std::fs::read(wasm).with_context(|| format!("reading the module {}", wasm.display()))?;
    let module = wasm_rewrite::import_memory(&original)
        .with_context(|| format!("{} is not a module Amber can run", wasm.display()))?;
    if module.len() > vm::MAX_MODULE_BYTES {
        bail!(
            "{} is {} bytes, more than the {} a domain's module may have",
            wasm.display(),
            module.len(),
            vm::MAX_MODULE_BYTES
        );
    }
    let limits = memory_limits(&module)?.unwrap_or(MemoryLimits {
        initial_pages: 0,
        max_pages: None,
    });
    let mib_to_pages = |mib: u64| mib * 1024 * 1024 / WASM_PAGE_SIZE as u64;
    let memory_max_pages = match (memory_max_mib, limits.max_pages) {
        (Some(mib), Some(module_max)) if mib_to_pages(mib) > module_max => bail!(
            "--memory-max {mib} MiB is above the module's own maximum of {} MiB",
            module_max * WASM_PAGE_SIZE as u64 / (1024 * 1024)
        ),
        (Some(mib), _) => mib_to_pages(mib),
        (None, Some(module_max)) => module_max,
        (None, None) => mib_to_pages(64),
    };
    if memory_max_pages < limits.initial_pages {
        bail!(
            "the maximum memory ({memory_max_pages} pages of 64 KiB) is below the module's initial memory ({} pages)",
            limits.initial_pages
        );
    }
    Ok(PreparedModule {
        module,
        memory_pages: limits.initial_pages,
        memory_max_pages,
    })
}

/// Creates the image `args` describe; returns its path.
pub fn new(args: &NewArgs) -> Result<PathBuf> {
    // persist refuses these too; here they are refused before any file is
    // read, in words that name the flag.
    if let Err(error) = persist::check_listen(&args.listen) {
        bail!("--listen: {error}");
    }
    let PreparedModule {
        module,
        memory_pages,
        memory_max_pages,
    } = prepare_module(&args.wasm, args.memory_max_mib)?;
    // The vm's own check, so the words are the ones the kernel would print
    // refusing the disk (`disk N: refused: ...`).
    if let Err(error) = vm::check_module(&module) {
        bail!(
            "{} cannot be a domain: {error} (the kernel would refuse its disk)",
            args.wasm.display()
        );
    }
    let block_count = match args.size_mib {
        Some(mib) => mib * 1024 * 1024 / persist::BLOCK_SIZE as u64,
        None => persist::default_block_count(memory_max_pages, module.len() as u64),
    };
    if block_count > persist::MAX_IMAGE_BLOCKS {
        bail!(
            "an image of {block_count} blocks is larger than the {} blocks (about 32 GiB) the format allows: lower --memory-max or --size",
            persist::MAX_IMAGE_BLOCKS
        );
    }
    for variable in &args.env {
        if !variable.contains('=') {
            bail!("--env {variable:?} is not KEY=VALUE");
        }
    }
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| paths::disks_dir().join(format!("{}.img", args.name)));
    if let Some(parent) = output
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    // The vm puts the domain name before these as argument 0.
    let wasi_args = args.args.clone();
    let device = FileDevice::create(&output, block_count)
        .with_context(|| format!("creating {}", output.display()))?;
    Image::create(
        device,
        NewDomain {
            id: random_id()?,
            name: &args.name,
            module: &module,
            memory_pages,
            memory_max_pages,
            args: wasi_args,
            env: args.env.clone(),
            network: persist::NetworkDeclaration {
                listen: args.listen.clone(),
                durable_replies: args.durable_replies,
            },
        },
    )
    .with_context(|| format!("writing the image {}", output.display()))?;
    Ok(output)
}

/// Opens an image, naming the file (and the rollback, when the newest
/// commit is damaged) in the error.
pub(crate) fn open(path: &Path) -> Result<Image<FileDevice>> {
    if !path.is_file() {
        bail!("{} does not exist or is not a file", path.display());
    }
    let device = FileDevice::open(path).with_context(|| format!("opening {}", path.display()))?;
    Image::open(device).map_err(|error| {
        let path = path.display();
        match &error {
            persist::Error::NewestCommitDamaged {
                damaged_sequence,
                intact_sequence,
                ..
            } => anyhow::anyhow!(
                "{path} is not a usable domain image: {error}; `cargo xtask image rollback \
                 {path}` opens commit {intact_sequence}, discarding commit {damaged_sequence}"
            ),
            _ => anyhow::Error::new(error).context(format!("{path} is not a usable domain image")),
        }
    })
}

/// What `image inspect` shows.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub path: PathBuf,
    pub id: abi::DomainId,
    pub name: String,
    pub status: StoredStatus,
    pub sequence: u64,
    pub commits: u64,
    pub memory_pages: u64,
    pub memory_max_pages: u64,
    pub pages_stored: u64,
    pub block_count: u64,
    pub blocks_used: u64,
    pub blocks_free: u64,
    pub module_sha256: String,
    pub module_len_bytes: u64,
    pub mailbox_messages: usize,
    /// Messages sent that their receivers had not committed.
    pub outbox_messages: usize,
    /// The migration record, if a migration concerns the image.
    pub migration: Option<persist::migrate::Migration>,
    /// What the last rollback past a damaged commit did, if there was one.
    pub rollback: Option<persist::RollbackRecord>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// Declared ports, durable replies, and the sockets open at the commit.
    pub network: persist::NetworkRecord,
    /// The named snapshots, oldest first.
    pub snapshots: Vec<persist::SnapshotInfo>,
    /// The domain's log: its length and lines.
    pub log_bytes: usize,
    pub log_lines: usize,
}

/// The declared ports with their sockets: `6379 (socket 3), 80 (socket 4)`.
fn listen_text(listen: &[u16]) -> String {
    if listen.is_empty() {
        return "none".into();
    }
    (abi::FIRST_LISTENER_FD..)
        .zip(listen)
        .map(|(socket, port)| format!("{port} (socket {socket})"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn replies_text(durable_replies: bool) -> &'static str {
    if durable_replies {
        "durable (held until a commit holds the state that wrote them)"
    } else {
        "immediate"
    }
}

fn connections_text(connections: &[u32]) -> String {
    if connections.is_empty() {
        return "none".into();
    }
    let sockets: Vec<String> = connections.iter().map(u32::to_string).collect();
    format!(
        "sockets {} (open at the commit; they read as reset after a restore)",
        sockets.join(", ")
    )
}

fn migration_text(migration: &Option<persist::migrate::Migration>) -> String {
    use persist::migrate::{IncomingPhase, Migration};
    match migration {
        None => "none".into(),
        Some(Migration::Incoming {
            migration_id,
            source,
            phase,
            resume_status,
        }) => format!(
            "incoming {migration_id:032x} from {source}, {}, then {}",
            match phase {
                IncomingPhase::Copying => "copying (discarded at boot)",
                IncomingPhase::Complete => "complete (parked: asks the source)",
            },
            status_text(resume_status)
        ),
        Some(Migration::Outgoing {
            migration_id,
            target,
        }) => format!("handed over to {target} ({migration_id:032x})"),
    }
}

fn status_text(status: &StoredStatus) -> String {
    match status {
        StoredStatus::Running => "running".into(),
        StoredStatus::Stopped => "stopped".into(),
        StoredStatus::Exited(code) => format!("exited with code {code}"),
        StoredStatus::Trapped(reason) => format!("trapped: {reason}"),
        StoredStatus::MovedAway => "moved away".into(),
    }
}

impl ImageInfo {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "path": self.path.display().to_string(),
            "id": format!("{:032x}", self.id),
            "name": self.name,
            "status": status_text(&self.status),
            "sequence": self.sequence,
            "commits": self.commits,
            "memory_pages": self.memory_pages,
            "memory_max_pages": self.memory_max_pages,
            "pages_stored": self.pages_stored,
            "block_size": persist::BLOCK_SIZE,
            "blocks": self.block_count,
            "blocks_used": self.blocks_used,
            "blocks_free": self.blocks_free,
            "module_sha256": self.module_sha256,
            "module_bytes": self.module_len_bytes,
            "mailbox_messages": self.mailbox_messages,
            "outbox_messages": self.outbox_messages,
            "migration": migration_text(&self.migration),
            "rollback": rollback_text(&self.rollback),
            "args": self.args,
            "env": self.env,
            "listen": self.network.listen,
            "durable_replies": self.network.durable_replies,
            "connections": self.network.connections,
            "nonblocking": self.network.nonblocking,
            "snapshots": crate::snapshot::to_json(&self.snapshots),
            "log_bytes": self.log_bytes,
            "log_lines": self.log_lines,
        })
    }

    pub fn to_text(&self) -> String {
        let mib = |blocks: u64| blocks as f64 * persist::BLOCK_SIZE as f64 / (1024.0 * 1024.0);
        format!(
            "image:          {}\n\
             id:             {:032x}\n\
             name:           {}\n\
             status:         {}\n\
             commit:         {} ({} commits since creation)\n\
             memory:         {} of at most {} pages of 64 KiB\n\
             pages stored:   {} ({:.1} MiB)\n\
             blocks:         {} of 4 KiB ({:.1} MiB): {} used, {} free\n\
             module:         {} bytes, sha256 {}\n\
             mailbox:        {} messages\n\
             outbox:         {} messages not yet committed by their receivers\n\
             migration:      {}\n\
             rollback:       {}\n\
             args:           {:?}\n\
             env:            {:?}\n\
             listen:         {}\n\
             replies:        {}\n\
             connections:    {}\n\
             log:            {} lines, {} bytes (image logs)\n\
             snapshots:      {}\n{}",
            self.path.display(),
            self.id,
            self.name,
            status_text(&self.status),
            self.sequence,
            self.commits,
            self.memory_pages,
            self.memory_max_pages,
            self.pages_stored,
            mib(self.pages_stored),
            self.block_count,
            mib(self.block_count),
            self.blocks_used,
            self.blocks_free,
            self.module_len_bytes,
            self.module_sha256,
            self.mailbox_messages,
            self.outbox_messages,
            migration_text(&self.migration),
            rollback_text(&self.rollback),
            self.args,
            self.env,
            listen_text(&self.network.listen),
            replies_text(self.network.durable_replies),
            connections_text(&self.network.connections),
            self.log_lines,
            self.log_bytes,
            self.snapshots.len(),
            if self.snapshots.is_empty() {
                String::new()
            } else {
                persist::table_text(&self.snapshots)
            },
        )
    }
}

/// The domain's log in the image at `path`, its last `lines` lines if
/// given, escaped as the console shows a domain's output (an image is
/// anyone's to write).
pub fn logs(path: &Path, lines: Option<usize>) -> Result<String> {
    let mut image = open(path)?;
    let log = image
        .log()
        .with_context(|| format!("reading the log of {}", path.display()))?;
    let (shown, _) = persist::last_lines(&log, lines.unwrap_or(usize::MAX));
    let mut text = String::with_capacity(shown.len());
    for line in shown.split(|&byte| byte == b'\n') {
        if !line.is_empty() {
            vm::escape_into(line, &mut text);
            text.push('\n');
        }
    }
    Ok(text)
}

/// Reads what `image inspect` shows.
pub fn inspect(path: &Path) -> Result<ImageInfo> {
    let mut image = open(path)?;
    let snapshots = image
        .snapshots()
        .with_context(|| format!("reading the snapshots of {}", path.display()))?;
    let log = image
        .log()
        .with_context(|| format!("reading the log of {}", path.display()))?;
    let (_, log_lines) = persist::last_lines(&log, 0);
    let metadata = image.metadata();
    let stats = image.stats();
    Ok(ImageInfo {
        path: path.to_path_buf(),
        id: metadata.id,
        name: metadata.name.clone(),
        status: metadata.status.clone(),
        sequence: stats.sequence,
        commits: metadata.counters.commits,
        memory_pages: metadata.memory_pages,
        memory_max_pages: metadata.memory_max_pages,
        pages_stored: stats.pages_stored,
        block_count: stats.block_count,
        blocks_used: stats.blocks_used,
        blocks_free: stats.blocks_free,
        module_sha256: image
            .module_sha256()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect(),
        module_len_bytes: stats.module_len_bytes,
        mailbox_messages: metadata.mailbox.len(),
        outbox_messages: metadata.outbox.len(),
        migration: metadata.migration.clone(),
        rollback: image.rollback_record(),
        args: metadata.args.clone(),
        env: metadata.env.clone(),
        network: metadata.network.clone(),
        snapshots,
        log_bytes: log.len(),
        log_lines,
    })
}

/// Walks every checksum of the image; the error names the first bad block.
pub fn verify(path: &Path) -> Result<persist::VerifyReport> {
    Ok(verify_with_record(path)?.0)
}

/// [`verify`], and the image's rollback record, if it was ever rolled back.
pub fn verify_with_record(
    path: &Path,
) -> Result<(persist::VerifyReport, Option<persist::RollbackRecord>)> {
    let mut image = open(path)?;
    let report = image
        .verify()
        .with_context(|| format!("{} failed verification", path.display()))?;
    Ok((report, image.rollback_record()))
}

fn rollback_text(rollback: &Option<persist::RollbackRecord>) -> String {
    match rollback {
        None => "never".into(),
        Some(record) => record.to_string(),
    }
}

/// What `image rollback` did.
#[derive(Debug, Clone)]
pub struct RolledBack {
    pub path: PathBuf,
    pub record: persist::RollbackRecord,
    /// The sequence number of the commit that recorded the rollback.
    pub sequence: u64,
    /// The domain's name, as the restored commit has it.
    pub name: String,
}

impl RolledBack {
    /// The lines `image rollback` prints.
    pub fn confirmation(&self) -> String {
        format!(
            "{}: rolled back: commit {} was damaged and is discarded; {} is at the state of \
             commit {}, committed again as commit {} with the rollback recorded \
             (`image inspect` shows it)",
            self.path.display(),
            self.record.damaged_sequence,
            self.name,
            self.record.restored_sequence,
            self.sequence
        )
    }
}

/// Opens the older commit of an image whose newest commit is damaged and
/// commits it again with the rollback recorded (`Image::open_rolling_back`).
/// Refused when the newest commit opens cleanly, or when going back would
/// undo a hand-over to another machine.
pub fn rollback(path: &Path) -> Result<RolledBack> {
    if !path.is_file() {
        bail!("{} does not exist or is not a file", path.display());
    }
    let device = FileDevice::open(path).with_context(|| format!("opening {}", path.display()))?;
    let image = Image::open_rolling_back(device).map_err(|unopened| {
        anyhow::Error::new(unopened.error)
            .context(format!("{} was not rolled back", path.display()))
    })?;
    let record = image
        .rollback_record()
        .context("the rolled back image holds no rollback record")?;
    Ok(RolledBack {
        path: path.to_path_buf(),
        record,
        sequence: image.sequence(),
        name: image.metadata().name.clone(),
    })
}
