//! Fuzz body: `decode_record` on arbitrary bytes, checked, and round trips.

use persist::migrate::{decode_record, encode_record};

/// Decodes `data` as a metadata chain's bytes. Whatever decodes goes
/// through `validate` (which may refuse it, never panic) and, when it
/// encodes, must decode back to the same record.
pub fn record(data: &[u8]) -> bool {
    let Ok(record) = decode_record(data) else {
        return false;
    };
    let _ = persist::validate(record.metadata());
    if let Ok(encoded) = encode_record(&record) {
        let decoded = decode_record(&encoded).expect("an encoded record decodes");
        assert_eq!(decoded, record, "the round trip changed the record");
    }
    true
}
