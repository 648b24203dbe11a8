//! The statements of a write: a change's rows, its audit events chained under
//! the chain's advisory lock, receipts and policy versions.

use deadpool_postgres::{GenericClient, Object, Transaction};

use super::{lock_ids, pg};
use crate::store::audit::{AuditEntry, AuditRecord, GENESIS_HASH};
use crate::store::records::encode;
use crate::store::{CommitError, CustomerChange, PolicyVersionRecord, StoreError};

pub async fn publish_policy_version(
    client: &mut Object,
    version: PolicyVersionRecord,
    audit: AuditEntry,
) -> Result<(), CommitError> {
    let transaction = client.transaction().await.map_err(pg)?;
    lock_chain(&transaction).await?;
    let inserted = transaction
        .execute(
            "INSERT INTO policy_versions (seq, version, record) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&(version.seq as i64), &version.version, &encode(&version)?],
        )
        .await
        .map_err(pg)?;
    if inserted == 0 {
        return Err(CommitError::Taken);
    }
    append_chained(&transaction, vec![audit]).await?;
    transaction.commit().await.map_err(pg)?;
    Ok(())
}

/// Every writer holds this until it commits: one chain, no forks or gaps, across
/// every process on the database.
pub(super) async fn lock_chain(transaction: &Transaction<'_>) -> Result<(), StoreError> {
    transaction
        .execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&lock_ids::AUDIT_CHAIN],
        )
        .await
        .map_err(pg)?;
    Ok(())
}

pub async fn audit_head(client: &impl GenericClient) -> Result<(u64, [u8; 32]), StoreError> {
    let row = client
        .query_opt("SELECT seq, hash FROM audit_head WHERE id = 1", &[])
        .await
        .map_err(pg)?;
    match row {
        Some(row) => {
            let hash: Vec<u8> = row.get(1);
            let hash = hash
                .try_into()
                .map_err(|_| StoreError::Corrupt("audit head hash is not 32 bytes"))?;
            Ok((row.get::<_, i64>(0) as u64, hash))
        }
        None => Ok((0, GENESIS_HASH)),
    }
}

pub(super) async fn append_chained(
    transaction: &Transaction<'_>,
    entries: Vec<AuditEntry>,
) -> Result<Vec<AuditRecord>, StoreError> {
    let (mut seq, mut hash) = audit_head(transaction).await?;
    let mut records = Vec::with_capacity(entries.len());
    for entry in entries {
        let record = AuditRecord::chain(entry, seq, hash);
        transaction
            .execute(
                "INSERT INTO audit_events (seq, customer_id, principal, at_ms, record)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &(record.seq as i64),
                    &record.customer_id,
                    &record.principal,
                    &record.at_ms,
                    &encode(&record)?,
                ],
            )
            .await
            .map_err(pg)?;
        (seq, hash) = (record.seq, record.hash);
        records.push(record);
    }
    if !records.is_empty() {
        transaction
            .execute(
                "INSERT INTO audit_head (id, seq, hash) VALUES (1, $1, $2)
                 ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash",
                &[&(seq as i64), &&hash[..]],
            )
            .await
            .map_err(pg)?;
    }
    Ok(records)
}

pub(super) async fn apply_change(
    transaction: &Transaction<'_>,
    change: &CustomerChange,
) -> Result<(), CommitError> {
    let id = change.customer_id.as_str();
    check_revision(transaction, change).await?;
    if let Some(record) = &change.customer {
        check_master_version_live(transaction, record.dek.master_version).await?;
    }
    for (token, record) in &change.new_tokens {
        let inserted = transaction
            .execute(
                "INSERT INTO tokens (token, customer_id, record) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[token, &id, &encode(record)?],
            )
            .await
            .map_err(pg)?;
        if inserted == 0 {
            return Err(CommitError::Taken);
        }
    }
    for (token, record) in &change.put_tokens {
        transaction
            .execute(
                "INSERT INTO tokens (token, customer_id, record) VALUES ($1, $2, $3)
                 ON CONFLICT (token) DO UPDATE SET customer_id = EXCLUDED.customer_id,
                                                   record = EXCLUDED.record",
                &[token, &id, &encode(record)?],
            )
            .await
            .map_err(pg)?;
    }
    if !change.delete_tokens.is_empty() {
        transaction
            .execute(
                "DELETE FROM tokens WHERE token = ANY($1)",
                &[&change.delete_tokens],
            )
            .await
            .map_err(pg)?;
    }
    write_fields(transaction, change).await?;
    write_index(transaction, change).await?;
    write_customer(transaction, change).await
}

/// The customer must still be at the revision the change was built from; the
/// row lock holds off every other writer of this customer until commit.
async fn check_revision(
    transaction: &Transaction<'_>,
    change: &CustomerChange,
) -> Result<(), CommitError> {
    let row = transaction
        .query_opt(
            "SELECT revision FROM customers WHERE id = $1 FOR UPDATE",
            &[&change.customer_id],
        )
        .await
        .map_err(pg)?;
    let current = row.map(|row| row.get::<_, i64>(0) as u64);
    if current != change.expected_revision {
        return Err(CommitError::Conflict);
    }
    Ok(())
}

/// A DEK wrapped under a master version that another replica has retired would
/// be unreadable: such a change conflicts, and the writer reloads the keyring.
async fn check_master_version_live(
    transaction: &Transaction<'_>,
    master_version: u32,
) -> Result<(), CommitError> {
    let row = transaction
        .query_opt(
            "SELECT retired_below FROM keyring WHERE id = 1 FOR SHARE",
            &[],
        )
        .await
        .map_err(pg)?;
    match row {
        Some(row) if (master_version as i64) < i64::from(row.get::<_, i32>(0)) => {
            Err(CommitError::StaleKeyring)
        }
        _ => Ok(()),
    }
}

async fn write_fields(
    transaction: &Transaction<'_>,
    change: &CustomerChange,
) -> Result<(), CommitError> {
    let id = change.customer_id.as_str();
    for (name, field) in &change.put_fields {
        transaction
            .execute(
                "INSERT INTO fields (customer_id, name, record) VALUES ($1, $2, $3)
                 ON CONFLICT (customer_id, name) DO UPDATE SET record = EXCLUDED.record",
                &[&id, name, &encode(field)?],
            )
            .await
            .map_err(pg)?;
    }
    if !change.delete_fields.is_empty() {
        transaction
            .execute(
                "DELETE FROM fields WHERE customer_id = $1 AND name = ANY($2)",
                &[&id, &change.delete_fields],
            )
            .await
            .map_err(pg)?;
    }
    Ok(())
}

async fn write_index(
    transaction: &Transaction<'_>,
    change: &CustomerChange,
) -> Result<(), CommitError> {
    let id = change.customer_id.as_str();
    for entry in &change.delete_index {
        transaction
            .execute(
                "DELETE FROM blind_index WHERE field_name = $1 AND blind = $2 AND customer_id = $3",
                &[&entry.field_name, &&entry.blind_index[..], &id],
            )
            .await
            .map_err(pg)?;
    }
    for entry in &change.put_index {
        transaction
            .execute(
                "INSERT INTO blind_index (field_name, blind, customer_id) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&entry.field_name, &&entry.blind_index[..], &id],
            )
            .await
            .map_err(pg)?;
    }
    Ok(())
}

async fn write_customer(
    transaction: &Transaction<'_>,
    change: &CustomerChange,
) -> Result<(), CommitError> {
    let id = change.customer_id.as_str();
    match &change.customer {
        Some(record) => transaction
            .execute(
                "INSERT INTO customers (id, revision, master_version, record) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET revision = EXCLUDED.revision,
                     master_version = EXCLUDED.master_version, record = EXCLUDED.record",
                &[
                    &id,
                    &(record.revision as i64),
                    &(record.dek.master_version as i32),
                    &encode(record)?,
                ],
            )
            .await,
        None => transaction.execute("DELETE FROM customers WHERE id = $1", &[&id]).await,
    }
    .map_err(pg)?;
    Ok(())
}

pub(super) async fn write_receipt(
    transaction: &Transaction<'_>,
    customer_id: &str,
    receipt: &crate::store::ReceiptRecord,
) -> Result<(), StoreError> {
    transaction
        .execute(
            "INSERT INTO receipts (receipt_id, record) VALUES ($1, $2)",
            &[&receipt.receipt_id, &encode(receipt)?],
        )
        .await
        .map_err(pg)?;
    transaction
        .execute(
            "INSERT INTO erasures (customer_id, receipt_id) VALUES ($1, $2)
             ON CONFLICT (customer_id) DO UPDATE SET receipt_id = EXCLUDED.receipt_id",
            &[&customer_id, &receipt.receipt_id],
        )
        .await
        .map_err(pg)?;
    Ok(())
}
