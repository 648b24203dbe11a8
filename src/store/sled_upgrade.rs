//! Upgrades a sled store written before customer entries: it kept `c` customer
//! -> CustomerRecord and `f` customer NUL field -> FieldRecord, where the
//! current layout keeps both in one `C` entry. Runs on open, before the store
//! serves. Each batch of customers is folded atomically, so an upgrade cut
//! short by a crash resumes on the next open.

use std::collections::BTreeMap;

use super::records::{decode, encode, engine};
use super::sled_keys::{self as keys, CustomerEntry};
use super::{CustomerRecord, StoreError};

/// Customers folded per atomic batch.
const BATCH: usize = 1000;

/// The legacy layout: `c` customer -> CustomerRecord and `f` customer NUL
/// field -> FieldRecord.
const LEGACY_CUSTOMER: u8 = b'c';
const LEGACY_FIELD: u8 = b'f';

/// Folds every legacy customer and their fields into `C` entries and makes
/// that durable; returns how many customers it folded.
pub fn fold_legacy_customers(db: &sled::Db) -> Result<u64, StoreError> {
    let mut folded = 0;
    loop {
        let legacy: Vec<_> = db
            .scan_prefix([LEGACY_CUSTOMER])
            .take(BATCH)
            .collect::<Result<_, _>>()
            .map_err(engine)?;
        if legacy.is_empty() {
            break;
        }
        let mut batch = sled::Batch::default();
        for (key, record) in &legacy {
            let customer_id = std::str::from_utf8(&key[1..])
                .map_err(|_| StoreError::Corrupt("customer id is not UTF-8"))?;
            let entry = CustomerEntry {
                record: decode::<CustomerRecord>(record)?,
                fields: take_legacy_fields(db, customer_id, &mut batch)?,
            };
            batch.insert(keys::customer(customer_id), encode(&entry)?);
            batch.remove(key);
        }
        db.apply_batch(batch).map_err(engine)?;
        folded += legacy.len() as u64;
    }
    if folded > 0 {
        db.flush().map_err(engine)?;
        tracing::info!(
            customers = folded,
            "store upgraded: each customer's fields now live in their entry"
        );
    }
    Ok(folded)
}

/// The customer's legacy field records, whose keys `batch` removes.
fn take_legacy_fields(
    db: &sled::Db,
    customer_id: &str,
    batch: &mut sled::Batch,
) -> Result<BTreeMap<String, super::FieldRecord>, StoreError> {
    let prefix = keys::key(LEGACY_FIELD, &[customer_id.as_bytes(), b""]);
    let mut fields = BTreeMap::new();
    for item in db.scan_prefix(&prefix) {
        let (key, value) = item.map_err(engine)?;
        let name = String::from_utf8(key[prefix.len()..].to_vec())
            .map_err(|_| StoreError::Corrupt("field name is not UTF-8"))?;
        fields.insert(name, decode(&value)?);
        batch.remove(key);
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::fixtures::{customer_record, field_record};
    use crate::store::{SledStore, Store};

    /// Writes customers in the legacy layout: `ann` with two fields, `bo`
    /// with none, and `ann2`, whose id extends `ann`'s.
    fn write_legacy(dir: &std::path::Path) {
        let db = sled::open(dir).unwrap();
        for (id, revision) in [("ann", 3), ("bo", 1), ("ann2", 2)] {
            db.insert(
                keys::key(LEGACY_CUSTOMER, &[id.as_bytes()]),
                encode(&customer_record(revision)).unwrap(),
            )
            .unwrap();
        }
        for (id, name, token) in [
            ("ann", "email", "t1"),
            ("ann", "phone", "t2"),
            ("ann2", "email", "t3"),
        ] {
            let key = keys::key(LEGACY_FIELD, &[id.as_bytes(), name.as_bytes()]);
            db.insert(key, encode(&field_record(token)).unwrap())
                .unwrap();
        }
        db.flush().unwrap();
    }

    #[tokio::test]
    async fn opening_a_legacy_store_folds_fields_into_customer_entries() {
        let dir = tempfile::tempdir().unwrap();
        write_legacy(dir.path());
        let store = SledStore::open(dir.path(), 16 << 20).unwrap();
        assert_eq!(
            store.customer("ann").await.unwrap(),
            Some(customer_record(3))
        );
        assert_eq!(
            store.customer("bo").await.unwrap(),
            Some(customer_record(1))
        );
        let fields = store.fields("ann").await.unwrap();
        assert_eq!(
            fields,
            vec![
                ("email".into(), field_record("t1")),
                ("phone".into(), field_record("t2"))
            ]
        );
        assert_eq!(store.fields("bo").await.unwrap(), vec![]);
        assert_eq!(
            store.field("ann2", "email").await.unwrap(),
            Some(field_record("t3"))
        );
        assert_eq!(store.customer_count().await.unwrap(), 3);
        drop(store);
        // Nothing of the legacy layout is left, and a second open changes nothing.
        let db = sled::open(dir.path()).unwrap();
        assert_eq!(db.scan_prefix([LEGACY_CUSTOMER]).count(), 0);
        assert_eq!(db.scan_prefix([LEGACY_FIELD]).count(), 0);
        assert_eq!(fold_legacy_customers(&db).unwrap(), 0);
    }

    #[test]
    fn an_upgrade_cut_short_resumes_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        write_legacy(dir.path());
        let db = sled::open(dir.path()).unwrap();
        // As if a crash came after the batch that folded `ann` alone.
        let mut batch = sled::Batch::default();
        let entry = CustomerEntry {
            record: customer_record(3),
            fields: take_legacy_fields(&db, "ann", &mut batch).unwrap(),
        };
        batch.insert(keys::customer("ann"), encode(&entry).unwrap());
        batch.remove(keys::key(LEGACY_CUSTOMER, &[b"ann"]));
        db.apply_batch(batch).unwrap();
        assert_eq!(fold_legacy_customers(&db).unwrap(), 2);
        let ann: CustomerEntry = decode(&db.get(keys::customer("ann")).unwrap().unwrap()).unwrap();
        assert_eq!(ann.fields.len(), 2);
        let ann2: CustomerEntry =
            decode(&db.get(keys::customer("ann2")).unwrap().unwrap()).unwrap();
        assert_eq!(ann2.fields.keys().collect::<Vec<_>>(), ["email"]);
    }
}
