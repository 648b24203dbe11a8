//! The embedded engine: one sled tree (layout in `sled_keys.rs`) and one writer
//! thread that checks and applies every chained write in atomic batches and
//! makes each batch durable before answering (`sled_writer.rs`). Reads go to
//! the tree directly.

use std::fs::File;
use std::ops::Bound;
use std::path::Path;

use serde::de::DeserializeOwned;

use super::audit::{AuditEntry, AuditHead, AuditQuery, AuditRecord, AuditTrim};
use super::chain::ChainedWrite;
use super::disk_reserve::DiskReserve;
use super::group_commit::Answer;
use super::records::{decode, encode, engine};
use super::sled_keys::{self as keys, CustomerEntry, CustomerEntryRecord};
use super::sled_upgrade::upgrade_on_open;
use super::sled_writer::{ChainWriter, EncodedChange, TrimCheck, WriteJob};
use super::{
    erasure_hash, AuditLog, CommitError, CustomerChange, CustomerRecord, Customers, Erasure,
    FieldRecord, KeyAnchor, KeyState, PolicyVersionRecord, PolicyVersions, ReceiptRecord,
    RotationRecord, StoreError, StoreHealth, StorePressure, TokenRecord, Upkeep,
};

pub struct SledStore {
    tree: sled::Db,
    writer: ChainWriter,
    reserve: DiskReserve,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. `cache_bytes` bounds sled's page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<SledStore, StoreError> {
        SledStore::open_with_reserve(dir, cache_bytes, 0)
    }

    /// `open`, refusing writes while less than `min_free_bytes` is free on
    /// the store's disk.
    pub fn open_with_reserve(
        dir: &Path,
        cache_bytes: u64,
        min_free_bytes: u64,
    ) -> Result<SledStore, StoreError> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // The writer flushes every group; a background flusher would only add syncs.
            .flush_every_ms(None);
        let db = open_when_unlocked(&config)?;
        upgrade_on_open(&db)?;
        let log_file = File::open(dir.join("db"))
            .map_err(|error| StoreError::engine("opening sled's log file to sync it", error))?;
        let sync_db = db.clone();
        // sled's flush ends in sync_file_range on Linux, which promises nothing after
        // a power loss; the fdatasync that follows does.
        let sync = Box::new(move || {
            sync_db.flush().map_err(std::io::Error::other)?;
            log_file.sync_data()
        });
        Ok(SledStore {
            writer: ChainWriter::start(
                db.clone(),
                sync,
                DiskReserve::new(dir.to_path_buf(), min_free_bytes),
            )?,
            reserve: DiskReserve::new(dir.to_path_buf(), min_free_bytes),
            tree: db,
        })
    }

    /// The event a customer's audit index key (`b` customer NUL seq) names.
    fn indexed_audit_event(&self, index_key: &[u8]) -> Result<AuditRecord, StoreError> {
        let seq_bytes: [u8; 8] = index_key
            .get(index_key.len().saturating_sub(8)..)
            .and_then(|tail| tail.try_into().ok())
            .ok_or(StoreError::Corrupt("audit index key"))?;
        self.get::<AuditRecord>(&keys::audit_event(u64::from_be_bytes(seq_bytes)))?
            .ok_or(StoreError::Corrupt("audit index names a missing event"))
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.tree.get(key).map_err(engine)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The rest of each key under `prefix`, at most `limit` of them.
    fn keys_with_prefix(&self, prefix: &[u8], limit: usize) -> Result<Vec<String>, StoreError> {
        self.tree
            .scan_prefix(prefix)
            .keys()
            .take(limit)
            .map(|key| utf8(key.map_err(engine)?[prefix.len()..].to_vec()))
            .collect()
    }

    fn entry(&self, customer_id: &str) -> Result<Option<CustomerEntry>, StoreError> {
        self.get(&keys::customer(customer_id))
    }

    fn audit_head(&self) -> Result<AuditHead, StoreError> {
        Ok(self.get(keys::AUDIT_HEAD)?.unwrap_or_default())
    }

    /// Encodes the customers' changes (off the writer thread) and writes them.
    async fn write(&self, chained: ChainedWrite<CustomerChange>) -> Answer {
        let encoded = chained.try_map(EncodedChange::encode)?;
        self.writer.write(WriteJob::of(encoded)).await
    }
}

/// How long opening waits for a process (or a vault in this process) that is
/// still closing the same store to let go of its lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn open_when_unlocked(config: &sled::Config) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            // sled reports a held lock only in its message.
            Err(sled::Error::Io(error))
                if error.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other.map_err(engine),
        }
    }
}

fn utf8(bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|_| StoreError::Corrupt("key is not UTF-8"))
}

#[async_trait::async_trait]
impl Customers for SledStore {
    async fn customer(&self, customer_id: &str) -> Result<Option<CustomerRecord>, StoreError> {
        let entry: Option<CustomerEntryRecord> = self.get(&keys::customer(customer_id))?;
        Ok(entry.map(|entry| entry.record))
    }

    async fn fields(&self, customer_id: &str) -> Result<Vec<(String, FieldRecord)>, StoreError> {
        Ok(self
            .entry(customer_id)?
            .map(|entry| entry.fields.into_iter().collect())
            .unwrap_or_default())
    }

    async fn field(
        &self,
        customer_id: &str,
        field_name: &str,
    ) -> Result<Option<FieldRecord>, StoreError> {
        Ok(self
            .entry(customer_id)?
            .and_then(|mut entry| entry.fields.remove(field_name)))
    }

    async fn token(&self, token: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.get(&keys::token(token))
    }

    async fn customer_tokens(&self, customer_id: &str) -> Result<Vec<String>, StoreError> {
        self.keys_with_prefix(&keys::tokens_of(customer_id), usize::MAX)
    }

    async fn find_by_index(
        &self,
        field_name: &str,
        blind_index: &[u8; 32],
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let prefix = keys::index_prefix(field_name, blind_index);
        let start = keys::index(field_name, blind_index, after);
        self.tree
            .range((Bound::Excluded(start), Bound::Unbounded))
            .keys()
            .take_while(|key| key.as_ref().map_or(true, |key| key.starts_with(&prefix)))
            .take(limit)
            .map(|key| utf8(key.map_err(engine)?[prefix.len()..].to_vec()))
            .collect()
    }

    async fn erasure_of(&self, customer_id: &str) -> Result<Option<String>, StoreError> {
        match self.tree.get(keys::erasure(customer_id)).map_err(engine)? {
            Some(bytes) => utf8(bytes.to_vec()).map(Some),
            None => Ok(None),
        }
    }

    async fn receipt(&self, receipt_id: &str) -> Result<Option<ReceiptRecord>, StoreError> {
        self.get(&keys::receipt(receipt_id))
    }

    async fn commit(&self, change: CustomerChange) -> Result<Option<[u8; 32]>, CommitError> {
        let hashes = self.write(ChainedWrite::of_changes(vec![change])).await?;
        Ok(hashes.first().copied())
    }

    async fn erase(&self, erasure: Erasure) -> Result<[u8; 32], CommitError> {
        let hashes = self.write(ChainedWrite::of_erasure(erasure)).await?;
        erasure_hash(&hashes)
    }

    async fn commit_many(&self, changes: Vec<CustomerChange>) -> Result<(), CommitError> {
        self.write(ChainedWrite::of_changes(changes)).await?;
        Ok(())
    }

    async fn customers_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, CustomerRecord)>, StoreError> {
        let start = match after {
            Some(after) => keys::customer_after(after),
            None => keys::CUSTOMERS.to_vec(),
        };
        self.tree
            .range(start..)
            .take_while(|entry| {
                entry
                    .as_ref()
                    .map_or(true, |(key, _)| key.starts_with(keys::CUSTOMERS))
            })
            .take(limit)
            .map(|entry| {
                let (key, value) = entry.map_err(engine)?;
                let entry: CustomerEntryRecord = decode(&value)?;
                Ok((utf8(key[1..].to_vec())?, entry.record))
            })
            .collect()
    }

    async fn customer_count(&self) -> Result<u64, StoreError> {
        Ok(self.tree.scan_prefix(keys::CUSTOMERS).keys().count() as u64)
    }
}

#[async_trait::async_trait]
impl AuditLog for SledStore {
    async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.writer
            .write(WriteJob::of(ChainedWrite::of_entries(entries)))
            .await
            .map_err(CommitError::into_store_error)?;
        Ok(())
    }

    async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let mut found = Vec::new();
        let start = keys::audit_event(query.after_seq.saturating_add(1));
        let end = keys::audit_event(u64::MAX);
        let records: Box<dyn Iterator<Item = Result<AuditRecord, StoreError>>> =
            match &query.customer_id {
                Some(customer_id) => {
                    let prefix = keys::audit_events_of(customer_id);
                    let from =
                        keys::customer_audit_event(customer_id, query.after_seq.saturating_add(1));
                    Box::new(
                        self.tree
                            .range(from..)
                            .keys()
                            .take_while(move |key| {
                                key.as_ref().map_or(true, |k| k.starts_with(&prefix))
                            })
                            .map(move |key| self.indexed_audit_event(&key.map_err(engine)?)),
                    )
                }
                None => Box::new(
                    self.tree
                        .range(start..=end)
                        .values()
                        .map(|value| decode(&value.map_err(engine)?)),
                ),
            };
        for record in records {
            let record = record?;
            if query.matches(&record) {
                found.push(record);
                if found.len() >= query.limit {
                    break;
                }
            }
        }
        Ok(found)
    }

    async fn customer_audit_events_before(
        &self,
        customer_id: &str,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let from = keys::customer_audit_event(customer_id, 0);
        let to = keys::customer_audit_event(customer_id, before_seq);
        self.tree
            .range(from..to)
            .keys()
            .rev()
            .take(limit)
            .map(|key| self.indexed_audit_event(&key.map_err(engine)?))
            .collect()
    }

    async fn audit_head(&self) -> Result<(u64, [u8; 32]), StoreError> {
        let head = SledStore::audit_head(self)?;
        Ok((head.seq, head.hash))
    }

    async fn audit_anchor(&self) -> Result<AuditHead, StoreError> {
        Ok(self.get(keys::AUDIT_ANCHOR)?.unwrap_or_default())
    }

    async fn trim_audit(&self, trim: AuditTrim) -> Result<u64, CommitError> {
        // Held events never change: their keys are gathered here, off the
        // writer thread, which only checks that the chain is still the one
        // verified and applies the removals.
        let from = keys::audit_event(trim.expected_anchor.seq.saturating_add(1));
        let through = keys::audit_event(trim.through.seq);
        let mut removes = Vec::new();
        let mut trimmed = 0;
        for entry in self.tree.range(from..=through) {
            let (key, value) = entry.map_err(engine)?;
            let record: AuditRecord = decode(&value)?;
            if !record.customer_id.is_empty() {
                removes.push(keys::customer_audit_event(&record.customer_id, record.seq));
            }
            removes.push(key.to_vec());
            trimmed += 1;
        }
        let job = WriteJob {
            chained: ChainedWrite {
                changes: vec![EncodedChange::removals(removes)],
                entries: vec![trim.event],
                proof: None,
            },
            trim: Some(TrimCheck {
                expected_anchor: trim.expected_anchor,
                through: trim.through,
            }),
            ..WriteJob::default()
        };
        self.writer.write(job).await?;
        Ok(trimmed)
    }
}

#[async_trait::async_trait]
impl KeyState for SledStore {
    async fn rotation(&self) -> Result<Option<RotationRecord>, StoreError> {
        self.get(keys::ROTATION)
    }

    async fn set_rotation(&self, rotation: Option<RotationRecord>) -> Result<(), StoreError> {
        match rotation {
            Some(rotation) => self.tree.insert(keys::ROTATION, encode(&rotation)?),
            None => self.tree.remove(keys::ROTATION),
        }
        .map_err(engine)?;
        self.writer.sync().await
    }

    async fn key_anchor(&self) -> Result<Option<KeyAnchor>, StoreError> {
        self.get(keys::KEY_ANCHOR)
    }

    async fn set_key_anchor(&self, anchor: KeyAnchor) -> Result<(), StoreError> {
        // Through the writer, so that every commit after it is checked against it.
        let job = WriteJob {
            anchor: Some(anchor),
            ..WriteJob::default()
        };
        self.writer
            .write(job)
            .await
            .map_err(CommitError::into_store_error)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl PolicyVersions for SledStore {
    async fn publish_policy_version(
        &self,
        version: PolicyVersionRecord,
        audit: AuditEntry,
    ) -> Result<(), CommitError> {
        let change = EncodedChange::new_records(vec![
            (keys::policy_version(version.seq), encode(&version)?),
            (keys::policy_version_name(&version.version), Vec::new()),
        ]);
        let chained = ChainedWrite {
            changes: vec![change],
            entries: vec![audit],
            proof: None,
        };
        self.writer.write(WriteJob::of(chained)).await?;
        Ok(())
    }

    async fn policy_versions(&self) -> Result<Vec<PolicyVersionRecord>, StoreError> {
        self.tree
            .scan_prefix(keys::POLICY_VERSIONS)
            .values()
            .map(|value| decode(&value.map_err(engine)?))
            .collect()
    }
}

#[async_trait::async_trait]
impl Upkeep for SledStore {
    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.tree.size_on_disk().map_err(engine)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.writer.sync().await
    }

    fn pressure(&self) -> StorePressure {
        StorePressure {
            queued_writes: Some(self.writer.queued()),
            pool: None,
        }
    }

    async fn health(&self) -> StoreHealth {
        if let Some(failure) = self.writer.failure() {
            return StoreHealth::Failed(format!(
                "the store's writer failed ({failure}); only a restart recovers what is durable"
            ));
        }
        match self.reserve.check() {
            Ok(()) => StoreHealth::Serving,
            Err(full) => StoreHealth::Degraded(full.to_string()),
        }
    }
}
