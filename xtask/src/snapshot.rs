//! `cargo xtask image snapshot` and `image export`: named states of an image.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{ArgGroup, Args};
use persist::{FileDevice, Image, SnapshotInfo, date_text, table_text};

/// `image snapshot`, in `qemu-img snapshot`'s convention: exactly one of
/// `-l`, `-c TAG`, `-a TAG`, `-d TAG`.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("action")
        .required(true)
        .args(["list", "create", "apply", "delete"])
))]
pub struct SnapshotArgs {
    /// List the snapshots.
    #[arg(short = 'l', long = "list")]
    pub list: bool,
    /// Take a snapshot of the last commit, tagged TAG.
    #[arg(short = 'c', long = "create", value_name = "TAG")]
    pub create: Option<String>,
    /// Make the snapshot tagged TAG the image's state (the snapshot stays).
    #[arg(short = 'a', long = "apply", value_name = "TAG")]
    pub apply: Option<String>,
    /// Delete the snapshot tagged TAG, giving back the blocks only it held.
    #[arg(short = 'd', long = "delete", value_name = "TAG")]
    pub delete: Option<String>,
    /// The image file.
    pub image: PathBuf,
}

/// What `image snapshot` does, from its flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotAction {
    List,
    Create(String),
    Apply(String),
    Delete(String),
}

impl SnapshotArgs {
    /// The one action the flags name (clap's group makes it exactly one).
    pub fn action(&self) -> Result<SnapshotAction> {
        Ok(match (&self.create, &self.apply, &self.delete) {
            (Some(tag), None, None) => SnapshotAction::Create(tag.clone()),
            (None, Some(tag), None) => SnapshotAction::Apply(tag.clone()),
            (None, None, Some(tag)) => SnapshotAction::Delete(tag.clone()),
            (None, None, None) if self.list => SnapshotAction::List,
            _ => bail!("give exactly one of -l, -c TAG, -a TAG, -d TAG"),
        })
    }
}

/// `image export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The image file.
    pub image: PathBuf,
    /// Export this snapshot instead of the last commit.
    #[arg(long = "snapshot", value_name = "TAG")]
    pub snapshot: Option<String>,
    /// The new image file (must not exist).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
}

/// Opens an image for a snapshot command, naming the file in errors.
fn open(path: &Path) -> Result<Image<FileDevice>> {
    crate::image::open(path)
}

/// Seconds since 1970 now: the creation time a snapshot records.
fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// Runs one `image snapshot` action; returns what it prints.
pub fn snapshot(path: &Path, action: &SnapshotAction) -> Result<String> {
    let mut image = open(path)?;
    let display = path.display();
    let refused = |error: persist::Error| anyhow::Error::new(error).context(format!("{display}"));
    match action {
        SnapshotAction::List => {
            let snapshots = image.snapshots().map_err(refused)?;
            Ok(table_text(&snapshots))
        }
        SnapshotAction::Create(tag) => {
            let id = image.snapshot_create(tag, now_seconds()).map_err(refused)?;
            Ok(format!(
                "{display}: snapshot {id} tagged {tag} of commit {}\n",
                image.sequence()
            ))
        }
        SnapshotAction::Apply(tag) => {
            let stats = image.snapshot_apply(tag).map_err(refused)?;
            Ok(format!(
                "{display}: at snapshot {tag} now (commit {})\n",
                stats.sequence
            ))
        }
        SnapshotAction::Delete(tag) => {
            let stats = image.snapshot_delete(tag).map_err(refused)?;
            Ok(format!(
                "{display}: snapshot {tag} deleted (commit {}); the blocks only it held \
                 are free once the commit before is superseded\n",
                stats.sequence
            ))
        }
    }
}

/// Snapshots as `image inspect --json` shows them.
pub fn to_json(snapshots: &[SnapshotInfo]) -> serde_json::Value {
    snapshots
        .iter()
        .map(|info| {
            serde_json::json!({
                "id": info.id.0,
                "tag": info.tag,
                "created": info.created,
                "date": date_text(info.created),
                "clock_ns": info.clock_ns,
                "sequence": info.sequence,
                "pages_stored": info.pages_stored,
                "exclusive_blocks": info.exclusive_blocks,
            })
        })
        .collect()
}

/// What `image export` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub blocks: u64,
    pub pages: u64,
}

/// Writes one state of `path` (its last commit, or snapshot `tag`) as a
/// new image at `output`, sized to fit, and verifies it.
pub fn export(path: &Path, tag: Option<&str>, output: &Path) -> Result<Exported> {
    if output.exists() {
        bail!(
            "{} exists already: export writes a new image",
            output.display()
        );
    }
    let mut image = open(path)?;
    let refused = |error: persist::Error| {
        anyhow::Error::new(error).context(format!("exporting {}", path.display()))
    };
    let blocks = image.export_block_count(tag).map_err(refused)?;
    let device = FileDevice::create(output, blocks)
        .with_context(|| format!("creating {}", output.display()))?;
    let exported = image.export_to(tag, device).map_err(|error| {
        let _ = std::fs::remove_file(output);
        refused(error)
    });
    let mut exported = exported?;
    let report = exported
        .verify()
        .with_context(|| format!("{} failed verification", output.display()))?;
    Ok(Exported {
        blocks,
        pages: report.pages_checked,
    })
}
