//! One client's connection: requests in, replies out, kept alive or closed.

use crate::http::{HttpError, Limits, Request, Response, parse_request};

/// What answers requests.
pub trait Handler {
    /// The reply to `request`.
    fn handle(&mut self, request: &Request) -> Response;
}

/// Whether the connection goes on after the replies given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep it open for the next request.
    KeepOpen,
    /// Send the replies, then close it.
    Close,
}

/// The bytes a client has sent that are not a whole request yet. Requests
/// sent back to back (pipelined) are answered in order.
#[derive(Debug, Default)]
pub struct Connection {
    buffer: Vec<u8>,
    limits: Limits,
    is_closing: bool,
}

impl Connection {
    /// A connection whose requests are bounded by `limits`.
    pub fn new(limits: Limits) -> Connection {
        Connection {
            limits,
            ..Connection::default()
        }
    }

    /// Takes `bytes` from the client; appends to `out` the replies to every
    /// request they complete. After `Flow::Close` nothing more is taken.
    pub fn receive(&mut self, bytes: &[u8], handler: &mut impl Handler, out: &mut Vec<u8>) -> Flow {
        if self.is_closing {
            return Flow::Close;
        }
        self.buffer.extend_from_slice(bytes);
        let mut used = 0;
        let flow = loop {
            match parse_request(&self.buffer[used..], &self.limits) {
                Ok(None) => break Flow::KeepOpen,
                Ok(Some((request, taken))) => {
                    used += taken;
                    let keep_alive = request.keeps_alive();
                    let response = handler.handle(&request);
                    response.encode(keep_alive, request.method == "HEAD", out);
                    if !keep_alive {
                        break Flow::Close;
                    }
                }
                Err(error) => {
                    refusal(&error).encode(false, false, out);
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

/// The reply to a request that could not be read.
fn refusal(error: &HttpError) -> Response {
    Response::new(
        error.status(),
        "text/plain; charset=utf-8",
        format!("{error}\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Echoes the method and path.
    struct Echo;

    impl Handler for Echo {
        fn handle(&mut self, request: &Request) -> Response {
            let body = format!("{} {} {}", request.method, request.path, request.body.len());
            Response::new(200, "text/plain", body)
        }
    }

    fn exchange(connection: &mut Connection, bytes: &[u8]) -> (String, Flow) {
        let mut out = Vec::new();
        let flow = connection.receive(bytes, &mut Echo, &mut out);
        (String::from_utf8(out).unwrap(), flow)
    }

    #[test]
    fn pipelined_requests_are_answered_in_order_and_kept_alive() {
        let mut connection = Connection::default();
        let (out, flow) = exchange(
            &mut connection,
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /c",
        );
        assert_eq!(flow, Flow::KeepOpen);
        let first = out.find("GET /a 0").unwrap();
        let second = out.find("POST /b 3").unwrap();
        assert!(first < second, "{out}");
        assert_eq!(out.matches("Connection: keep-alive").count(), 2);
        let (out, _) = exchange(&mut connection, b" HTTP/1.1\r\n\r\n");
        assert!(out.ends_with("GET /c 0"), "{out}");
    }

    #[test]
    fn close_and_http_1_0_end_the_connection_after_the_reply() {
        let mut connection = Connection::default();
        let (out, flow) = exchange(
            &mut connection,
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(flow, Flow::Close);
        assert!(out.contains("Connection: close"));
        assert_eq!(
            exchange(&mut connection, b"GET / HTTP/1.1\r\n\r\n").1,
            Flow::Close
        );
        let mut old = Connection::default();
        assert_eq!(exchange(&mut old, b"GET / HTTP/1.0\r\n\r\n").1, Flow::Close);
        let mut kept = Connection::default();
        let (_, flow) = exchange(
            &mut kept,
            b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
        );
        assert_eq!(flow, Flow::KeepOpen);
    }

    #[test]
    fn a_bad_request_is_answered_with_its_status_then_closed() {
        let mut connection = Connection::default();
        let (out, flow) = exchange(&mut connection, b"NOT HTTP AT ALL\r\n\r\n");
        assert_eq!(flow, Flow::Close);
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        let mut big = Connection::new(Limits {
            max_body_bytes: 10,
            ..Limits::default()
        });
        let (out, _) = exchange(&mut big, b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n");
        assert!(
            out.starts_with("HTTP/1.1 413 Content Too Large\r\n"),
            "{out}"
        );
    }

    #[test]
    fn a_head_reply_has_the_length_but_not_the_body() {
        let mut connection = Connection::default();
        let (out, _) = exchange(&mut connection, b"HEAD /x HTTP/1.1\r\n\r\n");
        assert!(out.contains("Content-Length: 9\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\n"), "{out}");
    }
}
