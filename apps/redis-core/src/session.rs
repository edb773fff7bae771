//! One client's connection: bytes in, replies out, closed on QUIT or junk.

use crate::resp::{Limits, Reply, parse_command};
use crate::store::Store;

/// The most bytes a connection buffers while a command is incomplete: the
/// per-argument limits bound each length a client declares, this bounds
/// their sum.
pub const MAX_BUFFERED_BYTES: usize = 8 << 20;

/// Whether a connection goes on after the replies given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep it open for the next command.
    KeepOpen,
    /// Send the replies, then close it.
    Close,
}

/// The bytes a client has sent that are not a whole command yet.
/// Commands sent back to back (pipelined) are answered in order.
#[derive(Debug, Default)]
pub struct Session {
    buffer: Vec<u8>,
    limits: Limits,
    is_closing: bool,
}

impl Session {
    /// A session whose commands are bounded by `limits`.
    pub fn new(limits: Limits) -> Session {
        Session {
            limits,
            ..Session::default()
        }
    }

    /// Takes `bytes` from the client, runs every command they complete
    /// against `store` at `now_ms`, and appends the replies to `out`.
    /// After `Flow::Close` nothing more is taken.
    pub fn receive(
        &mut self,
        bytes: &[u8],
        store: &mut Store,
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> Flow {
        if self.is_closing {
            return Flow::Close;
        }
        self.buffer.extend_from_slice(bytes);
        let mut used = 0;
        let flow = loop {
            match parse_command(&self.buffer[used..], &self.limits) {
                Ok(None) => {
                    if self.buffer.len() - used > MAX_BUFFERED_BYTES {
                        Reply::error("Protocol error: too big request").encode(out);
                        break Flow::Close;
                    }
                    break Flow::KeepOpen;
                }
                Ok(Some((command, taken))) => {
                    used += taken;
                    if command.is_empty() {
                        continue;
                    }
                    let outcome = store.execute(&command, now_ms);
                    outcome.reply.encode(out);
                    if outcome.close {
                        break Flow::Close;
                    }
                }
                Err(error) => {
                    Reply::error(format!("Protocol error: {error}")).encode(out);
                    break Flow::Close;
                }
            }
        };
        self.buffer.drain(..used);
        if flow == Flow::Close {
            self.is_closing = true;
            self.buffer = Vec::new();
        }
        flow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(session: &mut Session, store: &mut Store, bytes: &[u8]) -> (String, Flow) {
        let mut out = Vec::new();
        let flow = session.receive(bytes, store, 0, &mut out);
        (String::from_utf8(out).unwrap(), flow)
    }

    #[test]
    fn pipelined_commands_split_anywhere_are_answered_in_order() {
        let (mut session, mut store) = (Session::default(), Store::default());
        let (out, flow) = exchange(
            &mut session,
            &mut store,
            b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\nGET a\r\n*2\r\n$3\r\nGET\r\n$1",
        );
        assert_eq!((out.as_str(), flow), ("+OK\r\n$1\r\n1\r\n", Flow::KeepOpen));
        let (out, _) = exchange(&mut session, &mut store, b"\r\na\r\n");
        assert_eq!(out, "$1\r\n1\r\n");
    }

    #[test]
    fn quit_and_protocol_errors_close_the_connection() {
        let (mut session, mut store) = (Session::default(), Store::default());
        let (out, flow) = exchange(&mut session, &mut store, b"QUIT\r\nGET a\r\n");
        assert_eq!((out.as_str(), flow), ("+OK\r\n", Flow::Close));
        assert_eq!(
            exchange(&mut session, &mut store, b"PING\r\n").1,
            Flow::Close
        );
        let mut junk = Session::default();
        let (out, flow) = exchange(&mut junk, &mut store, b"*x\r\n");
        assert!(out.starts_with("-ERR Protocol error"), "{out}");
        assert_eq!(flow, Flow::Close);
    }

    #[test]
    fn an_incomplete_command_past_the_buffer_bound_is_refused() {
        let (mut session, mut store) = (Session::default(), Store::default());
        let mut out = Vec::new();
        let mut flow = session.receive(b"*3\r\n$3\r\nSET\r\n$4194304\r\n", &mut store, 0, &mut out);
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..4 {
            flow = session.receive(&chunk, &mut store, 0, &mut out);
        }
        // One argument is whole; the next declares 4 MiB too, and keeps
        // coming: a 4 MiB argument is allowed, 8 MiB of buffer is not.
        assert_eq!(flow, Flow::KeepOpen);
        flow = session.receive(b"\r\n$4194304\r\n", &mut store, 0, &mut out);
        for _ in 0..5 {
            flow = session.receive(&chunk, &mut store, 0, &mut out);
        }
        assert_eq!(flow, Flow::Close);
        assert!(String::from_utf8_lossy(&out).contains("too big request"));
        assert!(session.buffer.is_empty());
    }
}
