//! The PostgreSQL engine: several vault processes on one database. Every write
//! is one transaction; commits compare the customer's revision under a row
//! lock (no lost updates) and take their place in the single audit hash chain
//! under a transaction-scoped advisory lock (no forks, no gaps). Durability is
//! PostgreSQL's own (`synchronous_commit` on, the default). One replica at a
//! time rotates the master key: the lease is a session-level advisory lock.

mod batcher;
mod commit;
mod lease;
mod schema;
mod tls;

use std::path::Path;
use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::audit::{AuditEntry, AuditQuery, AuditRecord};
use super::records::{decode, encode};
use super::{
    CommitError, CustomerChange, CustomerRecord, FieldRecord, PolicyVersionRecord, ReceiptRecord,
    RotationLease, RotationRecord, Store, StoreError, TokenRecord,
};

/// Advisory lock ids: "piiv" followed by a purpose number.
mod lock_ids {
    pub const MIGRATIONS: i64 = 0x7069_6976_0001;
    pub const AUDIT_CHAIN: i64 = 0x7069_6976_0002;
    pub const ROTATION: i64 = 0x7069_6976_0003;
}

pub struct PgStore {
    pool: Pool,
    writer: batcher::Batcher,
    /// For the rotation lease's own connection.
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
}

fn pg(error: tokio_postgres::Error) -> StoreError {
    StoreError::Engine(format!("postgres: {}", describe(&error)))
}

/// The driver's message names the failing statement's problem, never its
/// values. Its causes are added (why a connection or TLS handshake failed),
/// except under an error the server sent, whose details can quote values.
fn describe(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    if error.as_db_error().is_none() {
        let mut cause = std::error::Error::source(error);
        while let Some(inner) = cause {
            text.push_str(&format!(": {inner}"));
            cause = inner.source();
        }
    }
    text
}

fn pool_error(error: deadpool_postgres::PoolError) -> StoreError {
    match error {
        deadpool_postgres::PoolError::Backend(error) => pg(error),
        other => StoreError::Engine(format!("postgres pool: {other}")),
    }
}

impl PgStore {
    /// Connects (`url` as libpq accepts it: `postgres://user@host/db` or
    /// `host=... dbname=...`; TLS as its `sslmode` says, the server verified
    /// against `ca_file` or the system's roots) and applies pending migrations.
    pub async fn connect(
        url: &str,
        pool_size: usize,
        ca_file: Option<&Path>,
    ) -> Result<PgStore, StoreError> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|_| StoreError::Engine("the database URL cannot be parsed".into()))?;
        let tls = tls::connector(&config, ca_file)?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .build()
            .map_err(|error| StoreError::Engine(format!("postgres pool: {error}")))?;
        schema::migrate(&mut pool.get().await.map_err(pool_error)?).await?;
        Ok(PgStore {
            writer: batcher::Batcher::start(pool.clone()),
            pool,
            config,
            tls,
        })
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// One bytea column of at most one row, decoded.
    async fn record<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<T>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(sql, params)
            .await
            .map_err(pg)?;
        row.map(|row| decode(row.get::<_, &[u8]>(0))).transpose()
    }

    /// The keyring row: its generation, the lowest master version still live,
    /// and the keyring sealed by the root key.
    pub async fn keyring_row(&self) -> Result<Option<(i64, i32, Vec<u8>)>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT generation, retired_below, sealed FROM keyring WHERE id = 1",
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|row| (row.get(0), row.get(1), row.get(2))))
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn customer(&self, customer_id: &str) -> Result<Option<CustomerRecord>, StoreError> {
        self.record(
            "SELECT record FROM customers WHERE id = $1",
            &[&customer_id],
        )
        .await
    }

    async fn fields(&self, customer_id: &str) -> Result<Vec<(String, FieldRecord)>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT name, record FROM fields WHERE customer_id = $1 ORDER BY name",
                &[&customer_id],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|row| Ok((row.get(0), decode(row.get::<_, &[u8]>(1))?)))
            .collect()
    }

    async fn field(
        &self,
        customer_id: &str,
        field_name: &str,
    ) -> Result<Option<FieldRecord>, StoreError> {
        self.record(
            "SELECT record FROM fields WHERE customer_id = $1 AND name = $2",
            &[&customer_id, &field_name],
        )
        .await
    }

    async fn token(&self, token: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.record("SELECT record FROM tokens WHERE token = $1", &[&token])
            .await
    }

    async fn customer_tokens(&self, customer_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT token FROM tokens WHERE customer_id = $1 ORDER BY token",
                &[&customer_id],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    async fn find_by_index(
        &self,
        field_name: &str,
        blind_index: &[u8; 32],
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT customer_id FROM blind_index WHERE field_name = $1 AND blind = $2
                 ORDER BY customer_id LIMIT $3",
                &[
                    &field_name,
                    &&blind_index[..],
                    &(limit.min(i64::MAX as usize) as i64),
                ],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    async fn erasure_of(&self, customer_id: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT receipt_id FROM erasures WHERE customer_id = $1",
                &[&customer_id],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|row| row.get(0)))
    }

    async fn receipt(&self, receipt_id: &str) -> Result<Option<ReceiptRecord>, StoreError> {
        self.record(
            "SELECT record FROM receipts WHERE receipt_id = $1",
            &[&receipt_id],
        )
        .await
    }

    async fn commit(&self, change: CustomerChange) -> Result<Option<[u8; 32]>, CommitError> {
        let hashes = self.writer.commit(vec![change]).await?;
        Ok(hashes.first().copied())
    }

    async fn commit_many(&self, changes: Vec<CustomerChange>) -> Result<(), CommitError> {
        if changes.iter().any(|change| change.receipt.is_some()) {
            return Err(StoreError::Engine("commit_many takes no erasures".into()).into());
        }
        self.writer.commit(changes).await?;
        Ok(())
    }

    async fn customers_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, CustomerRecord)>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, record FROM customers WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after.unwrap_or(""), &(limit.min(i64::MAX as usize) as i64)],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|row| Ok((row.get(0), decode(row.get::<_, &[u8]>(1))?)))
            .collect()
    }

    async fn customer_count(&self) -> Result<u64, StoreError> {
        let row = self
            .client()
            .await?
            .query_one("SELECT count(*) FROM customers", &[])
            .await
            .map_err(pg)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn rotation(&self) -> Result<Option<RotationRecord>, StoreError> {
        self.record("SELECT record FROM rotation WHERE id = 1", &[])
            .await
    }

    async fn set_rotation(&self, rotation: Option<RotationRecord>) -> Result<(), StoreError> {
        let client = self.client().await?;
        match rotation {
            Some(rotation) => {
                client
                    .execute(
                        "INSERT INTO rotation (id, record) VALUES (1, $1)
                     ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
                        &[&encode(&rotation)?],
                    )
                    .await
            }
            None => {
                client
                    .execute("DELETE FROM rotation WHERE id = 1", &[])
                    .await
            }
        }
        .map_err(pg)?;
        Ok(())
    }

    async fn try_rotation_lease(&self) -> Result<Option<RotationLease>, StoreError> {
        lease::try_lease(&self.config, &self.tls).await
    }

    async fn publish_policy_version(
        &self,
        version: PolicyVersionRecord,
        audit: AuditEntry,
    ) -> Result<(), CommitError> {
        commit::publish_policy_version(&mut self.client().await?, version, audit).await
    }

    async fn policy_versions(&self) -> Result<Vec<PolicyVersionRecord>, StoreError> {
        let rows = self
            .client()
            .await?
            .query("SELECT record FROM policy_versions ORDER BY seq", &[])
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|row| decode(row.get::<_, &[u8]>(0)))
            .collect()
    }

    async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.writer.append(entries).await
    }

    async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let after = query.after_seq.min(i64::MAX as u64) as i64;
        let limit = query.limit.min(i64::MAX as usize) as i64;
        let rows = self
            .client()
            .await?
            .query(
                "SELECT record FROM audit_events
                 WHERE seq > $1
                   AND ($2::text IS NULL OR customer_id = $2)
                   AND ($3::text IS NULL OR principal = $3)
                   AND ($4::bigint IS NULL OR at_ms >= $4)
                 ORDER BY seq LIMIT $5",
                &[
                    &after,
                    &query.customer_id,
                    &query.principal,
                    &query.since_ms,
                    &limit,
                ],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|row| decode(row.get::<_, &[u8]>(0)))
            .collect()
    }

    async fn audit_head(&self) -> Result<(u64, [u8; 32]), StoreError> {
        let client = self.client().await?;
        commit::audit_head(&client).await
    }

    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        let row = self
            .client()
            .await?
            .query_one("SELECT pg_database_size(current_database())", &[])
            .await
            .map_err(pg)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Every commit is already durable when it returns.
        Ok(())
    }
}

impl PgStore {
    /// Replaces the keyring row if it is still at `expected_generation` (`None`:
    /// no row yet). Raising `retired_below` succeeds only when no customer is
    /// still wrapped under a version below it; commits that would wrap under
    /// one are held off by the row lock and then refused (`StaleKeyring`).
    pub async fn save_keyring_row(
        &self,
        expected_generation: Option<i64>,
        generation: i64,
        retired_below: i32,
        sealed: &[u8],
    ) -> Result<(), CommitError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(pg)?;
        let current = transaction
            .query_opt(
                "SELECT generation FROM keyring WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await
            .map_err(pg)?
            .map(|row| row.get::<_, i64>(0));
        if current != expected_generation {
            return Err(CommitError::Conflict);
        }
        let stragglers: i64 = transaction
            .query_one(
                "SELECT count(*) FROM customers WHERE master_version < $1",
                &[&retired_below],
            )
            .await
            .map_err(pg)?
            .get(0);
        if stragglers > 0 {
            return Err(CommitError::Conflict);
        }
        transaction
            .execute(
                "INSERT INTO keyring (id, generation, retired_below, sealed) VALUES (1, $1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET generation = EXCLUDED.generation,
                     retired_below = EXCLUDED.retired_below, sealed = EXCLUDED.sealed",
                &[&generation, &retired_below, &sealed],
            )
            .await
            .map_err(pg)?;
        transaction.commit().await.map_err(pg)?;
        Ok(())
    }
}
