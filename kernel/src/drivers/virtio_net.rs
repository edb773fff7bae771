//! virtio-net (PCI transport), polled, as smoltcp's `phy::Device`.
//!
//! Over virtio-drivers' `VirtIONetRaw`: a ring of receive buffers on the
//! heap, which is one physically contiguous run of frames (memory::heap), so
//! the device writes into them without bouncing. smoltcp builds each frame
//! in a heap buffer that goes to the device and is not waited for: it stays
//! in `sending` until the device hands it back, and is then reused. Waiting
//! for each frame (virtio-drivers' blocking send) cost a host round trip per
//! frame under QEMU, and left the CPU idle while the device sent.
//! Nothing interrupts: smoltcp asks for packets when `net::poll` runs.
//! Every card found is brought up (the migration link and user networking).
//!
//! The receive and transmit tokens smoltcp holds at the same time both reach
//! the device, so it sits in a `RefCell` that each token borrows only for the
//! length of one copy.

use core::cell::RefCell;
use core::fmt;

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::pci::{PciTransport, virtio_device_type};
use virtio_drivers::transport::{DeviceType, Transport};

use super::pci::{self, PciSetupError};
use super::virtio_blk::PciLocation;
use super::virtio_hal::{self, KernelHal};

/// Descriptors per queue: the receive ring holds this many frames waiting
/// for a poll (a power of two no larger than QEMU's default of 256).
const QUEUE_SIZE: usize = 128;

/// Bytes per receive buffer: the virtio-net header plus a 1514-byte frame
/// fit, and virtio-drivers wants at least 1526.
const RECEIVE_BUFFER_BYTES: usize = 2048;

/// The largest Ethernet frame sent, header included, without the FCS: the
/// 1500-byte MTU every virtio-net device accepts.
const MAX_FRAME_BYTES: usize = 1514;

/// VIRTIO_NET_F_STATUS (virtio 1.2, 5.1.3): the config space has `status`.
const FEATURE_STATUS: u64 = 1 << 16;

/// Offset of `status` in virtio-net's config space (virtio 1.2, 5.1.4).
const CONFIG_STATUS_OFFSET: usize = 6;

/// VIRTIO_NET_S_LINK_UP in `status`.
const STATUS_LINK_UP: u16 = 1;

/// Whether the link was up when the device was probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Up,
    Down,
    /// The device does not offer VIRTIO_NET_F_STATUS, which the spec says
    /// means the link is to be assumed up.
    NotReported,
}

impl fmt::Display for LinkState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            LinkState::Up => "up",
            LinkState::Down => "down",
            LinkState::NotReported => "not reported (assumed up)",
        })
    }
}

/// What the console and logs say about the network card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NicInfo {
    pub location: PciLocation,
    pub mac: [u8; 6],
    /// Read once, at probe time: VirtIONet keeps the config space to itself.
    pub link_at_probe: LinkState,
}

/// Frames and bytes moved since probe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub received_packets: u64,
    pub received_bytes: u64,
    pub sent_packets: u64,
    pub sent_bytes: u64,
    /// Frames the device refused or virtio-drivers failed, in either direction.
    pub errors: u64,
}

/// Why the virtio-net device could not be brought up.
#[derive(Debug)]
pub enum ProbeError {
    Pci(PciSetupError),
    Transport(virtio_drivers::transport::pci::VirtioPciError),
    Device(virtio_drivers::Error),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Pci(error) => write!(formatter, "PCI set-up: {error}"),
            ProbeError::Transport(error) => write!(formatter, "virtio PCI transport: {error}"),
            ProbeError::Device(error) => write!(formatter, "virtio-net initialisation: {error}"),
        }
    }
}

type Device = VirtIONetRaw<KernelHal, PciTransport, QUEUE_SIZE>;

/// Bytes of a transmit buffer: the virtio-net header (at most 12) and a frame.
const TRANSMIT_BUFFER_BYTES: usize = 16 + MAX_FRAME_BYTES;

struct Shared {
    device: Device,
    /// The receive buffers the device holds, by token.
    receiving: Vec<Option<Box<[u8]>>>,
    /// The frames the device is sending, by token, with their length.
    sending: Vec<Option<(Box<[u8]>, usize)>>,
    /// Transmit buffers the device gave back, for the next frames.
    spare: Vec<Box<[u8]>>,
    counters: Counters,
}

impl Shared {
    /// Gives the device a receive buffer.
    fn give_receive_buffer(&mut self, mut buffer: Box<[u8]>) -> Result<(), virtio_drivers::Error> {
        // SAFETY: the buffer is stored in `receiving` under its token right
        // below and not touched until `poll_receive` returns that token.
        let token = unsafe { self.device.receive_begin(&mut buffer)? };
        let slot = self
            .receiving
            .get_mut(usize::from(token))
            .ok_or(virtio_drivers::Error::WrongToken)?;
        *slot = Some(buffer);
        Ok(())
    }

    /// Takes back the transmit buffers the device is done with.
    fn reap_sent(&mut self) {
        while let Some(token) = self.device.poll_transmit() {
            let Some((buffer, length)) = self
                .sending
                .get_mut(usize::from(token))
                .and_then(Option::take)
            else {
                self.counters.errors += 1;
                log::error!("virtio-net: the device finished an unknown frame {token}");
                return;
            };
            // SAFETY: the same buffer and length as given to transmit_begin
            // for this token.
            if let Err(error) = unsafe { self.device.transmit_complete(token, &buffer[..length]) } {
                self.counters.errors += 1;
                log::warn!("virtio-net: completing a sent frame: {error}");
            }
            self.spare.push(buffer);
        }
    }

    /// Hands `length` bytes of `buffer` (header included) to the device.
    fn send(&mut self, buffer: Box<[u8]>, length: usize) {
        // SAFETY: the buffer is stored in `sending` under its token right
        // below, and neither read nor written until `poll_transmit` returns
        // that token.
        let begun = unsafe { self.device.transmit_begin(&buffer[..length]) };
        match begun {
            Ok(token) => match self.sending.get_mut(usize::from(token)) {
                Some(slot) => *slot = Some((buffer, length)),
                None => {
                    // Cannot happen (tokens index the ring); keep the buffer
                    // alive for good rather than let the device read freed
                    // memory.
                    self.counters.errors += 1;
                    Box::leak(buffer);
                }
            },
            Err(error) => {
                self.counters.errors += 1;
                log::warn!("virtio-net: sending a {length}-byte frame: {error}");
                self.spare.push(buffer);
            }
        }
    }
}

/// The network card: smoltcp's `phy::Device`.
pub struct NetDevice {
    shared: RefCell<Shared>,
    info: NicInfo,
}

impl fmt::Debug for NetDevice {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("NetDevice")
            .field("info", &self.info)
            .finish()
    }
}

impl NetDevice {
    pub fn info(&self) -> NicInfo {
        self.info
    }

    pub fn counters(&self) -> Counters {
        self.shared.borrow().counters
    }
}

/// Finds every virtio-net device in PCI order and brings each up; one that
/// fails is logged and skipped. One probe per boot: probing resets the
/// devices.
pub fn probe_all() -> Vec<NetDevice> {
    virtio_hal::bounce_frame();
    let mut root = pci::root();
    let functions: Vec<_> = pci::functions(&root)
        .into_iter()
        .filter(|(_, info)| virtio_device_type(info) == Some(DeviceType::Network))
        .map(|(function, _)| function)
        .collect();
    if functions.is_empty() {
        log::info!("no network card");
    }
    let mut devices = Vec::new();
    for function in functions {
        let location = PciLocation::from(function);
        match bring_up(&mut root, function) {
            Ok(device) => {
                let info = device.info;
                log::info!(
                    "network card at PCI {location}: MAC {}, link {}",
                    MacAddress(info.mac),
                    info.link_at_probe
                );
                devices.push(device);
            }
            Err(error) => log::error!("virtio-net at PCI {location}: {error}; skipped"),
        }
    }
    devices
}

fn bring_up(
    root: &mut virtio_drivers::transport::pci::bus::PciRoot<pci::PortConfigurationAccess>,
    function: virtio_drivers::transport::pci::bus::DeviceFunction,
) -> Result<NetDevice, ProbeError> {
    pci::prepare_device(root, function).map_err(ProbeError::Pci)?;
    let mut transport =
        PciTransport::new::<KernelHal, _>(root, function).map_err(ProbeError::Transport)?;
    let link_at_probe = if transport.read_device_features() & FEATURE_STATUS == 0 {
        LinkState::NotReported
    } else {
        match transport.read_config_space::<u16>(CONFIG_STATUS_OFFSET) {
            Ok(status) if status & STATUS_LINK_UP != 0 => LinkState::Up,
            Ok(_) => LinkState::Down,
            Err(error) => return Err(ProbeError::Device(error)),
        }
    };
    let mut device = Device::new(transport).map_err(ProbeError::Device)?;
    // Everything is polled; the device need not interrupt.
    device.disable_interrupts();
    let info = NicInfo {
        location: PciLocation::from(function),
        mac: device.mac_address(),
        link_at_probe,
    };
    let mut shared = Shared {
        device,
        receiving: (0..QUEUE_SIZE).map(|_| None).collect(),
        sending: (0..QUEUE_SIZE).map(|_| None).collect(),
        spare: Vec::new(),
        counters: Counters::default(),
    };
    for _ in 0..QUEUE_SIZE {
        let buffer = vec![0u8; RECEIVE_BUFFER_BYTES].into_boxed_slice();
        shared
            .give_receive_buffer(buffer)
            .map_err(ProbeError::Device)?;
    }
    Ok(NetDevice {
        shared: RefCell::new(shared),
        info,
    })
}

/// A MAC address printed `52:54:00:12:34:56`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacAddress(pub [u8; 6]);

impl fmt::Display for MacAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, f] = self.0;
        write!(formatter, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
    }
}

/// One received frame; its buffer goes back to the receive ring when the
/// token is consumed or dropped.
pub struct NetRxToken<'a> {
    shared: &'a RefCell<Shared>,
    /// The buffer and where the frame is in it.
    buffer: Option<(Box<[u8]>, core::ops::Range<usize>)>,
}

/// Room to send one frame.
pub struct NetTxToken<'a> {
    shared: &'a RefCell<Shared>,
}

impl fmt::Debug for NetRxToken<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let length = self.buffer.as_ref().map(|(_, frame)| frame.len());
        formatter
            .debug_struct("NetRxToken")
            .field("packet_len", &length)
            .finish()
    }
}

impl fmt::Debug for NetTxToken<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("NetTxToken")
    }
}

impl phy::Device for NetDevice {
    type RxToken<'a> = NetRxToken<'a>;
    type TxToken<'a> = NetTxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(NetRxToken<'_>, NetTxToken<'_>)> {
        let shared = self.shared.get_mut();
        shared.reap_sent();
        let token = shared.device.poll_receive()?;
        let Some(mut buffer) = shared
            .receiving
            .get_mut(usize::from(token))
            .and_then(Option::take)
        else {
            shared.counters.errors += 1;
            log::error!("virtio-net: the device filled an unknown buffer {token}");
            return None;
        };
        // SAFETY: the same buffer as given to receive_begin for this token.
        let frame = match unsafe { shared.device.receive_complete(token, &mut buffer) } {
            Ok((header, length)) => header..header + length,
            Err(error) => {
                shared.counters.errors += 1;
                log::warn!("virtio-net: receiving: {error}");
                if let Err(error) = shared.give_receive_buffer(buffer) {
                    log::error!("virtio-net: a receive buffer could not go back: {error}");
                }
                return None;
            }
        };
        shared.counters.received_packets += 1;
        shared.counters.received_bytes += frame.len() as u64;
        Some((
            NetRxToken {
                shared: &self.shared,
                buffer: Some((buffer, frame)),
            },
            NetTxToken {
                shared: &self.shared,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<NetTxToken<'_>> {
        // Frames the device finished free their descriptors first.
        let shared = self.shared.get_mut();
        shared.reap_sent();
        if !shared.device.can_send() {
            return None;
        }
        Some(NetTxToken {
            shared: &self.shared,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ethernet;
        capabilities.max_transmission_unit = MAX_FRAME_BYTES;
        capabilities.max_burst_size = Some(QUEUE_SIZE);
        capabilities
    }
}

impl NetRxToken<'_> {
    fn recycle(&mut self) {
        let Some(buffer) = self.buffer.take() else {
            return;
        };
        let (buffer, _) = buffer;
        let mut shared = self.shared.borrow_mut();
        if let Err(error) = shared.give_receive_buffer(buffer) {
            shared.counters.errors += 1;
            log::error!("virtio-net: a receive buffer could not go back to the ring: {error}");
        }
    }
}

impl phy::RxToken for NetRxToken<'_> {
    fn consume<R, F>(mut self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let result = match &self.buffer {
            Some((buffer, frame)) => f(&buffer[frame.clone()]),
            // The buffer is only taken by recycle, which runs after this.
            None => f(&[]),
        };
        self.recycle();
        result
    }
}

impl Drop for NetRxToken<'_> {
    fn drop(&mut self) {
        self.recycle();
    }
}

impl phy::TxToken for NetTxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut shared = self.shared.borrow_mut();
        let mut buffer = shared
            .spare
            .pop()
            .unwrap_or_else(|| vec![0u8; TRANSMIT_BUFFER_BYTES].into_boxed_slice());
        let Ok(header) = shared.device.fill_buffer_header(&mut buffer) else {
            // Cannot happen (the buffer is larger than any header): the frame
            // is built in a scratch buffer and dropped.
            shared.counters.errors += 1;
            drop(shared);
            return f(&mut vec![0u8; len]);
        };
        let length = len.min(MAX_FRAME_BYTES);
        let result = f(&mut buffer[header..header + length]);
        shared.send(buffer, header + length);
        shared.counters.sent_packets += 1;
        shared.counters.sent_bytes += length as u64;
        result
    }
}
