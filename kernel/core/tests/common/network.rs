//! In-memory connections and the switch between fake machines.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use kernel_core::migration::{ClusterSecret, ConnectError, Link, LinkError, Network};

/// Bytes a link holds in each direction before `send` takes no more.
const WINDOW_BYTES: usize = 64 * 1024;

/// The two directions of a connection.
#[derive(Debug, Default)]
pub struct Pipe {
    /// Bytes on their way to side 0 and to side 1.
    queues: [VecDeque<u8>; 2],
    is_closed: bool,
    /// Bytes that may still pass (both directions together) before the
    /// connection breaks; what is past the break is lost.
    pub budget_bytes: Option<usize>,
    /// Every byte sent each way (to side 0, to side 1), when recording.
    pub recorded: Option<[Vec<u8>; 2]>,
}

impl Pipe {
    /// The connection is reset: what is on its way is lost.
    pub fn reset(&mut self) {
        self.queues = Default::default();
        self.is_closed = true;
    }
}

/// One end of an in-memory connection. Dropping it closes the connection
/// (what was sent still arrives).
#[derive(Debug)]
pub struct MemoryLink {
    pipe: Rc<RefCell<Pipe>>,
    side: usize,
}

impl MemoryLink {
    /// Both ends of a new connection, and a handle on it.
    pub fn pair() -> (MemoryLink, MemoryLink, Rc<RefCell<Pipe>>) {
        let pipe = Rc::new(RefCell::new(Pipe::default()));
        let end = |side| MemoryLink {
            pipe: Rc::clone(&pipe),
            side,
        };
        (end(0), end(1), Rc::clone(&pipe))
    }

    /// Sends a whole frame (a hostile peer in a test writes what it likes).
    pub fn send_frame(&mut self, message: &[u8]) {
        let mut bytes = (message.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(message);
        self.send_raw(&bytes);
    }

    /// Sends raw bytes, all of them.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let mut pipe = self.pipe.borrow_mut();
        pipe.queues[1 - self.side].extend(bytes);
    }

    /// Every whole frame that has arrived.
    pub fn frames(&mut self) -> Vec<Vec<u8>> {
        let mut pipe = self.pipe.borrow_mut();
        let queue = &mut pipe.queues[self.side];
        let mut frames = Vec::new();
        while queue.len() >= 4 {
            let header: Vec<u8> = queue.iter().take(4).copied().collect();
            let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            if queue.len() < 4 + length {
                break;
            }
            queue.drain(..4);
            frames.push(queue.drain(..length).collect());
        }
        frames
    }

    /// Whether the peer closed the connection.
    pub fn is_closed(&self) -> bool {
        self.pipe.borrow().is_closed
    }
}

impl Drop for MemoryLink {
    fn drop(&mut self) {
        self.pipe.borrow_mut().is_closed = true;
    }
}

impl Link for MemoryLink {
    fn send(&mut self, bytes: &[u8]) -> Result<usize, LinkError> {
        let mut pipe = self.pipe.borrow_mut();
        if pipe.is_closed {
            return Err(LinkError::Closed);
        }
        let room = WINDOW_BYTES.saturating_sub(pipe.queues[1 - self.side].len());
        let mut count = bytes.len().min(room);
        if let Some(budget) = pipe.budget_bytes.as_mut() {
            if count > *budget {
                count = *budget;
                pipe.is_closed = true;
            }
            if let Some(budget) = pipe.budget_bytes.as_mut() {
                *budget -= count;
            }
        }
        pipe.queues[1 - self.side].extend(&bytes[..count]);
        if let Some(recorded) = pipe.recorded.as_mut() {
            recorded[1 - self.side].extend_from_slice(&bytes[..count]);
        }
        Ok(count)
    }

    fn receive(&mut self, buffer: &mut [u8]) -> Result<usize, LinkError> {
        let mut pipe = self.pipe.borrow_mut();
        let is_closed = pipe.is_closed;
        let queue = &mut pipe.queues[self.side];
        if queue.is_empty() && is_closed {
            return Err(LinkError::Closed);
        }
        let count = buffer.len().min(queue.len());
        for (slot, byte) in buffer.iter_mut().zip(queue.drain(..count)) {
            *slot = byte;
        }
        Ok(count)
    }
}

/// Who is up and who has connected to whom.
#[derive(Debug, Default)]
pub struct Switch {
    /// Connections waiting to be accepted, by address, with the caller's.
    waiting: BTreeMap<String, VecDeque<(MemoryLink, String)>>,
    /// Machines that are up.
    up: Vec<String>,
    /// Every connection made, in order.
    pub pipes: Vec<Rc<RefCell<Pipe>>>,
    /// Applied to the next connection made.
    pub next_budget_bytes: Option<usize>,
    /// Whether the next connection made records what passes.
    pub is_next_recorded: bool,
    /// The machines booted on this switch hold this secret (none: they
    /// speak plaintext frames).
    pub cluster_secret: Option<ClusterSecret>,
}

impl Switch {
    pub fn new() -> Rc<RefCell<Switch>> {
        Rc::new(RefCell::new(Switch::default()))
    }

    /// The switch of a cluster whose machines hold `secret`.
    pub fn secure(secret: ClusterSecret) -> Rc<RefCell<Switch>> {
        Rc::new(RefCell::new(Switch {
            cluster_secret: Some(secret),
            ..Switch::default()
        }))
    }

    /// A test's peer takes the next connection made to `address` before
    /// the machine there does (it impersonates that machine).
    pub fn intercept(switch: &Rc<RefCell<Switch>>, address: &str) -> Option<(MemoryLink, String)> {
        let mut switch = switch.borrow_mut();
        switch.waiting.get_mut(address)?.pop_front()
    }

    /// A peer of the test's own making connects to `address`: the test
    /// writes and reads the returned end.
    pub fn dial(switch: &Rc<RefCell<Switch>>, address: &str, from: &str) -> MemoryLink {
        let (ours, theirs, pipe) = MemoryLink::pair();
        let mut switch = switch.borrow_mut();
        switch.pipes.push(pipe);
        switch
            .waiting
            .entry(address.into())
            .or_default()
            .push_back((theirs, from.into()));
        ours
    }

    pub fn take_down(&mut self, address: &str) {
        self.up.retain(|up| up != address);
        self.waiting.remove(address);
    }
}

/// A machine's view of the switch.
#[derive(Debug)]
pub struct FakeNetwork {
    address: String,
    switch: Rc<RefCell<Switch>>,
}

impl FakeNetwork {
    pub fn new(switch: &Rc<RefCell<Switch>>, address: &str) -> FakeNetwork {
        switch.borrow_mut().up.push(address.into());
        FakeNetwork {
            address: address.into(),
            switch: Rc::clone(switch),
        }
    }
}

impl Network for FakeNetwork {
    type Connection = MemoryLink;
    type Listener = ();

    fn listen(&mut self) -> Result<Option<()>, String> {
        Ok(Some(()))
    }

    fn accept(&mut self, _listener: &mut ()) -> Option<(MemoryLink, String)> {
        let mut switch = self.switch.borrow_mut();
        switch.waiting.get_mut(&self.address)?.pop_front()
    }

    fn connect(&mut self, address: &str) -> Result<MemoryLink, ConnectError> {
        if address.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(ConnectError::NotAnAddress);
        }
        let (ours, theirs, pipe) = MemoryLink::pair();
        let mut switch = self.switch.borrow_mut();
        pipe.borrow_mut().budget_bytes = switch.next_budget_bytes.take();
        if std::mem::take(&mut switch.is_next_recorded) {
            pipe.borrow_mut().recorded = Some(Default::default());
        }
        switch.pipes.push(pipe);
        if switch.up.iter().any(|up| up == address) {
            switch
                .waiting
                .entry(address.into())
                .or_default()
                .push_back((theirs, self.address.clone()));
        }
        // Else `theirs` drops: a machine that is down resets the connection.
        Ok(ours)
    }

    fn poll(&mut self) {}
}
