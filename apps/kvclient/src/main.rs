//! kvclient: puts, reads and deletes keys through kv and prints the results.
//!
//! It also counts its own runs in kv under the key `runs`, so running it again
//! after a reboot shows that kv kept its data.

#![forbid(unsafe_code)]

use std::fmt;
use std::time::Duration;

use kv_proto::{Request, Response, SERVICE_NAME};

/// How long to wait for kv's answer to one request.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often to try reaching kv (it may start after this client).
const SEND_ATTEMPTS: u32 = 50;

fn main() {
    if let Err(error) = run() {
        amber::error!("kvclient failed: {error}");
        amber::exit(1);
    }
}

fn run() -> Result<(), ClientError> {
    let mut client = Client {
        buffer: vec![0u8; amber::MAX_MESSAGE_BYTES],
    };

    let runs = match client.call(&get("runs"))? {
        Response::Value(value) => String::from_utf8_lossy(&value).parse::<u64>().unwrap_or(0),
        _ => 0,
    };
    amber::info!("runs before this one: {runs}");
    client.expect_done(&put("runs", &(runs + 1).to_string()))?;

    client.expect_done(&put("greeting", "hello"))?;
    amber::info!("put greeting = hello");
    client.expect_done(&put("answer", "42"))?;
    amber::info!("put answer = 42");
    for key in ["greeting", "answer"] {
        let shown = show(&client.call(&get(key))?);
        amber::info!("get {key}: {shown}");
    }
    client.expect_done(&Request::Delete {
        key: b"greeting".to_vec(),
    })?;
    amber::info!("del greeting");
    let shown = show(&client.call(&get("greeting"))?);
    amber::info!("get greeting: {shown}");
    amber::info!("kvclient done");
    Ok(())
}

struct Client {
    buffer: Vec<u8>,
}

impl Client {
    /// Sends `request` to kv and waits for its response.
    fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        let message = request.encode();
        let mut attempt = 1;
        loop {
            match amber::send(SERVICE_NAME, &message) {
                Ok(()) => break,
                Err(amber::SendError::NoSuchDomain | amber::SendError::MailboxFull)
                    if attempt < SEND_ATTEMPTS =>
                {
                    attempt += 1;
                    amber::sleep(Duration::from_millis(100));
                }
                Err(error) => return Err(ClientError::Send(error)),
            }
        }
        let (len_bytes, _from) =
            amber::recv(&mut self.buffer, Some(REPLY_TIMEOUT)).map_err(ClientError::Receive)?;
        Response::decode(&self.buffer[..len_bytes]).map_err(ClientError::Decode)
    }

    /// Sends `request` and checks that kv answered `Done`.
    fn expect_done(&mut self, request: &Request) -> Result<(), ClientError> {
        match self.call(request)? {
            Response::Done => Ok(()),
            other => Err(ClientError::Unexpected(other)),
        }
    }
}

fn get(key: &str) -> Request {
    Request::Get {
        key: key.as_bytes().to_vec(),
    }
}

fn put(key: &str, value: &str) -> Request {
    Request::Put {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    }
}

fn show(response: &Response) -> String {
    match response {
        Response::Value(value) => String::from_utf8_lossy(value).into_owned(),
        Response::NotFound => "not found".to_owned(),
        Response::Done => "done".to_owned(),
        Response::Error(text) => format!("error: {text}"),
    }
}

#[derive(Debug)]
enum ClientError {
    Send(amber::SendError),
    Receive(amber::RecvError),
    Decode(kv_proto::DecodeError),
    Unexpected(Response),
}

impl fmt::Display for ClientError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Send(error) => write!(formatter, "sending to {SERVICE_NAME}: {error}"),
            Self::Receive(error) => write!(formatter, "waiting for {SERVICE_NAME}: {error}"),
            Self::Decode(error) => write!(formatter, "bad answer from {SERVICE_NAME}: {error}"),
            Self::Unexpected(response) => write!(formatter, "unexpected answer {response:?}"),
        }
    }
}
