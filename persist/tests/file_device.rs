//! `FileDevice` against a model: whatever mix of writes (in order, out of
//! order, rewrites of blocks it still gathers), reads and flushes, every
//! read sees the last write, and the file holds every block after a flush
//! and after the device is dropped.

use std::path::PathBuf;

use persist::{BLOCK_SIZE, BlockDevice, FileDevice};
use proptest::prelude::*;

const BLOCKS: u64 = 600;

#[derive(Debug, Clone)]
enum Step {
    Write { index: u64, seed: u8 },
    Read { index: u64 },
    Flush,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        // Runs of consecutive writes are the common case: bias towards
        // neighbours of a few starting points.
        6 => (0..BLOCKS, any::<u8>()).prop_map(|(index, seed)| Step::Write { index, seed }),
        3 => (0..BLOCKS).prop_map(|index| Step::Read { index }),
        1 => Just(Step::Flush),
    ]
}

fn block(seed: u8, index: u64) -> [u8; BLOCK_SIZE] {
    let mut bytes = [seed; BLOCK_SIZE];
    bytes[..8].copy_from_slice(&index.to_le_bytes());
    bytes
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("amber-file-device-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir.join(name)
}

/// The file's own bytes for block `index`.
fn on_file(path: &PathBuf, index: u64) -> Vec<u8> {
    let bytes = std::fs::read(path).expect("reading the file");
    let start = index as usize * BLOCK_SIZE;
    bytes[start..start + BLOCK_SIZE].to_vec()
}

/// Whether the file holds exactly the model's blocks.
fn file_matches(path: &PathBuf, model: &[[u8; BLOCK_SIZE]]) -> bool {
    let bytes = std::fs::read(path).expect("reading the file");
    bytes.len() == model.len() * BLOCK_SIZE
        && bytes
            .chunks_exact(BLOCK_SIZE)
            .zip(model)
            .all(|(on_file, expected)| on_file == expected)
}

fn zero() -> [u8; BLOCK_SIZE] {
    [0; BLOCK_SIZE]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn reads_see_the_last_write_and_the_file_gets_every_block(
        steps in proptest::collection::vec(step(), 1..200),
        sequential_from in 0..BLOCKS - 300,
    ) {
        let path = scratch(&format!("model-{sequential_from}.img"));
        let mut device = FileDevice::create(&path, BLOCKS).expect("creating");
        let mut model = vec![zero(); BLOCKS as usize];
        // A long in-order run first (past the largest run gathered at once).
        for index in sequential_from..sequential_from + 300 {
            let bytes = block(7, index);
            device.write_block(index, &bytes).expect("writing");
            model[index as usize] = bytes;
        }
        for step in &steps {
            match *step {
                Step::Write { index, seed } => {
                    let bytes = block(seed, index);
                    device.write_block(index, &bytes).expect("writing");
                    model[index as usize] = bytes;
                }
                Step::Read { index } => {
                    let mut bytes = zero();
                    device.read_block(index, &mut bytes).expect("reading");
                    prop_assert_eq!(&bytes[..], &model[index as usize][..], "block {}", index);
                }
                Step::Flush => {
                    device.flush().expect("flushing");
                    prop_assert!(file_matches(&path, &model), "the file after a flush");
                }
            }
        }
        drop(device);
        prop_assert!(file_matches(&path, &model), "the file after the device is dropped");
        let mut reopened = FileDevice::open(&path).expect("reopening");
        for (index, expected) in model.iter().enumerate() {
            let mut bytes = zero();
            reopened.read_block(index as u64, &mut bytes).expect("reading");
            prop_assert_eq!(&bytes[..], &expected[..]);
        }
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn a_block_past_the_end_is_refused_before_anything_is_gathered() {
    let path = scratch("past-end.img");
    let mut device = FileDevice::create(&path, 4).expect("creating");
    device.write_block(3, &block(1, 3)).expect("the last block");
    assert!(device.write_block(4, &block(1, 4)).is_err());
    let mut bytes = zero();
    assert!(device.read_block(4, &mut bytes).is_err());
    device.flush().expect("flushing");
    assert_eq!(on_file(&path, 3), block(1, 3).to_vec());
    let _ = std::fs::remove_file(&path);
}
