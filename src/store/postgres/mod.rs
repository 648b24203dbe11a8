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
mod session;
mod tls;

pub use session::SessionSettings;

use std::path::Path;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::audit::{AuditEntry, AuditHead, AuditQuery, AuditRecord, AuditTrim};
use super::chain::ChainedWrite;
use super::records::{decode, decode_customer, encode};
use super::{
    erasure_hash, with_causes, AuditLog, CommitError, CustomerChange, CustomerRecord, Customers,
    Erasure, FieldRecord, KeyAnchor, KeyState, KeyringTable, PolicyVersionRecord, PolicyVersions,
    PoolState, ReceiptRecord, RotationLease, RotationRecord, StoreError, StoreHealth,
    StorePressure, TokenRecord, Upkeep,
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

/// What a failed database call becomes: a store error naming the operation,
/// logged at warn, with the driver's error as its source. Never a value: the
/// server's message and detail can quote one, so of an error the server sent
/// only the SQLSTATE, severity, table and constraint are kept (`ServerError`).
fn pg(operation: &str) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
    move |error| failed(operation, error)
}

/// A statement named by its verb and table ("INSERT tokens"), for errors.
fn statement_name(sql: &str) -> String {
    let words: Vec<&str> = sql.split_whitespace().collect();
    let verb = words.first().copied().unwrap_or("statement");
    let table = words
        .windows(2)
        .find(|pair| ["FROM", "INTO", "UPDATE"].contains(&pair[0]))
        .map(|pair| pair[1].trim_end_matches(|c: char| !c.is_alphanumeric() && c != '_'));
    match table {
        Some(table) => format!("{verb} {table}"),
        None => verb.to_owned(),
    }
}

fn failed(operation: &str, error: tokio_postgres::Error) -> StoreError {
    match error.as_db_error() {
        Some(db) => {
            let server = ServerError::of(db);
            tracing::warn!(
                operation,
                sqlstate = server.sqlstate,
                severity = db.severity(),
                table = db.table(),
                constraint = db.constraint(),
                "database call failed"
            );
            StoreError::engine(format!("database error in {operation}"), server)
        }
        None => {
            let text = with_causes(&error);
            tracing::warn!(operation, error = %text, "database call failed");
            // rustls says "certificate not valid for name ..."; the fix is ours to say.
            let fix = if text.contains("not valid for name") {
                format!(" ({})", tls::NAME_MISMATCH_FIX)
            } else {
                String::new()
            };
            StoreError::engine(format!("database error in {operation}{fix}"), error)
        }
    }
}

/// An error the server sent, as far as it can be kept: its SQLSTATE names
/// the problem, while its message and detail can quote the values written.
#[derive(Debug)]
struct ServerError {
    sqlstate: String,
}

impl ServerError {
    fn of(db: &tokio_postgres::error::DbError) -> ServerError {
        ServerError {
            sqlstate: db.code().code().to_owned(),
        }
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "the server answered SQLSTATE {}", self.sqlstate)
    }
}

impl std::error::Error for ServerError {}

fn pool_error(error: deadpool_postgres::PoolError) -> StoreError {
    match error {
        deadpool_postgres::PoolError::Backend(error) => failed("connect", error),
        other => {
            tracing::warn!(error = %other, "no database connection from the pool");
            StoreError::engine("database connection pool", other)
        }
    }
}

impl PgStore {
    /// Connects (`url` as libpq accepts it: `postgres://user@host/db` or
    /// `host=... dbname=...`; TLS as its `sslmode` says, the server verified
    /// against `ca_file` or the system's roots; `sslmode` other than `require`
    /// only with `allow_plaintext`) and applies pending migrations, with the
    /// default session settings.
    pub async fn connect(
        url: &str,
        pool_size: usize,
        ca_file: Option<&Path>,
        allow_plaintext: bool,
    ) -> Result<PgStore, StoreError> {
        Self::connect_with(
            url,
            pool_size,
            ca_file,
            allow_plaintext,
            &SessionSettings::default(),
        )
        .await
    }

    /// `connect`, every session pinned to `settings` (see `SessionSettings`).
    pub async fn connect_with(
        url: &str,
        pool_size: usize,
        ca_file: Option<&Path>,
        allow_plaintext: bool,
        settings: &SessionSettings,
    ) -> Result<PgStore, StoreError> {
        let (mut config, name_check) = tls::parse_url(url)?;
        settings.pin(&mut config);
        let tls = tls::connector(&config, name_check, ca_file, allow_plaintext)?;
        // Verified: a connection is tried before it is handed out, so one
        // that died with its server (a failover) is replaced, not used.
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let wait = Some(settings.connect_timeout);
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(wait)
            .create_timeout(wait)
            .recycle_timeout(wait)
            .build()
            .map_err(|error| StoreError::engine("building the postgres pool", error))?;
        let mut client = pool.get().await.map_err(pool_error)?;
        settings.check(&client).await?;
        schema::migrate(&mut client).await?;
        drop(client);
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
            .map_err(pg(&statement_name(sql)))?;
        row.map(|row| decode(row.get::<_, &[u8]>(0))).transpose()
    }
}

#[async_trait::async_trait]
impl Customers for PgStore {
    async fn customer(&self, customer_id: &str) -> Result<Option<CustomerRecord>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT format, record FROM customers WHERE id = $1",
                &[&customer_id],
            )
            .await
            .map_err(pg("customer"))?;
        row.map(|row| decode_customer(row.get(0), row.get::<_, &[u8]>(1)))
            .transpose()
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
            .map_err(pg("fields"))?;
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
            .map_err(pg("customer tokens"))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    async fn find_by_index(
        &self,
        field_name: &str,
        blind_index: &[u8; 32],
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        // Byte order ("C"), as sled's, whatever the database's collation: the
        // vault merges and pages these lists in byte order.
        let rows = self
            .client()
            .await?
            .query(
                "SELECT customer_id FROM blind_index WHERE field_name = $1 AND blind = $2
                 AND customer_id COLLATE \"C\" > $3
                 ORDER BY customer_id COLLATE \"C\" LIMIT $4",
                &[
                    &field_name,
                    &&blind_index[..],
                    &after,
                    &(limit.min(i64::MAX as usize) as i64),
                ],
            )
            .await
            .map_err(pg("find by index"))?;
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
            .map_err(pg("erasure of"))?;
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
        let write = ChainedWrite::of_changes(vec![change]);
        let hashes = self.writer.commit(write).await?;
        Ok(hashes.first().copied())
    }

    async fn commit_many(&self, changes: Vec<CustomerChange>) -> Result<(), CommitError> {
        self.writer
            .commit(ChainedWrite::of_changes(changes))
            .await?;
        Ok(())
    }

    async fn erase(&self, erasure: Erasure) -> Result<[u8; 32], CommitError> {
        let write = ChainedWrite::of_erasure(erasure);
        erasure_hash(&self.writer.commit(write).await?)
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
                "SELECT id, format, record FROM customers WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after.unwrap_or(""), &(limit.min(i64::MAX as usize) as i64)],
            )
            .await
            .map_err(pg("customers after"))?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.get(0),
                    decode_customer(row.get(1), row.get::<_, &[u8]>(2))?,
                ))
            })
            .collect()
    }

    async fn customer_count(&self) -> Result<u64, StoreError> {
        let row = self
            .client()
            .await?
            .query_one("SELECT count(*) FROM customers", &[])
            .await
            .map_err(pg("customer count"))?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}

#[async_trait::async_trait]
impl AuditLog for PgStore {
    async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.writer
            .commit(ChainedWrite::of_entries(entries))
            .await
            .map(drop)
            .map_err(CommitError::into_store_error)
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
            .map_err(pg("audit events"))?;
        rows.iter()
            .map(|row| decode(row.get::<_, &[u8]>(0)))
            .collect()
    }

    async fn customer_audit_events_before(
        &self,
        customer_id: &str,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let before = before_seq.min(i64::MAX as u64) as i64;
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = self
            .client()
            .await?
            .query(
                "SELECT record FROM audit_events
                 WHERE customer_id = $1 AND seq < $2
                 ORDER BY seq DESC LIMIT $3",
                &[&customer_id, &before, &limit],
            )
            .await
            .map_err(pg("customer audit events before"))?;
        rows.iter()
            .map(|row| decode(row.get::<_, &[u8]>(0)))
            .collect()
    }

    async fn audit_head(&self) -> Result<(u64, [u8; 32]), StoreError> {
        let client = self.client().await?;
        let head = commit::audit_head(&client).await?;
        Ok((head.seq, head.hash))
    }

    async fn audit_anchor(&self) -> Result<AuditHead, StoreError> {
        let client = self.client().await?;
        commit::audit_anchor(&client).await
    }

    async fn trim_audit(&self, trim: AuditTrim) -> Result<u64, CommitError> {
        commit::trim_audit(&mut self.client().await?, trim).await
    }
}

#[async_trait::async_trait]
impl KeyState for PgStore {
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
        .map_err(pg("set rotation"))?;
        Ok(())
    }

    async fn try_rotation_lease(&self) -> Result<Option<RotationLease>, StoreError> {
        lease::try_lease(&self.config, &self.tls).await
    }

    async fn key_anchor(&self) -> Result<Option<KeyAnchor>, StoreError> {
        self.record("SELECT record FROM key_anchor WHERE id = 1", &[])
            .await
    }

    async fn set_key_anchor(&self, anchor: KeyAnchor) -> Result<(), StoreError> {
        // Commits are refused under retired versions by the keyring row's
        // `retired_below`; the anchor here identifies the keyring.
        self.client()
            .await?
            .execute(
                "INSERT INTO key_anchor (id, record) VALUES (1, $1)
                 ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
                &[&encode(&anchor)?],
            )
            .await
            .map_err(pg("set key anchor"))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl PolicyVersions for PgStore {
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
            .map_err(pg("policy versions"))?;
        rows.iter()
            .map(|row| decode(row.get::<_, &[u8]>(0)))
            .collect()
    }
}

#[async_trait::async_trait]
impl Upkeep for PgStore {
    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        let row = self
            .client()
            .await?
            .query_one("SELECT pg_database_size(current_database())", &[])
            .await
            .map_err(pg("size on disk"))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Every commit is already durable when it returns.
        Ok(())
    }

    fn pressure(&self) -> StorePressure {
        let status = self.pool.status();
        StorePressure {
            queued_writes: None,
            pool: Some(PoolState {
                size: status.size as u64,
                idle: status.available as u64,
                waiting: status.waiting as u64,
            }),
        }
    }

    async fn health(&self) -> StoreHealth {
        let probe = async {
            self.client()
                .await?
                .simple_query("SELECT 1")
                .await
                .map_err(pg("health check"))?;
            Ok::<(), StoreError>(())
        };
        match tokio::time::timeout(HEALTH_TIMEOUT, probe).await {
            Ok(Ok(())) => StoreHealth::Serving,
            Ok(Err(error)) => StoreHealth::Degraded(format!(
                "the database does not answer: {}",
                with_causes(&error)
            )),
            Err(_) => StoreHealth::Degraded(format!(
                "the database did not answer within {} s",
                HEALTH_TIMEOUT.as_secs()
            )),
        }
    }
}

/// How long readiness waits for the database to answer `SELECT 1`.
const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The keyring row, replaced under its row lock (see `save_keyring_row`).
#[async_trait::async_trait]
impl KeyringTable for PgStore {
    async fn keyring_row(&self) -> Result<Option<(i64, i32, Vec<u8>)>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT generation, retired_below, sealed FROM keyring WHERE id = 1",
                &[],
            )
            .await
            .map_err(pg("keyring row"))?;
        Ok(row.map(|row| (row.get(0), row.get(1), row.get(2))))
    }

    async fn save_keyring_row(
        &self,
        expected_generation: Option<i64>,
        generation: i64,
        retired_below: i32,
        sealed: &[u8],
    ) -> Result<(), CommitError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(pg("save keyring row"))?;
        let current = transaction
            .query_opt(
                "SELECT generation FROM keyring WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await
            .map_err(pg("save keyring row"))?
            .map(|row| row.get::<_, i64>(0));
        if current != expected_generation {
            return Err(CommitError::Conflict);
        }
        // Customers under a version retired before are unreadable already
        // (a store damaged by an older release): they cannot block this one.
        // Every batch waits for the row lock held here: one probe of the
        // index on master_version, not a count of every customer.
        let straggler: bool = transaction
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM customers WHERE master_version < $1
                 AND master_version >= COALESCE((SELECT retired_below FROM keyring WHERE id = 1), 0))",
                &[&retired_below],
            )
            .await
            .map_err(pg("save keyring row"))?
            .get(0);
        if straggler {
            return Err(CommitError::Conflict);
        }
        // With no row yet, `FOR UPDATE` above locked nothing: two replicas
        // starting together both get here, and only the first insert may win.
        let written = transaction
            .execute(
                "INSERT INTO keyring (id, generation, retired_below, sealed) VALUES (1, $1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET generation = EXCLUDED.generation,
                     retired_below = EXCLUDED.retired_below, sealed = EXCLUDED.sealed
                 WHERE keyring.generation = $4",
                &[
                    &generation,
                    &retired_below,
                    &sealed,
                    &expected_generation.unwrap_or(-1),
                ],
            )
            .await
            .map_err(pg("save keyring row"))?;
        if written != 1 {
            return Err(CommitError::Conflict);
        }
        transaction.commit().await.map_err(pg("save keyring row"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drivers_error_is_the_store_errors_source() {
        let driver = "port=not-a-number"
            .parse::<tokio_postgres::Config>()
            .expect_err("a bad port");
        let error = failed("connect", driver);
        let source = std::error::Error::source(&error).expect("a source");
        assert!(
            source.downcast_ref::<tokio_postgres::Error>().is_some(),
            "{source:?}"
        );
        assert!(with_causes(&error).starts_with("storage engine: database error in connect: "));
    }
}
