//! Named snapshots: the on-disk table, its tags and its bounds.
//!
//! A snapshot is a committed state kept by name: the root of its page map,
//! its metadata chain and a few figures. The table is a postcard-encoded
//! record in a chain of its own, which the superblock names
//! (`Superblock::snapshot_table`); an image without snapshots has none, and
//! its superblock says format version 1 as before, byte for byte. An image
//! with snapshots says version 2, so code that predates snapshots refuses it
//! (`UnsupportedVersion`) rather than free the blocks only snapshots hold.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use crate::layout::{ChainPointer, Pointer};

/// The most snapshots one image keeps.
pub const MAX_SNAPSHOTS: usize = 64;

/// The longest snapshot tag, in bytes.
pub const MAX_TAG_LEN: usize = 64;

/// The longest encoded table: far above what [`MAX_SNAPSHOTS`] entries
/// take, and refused before a chain is read.
pub(crate) const MAX_TABLE_BYTES: u64 = 64 * 1024;

/// A snapshot's number: unique in its image, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotId(pub u64);

/// Honours width and alignment, for tables.
impl fmt::Display for SnapshotId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, formatter)
    }
}

/// Why a tag cannot name a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagError {
    /// Empty or longer than [`MAX_TAG_LEN`] bytes.
    Length {
        /// The tag's length.
        len_bytes: usize,
    },
    /// A byte outside the tag alphabet (see [`check_tag`]).
    Character {
        /// Where it is.
        at: usize,
        /// The byte.
        byte: u8,
    },
}

impl fmt::Display for TagError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length { len_bytes } => write!(
                formatter,
                "a tag of {len_bytes} bytes (1 to {MAX_TAG_LEN} allowed)"
            ),
            Self::Character { at, byte } => write!(
                formatter,
                "a tag with byte {byte:#04x} at {at} (tags are ASCII letters, digits, \
                 '-', '_' and '.', and start with a letter or digit)"
            ),
        }
    }
}

impl core::error::Error for TagError {}

/// Whether `tag` can name a snapshot: 1 to [`MAX_TAG_LEN`] ASCII letters,
/// digits, `-`, `_` and `.`, starting with a letter or digit (the alphabet
/// of domain names, [`crate::check_name`], and for the same reasons: a tag
/// is a console word and is printed).
pub fn check_tag(tag: &str) -> Result<(), TagError> {
    let bytes = tag.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_TAG_LEN {
        return Err(TagError::Length {
            len_bytes: bytes.len(),
        });
    }
    match crate::metadata::outside_name_alphabet(bytes) {
        Some((at, byte)) => Err(TagError::Character { at, byte }),
        None => Ok(()),
    }
}

/// One snapshot as the table stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    pub(crate) id: u64,
    pub(crate) tag: String,
    /// The caller's time of creation (the kernel passes its wall clock in
    /// seconds since 1970; persist only stores it).
    pub(crate) created: u64,
    /// The domain's clock at the snapshot, from its metadata.
    pub(crate) clock_ns: u64,
    /// The commit that took it.
    pub(crate) sequence: u64,
    pub(crate) pages_stored: u64,
    /// The page map's root block and CRC (block 0: no page).
    pub(crate) page_map_block: u64,
    pub(crate) page_map_crc: u32,
    /// The metadata chain's first block, CRC and length.
    pub(crate) metadata_block: u64,
    pub(crate) metadata_crc: u32,
    pub(crate) metadata_len_bytes: u64,
}

impl StoredSnapshot {
    pub(crate) fn page_map_root(&self) -> Pointer {
        Pointer::new(self.page_map_block, self.page_map_crc)
    }

    pub(crate) fn metadata_pointer(&self) -> ChainPointer {
        ChainPointer {
            first: Pointer::new(self.metadata_block, self.metadata_crc),
            len_bytes: zerocopy::little_endian::U64::new(self.metadata_len_bytes),
            reserved: zerocopy::little_endian::U64::ZERO,
        }
    }
}

/// The snapshot table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotTable {
    /// The number the next snapshot takes.
    pub(crate) next_id: u64,
    /// The snapshots, oldest first.
    pub(crate) entries: Vec<StoredSnapshot>,
}

impl SnapshotTable {
    pub(crate) fn find(&self, tag: &str) -> Option<&StoredSnapshot> {
        self.entries.iter().find(|entry| entry.tag == tag)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        // Encoding a table of strings and integers into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes and checks a table read from a disk: within the bounds,
    /// tags valid and unique, numbers unique and below `next_id`.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let table: Self = postcard::from_bytes(bytes).map_err(|_| "undecodable snapshot table")?;
        if table.entries.is_empty() {
            return Err("an empty snapshot table (an image without snapshots has none)");
        }
        if table.entries.len() > MAX_SNAPSHOTS {
            return Err("more snapshots than an image may keep");
        }
        for (position, entry) in table.entries.iter().enumerate() {
            if check_tag(&entry.tag).is_err() {
                return Err("a snapshot tag that is not a valid tag");
            }
            if entry.id >= table.next_id {
                return Err("a snapshot number at or past the next one");
            }
            let earlier = &table.entries[..position];
            if earlier.iter().any(|other| other.tag == entry.tag) {
                return Err("two snapshots with one tag");
            }
            if earlier.iter().any(|other| other.id == entry.id) {
                return Err("two snapshots with one number");
            }
            if entry.metadata_block == 0 {
                return Err("a snapshot without metadata");
            }
        }
        Ok(table)
    }
}

/// One snapshot as [`crate::Image::snapshots`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Its number.
    pub id: SnapshotId,
    /// Its tag.
    pub tag: String,
    /// The time of creation the caller gave.
    pub created: u64,
    /// The domain's clock then, in nanoseconds.
    pub clock_ns: u64,
    /// The commit that took it.
    pub sequence: u64,
    /// Pages it stores.
    pub pages_stored: u64,
    /// Blocks it holds that neither the live state nor another snapshot
    /// reaches: what deleting it gives back.
    pub exclusive_blocks: u64,
}

/// A UTC date and time for seconds since 1970 (Howard Hinnant's
/// days-to-civil algorithm).
pub fn date_text(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let second_of_day = seconds % 86_400;
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// The domain clock as `seconds.milliseconds`.
pub fn clock_text(clock_ns: u64) -> String {
    format!(
        "{}.{:03}",
        clock_ns / 1_000_000_000,
        clock_ns / 1_000_000 % 1000
    )
}

/// The list in `qemu-img snapshot -l`'s shape.
pub fn table_text(snapshots: &[SnapshotInfo]) -> String {
    if snapshots.is_empty() {
        return "no snapshots\n".into();
    }
    let tag_width = snapshots
        .iter()
        .map(|info| info.tag.len())
        .max()
        .unwrap_or(3)
        .max(3);
    let mut text = format!(
        "{:<4} {:<tag_width$} {:<19} {:>12} {:>8} {:>11}\n",
        "ID", "TAG", "DATE", "DOMAIN CLOCK", "PAGES", "OWN BLOCKS"
    );
    for info in snapshots {
        text.push_str(&format!(
            "{:<4} {:<tag_width$} {:<19} {:>12} {:>8} {:>11}\n",
            info.id,
            info.tag,
            date_text(info.created),
            clock_text(info.clock_ns),
            info.pages_stored,
            info.exclusive_blocks
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn entry(id: u64, tag: &str) -> StoredSnapshot {
        StoredSnapshot {
            id,
            tag: tag.into(),
            created: 0,
            clock_ns: 0,
            sequence: 1,
            pages_stored: 0,
            page_map_block: 0,
            page_map_crc: 0,
            metadata_block: 5,
            metadata_crc: 0,
            metadata_len_bytes: 10,
        }
    }

    #[test]
    fn tags_follow_the_name_alphabet() {
        assert_eq!(check_tag("before-upgrade.1"), Ok(()));
        assert_eq!(check_tag(""), Err(TagError::Length { len_bytes: 0 }));
        assert!(check_tag(&"a".repeat(64)).is_ok());
        assert_eq!(
            check_tag(&"a".repeat(65)),
            Err(TagError::Length { len_bytes: 65 })
        );
        assert_eq!(
            check_tag("-x"),
            Err(TagError::Character { at: 0, byte: b'-' })
        );
        assert_eq!(
            check_tag("a b"),
            Err(TagError::Character { at: 1, byte: b' ' })
        );
    }

    #[test]
    fn a_table_round_trips_and_hostile_ones_are_refused() {
        let table = SnapshotTable {
            next_id: 3,
            entries: vec![entry(1, "a"), entry(2, "b")],
        };
        assert_eq!(SnapshotTable::decode(&table.encode()), Ok(table.clone()));
        let mut twice = table.clone();
        twice.entries[1].tag = "a".into();
        assert!(SnapshotTable::decode(&twice.encode()).is_err());
        let mut numbered = table.clone();
        numbered.entries[1].id = 1;
        assert!(SnapshotTable::decode(&numbered.encode()).is_err());
        let mut future = table.clone();
        future.next_id = 2;
        assert!(SnapshotTable::decode(&future.encode()).is_err());
        let mut bad_tag = table.clone();
        bad_tag.entries[0].tag = "a]b".into();
        assert!(SnapshotTable::decode(&bad_tag.encode()).is_err());
        let many = SnapshotTable {
            next_id: 100,
            entries: (0..65)
                .map(|id| entry(id, &alloc::format!("t{id}")))
                .collect(),
        };
        assert!(SnapshotTable::decode(&many.encode()).is_err());
        assert!(SnapshotTable::decode(&[0xff; 7]).is_err());
    }

    #[test]
    fn dates_and_tables_read_as_qemu_img_shows_them() {
        assert_eq!(date_text(0), "1970-01-01 00:00:00");
        assert_eq!(date_text(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(date_text(1_795_603_661), "2026-11-25 10:47:41");
        assert_eq!(clock_text(12_345_678_901), "12.345");
        assert_eq!(table_text(&[]), "no snapshots\n");
        assert_eq!(format!("{:<4}|", SnapshotId(7)), "7   |");
    }
}
