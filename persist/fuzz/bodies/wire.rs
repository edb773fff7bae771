//! Fuzz body: the wire decoder on arbitrary bytes, and round trips.

use persist::migrate::WireMessage;
use persist::migrate::wire::message_len;

/// Decodes `data` as one frame; what decodes must encode and decode back
/// to the same message, and agree with [`message_len`].
pub fn wire(data: &[u8]) {
    let length = message_len(data);
    let Ok(message) = WireMessage::decode(data) else {
        return;
    };
    assert_eq!(length, Ok(data.len()), "a decoded frame's length disagrees");
    let mut encoded = Vec::new();
    message
        .encode(&mut encoded)
        .expect("a decoded message encodes");
    let decoded = WireMessage::decode(&encoded).expect("an encoded message decodes");
    assert_eq!(decoded, message, "the round trip changed the message");
}
