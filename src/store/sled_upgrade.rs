//! Upgrades a sled store written by an older release. Customer records of
//! format 1 (a clear token salt, no token key) were kept either as `c`
//! customer -> record with `f` customer NUL field -> FieldRecord, or later as
//! `C` customer -> entry (record and fields). Format 2 records (with a token
//! key, before `binding_version`) were kept as `D` customer -> entry, format
//! 3 records (before remembered request ids) as `E` customer -> entry. All are
//! folded into `F` entries of the current format; a folded customer keeps the
//! unbound binding until the vault migrates their ciphertexts. Runs on open, before the store serves. Each batch of
//! customers is folded atomically, so an upgrade cut short by a crash resumes
//! on the next open.
//!
//! The store carries its format (`meta:format`, see `sled_keys.rs`). A store
//! whose format is newer than `STORE_FORMAT` is refused before anything is
//! written. Before its first write an upgrade sets the format to
//! `STORE_FORMAT` and `meta:upgrading`, durably: a half-folded store is then
//! recognisable, and a binary that checks the marker but reads only an older
//! format refuses it (releases from before the marker do not check it).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::records::{
    decode, encode, engine, Format2CustomerRecord, Format3CustomerRecord, LegacyCustomerRecord,
};
use super::sled_keys::{self as keys, CustomerEntry};
use super::{FieldRecord, StoreError};

/// Customers folded per atomic batch.
const BATCH: usize = 1000;

/// The first layout: `c` customer -> record and `f` customer NUL field -> FieldRecord.
const SPLIT_CUSTOMER: u8 = b'c';
const SPLIT_FIELD: u8 = b'f';
/// The second layout: `C` customer -> entry of a format 1 record and its fields.
const FORMAT1_ENTRY: u8 = b'C';
/// The third layout: `D` customer -> entry of a format 2 record and its fields.
const FORMAT2_ENTRY: u8 = b'D';
/// The fourth layout: `E` customer -> entry of a format 3 record and its fields.
const FORMAT3_ENTRY: u8 = b'E';

#[derive(Deserialize)]
struct Format3Entry {
    record: Format3CustomerRecord,
    fields: BTreeMap<String, FieldRecord>,
}

#[derive(Deserialize)]
struct Format2Entry {
    record: Format2CustomerRecord,
    fields: BTreeMap<String, FieldRecord>,
}

#[derive(Deserialize)]
struct Format1Entry {
    record: LegacyCustomerRecord,
    fields: BTreeMap<String, FieldRecord>,
}

/// Checks the store's format marker and brings the store to `STORE_FORMAT`:
/// refuses a store of a newer format (changing nothing), marks a new store,
/// and folds an older or half-upgraded one under the `meta:upgrading` marker.
/// Returns how many customers it folded.
pub fn upgrade_on_open(db: &sled::Db) -> Result<u64, StoreError> {
    let format = stored_format(db)?;
    if let Some(format) = format {
        if format > keys::STORE_FORMAT {
            return Err(StoreError::engine_refused(format!(
                "this store was written by a newer pii-vault (format {format}); this binary \
                 reads up to format {}. Run the newer release (or restore a backup taken \
                 before the upgrade); nothing was changed",
                keys::STORE_FORMAT
            )));
        }
    }
    let upgrading = db.contains_key(keys::UPGRADING_MARKER).map_err(engine)?;
    if format == Some(keys::STORE_FORMAT) && !upgrading && !holds_legacy(db)? {
        return Ok(0);
    }
    let empty = format.is_none() && db.first().map_err(engine)?.is_none();
    let mut mark = sled::Batch::default();
    mark.insert(keys::FORMAT_MARKER, &keys::STORE_FORMAT.to_be_bytes());
    if empty {
        // A new store: nothing to fold.
        db.apply_batch(mark).map_err(engine)?;
        db.flush().map_err(engine)?;
        return Ok(0);
    }
    mark.insert(keys::UPGRADING_MARKER, &[]);
    db.apply_batch(mark).map_err(engine)?;
    db.flush().map_err(engine)?;
    tracing::info!(
        from = format.map_or_else(|| "unmarked".to_owned(), |format| format.to_string()),
        to = keys::STORE_FORMAT,
        "store upgrade in progress"
    );
    let folded = fold_legacy_customers(db)?;
    db.remove(keys::UPGRADING_MARKER).map_err(engine)?;
    db.flush().map_err(engine)?;
    tracing::info!(format = keys::STORE_FORMAT, "store upgrade finished");
    Ok(folded)
}

/// The store's format marker, if it has one.
pub fn stored_format(db: &sled::Db) -> Result<Option<u32>, StoreError> {
    match db.get(keys::FORMAT_MARKER).map_err(engine)? {
        Some(bytes) => {
            let bytes: [u8; 4] = bytes
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("store format marker"))?;
            Ok(Some(u32::from_be_bytes(bytes)))
        }
        None => Ok(None),
    }
}

/// Whether any customer is still kept in an older layout.
fn holds_legacy(db: &sled::Db) -> Result<bool, StoreError> {
    for prefix in [
        SPLIT_CUSTOMER,
        SPLIT_FIELD,
        FORMAT1_ENTRY,
        FORMAT2_ENTRY,
        FORMAT3_ENTRY,
    ] {
        if db
            .scan_prefix([prefix])
            .next()
            .transpose()
            .map_err(engine)?
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Folds every customer of an older layout into an `F` entry and makes that
/// durable; returns how many customers it folded.
pub fn fold_legacy_customers(db: &sled::Db) -> Result<u64, StoreError> {
    let folded = fold(db, SPLIT_CUSTOMER, |db, customer_id, value, batch| {
        Ok(CustomerEntry {
            record: decode::<LegacyCustomerRecord>(value)?.into(),
            fields: take_split_fields(db, customer_id, batch)?,
        })
    })? + fold(db, FORMAT1_ENTRY, |_, _, value, _| {
        let entry: Format1Entry = decode(value)?;
        Ok(CustomerEntry {
            record: entry.record.into(),
            fields: entry.fields,
        })
    })? + fold(db, FORMAT2_ENTRY, |_, _, value, _| {
        let entry: Format2Entry = decode(value)?;
        Ok(CustomerEntry {
            record: entry.record.into(),
            fields: entry.fields,
        })
    })? + fold(db, FORMAT3_ENTRY, |_, _, value, _| {
        let entry: Format3Entry = decode(value)?;
        Ok(CustomerEntry {
            record: entry.record.into(),
            fields: entry.fields,
        })
    })?;
    if folded > 0 {
        db.flush().map_err(engine)?;
        tracing::info!(
            customers = folded,
            "store upgraded: customer entries rewritten in the current format"
        );
    }
    Ok(folded)
}

type Convert = fn(&sled::Db, &str, &[u8], &mut sled::Batch) -> Result<CustomerEntry, StoreError>;

/// Folds the customers kept under `prefix`, a batch at a time, through `convert`.
fn fold(db: &sled::Db, prefix: u8, convert: Convert) -> Result<u64, StoreError> {
    let mut folded = 0;
    loop {
        let legacy: Vec<_> = db
            .scan_prefix([prefix])
            .take(BATCH)
            .collect::<Result<_, _>>()
            .map_err(engine)?;
        if legacy.is_empty() {
            return Ok(folded);
        }
        let mut batch = sled::Batch::default();
        for (key, value) in &legacy {
            let customer_id = std::str::from_utf8(&key[1..])
                .map_err(|_| StoreError::Corrupt("customer id is not UTF-8"))?;
            let entry = convert(db, customer_id, value, &mut batch)?;
            batch.insert(keys::customer(customer_id), encode(&entry)?);
            batch.remove(key);
        }
        db.apply_batch(batch).map_err(engine)?;
        folded += legacy.len() as u64;
    }
}

/// The customer's field records of the first layout, whose keys `batch` removes.
fn take_split_fields(
    db: &sled::Db,
    customer_id: &str,
    batch: &mut sled::Batch,
) -> Result<BTreeMap<String, FieldRecord>, StoreError> {
    let prefix = keys::key(SPLIT_FIELD, &[customer_id.as_bytes(), b""]);
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
    use crate::store::{CustomerRecord, Customers, SledStore};
    use serde::Serialize;

    /// A format 1 record as the older releases encoded it.
    #[derive(Serialize)]
    struct Format1Record {
        revision: u64,
        created_at_ms: i64,
        dek: crate::store::WrappedDekRecord,
        encryptions: u64,
        token_salt: [u8; 16],
        privacy: Option<Vec<u8>>,
        wrapped_under: std::collections::BTreeSet<u32>,
    }

    fn format1(revision: u64) -> Format1Record {
        let record = customer_record(revision);
        Format1Record {
            revision,
            created_at_ms: record.created_at_ms,
            dek: record.dek,
            encryptions: record.encryptions,
            token_salt: [3; 16],
            privacy: record.privacy,
            wrapped_under: record.wrapped_under,
        }
    }

    /// A format 2 entry (`dee`, revision 5, one field) as the older releases encoded it.
    fn format2_entry() -> impl Serialize {
        #[derive(Serialize)]
        struct Format2Record {
            revision: u64,
            created_at_ms: i64,
            dek: crate::store::WrappedDekRecord,
            token_key: Option<crate::store::WrappedKeyRecord>,
            encryptions: u64,
            privacy: Option<Vec<u8>>,
            wrapped_under: std::collections::BTreeSet<u32>,
        }
        #[derive(Serialize)]
        struct Entry {
            record: Format2Record,
            fields: BTreeMap<String, FieldRecord>,
        }
        let record = customer_record(5);
        Entry {
            record: Format2Record {
                revision: 5,
                created_at_ms: record.created_at_ms,
                dek: record.dek,
                token_key: record.token_key,
                encryptions: record.encryptions,
                privacy: record.privacy,
                wrapped_under: record.wrapped_under,
            },
            fields: BTreeMap::from([("email".to_owned(), field_record("t5"))]),
        }
    }

    /// What a format 1 record reads as: no token key yet.
    fn upgraded(revision: u64) -> CustomerRecord {
        CustomerRecord {
            token_key: None,
            binding_version: crate::store::BINDING_UNBOUND,
            ..customer_record(revision)
        }
    }

    /// The tree in `dir` once its last handle let go of the lock, which
    /// sled's I/O threads release a moment after the handle drops.
    fn reopen(dir: &std::path::Path) -> sled::Db {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match sled::open(dir) {
                Ok(db) => return db,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                Err(error) => panic!("{error}"),
            }
        }
    }

    /// Writes customers in the first layout: `ann` with two fields, `bo`
    /// with none, and `ann2`, whose id extends `ann`'s; and `cy` in the
    /// second layout, with one field.
    fn write_legacy(dir: &std::path::Path) {
        let db = sled::open(dir).unwrap();
        for (id, revision) in [("ann", 3), ("bo", 1), ("ann2", 2)] {
            db.insert(
                keys::key(SPLIT_CUSTOMER, &[id.as_bytes()]),
                encode(&format1(revision)).unwrap(),
            )
            .unwrap();
        }
        for (id, name, token) in [
            ("ann", "email", "t1"),
            ("ann", "phone", "t2"),
            ("ann2", "email", "t3"),
        ] {
            let key = keys::key(SPLIT_FIELD, &[id.as_bytes(), name.as_bytes()]);
            db.insert(key, encode(&field_record(token)).unwrap())
                .unwrap();
        }
        #[derive(Serialize)]
        struct Entry {
            record: Format1Record,
            fields: BTreeMap<String, FieldRecord>,
        }
        let cy = Entry {
            record: format1(7),
            fields: BTreeMap::from([("email".to_owned(), field_record("t4"))]),
        };
        db.insert(keys::key(FORMAT1_ENTRY, &[b"cy"]), encode(&cy).unwrap())
            .unwrap();
        db.insert(
            keys::key(FORMAT2_ENTRY, &[b"dee"]),
            encode(&format2_entry()).unwrap(),
        )
        .unwrap();
        db.flush().unwrap();
    }

    #[tokio::test]
    async fn opening_a_legacy_store_folds_every_customer_into_current_entries() {
        let dir = tempfile::tempdir().unwrap();
        write_legacy(dir.path());
        let store = SledStore::open(dir.path(), 16 << 20).unwrap();
        assert_eq!(store.customer("ann").await.unwrap(), Some(upgraded(3)));
        assert_eq!(store.customer("bo").await.unwrap(), Some(upgraded(1)));
        assert_eq!(store.customer("cy").await.unwrap(), Some(upgraded(7)));
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
        assert_eq!(
            store.field("cy", "email").await.unwrap(),
            Some(field_record("t4"))
        );
        // A format 2 record keeps its token key and reads as unbound.
        assert_eq!(
            store.customer("dee").await.unwrap(),
            Some(CustomerRecord {
                binding_version: crate::store::BINDING_UNBOUND,
                ..customer_record(5)
            })
        );
        assert_eq!(
            store.field("dee", "email").await.unwrap(),
            Some(field_record("t5"))
        );
        assert_eq!(store.customer_count().await.unwrap(), 5);
        drop(store);
        // Nothing of the legacy layouts is left, and a second open changes nothing.
        let db = reopen(dir.path());
        for prefix in [
            SPLIT_CUSTOMER,
            SPLIT_FIELD,
            FORMAT1_ENTRY,
            FORMAT2_ENTRY,
            FORMAT3_ENTRY,
        ] {
            assert_eq!(db.scan_prefix([prefix]).count(), 0);
        }
        assert_eq!(fold_legacy_customers(&db).unwrap(), 0);
    }

    #[test]
    fn an_upgrade_cut_short_resumes_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        write_legacy(dir.path());
        let db = reopen(dir.path());
        // As if a crash came after the batch that folded `ann` alone.
        let mut batch = sled::Batch::default();
        let entry = CustomerEntry {
            record: upgraded(3),
            fields: take_split_fields(&db, "ann", &mut batch).unwrap(),
        };
        batch.insert(keys::customer("ann"), encode(&entry).unwrap());
        batch.remove(keys::key(SPLIT_CUSTOMER, &[b"ann"]));
        db.apply_batch(batch).unwrap();
        assert_eq!(fold_legacy_customers(&db).unwrap(), 4);
        let ann: CustomerEntry = decode(&db.get(keys::customer("ann")).unwrap().unwrap()).unwrap();
        assert_eq!(ann.fields.len(), 2);
        let ann2: CustomerEntry =
            decode(&db.get(keys::customer("ann2")).unwrap().unwrap()).unwrap();
        assert_eq!(ann2.fields.keys().collect::<Vec<_>>(), ["email"]);
    }
}
