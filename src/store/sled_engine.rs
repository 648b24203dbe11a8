//! The embedded engine: one sled tree with typed key prefixes, serializable
//! transactions for the compare-and-set commits, and group commit for durability.
//!
//! Key layout (customer ids, field names and tokens never contain a NUL byte):
//! - `c` customer                      -> CustomerRecord
//! - `f` customer NUL field            -> FieldRecord
//! - `t` token                         -> TokenRecord
//! - `k` customer NUL token            -> ()  (a customer's tokens, for erasure)
//! - `i` field NUL blind(32) customer  -> ()  (blind index)
//! - `e` customer                      -> receipt id (erased customers)
//! - `r` receipt id                    -> ReceiptRecord

use std::fs::File;
use std::path::Path;

use serde::{de::DeserializeOwned, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use super::group_commit::GroupCommit;
use super::{
    CommitError, CustomerChange, CustomerRecord, FieldRecord, ReceiptRecord, Store, StoreError,
    TokenRecord,
};

pub struct SledStore {
    tree: sled::Db,
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
}

fn engine(error: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(error.to_string())
}

fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(record).map_err(|_| StoreError::Corrupt("record does not encode"))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|_| StoreError::Corrupt("record does not decode"))
}

fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut key = vec![prefix];
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part);
    }
    key
}

fn customer_key(customer_id: &str) -> Vec<u8> {
    key(b'c', &[customer_id.as_bytes()])
}

fn field_key(customer_id: &str, field: &str) -> Vec<u8> {
    key(b'f', &[customer_id.as_bytes(), field.as_bytes()])
}

fn token_key(token: &str) -> Vec<u8> {
    key(b't', &[token.as_bytes()])
}

fn customer_token_key(customer_id: &str, token: &str) -> Vec<u8> {
    key(b'k', &[customer_id.as_bytes(), token.as_bytes()])
}

fn index_prefix(field: &str, blind_index: &[u8; 32]) -> Vec<u8> {
    let mut key = key(b'i', &[field.as_bytes(), b""]);
    key.extend_from_slice(blind_index);
    key
}

fn index_key(field: &str, blind_index: &[u8; 32], customer_id: &str) -> Vec<u8> {
    let mut key = index_prefix(field, blind_index);
    key.extend_from_slice(customer_id.as_bytes());
    key
}

fn erasure_key(customer_id: &str) -> Vec<u8> {
    key(b'e', &[customer_id.as_bytes()])
}

fn receipt_key(receipt_id: &str) -> Vec<u8> {
    key(b'r', &[receipt_id.as_bytes()])
}

fn utf8(bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|_| StoreError::Corrupt("key is not UTF-8"))
}

/// A change with every record already encoded, so the transaction closure (which
/// sled may run more than once) only moves bytes.
struct EncodedChange {
    customer_key: Vec<u8>,
    expected_revision: Option<u64>,
    customer: Option<Vec<u8>>,
    inserts: Vec<(Vec<u8>, Vec<u8>)>,
    new_token_keys: Vec<Vec<u8>>,
    removes: Vec<Vec<u8>>,
}

fn encode_change(change: &CustomerChange) -> Result<EncodedChange, StoreError> {
    let id = change.customer_id.as_str();
    let mut inserts = Vec::new();
    let mut removes = Vec::new();
    let mut new_token_keys = Vec::new();
    for (name, field) in &change.put_fields {
        inserts.push((field_key(id, name), encode(field)?));
    }
    removes.extend(change.delete_fields.iter().map(|name| field_key(id, name)));
    for (token, record) in change.new_tokens.iter().chain(&change.put_tokens) {
        inserts.push((token_key(token), encode(record)?));
        inserts.push((customer_token_key(id, token), Vec::new()));
    }
    new_token_keys.extend(change.new_tokens.iter().map(|(token, _)| token_key(token)));
    for token in &change.delete_tokens {
        removes.push(token_key(token));
        removes.push(customer_token_key(id, token));
    }
    for entry in &change.put_index {
        inserts.push((
            index_key(&entry.field_name, &entry.blind_index, id),
            Vec::new(),
        ));
    }
    for entry in &change.delete_index {
        removes.push(index_key(&entry.field_name, &entry.blind_index, id));
    }
    if let Some(receipt) = &change.receipt {
        inserts.push((receipt_key(&receipt.receipt_id), encode(receipt)?));
        inserts.push((erasure_key(id), receipt.receipt_id.as_bytes().to_vec()));
    }
    Ok(EncodedChange {
        customer_key: customer_key(id),
        expected_revision: change.expected_revision,
        customer: change.customer.as_ref().map(encode).transpose()?,
        inserts,
        new_token_keys,
        removes,
    })
}

type TxResult = Result<(), ConflictableTransactionError<CommitError>>;

fn apply(tx: &TransactionalTree, change: &EncodedChange) -> TxResult {
    let current = tx.get(&change.customer_key)?;
    let current_revision = match current {
        Some(bytes) => Some(
            decode::<CustomerRecord>(&bytes)
                .map_err(|e| ConflictableTransactionError::Abort(e.into()))?
                .revision,
        ),
        None => None,
    };
    if current_revision != change.expected_revision {
        return Err(ConflictableTransactionError::Abort(CommitError::Conflict));
    }
    for token_key in &change.new_token_keys {
        if tx.get(token_key)?.is_some() {
            return Err(ConflictableTransactionError::Abort(CommitError::TokenTaken));
        }
    }
    for key in &change.removes {
        tx.remove(key.as_slice())?;
    }
    for (key, value) in &change.inserts {
        tx.insert(key.as_slice(), value.as_slice())?;
    }
    match &change.customer {
        Some(record) => tx.insert(change.customer_key.as_slice(), record.as_slice())?,
        None => tx.remove(change.customer_key.as_slice())?,
    };
    Ok(())
}

#[async_trait::async_trait]
impl Store for SledStore {
    async fn customer(&self, customer_id: &str) -> Result<Option<CustomerRecord>, StoreError> {
        self.get(&customer_key(customer_id))
    }

    async fn fields(&self, customer_id: &str) -> Result<Vec<(String, FieldRecord)>, StoreError> {
        let prefix = key(b'f', &[customer_id.as_bytes(), b""]);
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
        self.get(&field_key(customer_id, field_name))
    }

    async fn token(&self, token: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.get(&token_key(token))
    }

    async fn customer_tokens(&self, customer_id: &str) -> Result<Vec<String>, StoreError> {
        let prefix = key(b'k', &[customer_id.as_bytes(), b""]);
        self.keys_with_prefix(&prefix, usize::MAX)
    }

    async fn find_by_index(
        &self,
        field_name: &str,
        blind_index: &[u8; 32],
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.keys_with_prefix(&index_prefix(field_name, blind_index), limit)
    }

    async fn erasure_of(&self, customer_id: &str) -> Result<Option<String>, StoreError> {
        match self.tree.get(erasure_key(customer_id)).map_err(engine)? {
            Some(bytes) => utf8(bytes.to_vec()).map(Some),
            None => Ok(None),
        }
    }

    async fn receipt(&self, receipt_id: &str) -> Result<Option<ReceiptRecord>, StoreError> {
        self.get(&receipt_key(receipt_id))
    }

    async fn commit(&self, change: CustomerChange) -> Result<(), CommitError> {
        let encoded = encode_change(&change)?;
        self.tree
            .transaction(|tx| apply(tx, &encoded))
            .map_err(|error| match error {
                TransactionError::Abort(commit_error) => commit_error,
                TransactionError::Storage(error) => CommitError::Store(engine(error)),
            })?;
        self.group_commit.wait_durable().await?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.group_commit.wait_durable().await
    }
}
