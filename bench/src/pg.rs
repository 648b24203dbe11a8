//! The baseline teams build instead of a vault: PostgreSQL with pgcrypto, one
//! random key per customer kept in a table, `pgp_sym_encrypt` per value, and
//! `synchronous_commit = on` so that an acknowledged write is as durable as the
//! vault's. Its schema (`pii_vault_bench`) is dropped and created at each run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use rand::Rng;
use tokio_postgres::{Client, NoTls, Statement};

use crate::data;
use crate::stats::Outcome;
use crate::Op;
use pii_vault::vault::tokens::random_token;

const SCHEMA: &str = "
DROP SCHEMA IF EXISTS pii_vault_bench CASCADE;
CREATE SCHEMA pii_vault_bench;
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE TABLE pii_vault_bench.customer_keys (
    customer_id text PRIMARY KEY,
    key text NOT NULL
);
CREATE TABLE pii_vault_bench.fields (
    customer_id text NOT NULL REFERENCES pii_vault_bench.customer_keys,
    name text NOT NULL,
    kind text NOT NULL,
    token text NOT NULL UNIQUE,
    value bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, name)
);
CREATE TABLE pii_vault_bench.tokens (
    token text PRIMARY KEY,
    customer_id text NOT NULL REFERENCES pii_vault_bench.customer_keys,
    kind text NOT NULL,
    value bytea NOT NULL
);
";

const INSERT_KEYS: &str = "
INSERT INTO pii_vault_bench.customer_keys (customer_id, key)
SELECT c, encode(gen_random_bytes(32), 'hex') FROM unnest($1::text[]) AS c";

/// Upserts a customer's fields; a new field gets the token offered, an
/// existing one keeps its token (as the vault does).
const PUT: &str = "
INSERT INTO pii_vault_bench.fields (customer_id, name, kind, token, value)
SELECT f.c, f.n, f.k, f.t, pgp_sym_encrypt(f.v, k.key, $6)
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS f(c, n, k, t, v)
JOIN pii_vault_bench.customer_keys k ON k.customer_id = f.c
ON CONFLICT (customer_id, name)
DO UPDATE SET value = EXCLUDED.value, kind = EXCLUDED.kind, updated_at = now()";

const GET: &str = "
SELECT f.name, f.kind, f.token, pgp_sym_decrypt(f.value, k.key)
FROM pii_vault_bench.fields f JOIN pii_vault_bench.customer_keys k USING (customer_id)
WHERE f.customer_id = $1";

const TOKENIZE: &str = "
INSERT INTO pii_vault_bench.tokens (token, customer_id, kind, value)
SELECT t.t, t.c, t.k, pgp_sym_encrypt(t.v, k.key, $5)
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t(t, c, k, v)
JOIN pii_vault_bench.customer_keys k ON k.customer_id = t.c";

const DETOKENIZE: &str = "
SELECT t.token, t.customer_id, t.kind, pgp_sym_decrypt(t.value, k.key)
FROM pii_vault_bench.tokens t JOIN pii_vault_bench.customer_keys k USING (customer_id)
WHERE t.token = ANY($1)";

/// One connection with its statements prepared.
pub struct PgConn {
    client: Client,
    put: Statement,
    get: Statement,
    tokenize: Statement,
    detokenize: Statement,
}

/// A connection with `synchronous_commit = on`.
async fn open(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL ({url})"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("postgres connection ended: {error}");
        }
    });
    client
        .batch_execute("SET synchronous_commit = on")
        .await
        .context("SET synchronous_commit")?;
    Ok(client)
}

pub async fn connect(url: &str) -> anyhow::Result<PgConn> {
    let client = open(url).await?;
    Ok(PgConn {
        put: client.prepare(PUT).await.context("preparing PUT")?,
        get: client.prepare(GET).await.context("preparing GET")?,
        tokenize: client
            .prepare(TOKENIZE)
            .await
            .context("preparing TOKENIZE")?,
        detokenize: client
            .prepare(DETOKENIZE)
            .await
            .context("preparing DETOKENIZE")?,
        client,
    })
}

/// Creates the schema and the same data set as the vault's: per customer a
/// key, the profile's fields and `standalone` tokens. Returns a sample of
/// tokens to resolve (about `sample` customers' worth).
pub async fn populate(
    url: &str,
    prefix: &str,
    customers: u64,
    standalone: usize,
    sample: u64,
    encrypt_options: &str,
) -> anyhow::Result<Vec<String>> {
    let setup = open(url).await?;
    setup
        .batch_execute(SCHEMA)
        .await
        .context("creating schema pii_vault_bench (needs the pgcrypto extension)")?;
    const BATCH: u64 = 250;
    let next = Arc::new(AtomicU64::new(0));
    let stride = (customers / sample.max(1)).max(1);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let next = Arc::clone(&next);
        let (url, prefix, options) = (
            url.to_owned(),
            prefix.to_owned(),
            encrypt_options.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let mut conn = connect(&url).await?;
            let mut tokens_kept = Vec::new();
            loop {
                let first = next.fetch_add(BATCH, Ordering::Relaxed);
                if first >= customers {
                    break;
                }
                let last = (first + BATCH).min(customers);
                let mut ids = Vec::new();
                let mut fields: [Vec<String>; 5] = Default::default();
                let mut tokens: [Vec<String>; 4] = Default::default();
                for index in first..last {
                    let id = data::customer_id(&prefix, index);
                    let mut rng = data::seeded(index);
                    for field in data::profile(&mut rng) {
                        let kind = crate::kind_label(field.kind);
                        for (column, value) in fields.iter_mut().zip([
                            id.clone(),
                            field.name,
                            kind,
                            random_token().into(),
                            field.value,
                        ]) {
                            column.push(value);
                        }
                    }
                    for _ in 0..standalone {
                        let (kind, value) = data::standalone(&mut rng);
                        let token: String = random_token().into();
                        if index % stride == 0 {
                            tokens_kept.push(token.clone());
                        }
                        for (column, value) in tokens.iter_mut().zip([
                            token,
                            id.clone(),
                            crate::kind_label(kind as i32),
                            value,
                        ]) {
                            column.push(value);
                        }
                    }
                    ids.push(id);
                }
                let tx = conn.client.transaction().await?;
                tx.execute(INSERT_KEYS, &[&ids]).await?;
                let [c, n, k, t, v] = &fields;
                tx.execute(&conn.put, &[c, n, k, t, v, &options]).await?;
                let [t, c, k, v] = &tokens;
                tx.execute(&conn.tokenize, &[t, c, k, v, &options]).await?;
                tx.commit().await?;
            }
            Ok::<_, anyhow::Error>(tokens_kept)
        }));
    }
    let mut kept = Vec::new();
    for task in tasks {
        kept.extend(task.await.context("a PostgreSQL loader panicked")??);
    }
    setup
        .batch_execute(
            "ANALYZE pii_vault_bench.customer_keys, pii_vault_bench.fields, pii_vault_bench.tokens",
        )
        .await?;
    eprintln!(
        "postgres: {customers} customers populated in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(kept)
}

/// What a PostgreSQL worker needs to build requests.
pub struct PgWorkload {
    pub prefix: String,
    pub customers: u64,
    pub batch: usize,
    pub sample: Arc<Vec<String>>,
    pub encrypt_options: String,
}

impl PgWorkload {
    pub async fn call(&self, conn: &PgConn, op: Op, rng: &mut impl Rng) -> Outcome {
        let customer = data::customer_id(&self.prefix, rng.random_range(0..self.customers));
        let result = match op {
            Op::Put => {
                let mut columns: [Vec<String>; 5] = Default::default();
                for field in data::profile(rng) {
                    let kind = crate::kind_label(field.kind);
                    for (column, value) in columns.iter_mut().zip([
                        customer.clone(),
                        field.name,
                        kind,
                        random_token().into(),
                        field.value,
                    ]) {
                        column.push(value);
                    }
                }
                let [c, n, k, t, v] = &columns;
                conn.client
                    .execute(&conn.put, &[c, n, k, t, v, &self.encrypt_options])
                    .await
                    .map(|rows| rows as usize)
            }
            Op::Get => conn
                .client
                .query(&conn.get, &[&customer])
                .await
                .map(|rows| rows.len()),
            Op::Tokenize => {
                let mut columns: [Vec<String>; 4] = Default::default();
                for _ in 0..self.batch {
                    let (kind, value) = data::standalone(rng);
                    for (column, value) in columns.iter_mut().zip([
                        random_token().into(),
                        customer.clone(),
                        crate::kind_label(kind as i32),
                        value,
                    ]) {
                        column.push(value);
                    }
                }
                let [t, c, k, v] = &columns;
                conn.client
                    .execute(&conn.tokenize, &[t, c, k, v, &self.encrypt_options])
                    .await
                    .map(|rows| rows as usize)
            }
            Op::Detokenize => {
                let tokens: Vec<&str> = (0..self.batch)
                    .map(|_| self.sample[rng.random_range(0..self.sample.len())].as_str())
                    .collect();
                conn.client
                    .query(&conn.detokenize, &[&tokens])
                    .await
                    .map(|rows| rows.len())
            }
            Op::Health | Op::Mixed => unreachable!("resolved by the caller"),
        };
        match result {
            Ok(values) => Outcome::ok(values),
            Err(error) => Outcome::failed(match error.code() {
                Some(state) => format!("pg:{}", state.code()),
                None => "pg:connection".to_owned(),
            }),
        }
    }
}
