//! Versioned schema migrations, applied at start under an advisory lock so
//! that replicas starting together apply each one exactly once.

use deadpool_postgres::Object;

use super::{lock_ids, pg};
use crate::store::StoreError;

/// Each migration runs once, in order, in its own transaction. Never edit one
/// that has shipped: add the next.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
    CREATE TABLE customers (
        id text PRIMARY KEY,
        revision bigint NOT NULL,
        master_version integer NOT NULL,
        record bytea NOT NULL
    );
    CREATE TABLE fields (
        customer_id text NOT NULL,
        name text NOT NULL,
        record bytea NOT NULL,
        PRIMARY KEY (customer_id, name)
    );
    CREATE TABLE tokens (
        token text PRIMARY KEY,
        customer_id text NOT NULL,
        record bytea NOT NULL
    );
    CREATE INDEX tokens_by_customer ON tokens (customer_id);
    CREATE TABLE blind_index (
        field_name text NOT NULL,
        blind bytea NOT NULL,
        customer_id text NOT NULL,
        PRIMARY KEY (field_name, blind, customer_id)
    );
    CREATE TABLE erasures (customer_id text PRIMARY KEY, receipt_id text NOT NULL);
    CREATE TABLE receipts (receipt_id text PRIMARY KEY, record bytea NOT NULL);
    CREATE TABLE audit_events (
        seq bigint PRIMARY KEY,
        customer_id text NOT NULL,
        principal text NOT NULL,
        at_ms bigint NOT NULL,
        record bytea NOT NULL
    );
    CREATE INDEX audit_events_by_customer ON audit_events (customer_id, seq);
    CREATE TABLE audit_head (
        id integer PRIMARY KEY CHECK (id = 1),
        seq bigint NOT NULL,
        hash bytea NOT NULL
    );
    CREATE TABLE rotation (id integer PRIMARY KEY CHECK (id = 1), record bytea NOT NULL);
    CREATE TABLE policy_versions (
        seq bigint PRIMARY KEY,
        version text NOT NULL UNIQUE,
        record bytea NOT NULL
    );
    CREATE TABLE keyring (
        id integer PRIMARY KEY CHECK (id = 1),
        generation bigint NOT NULL,
        retired_below integer NOT NULL,
        sealed bytea NOT NULL
    );
    "#,
    ),
    (
        2,
        r#"
    ALTER TABLE customers ADD COLUMN format smallint NOT NULL DEFAULT 1;
    CREATE TABLE key_anchor (id integer PRIMARY KEY CHECK (id = 1), record bytea NOT NULL);
    "#,
    ),
    (
        3,
        // Retirement looks for customers still under a version it retires
        // while it holds the keyring row, which every batch waits for.
        r#"
    CREATE INDEX customers_by_master_version ON customers (master_version);
    "#,
    ),
    (
        4,
        // The last event trimmed from the audit log: the held log chains
        // from its hash.
        r#"
    CREATE TABLE audit_anchor (
        id integer PRIMARY KEY CHECK (id = 1),
        seq bigint NOT NULL,
        hash bytea NOT NULL
    );
    "#,
    ),
];

/// The newest schema version this binary knows.
pub fn latest_migration() -> i32 {
    MIGRATIONS.last().map_or(0, |(version, _)| *version)
}

fn newer_schema(recorded: i32, latest: i32) -> String {
    format!(
        "this database's schema was migrated by a newer pii-vault (schema version {recorded}); \
         this binary knows up to schema version {latest}. Run the newer release (or restore a \
         backup taken before the upgrade); nothing was changed"
    )
}

pub async fn migrate(client: &mut Object) -> Result<(), StoreError> {
    // Everything, the bookkeeping table included, under one lock in one
    // transaction (DDL is transactional): replicas starting together queue here.
    let transaction = client.transaction().await.map_err(pg("migrate"))?;
    // A migration may rewrite a large table, and replicas starting together
    // wait here for the one applying it: no session timeout applies.
    transaction
        .batch_execute("SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0")
        .await
        .map_err(pg("migrate"))?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&lock_ids::MIGRATIONS])
        .await
        .map_err(pg("migrate"))?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS pii_vault_migrations (
                version integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(pg("migrate"))?;
    // A database a newer release migrated: this binary would misread its
    // tables. Refused before anything is applied (the transaction, and the
    // bookkeeping table if it just created it, roll back).
    let latest = latest_migration();
    let recorded: Option<i32> = transaction
        .query_one("SELECT max(version) FROM pii_vault_migrations", &[])
        .await
        .map_err(pg("migrate"))?
        .get(0);
    if let Some(recorded) = recorded.filter(|recorded| *recorded > latest) {
        return Err(StoreError::engine_refused(newer_schema(recorded, latest)));
    }
    for (version, sql) in MIGRATIONS {
        let applied = transaction
            .query_opt(
                "SELECT 1 FROM pii_vault_migrations WHERE version = $1",
                &[version],
            )
            .await
            .map_err(pg("migrate"))?
            .is_some();
        if !applied {
            transaction
                .batch_execute(sql)
                .await
                .map_err(pg("migrate"))?;
            transaction
                .execute(
                    "INSERT INTO pii_vault_migrations (version) VALUES ($1)",
                    &[version],
                )
                .await
                .map_err(pg("migrate"))?;
            tracing::info!(version, "applied schema migration");
        }
    }
    transaction.commit().await.map_err(pg("migrate"))
}
