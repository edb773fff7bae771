//! `cargo xtask image snapshot -l|-c|-a|-d` and `image export`: round trips,
//! refusals, and the snapshots `image inspect` shows.

use std::path::{Path, PathBuf};

use clap::Parser;
use xtask::image::{self, NewArgs};
use xtask::snapshot::{self, SnapshotAction};

fn temp_dir(test: &str) -> PathBuf {
    let directory =
        std::env::temp_dir().join(format!("xtask-snapshot-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

/// A new image with page 0 holding `byte`, committed.
fn new_image(directory: &Path, byte: u8) -> PathBuf {
    let wasm = directory.join("app.wasm");
    std::fs::write(
        &wasm,
        wat::parse_str(r#"(module (import "env" "memory" (memory 1 4)) (func (export "_start")))"#)
            .unwrap(),
    )
    .unwrap();
    let path = image::new(&NewArgs {
        wasm,
        name: "snappy".into(),
        memory_max_mib: None,
        size_mib: None,
        args: Vec::new(),
        env: Vec::new(),
        output: Some(directory.join("snappy.img")),
        listen: Vec::new(),
        durable_replies: false,
    })
    .unwrap();
    set_page(&path, byte);
    path
}

fn set_page(path: &Path, byte: u8) {
    let device = persist::FileDevice::open(path).unwrap();
    let mut opened = persist::Image::open(device).unwrap();
    opened.stage_page(0, &[byte; persist::PAGE_SIZE]).unwrap();
    opened.commit().unwrap();
}

fn page(path: &Path) -> u8 {
    let device = persist::FileDevice::open(path).unwrap();
    let mut opened = persist::Image::open(device).unwrap();
    let mut page = [0; persist::PAGE_SIZE];
    opened.read_page(0, &mut page).unwrap();
    page[0]
}

fn run(path: &Path, action: SnapshotAction) -> String {
    snapshot::snapshot(path, &action).unwrap_or_else(|error| panic!("{action:?}: {error:#}"))
}

#[test]
fn create_list_apply_delete_through_the_cli_functions() {
    let directory = temp_dir("round-trip");
    let path = new_image(&directory, 1);
    let created = run(&path, SnapshotAction::Create("first".into()));
    assert!(created.contains("snapshot 0 tagged first"), "{created}");
    set_page(&path, 2);
    run(&path, SnapshotAction::Create("second".into()));
    set_page(&path, 3);

    let list = run(&path, SnapshotAction::List);
    println!("{list}");
    assert!(list.starts_with("ID"), "{list}");
    assert!(list.contains("first") && list.contains("second"), "{list}");

    let info = image::inspect(&path).unwrap();
    assert_eq!(info.snapshots.len(), 2);
    assert!(
        info.to_text().contains("snapshots:      2"),
        "{}",
        info.to_text()
    );
    let json = info.to_json();
    assert_eq!(json["snapshots"][1]["tag"], "second");
    assert_eq!(json["snapshots"][0]["pages_stored"], 1);

    run(&path, SnapshotAction::Apply("first".into()));
    assert_eq!(page(&path), 1);
    run(&path, SnapshotAction::Apply("second".into()));
    assert_eq!(page(&path), 2);
    run(&path, SnapshotAction::Delete("first".into()));
    image::verify(&path).unwrap();
    let list = run(&path, SnapshotAction::List);
    assert!(!list.contains("first") && list.contains("second"), "{list}");
    run(&path, SnapshotAction::Delete("second".into()));
    assert_eq!(run(&path, SnapshotAction::List), "no snapshots\n");
    image::verify(&path).unwrap();
}

#[test]
fn refusals_name_the_tag() {
    let directory = temp_dir("refusals");
    let path = new_image(&directory, 1);
    run(&path, SnapshotAction::Create("kept".into()));
    let error =
        |action: SnapshotAction| format!("{:#}", snapshot::snapshot(&path, &action).unwrap_err());
    let unknown = error(SnapshotAction::Apply("missing".into()));
    assert!(
        unknown.contains("no snapshot is tagged \"missing\""),
        "{unknown}"
    );
    let unknown = error(SnapshotAction::Delete("missing".into()));
    assert!(
        unknown.contains("no snapshot is tagged \"missing\""),
        "{unknown}"
    );
    let duplicate = error(SnapshotAction::Create("kept".into()));
    assert!(duplicate.contains("tagged \"kept\" already"), "{duplicate}");
    let invalid = error(SnapshotAction::Create("no way".into()));
    assert!(invalid.contains("invalid snapshot tag"), "{invalid}");
    for number in 1..persist::MAX_SNAPSHOTS {
        run(&path, SnapshotAction::Create(format!("s{number}")));
    }
    let full = error(SnapshotAction::Create("over".into()));
    assert!(full.contains("keeps 64 snapshots already"), "{full}");
    image::verify(&path).unwrap();
}

#[test]
fn export_writes_a_compact_image_of_one_state() {
    let directory = temp_dir("export");
    let path = new_image(&directory, 7);
    run(&path, SnapshotAction::Create("seven".into()));
    set_page(&path, 8);
    let output = directory.join("seven.img");
    let exported = snapshot::export(&path, Some("seven"), &output).unwrap();
    assert_eq!(exported.pages, 1);
    assert_eq!(page(&output), 7);
    let info = image::inspect(&output).unwrap();
    assert_eq!(info.name, "snappy");
    assert!(info.snapshots.is_empty());
    assert!(
        std::fs::metadata(&output).unwrap().len() < std::fs::metadata(&path).unwrap().len() / 4
    );
    let live = directory.join("live.img");
    snapshot::export(&path, None, &live).unwrap();
    assert_eq!(page(&live), 8);
    let again = format!("{:#}", snapshot::export(&path, None, &live).unwrap_err());
    assert!(again.contains("exists already"), "{again}");
    let missing = format!(
        "{:#}",
        snapshot::export(&path, Some("nope"), &directory.join("nope.img")).unwrap_err()
    );
    assert!(missing.contains("no snapshot is tagged"), "{missing}");
    assert!(!directory.join("nope.img").exists());
}

/// The flags parse as `qemu-img snapshot` takes them: one action only.
#[test]
fn the_flags_are_qemu_img_s() {
    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: image::ImageCommand,
    }
    let parse = |words: &[&str]| Cli::try_parse_from(["image"].iter().chain(words));
    let Ok(Cli {
        command: image::ImageCommand::Snapshot(args),
    }) = parse(&["snapshot", "-c", "tag", "x.img"])
    else {
        panic!("-c TAG IMG did not parse");
    };
    assert_eq!(args.action().unwrap(), SnapshotAction::Create("tag".into()));
    assert!(parse(&["snapshot", "-l", "-d", "tag", "x.img"]).is_err());
    assert!(parse(&["snapshot", "x.img"]).is_err());
    assert!(parse(&["export", "x.img", "--snapshot", "t", "-o", "y.img"]).is_ok());
}
