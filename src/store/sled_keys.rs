//! The sled engine's key layout, in one tree (customer ids, field names and
//! tokens never contain a NUL byte; sequence numbers are big-endian so keys sort
//! in order):
//! - `F` customer                      -> CustomerEntry (record and every field)
//! - `t` token                         -> TokenRecord
//! - `k` customer NUL token            -> ()  (a customer's tokens, for erasure)
//! - `i` field NUL blind(32) customer  -> ()  (blind index)
//! - `e` customer                      -> receipt id (erased customers)
//! - `r` receipt id                    -> ReceiptRecord
//! - `a` seq                           -> AuditRecord
//! - `b` customer NUL seq              -> ()  (a customer's audit events)
//! - `A`                               -> AuditHead
//! - `T`                               -> AuditHead of the audit anchor (the last trimmed event)
//! - `R`                               -> RotationRecord (an unfinished rotation)
//! - `p` seq                           -> PolicyVersionRecord
//! - `P` version                       -> ()  (versions are never reused)
//! - `K`                               -> KeyAnchor (the keyring this store belongs to)
//! - `meta:format`                     -> u32 big-endian: the store format (`STORE_FORMAT`)
//! - `meta:upgrading`                  -> ()  (present while an upgrade folds the store)
//!
//! Older stores kept format 1 customer records, without token keys: first as
//! `c` customer -> record and `f` customer NUL field -> FieldRecord, later as
//! `C` customer -> entry. Format 2 records (before `binding_version`) were kept
//! as `D` customer -> entry, and format 3 records (before `requests`) as `E`
//! customer -> entry. `sled_upgrade.rs` folds all of them into `F` entries on
//! open.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{CustomerRecord, FieldRecord};

/// What is kept under a customer's key: their record and every field, so that
/// one read serves a customer with their fields and one write replaces them.
#[derive(Debug, Serialize, Deserialize)]
pub struct CustomerEntry {
    pub record: CustomerRecord,
    /// Ordered by field name, as `Store::fields` promises.
    pub fields: BTreeMap<String, FieldRecord>,
}

/// The leading part of a `CustomerEntry`: postcard lays a struct's fields out
/// in order and `decode` ignores what follows, so reading only the record
/// skips decoding the fields.
#[derive(Deserialize)]
pub struct CustomerEntryRecord {
    pub record: CustomerRecord,
}

pub fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut key = vec![prefix];
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part);
    }
    key
}

pub fn customer(customer_id: &str) -> Vec<u8> {
    key(CUSTOMERS[0], &[customer_id.as_bytes()])
}

/// The first customer key after `customer_id` (ids never contain NUL).
pub fn customer_after(customer_id: &str) -> Vec<u8> {
    key(CUSTOMERS[0], &[customer_id.as_bytes(), b""])
}

pub fn token(token: &str) -> Vec<u8> {
    key(b't', &[token.as_bytes()])
}

pub fn customer_token(customer_id: &str, token: &str) -> Vec<u8> {
    key(b'k', &[customer_id.as_bytes(), token.as_bytes()])
}

pub fn tokens_of(customer_id: &str) -> Vec<u8> {
    key(b'k', &[customer_id.as_bytes(), b""])
}

pub fn index_prefix(field: &str, blind_index: &[u8; 32]) -> Vec<u8> {
    let mut key = key(b'i', &[field.as_bytes(), b""]);
    key.extend_from_slice(blind_index);
    key
}

pub fn index(field: &str, blind_index: &[u8; 32], customer_id: &str) -> Vec<u8> {
    let mut key = index_prefix(field, blind_index);
    key.extend_from_slice(customer_id.as_bytes());
    key
}

pub fn erasure(customer_id: &str) -> Vec<u8> {
    key(b'e', &[customer_id.as_bytes()])
}

pub fn receipt(receipt_id: &str) -> Vec<u8> {
    key(b'r', &[receipt_id.as_bytes()])
}

pub const AUDIT_HEAD: &[u8] = b"A";
/// The last event trimmed from the audit log: the held log chains from its hash.
pub const AUDIT_ANCHOR: &[u8] = b"T";
pub const ROTATION: &[u8] = b"R";
pub const CUSTOMERS: &[u8] = b"F";
pub const KEY_ANCHOR: &[u8] = b"K";

/// The format the store is in; a binary refuses a store whose format is newer
/// than the one it writes. Stores written before the marker have none.
pub const FORMAT_MARKER: &[u8] = b"meta:format";
/// Present from before an upgrade's first write until its last: a store that
/// has it is half-folded (the upgrade resumes on the next open).
pub const UPGRADING_MARKER: &[u8] = b"meta:upgrading";
/// The store format this binary writes and reads up to: 4 is customer
/// entries of record format 4 under `F` (with remembered request ids).
pub const STORE_FORMAT: u32 = 4;

pub fn audit_event(seq: u64) -> Vec<u8> {
    key(b'a', &[&seq.to_be_bytes()])
}

pub fn customer_audit_event(customer_id: &str, seq: u64) -> Vec<u8> {
    key(b'b', &[customer_id.as_bytes(), &seq.to_be_bytes()])
}

pub fn audit_events_of(customer_id: &str) -> Vec<u8> {
    key(b'b', &[customer_id.as_bytes(), b""])
}

pub const POLICY_VERSIONS: &[u8] = b"p";

pub fn policy_version(seq: u64) -> Vec<u8> {
    key(b'p', &[&seq.to_be_bytes()])
}

pub fn policy_version_name(version: &str) -> Vec<u8> {
    key(b'P', &[version.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::fixtures::{customer_record, field_record};
    use crate::store::records::{decode, encode};

    #[test]
    fn an_entry_record_reads_the_record_of_a_whole_entry() {
        let record = CustomerRecord {
            encryptions: 9,
            privacy: Some(vec![1, 2]),
            ..customer_record(4)
        };
        let field = field_record("tok");
        let entry = CustomerEntry {
            record: record.clone(),
            fields: BTreeMap::from([("email".to_owned(), field)]),
        };
        let bytes = encode(&entry).unwrap();
        assert_eq!(
            decode::<CustomerEntryRecord>(&bytes).unwrap().record,
            record
        );
    }
}
