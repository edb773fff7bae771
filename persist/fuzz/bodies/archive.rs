//! Fuzz body: the apps archive on arbitrary bytes, and with its CRCs re-signed.

use persist::archive::{self, Archive, NewEntry};
use persist::{BLOCK_SIZE, MemoryDevice, crc32c};

/// Opens `data` as an archive disk (padded to whole blocks) and reads every
/// module; then does the same with the header's and the table's CRC-32C
/// signed again, so that damage reaches the field checks. What opens must
/// encode again to an archive with the same entries.
pub fn archive(data: &[u8]) -> usize {
    let mut opened = open_and_read(data);
    if data.len() >= 64 {
        opened += open_and_read(&resigned(data));
    }
    opened
}

/// `data` with the table's and the header's CRCs computed anew from the
/// entry count and version the header claims (within the bytes there are).
pub fn resigned(data: &[u8]) -> Vec<u8> {
    let mut bytes = data.to_vec();
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let entry_count = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
    let entry_len = archive::entry_len(version);
    let table_end = (64 + entry_count.min(archive::MAX_ENTRIES) * entry_len).min(bytes.len());
    let table_crc = crc32c(&bytes[64..table_end]);
    bytes[24..28].copy_from_slice(&table_crc.to_le_bytes());
    let header_crc = crc32c(&bytes[..60]);
    bytes[60..64].copy_from_slice(&header_crc.to_le_bytes());
    bytes
}

fn open_and_read(data: &[u8]) -> usize {
    let mut bytes = data.to_vec();
    bytes.resize(data.len().div_ceil(BLOCK_SIZE).max(1) * BLOCK_SIZE, 0);
    let Ok(mut archive) = Archive::open(MemoryDevice::from_bytes(bytes)) else {
        return 0;
    };
    let entries = archive.entries().to_vec();
    assert!(entries.len() <= archive::MAX_ENTRIES);
    let mut modules = Vec::new();
    for entry in &entries {
        match archive.read_module(&entry.name) {
            Some(Ok(module)) => {
                assert_eq!(module.len() as u64, entry.len_bytes);
                modules.push(Some(module));
            }
            Some(Err(_)) => modules.push(None),
            None => panic!("an entry of the table is not found by its name"),
        }
    }
    // A network part that opened is one an image can declare.
    for entry in &entries {
        assert!(persist::check_listen(&entry.network.listen).is_ok());
    }
    // Every entry whose module reads checks out encodes again, with its
    // network declaration.
    let readable: Vec<NewEntry<'_>> = entries
        .iter()
        .zip(&modules)
        .filter_map(|(entry, module)| {
            module.as_ref().map(|module| NewEntry {
                name: &entry.name,
                module,
                memory_pages: entry.memory_pages,
                memory_max_pages: entry.memory_max_pages,
                listen: &entry.network.listen,
                durable_replies: entry.network.durable_replies,
            })
        })
        .collect();
    let encoded = archive::encode(&readable).expect("what an archive held encodes");
    let again = Archive::open(MemoryDevice::from_bytes(encoded)).expect("and opens");
    assert_eq!(again.entries().len(), readable.len());
    for (entry, new_entry) in again.entries().iter().zip(&readable) {
        assert_eq!(entry.network.listen, new_entry.listen);
        assert_eq!(entry.network.durable_replies, new_entry.durable_replies);
    }
    1
}
