//! smoltcp's device over QEMU's socket netdev: frames after a 4-byte length.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use smoltcp::phy::{self, DeviceCapabilities, Medium};

/// Ethernet header plus the 1500-byte MTU the kernel uses.
const FRAME_MAX_BYTES: usize = 1514;

/// smoltcp's device over QEMU's stream: frames after a 4-byte big-endian
/// length, both ways.
pub(super) struct StreamDevice {
    stream: TcpStream,
    /// Bytes read and not yet a whole frame.
    incoming: Vec<u8>,
    /// Whole frames waiting for the stack.
    frames: VecDeque<Vec<u8>>,
    /// Why the stream failed, if it did; reported by the next poll.
    broken: Option<String>,
}

impl StreamDevice {
    /// A device over `stream`, which must be non-blocking.
    pub(super) fn new(stream: TcpStream) -> StreamDevice {
        StreamDevice {
            stream,
            incoming: Vec::new(),
            frames: VecDeque::new(),
            broken: None,
        }
    }

    /// Why the stream failed since the last call, if it did.
    pub(super) fn take_failure(&mut self) -> Option<String> {
        self.broken.take()
    }

    /// Reads what QEMU has sent and splits it into frames.
    pub(super) fn fill(&mut self) {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut buffer) {
                Ok(0) => {
                    self.broken = Some("QEMU closed the link".into());
                    break;
                }
                Ok(count) => self.incoming.extend_from_slice(&buffer[..count]),
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => {
                    self.broken = Some(error.to_string());
                    break;
                }
            }
        }
        let mut taken = 0;
        while let Some(header) = self.incoming[taken..].first_chunk::<4>() {
            let length = u32::from_be_bytes(*header) as usize;
            if self.incoming.len() - taken < 4 + length {
                break;
            }
            self.frames
                .push_back(self.incoming[taken + 4..taken + 4 + length].to_vec());
            taken += 4 + length;
        }
        self.incoming.drain(..taken);
    }
}

impl phy::Device for StreamDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let frame = self.frames.pop_front()?;
        Some((
            RxToken(frame),
            TxToken {
                stream: &mut self.stream,
                broken: &mut self.broken,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(TxToken {
            stream: &mut self.stream,
            broken: &mut self.broken,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ethernet;
        capabilities.max_transmission_unit = FRAME_MAX_BYTES;
        capabilities
    }
}

pub(super) struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.0)
    }
}

pub(super) struct TxToken<'a> {
    stream: &'a mut TcpStream,
    broken: &'a mut Option<String>,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, length: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut frame = vec![0u8; 4 + length];
        frame[..4].copy_from_slice(&(length as u32).to_be_bytes());
        let result = f(&mut frame[4..]);
        if let Err(error) = write_whole(self.stream, &frame) {
            *self.broken = Some(error.to_string());
        }
        result
    }
}

/// Writes all of `bytes` to a non-blocking stream, waiting out a full
/// socket buffer (QEMU drains it as fast as the guest's card takes frames).
fn write_whole(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(count) => written += count,
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(ErrorKind::TimedOut.into());
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
