//! The embedded engine: one sled tree (layout in `sled_keys.rs`), serializable
//! transactions for the compare-and-set commits, one lock that orders audit
//! appends into a single hash chain, and group commit for durability.

use std::fs::File;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use super::audit::{AuditEntry, AuditHead, AuditQuery, AuditRecord};
use super::group_commit::GroupCommit;
use super::records::{decode, encode, engine, hex};
use super::sled_keys as keys;
use super::{
    CommitError, CustomerChange, CustomerRecord, FieldRecord, PolicyVersionRecord, ReceiptRecord,
    RotationRecord, Store, StoreError, TokenRecord,
};

pub struct SledStore {
    tree: sled::Db,
    /// Held while a commit takes its place at the end of the audit chain, so that
    /// the chain has no forks or gaps. Only the in-memory apply runs under it;
    /// the disk sync does not.
    chain: Mutex<()>,
    group_commit: GroupCommit,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. `cache_bytes` bounds sled's page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(engine)?;
        let log_file = File::open(dir.join("db")).map_err(engine)?;
        let sync_db = db.clone();
        // sled's flush ends in sync_file_range on Linux, which promises nothing after
        // a power loss; the fdatasync that follows does.
        let group_commit = GroupCommit::start(Box::new(move || {
            sync_db.flush().map_err(std::io::Error::other)?;
            log_file.sync_data()
        }))
        .map_err(engine)?;
        Ok(SledStore {
            tree: db,
            chain: Mutex::new(()),
            group_commit,
        })
    }

    /// How many flush + fdatasync rounds ran (each serves a group of writers).
    pub fn syncs(&self) -> u64 {
        self.group_commit.syncs()
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

    fn audit_head(&self) -> Result<AuditHead, StoreError> {
        Ok(self.get(keys::AUDIT_HEAD)?.unwrap_or_default())
    }

    /// Chains the entries after the current head and applies them with `change`
    /// in one transaction. Returns the hashes of the new events.
    fn apply_chained(
        &self,
        mut changes: Vec<EncodedChange>,
        entries: Vec<AuditEntry>,
        receipt: Option<ReceiptRecord>,
    ) -> Result<Vec<[u8; 32]>, CommitError> {
        let _chain = self.chain.lock().unwrap_or_else(PoisonError::into_inner);
        let mut head = self.audit_head()?;
        let mut audit_writes = Vec::new();
        let mut hashes = Vec::new();
        for entry in entries {
            let record = AuditRecord::chain(entry, head.seq, head.hash);
            head = AuditHead {
                seq: record.seq,
                hash: record.hash,
            };
            if !record.customer_id.is_empty() {
                audit_writes.push((
                    keys::customer_audit_event(&record.customer_id, record.seq),
                    Vec::new(),
                ));
            }
            hashes.push(record.hash);
            audit_writes.push((keys::audit_event(record.seq), encode(&record)?));
        }
        audit_writes.push((keys::AUDIT_HEAD.to_vec(), encode(&head)?));
        if let Some(mut receipt) = receipt {
            // The receipt names the event that records the erasure it proves.
            receipt.audit_hash = hashes.first().map(hex).unwrap_or_default();
            audit_writes.push((keys::receipt(&receipt.receipt_id), encode(&receipt)?));
        }
        changes.push(EncodedChange::audit_only(audit_writes));
        self.tree
            .transaction(|tx| changes.iter().try_for_each(|change| apply(tx, change)))
            .map_err(|error| match error {
                TransactionError::Abort(commit_error) => commit_error,
                TransactionError::Storage(error) => CommitError::Store(engine(error)),
            })?;
        Ok(hashes)
    }
}

fn utf8(bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|_| StoreError::Corrupt("key is not UTF-8"))
}

/// A change with every record already encoded, so the transaction closure (which
/// sled may run more than once) only moves bytes.
struct EncodedChange {
    /// Absent for audit-only commits.
    customer: Option<CustomerUpdate>,
    inserts: Vec<(Vec<u8>, Vec<u8>)>,
    must_be_new: Vec<Vec<u8>>,
    removes: Vec<Vec<u8>>,
}

/// The customer whose revision is compared, and their new record.
struct CustomerUpdate {
    key: Vec<u8>,
    expected_revision: Option<u64>,
    /// `None` removes the customer.
    record: Option<Vec<u8>>,
}

impl EncodedChange {
    fn audit_only(inserts: Vec<(Vec<u8>, Vec<u8>)>) -> EncodedChange {
        EncodedChange {
            customer: None,
            inserts,
            must_be_new: Vec::new(),
            removes: Vec::new(),
        }
    }
}

fn encode_change(change: &CustomerChange) -> Result<EncodedChange, StoreError> {
    let id = change.customer_id.as_str();
    let mut inserts = Vec::new();
    let mut removes = Vec::new();
    for (name, field) in &change.put_fields {
        inserts.push((keys::field(id, name), encode(field)?));
    }
    removes.extend(
        change
            .delete_fields
            .iter()
            .map(|name| keys::field(id, name)),
    );
    for (token, record) in change.new_tokens.iter().chain(&change.put_tokens) {
        inserts.push((keys::token(token), encode(record)?));
        inserts.push((keys::customer_token(id, token), Vec::new()));
    }
    let must_be_new = change
        .new_tokens
        .iter()
        .map(|(token, _)| keys::token(token))
        .collect();
    for token in &change.delete_tokens {
        removes.push(keys::token(token));
        removes.push(keys::customer_token(id, token));
    }
    for entry in &change.put_index {
        inserts.push((
            keys::index(&entry.field_name, &entry.blind_index, id),
            Vec::new(),
        ));
    }
    for entry in &change.delete_index {
        removes.push(keys::index(&entry.field_name, &entry.blind_index, id));
    }
    if let Some(receipt) = &change.receipt {
        inserts.push((keys::erasure(id), receipt.receipt_id.as_bytes().to_vec()));
    }
    let record = change.customer.as_ref().map(encode).transpose()?;
    Ok(EncodedChange {
        customer: Some(CustomerUpdate {
            key: keys::customer(id),
            expected_revision: change.expected_revision,
            record,
        }),
        inserts,
        must_be_new,
        removes,
    })
}

type TxResult = Result<(), ConflictableTransactionError<CommitError>>;

fn abort(error: CommitError) -> ConflictableTransactionError<CommitError> {
    ConflictableTransactionError::Abort(error)
}

fn apply(tx: &TransactionalTree, change: &EncodedChange) -> TxResult {
    if let Some(customer) = &change.customer {
        let current_revision = match tx.get(&customer.key)? {
            Some(bytes) => Some(
                decode::<CustomerRecord>(&bytes)
                    .map_err(|e| abort(e.into()))?
                    .revision,
            ),
            None => None,
        };
        if current_revision != customer.expected_revision {
            return Err(abort(CommitError::Conflict));
        }
    }
    for token_key in &change.must_be_new {
        if tx.get(token_key)?.is_some() {
            return Err(abort(CommitError::Taken));
        }
    }
    for key in &change.removes {
        tx.remove(key.as_slice())?;
    }
    for (key, value) in &change.inserts {
        tx.insert(key.as_slice(), value.as_slice())?;
    }
    if let Some(customer) = &change.customer {
        match &customer.record {
            Some(record) => tx.insert(customer.key.as_slice(), record.as_slice())?,
            None => tx.remove(customer.key.as_slice())?,
        };
    }
    Ok(())
}

#[async_trait::async_trait]
impl Store for SledStore {
    async fn customer(&self, customer_id: &str) -> Result<Option<CustomerRecord>, StoreError> {
        self.get(&keys::customer(customer_id))
    }

    async fn fields(&self, customer_id: &str) -> Result<Vec<(String, FieldRecord)>, StoreError> {
        let prefix = keys::fields_of(customer_id);
        self.tree
            .scan_prefix(&prefix)
            .map(|entry| {
                let (key, value) = entry.map_err(engine)?;
                Ok((utf8(key[prefix.len()..].to_vec())?, decode(&value)?))
            })
            .collect()
    }

    async fn field(
        &self,
        customer_id: &str,
        field_name: &str,
    ) -> Result<Option<FieldRecord>, StoreError> {
        self.get(&keys::field(customer_id, field_name))
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
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.keys_with_prefix(&keys::index_prefix(field_name, blind_index), limit)
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
        let encoded = encode_change(&change)?;
        let hashes = self.apply_chained(
            vec![encoded],
            change.audit.into_iter().collect(),
            change.receipt,
        )?;
        self.group_commit.wait_durable().await?;
        Ok(hashes.first().copied())
    }

    async fn commit_many(&self, changes: Vec<CustomerChange>) -> Result<(), CommitError> {
        let mut entries = Vec::new();
        let mut encoded = Vec::with_capacity(changes.len());
        for change in changes {
            // Receipts are per erasure, never batched.
            if change.receipt.is_some() {
                return Err(StoreError::Engine("commit_many takes no erasures".into()).into());
            }
            encoded.push(encode_change(&change)?);
            entries.extend(change.audit);
        }
        self.apply_chained(encoded, entries, None)?;
        self.group_commit.wait_durable().await?;
        Ok(())
    }

    async fn customers_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, CustomerRecord)>, StoreError> {
        let start = match after {
            // The first key after `after`: the same id with a NUL appended.
            Some(after) => keys::key(b'c', &[after.as_bytes(), b""]),
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
                Ok((utf8(key[1..].to_vec())?, decode(&value)?))
            })
            .collect()
    }

    async fn customer_count(&self) -> Result<u64, StoreError> {
        Ok(self.tree.scan_prefix(keys::CUSTOMERS).keys().count() as u64)
    }

    async fn rotation(&self) -> Result<Option<RotationRecord>, StoreError> {
        self.get(keys::ROTATION)
    }

    async fn set_rotation(&self, rotation: Option<RotationRecord>) -> Result<(), StoreError> {
        match rotation {
            Some(rotation) => self.tree.insert(keys::ROTATION, encode(&rotation)?),
            None => self.tree.remove(keys::ROTATION),
        }
        .map_err(engine)?;
        self.group_commit.wait_durable().await
    }

    async fn publish_policy_version(
        &self,
        version: PolicyVersionRecord,
        audit: AuditEntry,
    ) -> Result<(), CommitError> {
        let name_key = keys::policy_version_name(&version.version);
        let seq_key = keys::policy_version(version.seq);
        let change = EncodedChange {
            customer: None,
            inserts: vec![
                (seq_key.clone(), encode(&version)?),
                (name_key.clone(), Vec::new()),
            ],
            must_be_new: vec![seq_key, name_key],
            removes: Vec::new(),
        };
        self.apply_chained(vec![change], vec![audit], None)?;
        self.group_commit.wait_durable().await?;
        Ok(())
    }

    async fn policy_versions(&self) -> Result<Vec<PolicyVersionRecord>, StoreError> {
        self.tree
            .scan_prefix(keys::POLICY_VERSIONS)
            .values()
            .map(|value| decode(&value.map_err(engine)?))
            .collect()
    }

    async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.apply_chained(Vec::new(), entries, None)
            .map_err(|error| match error {
                CommitError::Store(error) => error,
                other => StoreError::Engine(other.to_string()),
            })?;
        self.group_commit.wait_durable().await
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
                            .map(move |key| {
                                let key = key.map_err(engine)?;
                                let seq_bytes: [u8; 8] = key[key.len() - 8..]
                                    .try_into()
                                    .map_err(|_| StoreError::Corrupt("audit index key"))?;
                                self.get::<AuditRecord>(&keys::audit_event(u64::from_be_bytes(
                                    seq_bytes,
                                )))?
                                .ok_or(StoreError::Corrupt("audit index names a missing event"))
                            }),
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

    async fn audit_head(&self) -> Result<(u64, [u8; 32]), StoreError> {
        let head = SledStore::audit_head(self)?;
        Ok((head.seq, head.hash))
    }

    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.tree.size_on_disk().map_err(engine)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.group_commit.wait_durable().await
    }
}
