//! A hostile peer on a machine's link: a host program with its own TCP/IP.
//!
//! QEMU's `-netdev socket` carries each Ethernet frame over a TCP stream on
//! 127.0.0.1 after a 4-byte big-endian length. A [`PeerListener`] listens
//! on that port before the machine under test boots with
//! `LinkEnd::Connect`; once QEMU connects, the [`Peer`] is a host on the
//! link with an address, ARP, IPv4 and TCP of its own (smoltcp over a
//! [`phy::Device`] on that stream). It opens TCP connections to the
//! machine ([`Connection`], a kernel-core [`Link`]) and says whatever a
//! test wants: plaintext migration frames, a handshake with the wrong
//! secret, or nothing at all.
//!
//! Everything is single-threaded and polled: each call that waits polls
//! the stack until its deadline, so no thread or socket outlives a test.

mod device;
mod speech;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use kernel_core::migration::{ClusterSecret, Framed, Link, LinkError, SecureLink};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

use device::StreamDevice;
use speech::HostEntropy;
pub use speech::{PeerLink, Reply, Speech, next_reply, send_frame};

/// Each connection's send and receive buffers: enough for a few migration
/// frames in flight, small enough for hundreds of idle connections.
const SOCKET_BUFFER_BYTES: usize = 64 * 1024;

/// Connection attempts reset by a machine before [`Peer::connect`] gives up.
const CONNECT_ATTEMPTS: u32 = 5;

/// The first local port connections use; each new one takes the next.
const FIRST_LOCAL_PORT: u16 = 49152;

/// The machine under test's address on a link whose card has MAC last byte
/// `mac_last_byte` and no `ip=`: 169.254.0.N (kernel/src/net/mod.rs, 1 for
/// 0 and 254 for 255).
pub fn default_address(mac_last_byte: u8) -> Ipv4Address {
    let host = match mac_last_byte {
        0 => 1,
        255 => 254,
        byte => byte,
    };
    Ipv4Address::new(169, 254, 0, host)
}

/// The peer's end of the link before QEMU has connected to it.
#[derive(Debug)]
pub struct PeerListener {
    listener: TcpListener,
    port: u16,
}

impl PeerListener {
    /// Listens on a free port of 127.0.0.1: boot the machine with
    /// `NetLink { end: LinkEnd::Connect, port: listener.port(), .. }`.
    pub fn bind() -> Result<PeerListener> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the peer's link port")?;
        let port = listener
            .local_addr()
            .context("the peer's link port")?
            .port();
        listener
            .set_nonblocking(true)
            .context("making the peer's link port non-blocking")?;
        Ok(PeerListener { listener, port })
    }

    /// The port QEMU must connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits up to `timeout` for QEMU to connect, then becomes a host on
    /// the link at 169.254.0.`host` with MAC 52:54:00:12:34:`mac_last_byte`.
    pub fn accept(self, host: u8, mac_last_byte: u8, timeout: Duration) -> Result<Peer> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match self.listener.accept() {
                Ok((stream, _)) => break stream,
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        bail!("QEMU did not connect to the peer's link within {timeout:?}");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(error) => return Err(error).context("accepting QEMU's link"),
            }
        };
        Peer::over_stream(stream, host, mac_last_byte)
    }
}

/// A host on the machine's link.
#[derive(Debug, Clone)]
pub struct Peer {
    stack: Rc<RefCell<Stack>>,
}

impl Peer {
    /// A host at 169.254.0.`host` with MAC 52:54:00:12:34:`mac_last_byte`
    /// on the link `stream` carries (QEMU's socket netdev framing).
    fn over_stream(stream: TcpStream, host: u8, mac_last_byte: u8) -> Result<Peer> {
        stream
            .set_nonblocking(true)
            .context("making the link non-blocking")?;
        let _ = stream.set_nodelay(true);
        let mut device = StreamDevice::new(stream);
        let started = Instant::now();
        let mac = EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, mac_last_byte]);
        let mut config = Config::new(HardwareAddress::Ethernet(mac));
        config.random_seed = u64::from(mac_last_byte) << 32 | u64::from(std::process::id());
        let mut interface = Interface::new(config, &mut device, timestamp(started));
        interface.update_ip_addrs(|addresses| {
            let _ = addresses.push(IpCidr::new(
                IpAddress::Ipv4(Ipv4Address::new(169, 254, 0, host)),
                16,
            ));
        });
        Ok(Peer {
            stack: Rc::new(RefCell::new(Stack {
                device,
                interface,
                sockets: SocketSet::new(Vec::new()),
                started,
                next_local_port: FIRST_LOCAL_PORT,
            })),
        })
    }

    /// Another host on the link of a [`PeerListener`] at 127.0.0.1:`port`,
    /// in QEMU's place (the peer's own tests, with no machine).
    pub fn connect_to_link(port: u16, host: u8, mac_last_byte: u8) -> Result<Peer> {
        let stream = TcpStream::connect(("127.0.0.1", port)).context("connecting to a link")?;
        Peer::over_stream(stream, host, mac_last_byte)
    }

    /// A socket listening on TCP `port`: it becomes the connection of the
    /// first peer that connects (the peer's own tests play a machine so).
    pub fn listen_on(&self, port: u16) -> Result<Connection> {
        let mut stack = self.stack.borrow_mut();
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER_BYTES]),
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER_BYTES]),
        );
        socket
            .listen(port)
            .map_err(|error| anyhow!("listening on {port}: {error}"))?;
        let handle = stack.sockets.add(socket);
        Ok(Connection {
            stack: Rc::clone(&self.stack),
            handle,
        })
    }

    /// Starts a TCP connection to `address:port` without waiting for it.
    pub fn open(&self, address: Ipv4Address, port: u16) -> Result<Connection> {
        let mut stack = self.stack.borrow_mut();
        let socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER_BYTES]),
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER_BYTES]),
        );
        let handle = stack.sockets.add(socket);
        let local_port = stack.next_local_port;
        stack.next_local_port = match local_port.checked_add(1) {
            Some(next) => next,
            None => FIRST_LOCAL_PORT,
        };
        let Stack {
            interface, sockets, ..
        } = &mut *stack;
        sockets
            .get_mut::<tcp::Socket>(handle)
            .connect(interface.context(), (address, port), local_port)
            .map_err(|error| anyhow!("connecting to {address}:{port}: {error}"))?;
        drop(stack);
        self.poll()?;
        Ok(Connection {
            stack: Rc::clone(&self.stack),
            handle,
        })
    }

    /// A TCP connection to `address:port`, established within `timeout`.
    pub fn connect(
        &self,
        address: Ipv4Address,
        port: u16,
        timeout: Duration,
    ) -> Result<Connection> {
        let mut connection = self.open(address, port)?;
        let deadline = Instant::now() + timeout;
        let mut refusals = 0;
        loop {
            match connection.state() {
                tcp::State::Established => return Ok(connection),
                // A machine at its connection cap, or short of heap,
                // stops listening: a SYN then is reset, as a full backlog
                // would be, and the client tries again.
                tcp::State::Closed if refusals < CONNECT_ATTEMPTS => {
                    refusals += 1;
                    eprintln!(
                        "peer: {address}:{port} reset connection attempt {refusals}; trying again"
                    );
                    self.wait_a_moment()?;
                    connection = self.open(address, port)?;
                }
                tcp::State::Closed => bail!("{address}:{port} refused the connection"),
                _ if Instant::now() >= deadline => {
                    bail!("no connection to {address}:{port} within {timeout:?}")
                }
                _ => self.wait_a_moment()?,
            }
        }
    }

    /// A migration connection to `address:port`: TCP established within
    /// `timeout`, then framed in `speech`.
    pub fn migration_link(
        &self,
        address: Ipv4Address,
        port: u16,
        speech: Speech,
        timeout: Duration,
    ) -> Result<Framed<PeerLink>> {
        let connection = self.connect(address, port, timeout)?;
        let link = match speech {
            Speech::Plaintext => PeerLink::Plain(connection),
            Speech::Secret(bytes) => {
                let secret = ClusterSecret::from_bytes(bytes)
                    .map_err(|error| anyhow!("the peer's secret: {error}"))?;
                PeerLink::Secure(Box::new(SecureLink::initiator(
                    connection,
                    &secret,
                    &mut HostEntropy,
                )))
            }
        };
        Ok(Framed::new(link))
    }

    /// Moves frames between the link and the sockets once.
    pub fn poll(&self) -> Result<()> {
        self.stack.borrow_mut().poll()
    }

    /// Polls, then sleeps a millisecond so a waiting loop does not spin.
    pub fn wait_a_moment(&self) -> Result<()> {
        self.poll()?;
        std::thread::sleep(Duration::from_millis(1));
        self.poll()
    }

    /// Keeps the link's TCP going (acknowledgements, retransmissions) for
    /// `duration` while a test waits on the machine's console.
    pub fn keep_alive_for(&self, duration: Duration) -> Result<()> {
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            self.wait_a_moment()?;
        }
        Ok(())
    }
}

/// The stack behind a [`Peer`] and its connections.
struct Stack {
    device: StreamDevice,
    interface: Interface,
    sockets: SocketSet<'static>,
    started: Instant,
    next_local_port: u16,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Stack")
            .field("next_local_port", &self.next_local_port)
            .finish_non_exhaustive()
    }
}

impl Stack {
    fn poll(&mut self) -> Result<()> {
        self.device.fill();
        let now = timestamp(self.started);
        self.interface
            .poll(now, &mut self.device, &mut self.sockets);
        match self.device.take_failure() {
            Some(reason) => Err(anyhow!("the peer's link to QEMU broke: {reason}")),
            None => Ok(()),
        }
    }
}

fn timestamp(started: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(started.elapsed().as_micros() as i64)
}

/// One TCP connection from the peer to the machine: a kernel-core [`Link`]
/// that polls the peer's stack on every call. Dropping it aborts the
/// connection (a reset) and frees its socket.
#[derive(Debug)]
pub struct Connection {
    stack: Rc<RefCell<Stack>>,
    handle: SocketHandle,
}

impl Connection {
    /// The connection's TCP state.
    pub fn state(&self) -> tcp::State {
        self.stack
            .borrow_mut()
            .sockets
            .get_mut::<tcp::Socket>(self.handle)
            .state()
    }

    /// Whether the machine has closed or reset the connection.
    pub fn is_closed_by_machine(&self) -> bool {
        let mut stack = self.stack.borrow_mut();
        let socket = stack.sockets.get_mut::<tcp::Socket>(self.handle);
        !socket.may_recv() && !socket.can_recv()
    }

    /// Sends `bytes` whole within `timeout` (raw bytes: no frame header).
    pub fn send_all(&mut self, bytes: &[u8], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut sent = 0;
        while sent < bytes.len() {
            sent += self
                .send(&bytes[sent..])
                .map_err(|error| anyhow!("{error}"))?;
            if sent < bytes.len() {
                if Instant::now() >= deadline {
                    bail!("sent {sent} of {} bytes within {timeout:?}", bytes.len());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.stack.borrow_mut().poll()
    }
}

impl Link for Connection {
    fn send(&mut self, bytes: &[u8]) -> Result<usize, LinkError> {
        let mut stack = self.stack.borrow_mut();
        stack
            .poll()
            .map_err(|error| LinkError::Failed(error.to_string()))?;
        let socket = stack.sockets.get_mut::<tcp::Socket>(self.handle);
        if !socket.may_send() {
            return Err(LinkError::Closed);
        }
        let count = socket
            .send_slice(bytes)
            .map_err(|error| LinkError::Failed(error.to_string()))?;
        stack
            .poll()
            .map_err(|error| LinkError::Failed(error.to_string()))?;
        Ok(count)
    }

    fn receive(&mut self, buffer: &mut [u8]) -> Result<usize, LinkError> {
        let mut stack = self.stack.borrow_mut();
        stack
            .poll()
            .map_err(|error| LinkError::Failed(error.to_string()))?;
        let socket = stack.sockets.get_mut::<tcp::Socket>(self.handle);
        if socket.can_recv() {
            return socket
                .recv_slice(buffer)
                .map_err(|error| LinkError::Failed(error.to_string()));
        }
        if !socket.may_recv() && socket.state() != tcp::State::SynSent {
            return Err(LinkError::Closed);
        }
        Ok(0)
    }

    fn push(&mut self) {
        let _ = self.stack.borrow_mut().poll();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut stack = self.stack.borrow_mut();
        stack.sockets.get_mut::<tcp::Socket>(self.handle).abort();
        // The reset leaves on this poll; then the socket can go.
        let _ = stack.poll();
        stack.sockets.remove(self.handle);
    }
}
