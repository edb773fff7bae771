//! The apps archive: round trips, and damaged or cut archives give errors.

use persist::archive::{self, Archive, Error, NewEntry};
use persist::{BLOCK_SIZE, ListenError, MemoryDevice};
use proptest::prelude::*;

/// A module of `len` bytes that differs from app to app.
fn module(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|index| (index as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// The sample's ports: none, one, the most an app may have.
const LISTEN: [&[u16]; 3] = [&[], &[6379], &[1, 2, 3, 4, 5, 6, 7, 65535]];

fn sample() -> (Vec<Vec<u8>>, Vec<u8>) {
    let modules = vec![module(1, 10_000), module(2, 1), module(3, 4096)];
    let names = ["counter", "kv", "life"];
    let entries: Vec<NewEntry<'_>> = names
        .iter()
        .zip(&modules)
        .enumerate()
        .map(|(index, (name, module))| NewEntry {
            name,
            module,
            memory_pages: index as u64,
            memory_max_pages: 1024,
            listen: LISTEN[index],
            durable_replies: index == 1,
        })
        .collect();
    let bytes = archive::encode(&entries).unwrap();
    (modules, bytes)
}

fn open(bytes: Vec<u8>) -> Result<Archive<MemoryDevice>, Error> {
    Archive::open(MemoryDevice::from_bytes(bytes))
}

/// Puts the header's CRC right after a test changed a header field.
fn reseal_header(bytes: &mut [u8]) {
    let crc = persist::crc32c(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn every_module_reads_back_with_its_memory_limits() {
    let (modules, bytes) = sample();
    assert_eq!(bytes.len() % BLOCK_SIZE, 0);
    assert!(archive::has_magic(&bytes));
    let mut archive = open(bytes).unwrap();
    let names: Vec<&str> = archive
        .entries()
        .iter()
        .map(|entry| entry.name.as_str())
        .collect();
    assert_eq!(names, ["counter", "kv", "life"]);
    for (index, (name, module)) in ["counter", "kv", "life"].iter().zip(&modules).enumerate() {
        let entry = archive.find(name).unwrap();
        assert_eq!(entry.len_bytes, module.len() as u64);
        assert_eq!(entry.memory_pages, index as u64);
        assert_eq!(entry.memory_max_pages, 1024);
        assert_eq!(entry.network.listen, LISTEN[index]);
        assert_eq!(entry.network.durable_replies, index == 1);
        assert_eq!(&archive.read_module(name).unwrap().unwrap(), module);
    }
    assert!(archive.read_module("nobody").is_none());
}

#[test]
fn the_encoder_refuses_bad_entries() {
    let entry = |name| NewEntry {
        name,
        module: b"\0asm",
        memory_pages: 1,
        memory_max_pages: 1,
        listen: &[],
        durable_replies: false,
    };
    assert!(matches!(
        archive::encode(&[entry("")]),
        Err(Error::BadEntry { index: 0, .. })
    ));
    assert!(matches!(
        archive::encode(&[entry("two words")]),
        Err(Error::BadEntry { index: 0, .. })
    ));
    let long = "x".repeat(archive::MAX_APP_NAME_LEN + 1);
    assert!(matches!(
        archive::encode(&[entry(&long)]),
        Err(Error::BadEntry { index: 0, .. })
    ));
    assert_eq!(
        archive::encode(&[entry("a"), entry("a")]),
        Err(Error::DuplicateName { name: "a".into() })
    );
    let too_big = NewEntry {
        memory_pages: 2,
        ..entry("a")
    };
    assert!(matches!(
        archive::encode(&[entry("b"), too_big]),
        Err(Error::BadEntry { index: 1, .. })
    ));
    let over_4_gib = NewEntry {
        memory_max_pages: archive::MAX_MEMORY_PAGES + 1,
        ..entry("a")
    };
    assert!(matches!(
        archive::encode(&[over_4_gib]),
        Err(Error::BadEntry { index: 0, .. })
    ));
    for (listen, error) in [
        (&[80, 0][..], ListenError::PortZero),
        (&[80, 81, 80], ListenError::DuplicatePort { port: 80 }),
        (
            &[1, 2, 3, 4, 5, 6, 7, 8, 9],
            ListenError::TooManyPorts { count: 9 },
        ),
    ] {
        let listening = NewEntry {
            listen,
            ..entry("b")
        };
        assert_eq!(
            archive::encode(&[entry("a"), listening]),
            Err(Error::BadListen { index: 1, error })
        );
    }
    let many: Vec<String> = (0..=archive::MAX_ENTRIES)
        .map(|index| format!("app{index}"))
        .collect();
    let many: Vec<NewEntry<'_>> = many.iter().map(|name| entry(name)).collect();
    assert_eq!(
        archive::encode(&many),
        Err(Error::TooManyEntries {
            count: archive::MAX_ENTRIES as u64 + 1
        })
    );
}

#[test]
fn a_domain_image_or_a_blank_disk_is_not_an_archive() {
    assert_eq!(open(vec![0; BLOCK_SIZE]).unwrap_err(), Error::BadMagic);
    let image = persist::Image::create(
        MemoryDevice::new(64),
        persist::NewDomain {
            id: persist::DomainId(1),
            name: "counter",
            module: b"\0asm\x01\0\0\0",
            memory_pages: 0,
            memory_max_pages: 1,
            args: Vec::new(),
            env: Vec::new(),
            network: Default::default(),
        },
    )
    .unwrap();
    let bytes = image.into_device().into_bytes();
    assert!(!archive::has_magic(&bytes));
    assert_eq!(open(bytes).unwrap_err(), Error::BadMagic);
}

#[test]
fn damaged_fields_are_named() {
    let (_, bytes) = sample();

    let mut header = bytes.clone();
    header[20] ^= 1;
    assert_eq!(open(header).unwrap_err(), Error::HeaderChecksumMismatch);

    let mut version = bytes.clone();
    version[8] = 3;
    reseal_header(&mut version);
    assert_eq!(
        open(version).unwrap_err(),
        Error::UnsupportedVersion {
            found: 3,
            supported: 2
        }
    );

    let mut count = bytes.clone();
    count[12..16].copy_from_slice(&10_000u32.to_le_bytes());
    reseal_header(&mut count);
    assert_eq!(
        open(count).unwrap_err(),
        Error::TooManyEntries { count: 10_000 }
    );

    let mut table = bytes.clone();
    table[64 + 2] ^= 0x40;
    assert_eq!(open(table).unwrap_err(), Error::TableChecksumMismatch);

    let mut module = bytes.clone();
    module[BLOCK_SIZE + 17] ^= 0xff;
    let mut archive = open(module).unwrap();
    assert_eq!(
        archive.read_module("counter").unwrap().unwrap_err(),
        Error::ModuleChecksumMismatch {
            name: "counter".into()
        }
    );
    assert!(archive.read_module("kv").unwrap().is_ok());
}

#[test]
fn an_archive_cut_short_says_truncated() {
    let (_, bytes) = sample();
    let block_count = bytes.len() / BLOCK_SIZE;
    for kept_blocks in 1..block_count {
        let error = open(bytes[..kept_blocks * BLOCK_SIZE].to_vec()).unwrap_err();
        assert!(
            matches!(error, Error::Truncated { .. }),
            "{kept_blocks} blocks: {error}"
        );
    }
    assert!(matches!(
        open(Vec::new()).unwrap_err(),
        Error::Truncated { .. }
    ));
}

#[test]
fn an_archive_cut_mid_block_never_yields_a_wrong_module() {
    // A copy cut at any byte and padded with zeros (as a disk would be).
    let (modules, bytes) = sample();
    for kept_bytes in (0..bytes.len()).step_by(97) {
        let mut cut = bytes[..kept_bytes].to_vec();
        cut.resize(bytes.len(), 0);
        check_never_wrong(cut, &modules);
    }
}

/// Opens `bytes` and reads every module: errors are fine, a module that
/// reads back must be the one written.
fn check_never_wrong(bytes: Vec<u8>, modules: &[Vec<u8>]) {
    let Ok(mut archive) = open(bytes) else {
        return;
    };
    let names: Vec<String> = archive
        .entries()
        .iter()
        .map(|entry| entry.name.clone())
        .collect();
    for name in names {
        if let Some(Ok(module)) = archive.read_module(&name) {
            let position = ["counter", "kv", "life"]
                .iter()
                .position(|known| *known == name);
            let expected = position.map(|position| &modules[position]);
            assert_eq!(Some(&module), expected, "{name} read back wrong");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn flipped_bytes_give_an_error_or_the_right_modules(
        flips in prop::collection::vec((0usize..4 * BLOCK_SIZE, 1u8..=255), 1..8)
    ) {
        let (modules, mut bytes) = sample();
        for (position, mask) in flips {
            let position = position % bytes.len();
            bytes[position] ^= mask;
        }
        check_never_wrong(bytes, &modules);
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..3 * BLOCK_SIZE)) {
        let mut bytes = bytes;
        // Garbage behind a valid magic, version and checksums, so that the
        // parser gets as far as the entries.
        if bytes.len() >= 64 {
            bytes[..8].copy_from_slice(&archive::MAGIC);
            bytes[8..12].copy_from_slice(&archive::VERSION.to_le_bytes());
            let entry_count = u32::from(bytes[12] % 8);
            bytes[12..16].copy_from_slice(&entry_count.to_le_bytes());
            let table_end = 64 + entry_count as usize * archive::entry_len(archive::VERSION);
            if table_end <= bytes.len() {
                let crc = persist::crc32c(&bytes[64..table_end]);
                bytes[24..28].copy_from_slice(&crc.to_le_bytes());
            }
            reseal_header(&mut bytes);
        }
        bytes.resize(bytes.len().div_ceil(BLOCK_SIZE) * BLOCK_SIZE, 0);
        if let Ok(mut archive) = open(bytes) {
            let names: Vec<String> =
                archive.entries().iter().map(|entry| entry.name.clone()).collect();
            for name in names {
                let _ = archive.read_module(&name);
            }
        }
    }

    #[test]
    fn any_entries_round_trip(
        lens in prop::collection::vec(0usize..9000, 0..6),
        max_pages in 0u64..=archive::MAX_MEMORY_PAGES,
    ) {
        let modules: Vec<Vec<u8>> =
            lens.iter().enumerate().map(|(index, len)| module(index as u8, *len)).collect();
        let names: Vec<String> = (0..modules.len()).map(|index| format!("app-{index}")).collect();
        let entries: Vec<NewEntry<'_>> = names
            .iter()
            .zip(&modules)
            .map(|(name, module)| NewEntry {
                name,
                module,
                memory_pages: max_pages / 2,
                memory_max_pages: max_pages,
                listen: &[8080],
                durable_replies: true,
            })
            .collect();
        let mut archive = open(archive::encode(&entries).unwrap()).unwrap();
        for (name, module) in names.iter().zip(&modules) {
            prop_assert_eq!(&archive.read_module(name).unwrap().unwrap(), module);
        }
    }
}

/// Where entry `index`'s network part starts in a version 2 archive.
fn network_at(index: usize) -> usize {
    64 + index * archive::entry_len(archive::VERSION) + archive::entry_len(1)
}

/// Puts the table's and the header's CRCs right after a test changed an
/// entry of an archive of `entry_count` entries of `version`.
fn reseal_table(bytes: &mut [u8], version: u32, entry_count: usize) {
    let table_end = 64 + entry_count * archive::entry_len(version);
    let crc = persist::crc32c(&bytes[64..table_end]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    reseal_header(bytes);
}

#[test]
fn hostile_network_parts_are_refused_by_name() {
    let (_, bytes) = sample();
    let refused = |change: &dyn Fn(&mut [u8])| {
        let mut bytes = bytes.clone();
        change(&mut bytes);
        reseal_table(&mut bytes, archive::VERSION, 3);
        open(bytes).unwrap_err()
    };
    // Entry 1 declares port 6379: count at 16, flags at 17.
    let at = network_at(1);
    assert_eq!(
        refused(&|bytes| bytes[at + 16] = 9),
        Error::BadListen {
            index: 1,
            error: ListenError::TooManyPorts { count: 9 }
        }
    );
    assert_eq!(
        refused(&|bytes| bytes[at + 16] = 255),
        Error::BadListen {
            index: 1,
            error: ListenError::TooManyPorts { count: 255 }
        }
    );
    assert_eq!(
        refused(&|bytes| bytes[at..at + 2].copy_from_slice(&[0, 0])),
        Error::BadListen {
            index: 1,
            error: ListenError::PortZero
        }
    );
    assert_eq!(
        refused(&|bytes| {
            bytes[at + 2..at + 4].copy_from_slice(&6379u16.to_le_bytes());
            bytes[at + 16] = 2;
        }),
        Error::BadListen {
            index: 1,
            error: ListenError::DuplicatePort { port: 6379 }
        }
    );
    assert_eq!(
        refused(&|bytes| bytes[at + 4] = 1),
        Error::BadEntry {
            index: 1,
            reason: "listen ports past the port count"
        }
    );
    assert_eq!(
        refused(&|bytes| bytes[at + 17] = 0b10),
        Error::BadEntry {
            index: 1,
            reason: "unknown network flags"
        }
    );
    assert_eq!(
        refused(&|bytes| bytes[at + 31] = 1),
        Error::BadEntry {
            index: 1,
            reason: "reserved bytes are not zero"
        }
    );
    let words = refused(&|bytes| bytes[at + 16] = 9).to_string();
    assert_eq!(
        words,
        "entry 1: 9 listen ports declared (at most 8 allowed)"
    );
}

/// The sample as code before the network part wrote it: version 1, each
/// entry without its network part. The modules stay where they are.
fn version_1(bytes: &[u8], entry_count: usize) -> Vec<u8> {
    let mut old = bytes.to_vec();
    let (record_len, entry_len) = (archive::entry_len(1), archive::entry_len(2));
    let old_table: Vec<u8> = bytes[64..64 + entry_count * entry_len]
        .chunks_exact(entry_len)
        .flat_map(|entry| entry[..record_len].to_vec())
        .collect();
    old[64..64 + entry_count * entry_len].fill(0);
    old[64..64 + old_table.len()].copy_from_slice(&old_table);
    old[8..12].copy_from_slice(&1u32.to_le_bytes());
    reseal_table(&mut old, 1, entry_count);
    old
}

#[test]
fn a_version_1_archive_still_reads_and_declares_no_network() {
    let (modules, bytes) = sample();
    let mut archive = open(version_1(&bytes, 3)).unwrap();
    for (index, name) in ["counter", "kv", "life"].iter().enumerate() {
        let entry = archive.find(name).unwrap().clone();
        assert_eq!(entry.memory_pages, index as u64);
        assert_eq!(entry.network, persist::NetworkDeclaration::default());
        assert_eq!(archive.read_module(name).unwrap().unwrap(), modules[index]);
    }
}
