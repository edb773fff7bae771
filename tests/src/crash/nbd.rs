//! A recording NBD server: QEMU's disk, every write and flush logged in order.
//!
//! It speaks the fixed-newstyle handshake and simple replies of the NBD
//! protocol (github.com/NetworkBlockDevice/nbd, doc/proto.md): options
//! NBD_OPT_EXPORT_NAME, NBD_OPT_INFO and NBD_OPT_GO (any export name is
//! this disk; every other option is answered NBD_REP_ERR_UNSUP, so QEMU
//! falls back to simple replies), and the commands READ, WRITE, FLUSH and
//! DISC, with NBD_FLAG_SEND_FLUSH advertised so that QEMU passes each guest
//! flush on. It serves one connection at a time from 127.0.0.1, in memory.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::disk::SparseDisk;
use super::trace::{Event, Recording};
use xtask::qemu::NbdDisk;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
const FLAG_NO_ZEROES: u16 = 1 << 1;
const CLIENT_FLAG_NO_ZEROES: u32 = 1 << 1;

const TRANSMISSION_HAS_FLAGS: u16 = 1 << 0;
const TRANSMISSION_SEND_FLUSH: u16 = 1 << 2;

const OPT_EXPORT_NAME: u32 = 1;
const OPT_ABORT: u32 = 2;
const OPT_INFO: u32 = 6;
const OPT_GO: u32 = 7;

const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
const INFO_EXPORT: u16 = 0;

const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;

const EINVAL: u32 = 22;
const ENOSPC: u32 = 28;

/// The longest option a client may send (an export name and info list).
const MAX_OPTION_BYTES: u32 = 4096;

/// The longest read or write: QEMU's NBD client sends at most 32 MiB.
const MAX_REQUEST_BYTES: u32 = 32 << 20;

/// How often a blocked read looks at the stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long [`RecordingServer::finish`] waits for the server to notice.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server and the harness share.
#[derive(Debug, Default)]
struct Shared {
    disk: SparseDisk,
    recording: Recording,
    /// Protocol errors the server met: a failure of the test.
    errors: Vec<String>,
    connections: usize,
}

/// A recording NBD server on a port of 127.0.0.1 serving one image.
#[derive(Debug)]
pub struct RecordingServer {
    port: u16,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RecordingServer {
    /// Serves a copy of the raw image at `image` (the file is not changed).
    pub fn start(image: &Path) -> Result<RecordingServer> {
        RecordingServer::serve(SparseDisk::from_file(image)?)
    }

    /// Serves `disk` from memory.
    pub fn serve(disk: SparseDisk) -> Result<RecordingServer> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the NBD server")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Mutex::new(Shared {
            recording: Recording {
                initial: disk.clone(),
                events: Vec::new(),
            },
            disk,
            ..Shared::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            std::thread::spawn(move || accept_loop(&listener, &shared, &stop))
        };
        Ok(RecordingServer {
            port,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// The disk to put in a `QemuConfig`'s `nbd_disks`.
    pub fn disk(&self) -> NbdDisk {
        NbdDisk { port: self.port }
    }

    /// Appends a harness mark to the trace, between the kernel's requests.
    pub fn mark(&self, event: Event) {
        lock(&self.shared).recording.events.push(event);
    }

    /// How many writes and flushes arrived so far.
    pub fn requests(&self) -> usize {
        lock(&self.shared)
            .recording
            .events
            .iter()
            .filter(|event| matches!(event, Event::Write { .. } | Event::Flush))
            .count()
    }

    /// Stops the server (QEMU must be gone or going) and returns the
    /// recording; an error if the protocol went wrong or QEMU never came.
    pub fn finish(mut self) -> Result<Recording> {
        self.stop_thread();
        let mut shared = lock(&self.shared);
        if let Some(error) = shared.errors.first() {
            bail!("the NBD server failed: {error}");
        }
        if shared.connections == 0 {
            bail!("QEMU never connected to the NBD server");
        }
        Ok(std::mem::take(&mut shared.recording))
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            lock(&self.shared)
                .errors
                .push("the server thread did not stop".into());
        }
    }
}

impl Drop for RecordingServer {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panicking server thread leaves the data as it was: still readable.
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn accept_loop(listener: &TcpListener, shared: &Mutex<Shared>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                lock(shared).connections += 1;
                if let Err(error) = serve_connection(stream, shared, stop) {
                    lock(shared).errors.push(format!("{error:#}"));
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(POLL_INTERVAL / 10);
            }
            Err(error) => {
                lock(shared).errors.push(format!("accepting: {error}"));
                return;
            }
        }
    }
}

/// Why a connection ended without an error.
#[derive(Debug)]
enum Ended {
    /// The client closed it (QEMU exited or was killed) or said NBD_CMD_DISC.
    Closed,
    /// The harness stopped the server.
    Stopped,
}

/// A stream whose reads give up when the server stops.
struct Connection<'a> {
    stream: TcpStream,
    stop: &'a AtomicBool,
}

impl Connection<'_> {
    /// Fills `buffer`; `Err(Ended)` when the client closed the connection
    /// or the server stopped before the first byte.
    fn read_exact(&mut self, buffer: &mut [u8]) -> Result<Result<(), Ended>> {
        let mut done = 0;
        while done < buffer.len() {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(Err(Ended::Stopped));
            }
            match self.stream.read(&mut buffer[done..]) {
                Ok(0) if done == 0 => return Ok(Err(Ended::Closed)),
                Ok(0) => bail!("the client closed the connection inside a message"),
                Ok(read) => done += read,
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                // A killed QEMU may reset the connection.
                Err(error) if error.kind() == io::ErrorKind::ConnectionReset => {
                    return Ok(Err(Ended::Closed));
                }
                Err(error) => return Err(anyhow!("reading from the client: {error}")),
            }
        }
        Ok(Ok(()))
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream
            .write_all(bytes)
            .context("writing to the client")
    }
}

/// Reads a message of `N` bytes or returns how the connection ended.
macro_rules! read_or_end {
    ($connection:expr, $bytes:expr) => {{
        let mut buffer = $bytes;
        match $connection.read_exact(&mut buffer)? {
            Ok(()) => buffer,
            Err(ended) => return Ok(ended),
        }
    }};
}

fn serve_connection(stream: TcpStream, shared: &Mutex<Shared>, stop: &AtomicBool) -> Result<Ended> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL_INTERVAL))?;
    stream.set_nodelay(true)?;
    let mut connection = Connection { stream, stop };
    let size = lock(shared).disk.len_bytes();
    let flags = TRANSMISSION_HAS_FLAGS | TRANSMISSION_SEND_FLUSH;

    let mut greeting = Vec::new();
    greeting.extend_from_slice(&NBDMAGIC.to_be_bytes());
    greeting.extend_from_slice(&IHAVEOPT.to_be_bytes());
    greeting.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    connection.write_all(&greeting)?;
    let client_flags = u32::from_be_bytes(read_or_end!(connection, [0u8; 4]));

    loop {
        let header = read_or_end!(connection, [0u8; 16]);
        let magic = u64::from_be_bytes(field(&header, 0));
        let option = u32::from_be_bytes(field(&header, 8));
        let length = u32::from_be_bytes(field(&header, 12));
        if magic != IHAVEOPT {
            bail!("option magic {magic:#x}");
        }
        if length > MAX_OPTION_BYTES {
            bail!("option {option} of {length} bytes");
        }
        let _data = read_or_end!(connection, vec![0u8; length as usize]);
        match option {
            OPT_EXPORT_NAME => {
                let mut reply = Vec::new();
                reply.extend_from_slice(&size.to_be_bytes());
                reply.extend_from_slice(&flags.to_be_bytes());
                if client_flags & CLIENT_FLAG_NO_ZEROES == 0 {
                    reply.extend_from_slice(&[0; 124]);
                }
                connection.write_all(&reply)?;
                break;
            }
            OPT_INFO | OPT_GO => {
                let mut info = Vec::new();
                info.extend_from_slice(&INFO_EXPORT.to_be_bytes());
                info.extend_from_slice(&size.to_be_bytes());
                info.extend_from_slice(&flags.to_be_bytes());
                option_reply(&mut connection, option, REP_INFO, &info)?;
                option_reply(&mut connection, option, REP_ACK, &[])?;
                if option == OPT_GO {
                    break;
                }
            }
            OPT_ABORT => {
                option_reply(&mut connection, option, REP_ACK, &[])?;
                return Ok(Ended::Closed);
            }
            _ => option_reply(&mut connection, option, REP_ERR_UNSUP, &[])?,
        }
    }
    transmission(&mut connection, shared)
}

fn field<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

fn option_reply(
    connection: &mut Connection<'_>,
    option: u32,
    kind: u32,
    data: &[u8],
) -> Result<()> {
    let mut reply = Vec::with_capacity(20 + data.len());
    reply.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    reply.extend_from_slice(&option.to_be_bytes());
    reply.extend_from_slice(&kind.to_be_bytes());
    reply.extend_from_slice(&(data.len() as u32).to_be_bytes());
    reply.extend_from_slice(data);
    connection.write_all(&reply)
}

fn simple_reply(
    connection: &mut Connection<'_>,
    error: u32,
    handle: u64,
    data: &[u8],
) -> Result<()> {
    let mut reply = Vec::with_capacity(16 + data.len());
    reply.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    reply.extend_from_slice(&error.to_be_bytes());
    reply.extend_from_slice(&handle.to_be_bytes());
    reply.extend_from_slice(data);
    connection.write_all(&reply)
}

/// The transmission phase: requests one by one, each applied and recorded
/// before it is answered, so the trace holds them in the order served.
fn transmission(connection: &mut Connection<'_>, shared: &Mutex<Shared>) -> Result<Ended> {
    loop {
        let request = read_or_end!(connection, [0u8; 28]);
        let magic = u32::from_be_bytes(field(&request, 0));
        let command = u16::from_be_bytes(field(&request, 6));
        let handle = u64::from_be_bytes(field(&request, 8));
        let offset_bytes = u64::from_be_bytes(field(&request, 16));
        let length = u32::from_be_bytes(field(&request, 24));
        if magic != REQUEST_MAGIC {
            bail!("request magic {magic:#x}");
        }
        if matches!(command, CMD_READ | CMD_WRITE) && length > MAX_REQUEST_BYTES {
            bail!("a request of {length} bytes");
        }
        match command {
            CMD_READ => {
                let mut data = vec![0u8; length as usize];
                let is_inside = {
                    let shared = lock(shared);
                    let is_inside = shared.disk.contains(offset_bytes, u64::from(length));
                    if is_inside {
                        shared.disk.read(offset_bytes, &mut data);
                    }
                    is_inside
                };
                if is_inside {
                    simple_reply(connection, 0, handle, &data)?;
                } else {
                    simple_reply(connection, EINVAL, handle, &[])?;
                }
            }
            CMD_WRITE => {
                let data = read_or_end!(connection, vec![0u8; length as usize]);
                let is_inside = {
                    let mut shared = lock(shared);
                    let is_inside = shared.disk.contains(offset_bytes, u64::from(length));
                    if is_inside {
                        shared.disk.write(offset_bytes, &data);
                        shared
                            .recording
                            .events
                            .push(Event::Write { offset_bytes, data });
                    }
                    is_inside
                };
                simple_reply(connection, if is_inside { 0 } else { ENOSPC }, handle, &[])?;
            }
            CMD_FLUSH => {
                lock(shared).recording.events.push(Event::Flush);
                simple_reply(connection, 0, handle, &[])?;
            }
            CMD_DISC => return Ok(Ended::Closed),
            _ => simple_reply(connection, EINVAL, handle, &[])?,
        }
    }
}
