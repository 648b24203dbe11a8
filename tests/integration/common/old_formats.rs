//! Customers rewritten as an older release stored them, for the tests that
//! an old store still opens (upgrades.rs, binding.rs).

use std::collections::BTreeMap;

use pii_vault::store::{CustomerRecord, FieldRecord};
use serde::Serialize;

use super::{open_sled_when_released, TestVault};

/// Rewrites customer `id` of a stopped vault with `old_record(its record)`
/// in place of its record: on sled its `F` entry moves to the key of
/// `prefix` and the id, where the older layout kept it; on PostgreSQL its
/// row takes the record and `format`. Returns the sled tree (flushed), for
/// a test that changes more; `None` on PostgreSQL.
pub async fn rewrite_customer<R: Serialize>(
    vault: &TestVault,
    id: &str,
    (prefix, format): (&[u8], u32),
    old_record: impl FnOnce(CustomerRecord) -> R,
) -> Option<sled::Db> {
    #[derive(serde::Deserialize)]
    struct Entry {
        record: CustomerRecord,
        fields: BTreeMap<String, FieldRecord>,
    }
    #[derive(serde::Serialize)]
    struct OldEntry<R> {
        record: R,
        fields: BTreeMap<String, FieldRecord>,
    }
    let Some(database) = &vault.database else {
        let db = open_sled_when_released(&vault.paths.data_dir);
        let key = [b"F".as_slice(), id.as_bytes()].concat();
        let entry: Entry = postcard::from_bytes(&db.get(&key).unwrap().unwrap()).unwrap();
        let old_entry = OldEntry {
            record: old_record(entry.record),
            fields: entry.fields,
        };
        db.insert(
            [prefix, id.as_bytes()].concat(),
            postcard::to_stdvec(&old_entry).unwrap(),
        )
        .unwrap();
        db.remove(key).unwrap();
        db.flush().unwrap();
        return Some(db);
    };
    let client = database.client().await;
    let bytes: Vec<u8> = client
        .query_one("SELECT record FROM customers WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    let record: CustomerRecord = postcard::from_bytes(&bytes).unwrap();
    let old = postcard::to_stdvec(&old_record(record)).unwrap();
    client
        .execute(
            &format!("UPDATE customers SET format = {format}, record = $2 WHERE id = $1"),
            &[&id, &old],
        )
        .await
        .unwrap();
    None
}
