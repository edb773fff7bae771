//! Serde for the abi crate's types in records (abi has no dependencies).
//!
//! Each module is a `#[serde(with = ...)]` adapter that encodes the abi type
//! exactly as the plain type it wraps was encoded before, so images written
//! before the abi crate existed read the same.

use alloc::vec::Vec;

use abi::{DomainId, ValueType};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A [`DomainId`] as its `u128`.
pub(crate) mod domain_id {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        id: &DomainId,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        id.0.serialize(serializer)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DomainId, D::Error> {
        u128::deserialize(deserializer).map(DomainId)
    }
}

/// Per-peer message counts as a sequence of `(u128, u64)`.
pub(crate) mod domain_id_counts {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        counts: &[(DomainId, u64)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(counts.iter().map(|&(id, count)| (id.0, count)))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(DomainId, u64)>, D::Error> {
        let counts = Vec::<(u128, u64)>::deserialize(deserializer)?;
        Ok(counts
            .into_iter()
            .map(|(id, count)| (DomainId(id), count))
            .collect())
    }
}

/// A [`ValueType`] as the enum of the same variants persist once had.
pub(crate) mod value_type {
    use super::*;

    /// The stored form: variant order is the encoding, so it never changes.
    #[derive(Serialize, Deserialize)]
    enum Stored {
        I32,
        I64,
        F32,
        F64,
    }

    pub(crate) fn serialize<S: Serializer>(
        value_type: &ValueType,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value_type {
            ValueType::I32 => Stored::I32,
            ValueType::I64 => Stored::I64,
            ValueType::F32 => Stored::F32,
            ValueType::F64 => Stored::F64,
        }
        .serialize(serializer)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<ValueType, D::Error> {
        Ok(match Stored::deserialize(deserializer)? {
            Stored::I32 => ValueType::I32,
            Stored::I64 => ValueType::I64,
            Stored::F32 => ValueType::F32,
            Stored::F64 => ValueType::F64,
        })
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use abi::{DomainId, ValueType};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Wrapped {
        #[serde(with = "super::domain_id")]
        id: DomainId,
        #[serde(with = "super::domain_id_counts")]
        counts: vec::Vec<(DomainId, u64)>,
        #[serde(with = "super::value_type")]
        value_type: ValueType,
    }

    /// What the fields were before the abi crate: the encoding to keep.
    #[derive(Serialize)]
    enum PlainValueType {
        _I32,
        _I64,
        _F32,
        F64,
    }

    #[test]
    fn abi_types_encode_as_the_plain_types_did() {
        let wrapped = Wrapped {
            id: DomainId(u128::MAX - 3),
            counts: vec![(DomainId(7), 2), (DomainId(1 << 100), 9)],
            value_type: ValueType::F64,
        };
        let plain = (
            u128::MAX - 3,
            vec![(7u128, 2u64), (1u128 << 100, 9u64)],
            PlainValueType::F64,
        );
        let bytes = postcard::to_allocvec(&wrapped).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&plain).unwrap());
        assert_eq!(postcard::from_bytes::<Wrapped>(&bytes).unwrap(), wrapped);
    }
}
