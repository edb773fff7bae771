//! `cargo xtask image rollback`: a damaged newest commit, named, rolled back.

use std::path::PathBuf;

use xtask::image::{self, NewArgs};

/// Offset of the metadata chain pointer's block in a superblock.
const METADATA_BLOCK: usize = 48;

#[test]
fn a_damaged_image_is_refused_with_the_rollback_hint_and_rolled_back_on_request() {
    let directory = std::env::temp_dir().join(format!("xtask-rollback-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let wasm = directory.join("app.wasm");
    std::fs::write(
        &wasm,
        wat::parse_str(r#"(module (import "env" "memory" (memory 1)) (func (export "_start")))"#)
            .unwrap(),
    )
    .unwrap();
    let path = image::new(&NewArgs {
        wasm,
        name: "damaged".into(),
        memory_max_mib: None,
        size_mib: None,
        args: Vec::new(),
        env: Vec::new(),
        output: Some(directory.join("damaged.img")),
        listen: Vec::new(),
        durable_replies: false,
    })
    .unwrap();
    // Commit 2, then damage its metadata: commit 1 stays intact.
    let device = persist::FileDevice::open(&path).unwrap();
    let mut opened = persist::Image::open(device).unwrap();
    opened.stage_page(0, &[5; persist::PAGE_SIZE]).unwrap();
    assert_eq!(opened.commit().unwrap().sequence, 2);
    drop(opened);
    let mut bytes = std::fs::read(&path).unwrap();
    let metadata_block = u64::from_le_bytes(
        bytes[METADATA_BLOCK..METADATA_BLOCK + 8]
            .try_into()
            .unwrap(),
    ) as usize;
    bytes[metadata_block * persist::BLOCK_SIZE + 64] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();

    let error = format!("{:#}", image::verify(&path).unwrap_err());
    println!("verify: {error}");
    assert!(error.contains("commit 2 is damaged"), "{error}");
    assert!(error.contains("the older commit 1 is intact"), "{error}");
    assert!(error.contains("cargo xtask image rollback"), "{error}");

    let rolled_back = image::rollback(&path).unwrap();
    let confirmation = rolled_back.confirmation();
    println!("rollback: {confirmation}");
    assert!(
        confirmation.contains(
            "rolled back: commit 2 was damaged and is discarded; damaged is at the state of \
             commit 1, committed again as commit 4"
        ),
        "{confirmation}"
    );
    let (report, record) = image::verify_with_record(&path).unwrap();
    assert_eq!(report.sequence, 4);
    assert_eq!(
        record.map(|record| record.to_string()),
        Some("commit 2 was damaged; rolled back to commit 1 on purpose".into())
    );
    let info = image::inspect(&path).unwrap();
    assert!(
        info.to_text()
            .contains("rollback:       commit 2 was damaged; rolled back to commit 1 on purpose"),
        "{}",
        info.to_text()
    );
    assert_eq!(
        info.to_json()["rollback"],
        "commit 2 was damaged; rolled back to commit 1 on purpose"
    );

    // Once is enough: the image opens cleanly now.
    let again = format!("{:#}", image::rollback(&path).unwrap_err());
    assert!(again.contains("nothing to roll back"), "{again}");
    std::fs::remove_dir_all(PathBuf::from(&directory)).unwrap();
}
