//! kv: a key-value store serving kv-proto get/put/delete requests by message.
//!
//! The data is an ordinary `HashMap` in linear memory: it persists because the
//! whole domain does, with no serialization code here.

#![forbid(unsafe_code)]

use std::collections::HashMap;

use kv_proto::{Request, Response};

fn main() {
    let mut store: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut buffer = vec![0u8; amber::MAX_MESSAGE_BYTES];
    amber::info!("kv ready (id {})", amber::self_id());
    loop {
        let (len_bytes, from) = match amber::recv(&mut buffer, None) {
            Ok(received) => received,
            Err(error) => {
                amber::warn!("recv failed: {error}");
                continue;
            }
        };
        let response = match Request::decode(&buffer[..len_bytes]) {
            Ok(request) => serve(&mut store, request),
            Err(error) => Response::Error(error.to_string()),
        };
        if let Err(error) = amber::send_to(from, &response.encode()) {
            amber::warn!("could not answer {from}: {error}");
        }
    }
}

/// Applies one request to the store.
fn serve(store: &mut HashMap<Vec<u8>, Vec<u8>>, request: Request) -> Response {
    match request {
        Request::Get { key } => store
            .get(&key)
            .map_or(Response::NotFound, |value| Response::Value(value.clone())),
        Request::Put { key, value } => {
            store.insert(key, value);
            Response::Done
        }
        Request::Delete { key } => match store.remove(&key) {
            Some(_) => Response::Done,
            None => Response::NotFound,
        },
    }
}
