//! Upgrades and rollbacks: a store or database written by a newer release is
//! refused, unchanged; an older sled store is upgraded and marked.

use crate::common;

use std::path::Path;

use common::TestDatabase;
use pii_vault::store::{PgStore, SledStore};

const FORMAT_MARKER: &[u8] = b"meta:format";
const UPGRADING_MARKER: &[u8] = b"meta:upgrading";

/// Every key and value of the sled store in `dir`.
fn contents(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = common::open_sled_when_released(dir);
    db.iter()
        .map(|item| {
            let (key, value) = item.unwrap();
            (key.to_vec(), value.to_vec())
        })
        .collect()
}

fn format_of(dir: &Path) -> Option<u32> {
    let db = common::open_sled_when_released(dir);
    db.get(FORMAT_MARKER)
        .unwrap()
        .map(|bytes| u32::from_be_bytes(bytes.as_ref().try_into().unwrap()))
}

/// A store with something in it (an audit head and a key anchor come with
/// any vault), closed.
async fn written_store(dir: &Path) {
    let paths = common::prepare_dir(dir, &common::test_policy());
    let vault = pii_vault::app::open_vault(&paths, &Default::default())
        .await
        .unwrap();
    vault.flush().await.unwrap();
    drop(vault);
}

fn store_dir(dir: &Path) -> std::path::PathBuf {
    common::prepare_dir(dir, &common::test_policy()).data_dir
}

#[tokio::test]
async fn a_new_store_is_marked_with_this_binarys_format() {
    let dir = tempfile::tempdir().unwrap();
    drop(SledStore::open(dir.path(), 16 << 20).unwrap());
    assert_eq!(format_of(dir.path()), Some(4));
    let db = common::open_sled_when_released(dir.path());
    assert!(!db.contains_key(UPGRADING_MARKER).unwrap());
}

#[tokio::test]
async fn a_sled_store_from_a_newer_release_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    written_store(dir.path()).await;
    let data = store_dir(dir.path());
    {
        let db = common::open_sled_when_released(&data);
        db.insert(FORMAT_MARKER, &99u32.to_be_bytes()).unwrap();
        // As a newer release folding its own format would leave it.
        db.insert(UPGRADING_MARKER, &[]).unwrap();
        db.flush().unwrap();
    }
    let before = contents(&data);
    let error = match SledStore::open(&data, 16 << 20) {
        Ok(_) => panic!("a store of format 99 was opened"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("newer pii-vault (format 99)") && error.contains("reads up to format 4"),
        "{error}"
    );
    assert_eq!(contents(&data), before);
    // Through the application too, with the data directory named.
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    let error = match pii_vault::app::open_vault(&paths, &Default::default()).await {
        Ok(_) => panic!("the vault opened a store of format 99"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("format 99"), "{error}");
    assert_eq!(contents(&data), before);
}

#[tokio::test]
async fn an_unmarked_store_from_an_older_release_opens_and_gets_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    written_store(dir.path()).await;
    let data = store_dir(dir.path());
    {
        // Stores written before the marker have none.
        let db = common::open_sled_when_released(&data);
        db.remove(FORMAT_MARKER).unwrap();
        db.flush().unwrap();
    }
    let before = contents(&data);
    assert!(!before.is_empty());
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    let vault = pii_vault::app::open_vault(&paths, &Default::default())
        .await
        .unwrap();
    vault.flush().await.unwrap();
    drop(vault);
    assert_eq!(format_of(&data), Some(4));
    let db = common::open_sled_when_released(&data);
    assert!(!db.contains_key(UPGRADING_MARKER).unwrap());
}

#[tokio::test]
async fn a_half_upgraded_store_finishes_its_upgrade_on_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(SledStore::open(dir.path(), 16 << 20).unwrap());
    {
        let db = common::open_sled_when_released(dir.path());
        db.insert(UPGRADING_MARKER, &[]).unwrap();
        db.flush().unwrap();
    }
    drop(SledStore::open(dir.path(), 16 << 20).unwrap());
    let db = common::open_sled_when_released(dir.path());
    assert!(!db.contains_key(UPGRADING_MARKER).unwrap());
    assert_eq!(
        db.get(FORMAT_MARKER).unwrap().as_deref(),
        Some(&4u32.to_be_bytes()[..])
    );
}

/// Schema versions and tables of the database, to see that nothing changed.
async fn schema_state(url: &str) -> (Vec<i32>, Vec<String>) {
    let client = common::postgres_client(url).await;
    let versions = client
        .query(
            "SELECT version FROM pii_vault_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let tables = client
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    (versions, tables)
}

#[tokio::test]
#[ignore = "PostgreSQL: runs in the PII_VAULT_TEST_STORE=postgres pass (--include-ignored)"]
async fn a_database_migrated_by_a_newer_release_is_refused_and_left_unchanged() {
    let database = TestDatabase::required().await;
    drop(
        PgStore::connect(&database.url, 2, None, true)
            .await
            .unwrap(),
    );
    {
        let client = database.client().await;
        client
            .execute(
                "INSERT INTO pii_vault_migrations (version) VALUES (1000)",
                &[],
            )
            .await
            .unwrap();
    }
    let before = schema_state(&database.url).await;
    let error = match PgStore::connect(&database.url, 2, None, true).await {
        Ok(_) => panic!("a database of schema version 1000 was opened"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("newer pii-vault (schema version 1000)")
            && error.contains("knows up to schema version 4"),
        "{error}"
    );
    assert_eq!(schema_state(&database.url).await, before);
}

/// A customer record as the release before remembered request ids wrote it
/// (format 3, no `requests`).
#[derive(serde::Serialize)]
struct Format3Record {
    revision: u64,
    created_at_ms: i64,
    dek: pii_vault::store::WrappedDekRecord,
    token_key: Option<pii_vault::store::WrappedKeyRecord>,
    encryptions: u64,
    privacy: Option<Vec<u8>>,
    wrapped_under: std::collections::BTreeSet<u32>,
    binding_version: u8,
}

impl From<pii_vault::store::CustomerRecord> for Format3Record {
    fn from(record: pii_vault::store::CustomerRecord) -> Self {
        Format3Record {
            revision: record.revision,
            created_at_ms: record.created_at_ms,
            dek: record.dek,
            token_key: record.token_key,
            encryptions: record.encryptions,
            privacy: record.privacy,
            wrapped_under: record.wrapped_under,
            binding_version: record.binding_version,
        }
    }
}

/// Rewrites customer `id` as the release before request ids stored it: an
/// `E` entry of a format 3 record in a format 3 sled store, or a row of
/// `format = 3` on PostgreSQL. The vault is stopped.
async fn rewrite_as_format_3(vault: &common::TestVault, id: &str) {
    let sled = common::rewrite_customer(vault, id, (b"E", 3), Format3Record::from).await;
    if let Some(db) = sled {
        db.insert(FORMAT_MARKER, &3u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
}

/// A customer stored before request ids (record format 3) opens with its data,
/// and its Tokenize calls then remember their request ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_stored_before_request_ids_opens_and_remembers_them() {
    use pii_vault::pb::{FieldKind, TokenFormat};
    let mut vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let random = vec![(FieldKind::Generic, "kept value", TokenFormat::Random)];
    let old = common::tokenize(
        &mut admin,
        common::Tokenize::of("cust-old").items(random.clone()),
    )
    .await
    .unwrap();
    vault.stop().await;
    rewrite_as_format_3(&vault, "cust-old").await;

    vault.start_again().await;
    let mut admin = vault.admin().await;
    let resolved = common::detokenize(&mut admin, &old, "billing")
        .await
        .unwrap();
    assert_eq!(resolved[0].value, "kept value");
    let request = || {
        common::Tokenize::of("cust-old")
            .item(FieldKind::Generic, "new value", TokenFormat::Random)
            .request_id("5f0c6a62-6f3e-4b7a-9d8e-2c1b0a9f8e7d")
            .build()
    };
    let first = admin.tokenize(request()).await.unwrap().into_inner();
    let retry = admin.tokenize(request()).await.unwrap().into_inner();
    assert_eq!(retry.tokens, first.tokens);
    vault.stop().await;
    if vault.database.is_none() {
        assert_eq!(format_of(&vault.paths.data_dir), Some(4));
        let db = common::open_sled_when_released(&vault.paths.data_dir);
        assert_eq!(db.scan_prefix(b"E").count(), 0, "a format 3 entry is left");
    }
}
