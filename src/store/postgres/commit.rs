//! The statements of a write: a change's rows, its audit events chained under
//! the chain's advisory lock, receipts and policy versions.

use deadpool_postgres::{GenericClient, Object, Transaction};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{lock_ids, pg, statement_name};
use crate::store::audit::{AuditEntry, AuditHead, AuditRecord, AuditTrim};
use crate::store::chain::chain_after;
use crate::store::records::{encode, CUSTOMER_FORMAT};
use crate::store::{CommitError, CustomerChange, IndexEntry, PolicyVersionRecord, StoreError};

pub async fn publish_policy_version(
    client: &mut Object,
    version: PolicyVersionRecord,
    audit: AuditEntry,
) -> Result<(), CommitError> {
    let transaction = client
        .transaction()
        .await
        .map_err(pg("publish policy version"))?;
    lock_chain(&transaction).await?;
    let inserted = transaction
        .execute(
            "INSERT INTO policy_versions (seq, version, record) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&(version.seq as i64), &version.version, &encode(&version)?],
        )
        .await
        .map_err(pg("publish policy version"))?;
    if inserted == 0 {
        return Err(CommitError::Taken);
    }
    append_chained(&transaction, vec![audit]).await?;
    transaction
        .commit()
        .await
        .map_err(pg("publish policy version"))?;
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
        .map_err(pg("lock chain"))?;
    Ok(())
}

type Params<'a> = [&'a (dyn ToSql + Sync)];

/// Runs a statement prepared once per connection: the writer's statements run
/// one after another in the batch's transaction, and preparing each again
/// would double its round trips.
async fn execute(
    transaction: &Transaction<'_>,
    sql: &str,
    params: &Params<'_>,
) -> Result<u64, StoreError> {
    let name = statement_name(sql);
    let statement = transaction.prepare_cached(sql).await.map_err(pg(&name))?;
    transaction
        .execute(&statement, params)
        .await
        .map_err(pg(&name))
}

async fn query_opt(
    transaction: &Transaction<'_>,
    sql: &str,
    params: &Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let name = statement_name(sql);
    let statement = transaction.prepare_cached(sql).await.map_err(pg(&name))?;
    transaction
        .query_opt(&statement, params)
        .await
        .map_err(pg(&name))
}

pub async fn audit_head(client: &impl GenericClient) -> Result<AuditHead, StoreError> {
    let row = client
        .query_opt("SELECT seq, hash FROM audit_head WHERE id = 1", &[])
        .await
        .map_err(pg("audit head"))?;
    match row {
        Some(row) => {
            let hash: Vec<u8> = row.get(1);
            let hash = hash
                .try_into()
                .map_err(|_| StoreError::Corrupt("audit head hash is not 32 bytes"))?;
            Ok(AuditHead {
                seq: row.get::<_, i64>(0) as u64,
                hash,
            })
        }
        None => Ok(AuditHead::default()),
    }
}

pub async fn audit_anchor(client: &impl GenericClient) -> Result<AuditHead, StoreError> {
    let row = client
        .query_opt("SELECT seq, hash FROM audit_anchor WHERE id = 1", &[])
        .await
        .map_err(pg("audit anchor"))?;
    match row {
        Some(row) => {
            let hash: Vec<u8> = row.get(1);
            let hash = hash
                .try_into()
                .map_err(|_| StoreError::Corrupt("audit anchor hash is not 32 bytes"))?;
            Ok(AuditHead {
                seq: row.get::<_, i64>(0) as u64,
                hash,
            })
        }
        None => Ok(AuditHead::default()),
    }
}

/// One transaction under the chain's lock: the checks `Store::trim_audit`
/// names, the deletion, the new anchor and the trim's own event.
pub async fn trim_audit(client: &mut Object, trim: AuditTrim) -> Result<u64, CommitError> {
    let transaction = client.transaction().await.map_err(pg("trim audit"))?;
    lock_chain(&transaction).await?;
    let anchor = audit_anchor(&transaction).await?;
    let head_seq = audit_head(&transaction).await?.seq;
    let through_seq = trim.through.seq.min(i64::MAX as u64) as i64;
    let through = transaction
        .query_opt(
            "SELECT record FROM audit_events WHERE seq = $1",
            &[&through_seq],
        )
        .await
        .map_err(pg("trim audit"))?
        .map(|row| crate::store::records::decode::<AuditRecord>(row.get::<_, &[u8]>(0)))
        .transpose()?;
    let held = through.is_some_and(|event| event.hash == trim.through.hash);
    if anchor != trim.expected_anchor || !held || head_seq <= trim.through.seq {
        return Err(CommitError::Conflict);
    }
    let trimmed = transaction
        .execute("DELETE FROM audit_events WHERE seq <= $1", &[&through_seq])
        .await
        .map_err(pg("trim audit"))?;
    transaction
        .execute(
            "INSERT INTO audit_anchor (id, seq, hash) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash",
            &[&through_seq, &&trim.through.hash[..]],
        )
        .await
        .map_err(pg("trim audit"))?;
    append_chained(&transaction, vec![trim.event]).await?;
    transaction.commit().await.map_err(pg("trim audit"))?;
    Ok(trimmed)
}

/// Chains `entries` after the stored head (the caller holds the chain's lock).
async fn append_chained(
    transaction: &Transaction<'_>,
    entries: Vec<AuditEntry>,
) -> Result<(), StoreError> {
    let mut head = audit_head(transaction).await?;
    let records = chain_after(&mut head, entries);
    insert_chained(transaction, &records, head).await
}

/// Stores chained events and `head`, the chain's head after them.
pub(super) async fn insert_chained(
    transaction: &Transaction<'_>,
    records: &[AuditRecord],
    head: AuditHead,
) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = records.iter().map(|record| record.seq as i64).collect();
    let customers: Vec<&str> = records.iter().map(|r| r.customer_id.as_str()).collect();
    let principals: Vec<&str> = records.iter().map(|r| r.principal.as_str()).collect();
    let times: Vec<i64> = records.iter().map(|record| record.at_ms).collect();
    let encoded = records.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
    // One statement for the whole batch's events.
    execute(
        transaction,
        "INSERT INTO audit_events (seq, customer_id, principal, at_ms, record)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bytea[])",
        &[&seqs, &customers, &principals, &times, &encoded],
    )
    .await?;
    execute(
        transaction,
        "INSERT INTO audit_head (id, seq, hash) VALUES (1, $1, $2)
         ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash",
        &[&(head.seq as i64), &&head.hash[..]],
    )
    .await?;
    Ok(())
}

pub(super) async fn apply_change(
    transaction: &Transaction<'_>,
    change: &CustomerChange,
) -> Result<(), CommitError> {
    check_revision(transaction, change).await?;
    if let Some(record) = &change.customer {
        check_master_version_live(transaction, record.oldest_master_version()).await?;
    }
    write_tokens(transaction, change).await?;
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
    let row = query_opt(
        transaction,
        "SELECT revision FROM customers WHERE id = $1 FOR UPDATE",
        &[&change.customer_id],
    )
    .await?;
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
    let row = query_opt(
        transaction,
        "SELECT retired_below FROM keyring WHERE id = 1 FOR SHARE",
        &[],
    )
    .await?;
    match row {
        Some(row) if (master_version as i64) < i64::from(row.get::<_, i32>(0)) => {
            Err(CommitError::StaleKeyring)
        }
        _ => Ok(()),
    }
}

async fn write_tokens(
    transaction: &Transaction<'_>,
    change: &CustomerChange,
) -> Result<(), CommitError> {
    let id = change.customer_id.as_str();
    if !change.new_tokens.is_empty() {
        let (tokens, records) = keys_and_records(&change.new_tokens)?;
        let inserted = execute(
            transaction,
            "INSERT INTO tokens (token, customer_id, record)
             SELECT token, $1, record FROM unnest($2::text[], $3::bytea[]) AS t(token, record)
             ON CONFLICT DO NOTHING",
            &[&id, &tokens, &records],
        )
        .await?;
        if inserted != tokens.len() as u64 {
            return Err(CommitError::Taken);
        }
    }
    // One upsert for them all (a re-key rewrites every token of the
    // customer): the same deterministic token may be written twice, and one
    // statement may not update a row twice, so its last write is kept.
    if !change.put_tokens.is_empty() {
        let written = last_write_of_each(&change.put_tokens);
        let (tokens, records) = keys_and_records(&written)?;
        execute(
            transaction,
            "INSERT INTO tokens (token, customer_id, record)
             SELECT token, $1, record FROM unnest($2::text[], $3::bytea[]) AS t(token, record)
             ON CONFLICT (token) DO UPDATE SET customer_id = EXCLUDED.customer_id,
                                               record = EXCLUDED.record",
            &[&id, &tokens, &records],
        )
        .await?;
    }
    if !change.delete_tokens.is_empty() {
        execute(
            transaction,
            "DELETE FROM tokens WHERE token = ANY($1)",
            &[&change.delete_tokens],
        )
        .await?;
    }
    Ok(())
}

/// `pairs` with each key once, holding its last value, in first-seen order.
fn last_write_of_each<T>(pairs: &[(String, T)]) -> Vec<(String, &T)> {
    let mut position: std::collections::HashMap<&str, usize> =
        std::collections::HashMap::with_capacity(pairs.len());
    let mut kept: Vec<(String, &T)> = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        match position.get(key.as_str()) {
            Some(&at) => kept[at].1 = value,
            None => {
                position.insert(key.as_str(), kept.len());
                kept.push((key.clone(), value));
            }
        }
    }
    kept
}

/// The keys and the encoded records of `pairs`, as two arrays for `unnest`.
fn keys_and_records<T: serde::Serialize>(
    pairs: &[(String, T)],
) -> Result<(Vec<&str>, Vec<Vec<u8>>), StoreError> {
    let keys = pairs.iter().map(|(key, _)| key.as_str()).collect();
    let records = pairs
        .iter()
        .map(|(_, record)| encode(record))
        .collect::<Result<_, _>>()?;
    Ok((keys, records))
}

/// Field names are unique within a change, so one upsert takes them all.
async fn write_fields(
    transaction: &Transaction<'_>,
    change: &CustomerChange,
) -> Result<(), CommitError> {
    let id = change.customer_id.as_str();
    if !change.put_fields.is_empty() {
        let (names, records) = keys_and_records(&change.put_fields)?;
        execute(
            transaction,
            "INSERT INTO fields (customer_id, name, record)
             SELECT $1, name, record FROM unnest($2::text[], $3::bytea[]) AS f(name, record)
             ON CONFLICT (customer_id, name) DO UPDATE SET record = EXCLUDED.record",
            &[&id, &names, &records],
        )
        .await?;
    }
    if !change.delete_fields.is_empty() {
        execute(
            transaction,
            "DELETE FROM fields WHERE customer_id = $1 AND name = ANY($2)",
            &[&id, &change.delete_fields],
        )
        .await?;
    }
    Ok(())
}

async fn write_index(
    transaction: &Transaction<'_>,
    change: &CustomerChange,
) -> Result<(), CommitError> {
    let id = change.customer_id.as_str();
    if !change.delete_index.is_empty() {
        let (names, blinds) = index_columns(&change.delete_index);
        execute(
            transaction,
            "DELETE FROM blind_index WHERE customer_id = $1
             AND (field_name, blind) IN (SELECT * FROM unnest($2::text[], $3::bytea[]))",
            &[&id, &names, &blinds],
        )
        .await?;
    }
    if !change.put_index.is_empty() {
        let (names, blinds) = index_columns(&change.put_index);
        execute(
            transaction,
            "INSERT INTO blind_index (field_name, blind, customer_id)
             SELECT field_name, blind, $1 FROM unnest($2::text[], $3::bytea[]) AS i(field_name, blind)
             ON CONFLICT DO NOTHING",
            &[&id, &names, &blinds],
        )
        .await?;
    }
    Ok(())
}

/// Index entries as the two array parameters of one statement.
fn index_columns(entries: &[IndexEntry]) -> (Vec<&str>, Vec<&[u8]>) {
    entries
        .iter()
        .map(|entry| (entry.field_name.as_str(), &entry.blind_index[..]))
        .unzip()
}

async fn write_customer(
    transaction: &Transaction<'_>,
    change: &CustomerChange,
) -> Result<(), CommitError> {
    let id = change.customer_id.as_str();
    match &change.customer {
        Some(record) => {
            execute(
                transaction,
                "INSERT INTO customers (id, revision, master_version, format, record)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET revision = EXCLUDED.revision,
                     master_version = EXCLUDED.master_version, format = EXCLUDED.format,
                     record = EXCLUDED.record",
                &[
                    &id,
                    &(record.revision as i64),
                    &(record.oldest_master_version() as i32),
                    &CUSTOMER_FORMAT,
                    &encode(record)?,
                ],
            )
            .await?
        }
        None => execute(transaction, "DELETE FROM customers WHERE id = $1", &[&id]).await?,
    };
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
        .map_err(pg("write receipt"))?;
    transaction
        .execute(
            "INSERT INTO erasures (customer_id, receipt_id) VALUES ($1, $2)
             ON CONFLICT (customer_id) DO UPDATE SET receipt_id = EXCLUDED.receipt_id",
            &[&customer_id, &receipt.receipt_id],
        )
        .await
        .map_err(pg("write receipt"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_written_twice_keeps_its_last_value_at_its_first_place() {
        let pairs = vec![
            ("a".to_owned(), 1),
            ("b".to_owned(), 2),
            ("a".to_owned(), 3),
        ];
        assert_eq!(
            last_write_of_each(&pairs),
            vec![("a".to_owned(), &3), ("b".to_owned(), &2)]
        );
    }
}
