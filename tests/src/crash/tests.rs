//! Crash states from hand-made traces and from persist run on the host.

use std::io::{Read, Write};
use std::net::TcpStream;

use anyhow::{Result, ensure};
use persist::{BLOCK_SIZE, BlockDevice, DeviceError, Image, MemoryDevice, NewDomain, PAGE_SIZE};

use super::check::{Finding, check_recording};
use super::disk::{Block, SECTOR_SIZE, SparseDisk};
use super::nbd::RecordingServer;
use super::states::{Plan, StateKind, for_each_state};
use super::trace::{Durability, Event, Recording, superblock_sequence};

const PLAN: Plan = Plan {
    seed: 7,
    samples_per_window: 12,
};

fn domain() -> NewDomain<'static> {
    NewDomain {
        id: persist::DomainId(0x1234),
        name: "crash",
        module: b"\0asm\x01\0\0\0 a pretend module",
        memory_pages: 1,
        memory_max_pages: 16,
        args: Vec::new(),
        env: Vec::new(),
        network: Default::default(),
    }
}

fn page(seed: u8) -> [u8; PAGE_SIZE] {
    let mut page = [seed; PAGE_SIZE];
    page[0] = 1;
    page
}

/// A block device that records what persist does to it, as the NBD
/// server records the kernel, and can drop its flushes (a no-op FLUSH).
struct Recorder {
    disk: MemoryDevice,
    events: Vec<Event>,
    is_flush_dropped: bool,
}

impl BlockDevice for Recorder {
    fn read_block(&mut self, index: u64, buffer: &mut Block) -> Result<(), DeviceError> {
        self.disk.read_block(index, buffer)
    }

    fn write_block(&mut self, index: u64, buffer: &Block) -> Result<(), DeviceError> {
        self.events.push(Event::Write {
            offset_bytes: index * BLOCK_SIZE as u64,
            data: buffer.to_vec(),
        });
        self.disk.write_block(index, buffer)
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        if !self.is_flush_dropped {
            self.events.push(Event::Flush);
        }
        Ok(())
    }

    fn block_count(&self) -> u64 {
        self.disk.block_count()
    }
}

/// An image created, then a few commits of staged pages, each asked for and
/// confirmed as the console would, recorded from the created image on.
fn recorded_workload(is_flush_dropped: bool) -> Result<Recording> {
    let image = Image::create(MemoryDevice::new(256), domain())?;
    let created = image.into_device();
    let initial = sparse_of(&created);
    let mut image = Image::open(Recorder {
        disk: created,
        events: Vec::new(),
        is_flush_dropped,
    })?;
    for round in 0..4u8 {
        for slot in 0..3 {
            image.stage_page(u64::from(slot * 5 + round % 2), &page(round * 3 + slot))?;
        }
        image.device_mut().events.push(Event::CheckpointAsked);
        image.commit()?;
        image.device_mut().events.push(Event::CheckpointConfirmed);
    }
    Ok(Recording {
        initial,
        events: image.into_device().events,
    })
}

fn sparse_of(device: &MemoryDevice) -> SparseDisk {
    let mut disk = SparseDisk::new(device.as_bytes().len() as u64);
    disk.write(0, device.as_bytes());
    disk
}

#[test]
fn a_superblock_is_read_where_persist_writes_it() -> Result<()> {
    let mut image = Image::create(MemoryDevice::new(64), domain())?;
    image.commit()?;
    image.commit()?;
    let sequence = image.sequence();
    let bytes = image.into_device().as_bytes().to_vec();
    let slot = |index: usize| -> Result<Block> {
        Ok(bytes[index * BLOCK_SIZE..(index + 1) * BLOCK_SIZE].try_into()?)
    };
    let newest = slot((sequence % 2) as usize)?;
    let older = slot(((sequence + 1) % 2) as usize)?;
    assert_eq!(superblock_sequence(&newest), Some(sequence));
    assert_eq!(superblock_sequence(&older), Some(sequence - 1));
    let mut torn = newest;
    torn[SECTOR_SIZE..].copy_from_slice(&older[SECTOR_SIZE..]);
    assert_eq!(superblock_sequence(&torn), None);
    assert_eq!(superblock_sequence(&[0; BLOCK_SIZE]), None);
    Ok(())
}

fn write(block: u64, byte: u8, blocks: usize) -> Event {
    Event::Write {
        offset_bytes: block * BLOCK_SIZE as u64,
        data: vec![byte; blocks * BLOCK_SIZE],
    }
}

#[test]
fn a_hand_made_trace_gives_the_states_a_drive_allows() -> Result<()> {
    let recording = Recording {
        initial: SparseDisk::new(8 * BLOCK_SIZE as u64),
        events: vec![
            write(2, 0xaa, 1),
            Event::Flush,
            write(0, 0xbb, 1),
            write(1, 0xcc, 2),
            write(1, 0xdd, 1),
        ],
    };
    let mut seen = Vec::new();
    let visited = for_each_state(&recording, &PLAN, |base, state| {
        seen.push((state.kind, state.cut, state.overlay.clone(), base.clone()));
        Ok(())
    })?;
    // Window 1: at the start, all in order, 14 tears of its one block.
    // Window 2: at the flush, all in order, samples (4 pieces: up to 40).
    assert_eq!(visited, 1 + 1 + 14 + 1 + 1 + 12);
    assert_eq!(seen.len(), visited);
    let (kind, cut, overlay, base) = &seen[0];
    assert_eq!((*kind, *cut, overlay.len()), (StateKind::AtFlush, 0, 0));
    assert_eq!(base.block(2), &[0; BLOCK_SIZE]);
    let (kind, cut, overlay, _) = &seen[1];
    assert_eq!((*kind, *cut), (StateKind::AllInOrder, 1));
    assert_eq!(overlay.get(&2).map(|block| block[0]), Some(0xaa));
    for (kind, cut, overlay, _) in &seen[2..16] {
        assert_eq!((*kind, *cut), (StateKind::TornSingle, 1));
        let block = &overlay[&2];
        let new_sectors = block
            .chunks(SECTOR_SIZE)
            .filter(|sector| sector[0] == 0xaa)
            .count();
        assert!((1..8).contains(&new_sectors), "{new_sectors} sectors new");
    }
    let (kind, cut, overlay, base) = &seen[16];
    assert_eq!((*kind, *cut, overlay.len()), (StateKind::AtFlush, 2, 0));
    assert_eq!(
        base.block(2)[0],
        0xaa,
        "the flushed write is in every later state"
    );
    let (kind, cut, overlay, _) = &seen[17];
    assert_eq!((*kind, *cut), (StateKind::AllInOrder, 5));
    let firsts: Vec<u8> = (0..3).map(|block| overlay[&block][0]).collect();
    assert_eq!(
        firsts,
        [0xbb, 0xdd, 0xcc],
        "the later write to block 1 wins"
    );
    for (kind, cut, overlay, base) in &seen[18..] {
        assert_eq!(*kind, StateKind::Sampled);
        assert!((3..=5).contains(cut));
        assert_eq!(base.block(2)[0], 0xaa);
        for (&block, contents) in overlay {
            // Each sector is as at the flush or as a write issued before
            // the cut left it.
            let allowed: &[u8] = match (block, *cut) {
                (0, _) => &[0, 0xbb],
                (1, 3) => &[0],
                (1, 4) | (2, 4) => &[0, 0xcc],
                (1, _) => &[0, 0xcc, 0xdd],
                (2, _) => &[0, 0xcc],
                _ => &[],
            };
            for sector in contents.chunks(SECTOR_SIZE) {
                assert!(
                    allowed.contains(&sector[0]),
                    "block {block} cut {cut}: {:#x}",
                    sector[0]
                );
                assert!(
                    sector.iter().all(|&byte| byte == sector[0]),
                    "a sector is never torn"
                );
            }
        }
    }
    // The same seed draws the same states.
    let mut again = Vec::new();
    for_each_state(&recording, &PLAN, |_, state| {
        again.push((state.cut, state.overlay.clone()));
        Ok(())
    })?;
    let first: Vec<_> = seen
        .iter()
        .map(|(_, cut, overlay, _)| (*cut, overlay.clone()))
        .collect();
    assert_eq!(first, again);
    Ok(())
}

fn superblock(sequence: u64) -> Vec<u8> {
    let mut block = vec![0u8; BLOCK_SIZE];
    block[..8].copy_from_slice(b"AMBERIMG");
    block[16..24].copy_from_slice(&sequence.to_le_bytes());
    let checksum = persist::crc32c(&block[..BLOCK_SIZE - 4]);
    block[BLOCK_SIZE - 4..].copy_from_slice(&checksum.to_le_bytes());
    block
}

#[test]
fn a_commit_is_required_once_flushed_or_confirmed() {
    let mut initial = SparseDisk::new(16 * BLOCK_SIZE as u64);
    initial.write(BLOCK_SIZE as u64, &superblock(1));
    let at = |slot: u64, sequence| Event::Write {
        offset_bytes: slot * BLOCK_SIZE as u64,
        data: superblock(sequence),
    };
    let recording = Recording {
        initial,
        events: vec![
            write(5, 1, 1),
            at(0, 2),
            Event::Flush,
            Event::CheckpointAsked,
            at(1, 3),
            at(0, 4),
            Event::CheckpointConfirmed,
            Event::CheckpointConfirmed,
        ],
    };
    let durability = Durability::of(&recording);
    assert_eq!(
        durability.required,
        [1, 1, 1, 2, 2, 2, 2, 3, 3].map(Some).to_vec(),
        "the oldest superblock since the ask counts as confirmed"
    );
    assert_eq!(durability.unbacked_confirmations, [7]);
}

#[test]
fn persist_on_a_flushing_disk_loses_no_commit_in_any_crash_state() -> Result<()> {
    let recording = recorded_workload(false)?;
    let report = check_recording(&recording, &PLAN)?;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert!(report.states > 100, "{}", report.summary());
    assert_eq!(report.newest_required, Some(5), "{}", report.summary());
    Ok(())
}

#[test]
fn the_check_finds_lost_commits_when_flushes_do_nothing() -> Result<()> {
    let recording = recorded_workload(true)?;
    assert_eq!(recording.counts().flushes, 0);
    let report = check_recording(&recording, &PLAN)?;
    assert!(
        report.lost() > 0 && report.torn() > 0,
        "{}",
        report.summary()
    );
    assert!(
        report
            .findings
            .iter()
            .all(|finding| !matches!(finding, Finding::UnbackedConfirmation { .. })),
        "{:#?}",
        report.findings
    );
    Ok(())
}

/// A minimal NBD client: the fixed-newstyle handshake with NBD_OPT_GO.
fn handshake(stream: &mut TcpStream) -> Result<(u64, u16)> {
    let mut greeting = [0u8; 18];
    stream.read_exact(&mut greeting)?;
    ensure!(
        &greeting[..16] == b"NBDMAGICIHAVEOPT",
        "greeting {greeting:?}"
    );
    stream.write_all(&3u32.to_be_bytes())?;
    // An option the server does not know first: it must say unsupported.
    let mut option = Vec::new();
    option.extend_from_slice(b"IHAVEOPT");
    option.extend_from_slice(&8u32.to_be_bytes());
    option.extend_from_slice(&0u32.to_be_bytes());
    option.extend_from_slice(b"IHAVEOPT");
    option.extend_from_slice(&7u32.to_be_bytes());
    option.extend_from_slice(&6u32.to_be_bytes());
    option.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    stream.write_all(&option)?;
    let mut reply = [0u8; 20];
    stream.read_exact(&mut reply)?;
    ensure!(u32::from_be_bytes(reply[12..16].try_into()?) == (1 << 31) + 1);
    stream.read_exact(&mut reply)?;
    ensure!(
        u32::from_be_bytes(reply[12..16].try_into()?) == 3,
        "not NBD_REP_INFO"
    );
    let mut info = [0u8; 12];
    stream.read_exact(&mut info)?;
    stream.read_exact(&mut reply)?;
    ensure!(
        u32::from_be_bytes(reply[12..16].try_into()?) == 1,
        "not NBD_REP_ACK"
    );
    Ok((
        u64::from_be_bytes(info[2..10].try_into()?),
        u16::from_be_bytes(info[10..12].try_into()?),
    ))
}

fn request(
    stream: &mut TcpStream,
    command: u16,
    offset: u64,
    length: u32,
    data: &[u8],
) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&0x2560_9513u32.to_be_bytes());
    bytes.extend_from_slice(&0u16.to_be_bytes());
    bytes.extend_from_slice(&command.to_be_bytes());
    bytes.extend_from_slice(&42u64.to_be_bytes());
    bytes.extend_from_slice(&offset.to_be_bytes());
    bytes.extend_from_slice(&length.to_be_bytes());
    bytes.extend_from_slice(data);
    stream.write_all(&bytes)?;
    if command == 2 {
        return Ok(Vec::new());
    }
    let mut reply = [0u8; 16];
    stream.read_exact(&mut reply)?;
    ensure!(reply[..4] == 0x6744_6698u32.to_be_bytes() && reply[8..] == 42u64.to_be_bytes());
    ensure!(reply[4..8] == [0; 4], "error {:?}", &reply[4..8]);
    let mut data = vec![0u8; if command == 0 { length as usize } else { 0 }];
    stream.read_exact(&mut data)?;
    Ok(data)
}

#[test]
fn the_nbd_server_serves_and_records_writes_and_flushes() -> Result<()> {
    let mut disk = SparseDisk::new(64 * BLOCK_SIZE as u64);
    disk.write(3 * BLOCK_SIZE as u64, &[9; BLOCK_SIZE]);
    let server = RecordingServer::serve(disk)?;
    let mut stream = TcpStream::connect(("127.0.0.1", server.disk().port))?;
    let (size, flags) = handshake(&mut stream)?;
    assert_eq!(size, 64 * BLOCK_SIZE as u64);
    assert_eq!(
        flags & 0b101,
        0b101,
        "NBD_FLAG_HAS_FLAGS and NBD_FLAG_SEND_FLUSH"
    );
    request(&mut stream, 1, 512, 1024, &[7; 1024])?;
    server.mark(Event::CheckpointAsked);
    request(&mut stream, 3, 0, 0, &[])?;
    let read = request(&mut stream, 0, 0, 3 * BLOCK_SIZE as u32 + 8, &[])?;
    assert!(read[..512].iter().all(|&byte| byte == 0));
    assert!(read[512..1536].iter().all(|&byte| byte == 7));
    assert!(read[3 * BLOCK_SIZE..].iter().all(|&byte| byte == 9));
    request(&mut stream, 2, 0, 0, &[])?;
    drop(stream);
    let recording = server.finish()?;
    assert_eq!(
        recording.events,
        [
            Event::Write {
                offset_bytes: 512,
                data: vec![7; 1024]
            },
            Event::CheckpointAsked,
            Event::Flush
        ]
    );
    assert_eq!(recording.initial.block(3), &[9; BLOCK_SIZE]);
    Ok(())
}

#[test]
fn a_saved_recording_loads_as_it_was() -> Result<()> {
    let recording = recorded_workload(false)?;
    let directory = crate::work_dir("crash-unit-saved-recording")?;
    recording.save(&directory)?;
    let loaded = Recording::load(&directory)?;
    assert_eq!(loaded.events, recording.events);
    assert_eq!(loaded.initial, recording.initial);
    std::fs::write(directory.join("events.bin"), [0, 1, 2])?;
    assert!(
        Recording::load(&directory).is_err(),
        "a cut write must not load"
    );
    Ok(())
}
