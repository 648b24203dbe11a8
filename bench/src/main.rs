//! `pii-vault-bench`: a load generator that drives a running vault over N
//! connections with C concurrent requests each, for a fixed time, on a
//! pre-populated data set of synthetic customers, and reports requests/s,
//! values/s, latency percentiles and errors. With `--baseline` the same load
//! shape also runs against the server's standard health check (the transport
//! ceiling) and against PostgreSQL with pgcrypto (what teams build instead),
//! and each operation is reported as a ratio to both.
//!
//! Latency is measured from when a request was due: in the closed loop that is
//! when it was sent; with `--rate` it is its slot in the schedule, so a stalled
//! server is charged for the requests it delayed (no coordinated omission).

mod data;
mod pg;
mod stats;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::rngs::SmallRng;
use rand::Rng;
use serde_json::{json, Value};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use pii_vault::pb::{
    self, key_admin_service_client::KeyAdminServiceClient, vault_service_client::VaultServiceClient,
};

use pii_vault::cli::client::{connect, kind_name, ClientArgs};
use stats::{Outcome, Summary, Tally};

/// Exit codes and `--json` errors are the vault CLI's (docs/cli.md).
#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = <BenchArgs as clap::Parser>::parse();
    let json = args.client.json;
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => std::process::ExitCode::from(pii_vault::cli::report(&error, json)),
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// PutFields: replace a random customer's 6 profile fields with new values.
    Put,
    /// GetFields: read all fields of a random customer.
    Get,
    /// Tokenize --batch new values for a random customer.
    Tokenize,
    /// Detokenize --batch tokens drawn from the data set.
    Detokenize,
    /// 20% put, 30% get, 20% tokenize, 30% detokenize.
    Mixed,
    /// The standard grpc.health.v1 Check: the transport ceiling.
    Health,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::Tokenize => "tokenize",
            Op::Detokenize => "detokenize",
            Op::Mixed => "mixed",
            Op::Health => "health",
        }
    }

    /// The batch size a run of this operation uses.
    fn batch(self, batch: usize) -> usize {
        match self {
            Op::Tokenize | Op::Detokenize | Op::Mixed => batch,
            _ => 1,
        }
    }

    /// A mixed request's concrete operation.
    fn concrete(self, rng: &mut impl Rng) -> Op {
        if self != Op::Mixed {
            return self;
        }
        match rng.random_range(0..10) {
            0 | 1 => Op::Put,
            2..=4 => Op::Get,
            5 | 6 => Op::Tokenize,
            _ => Op::Detokenize,
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Populate {
    /// Populate unless the first and last customers already exist.
    Auto,
    Always,
    Never,
}

/// Load generator: drives a running vault and reports throughput and latency.
#[derive(clap::Parser, Debug)]
#[command(name = "pii-vault-bench", version)]
pub struct BenchArgs {
    /// Operations to measure, in order (comma separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "tokenize")]
    pub op: Vec<Op>,
    /// gRPC connections (one tonic Channel each).
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Concurrent requests per connection.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// How long each measurement runs.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Load before each measurement that is not counted.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Values per Tokenize / Detokenize request.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Customers in the data set (each with 6 profile fields).
    #[arg(long, default_value_t = 10_000)]
    pub customers: u64,
    /// Standalone tokens per customer, besides its 6 field tokens.
    #[arg(long, default_value_t = 4)]
    pub standalone_tokens: usize,
    /// Customer ids are <prefix>c<index, 9 digits>.
    #[arg(long, default_value = "bench-")]
    pub prefix: String,
    /// Whether to create the data set first.
    #[arg(long, value_enum, default_value = "auto")]
    pub populate: Populate,
    /// Run even when the vault holds customers besides the bench data set
    /// (bench writes to the vault: by default it refuses one with other data).
    #[arg(long)]
    pub allow_existing_data: bool,
    /// Populate (or check) the data set, then stop.
    #[arg(long)]
    pub populate_only: bool,
    /// Customers whose tokens Detokenize draws from (spread over the data set).
    #[arg(long, default_value_t = 10_000)]
    pub sample: u64,
    /// The purpose every request names.
    #[arg(long, default_value = "billing")]
    pub purpose: String,
    /// Offered load in requests/s over all connections (open loop), instead of
    /// as fast as the server answers.
    #[arg(long)]
    pub rate: Option<f64>,
    /// After each vault measurement, measure again at half its rate (latency
    /// at a sustainable load).
    #[arg(long)]
    pub half_rate: bool,
    /// Also run the health-check ceiling and the PostgreSQL + pgcrypto baseline
    /// with the same load shape, and print ratios.
    #[arg(long)]
    pub baseline: bool,
    /// PostgreSQL for the baseline (its schema pii_vault_bench is dropped and created).
    #[arg(
        long,
        env = "PII_VAULT_BENCH_DATABASE_URL",
        default_value = "host=127.0.0.1 user=postgres dbname=test"
    )]
    pub database_url: String,
    /// PostgreSQL connections (default: one per concurrent request, at most 80).
    #[arg(long)]
    pub pg_connections: Option<usize>,
    /// Options of pgp_sym_encrypt. The per-customer key is 256 random bits, so
    /// the passphrase needs no iterated key stretching (s2k-mode=1).
    #[arg(long, default_value = "cipher-algo=aes256, s2k-mode=1")]
    pub pg_encrypt_options: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Adds `authorization: Bearer <api key>`; cloneable, so every worker of a
/// connection shares that connection's Channel.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Vault = VaultServiceClient<InterceptedService<Channel, Bearer>>;

fn bearer(args: &ClientArgs) -> anyhow::Result<Bearer> {
    match &args.api_key {
        Some(key) => {
            Ok(Bearer(Some(format!("Bearer {key}").parse().context(
                "the API key has characters that cannot go in a header",
            )?)))
        }
        None if args.cert.is_some() => Ok(Bearer(None)),
        None => bail!("no API key: set PII_VAULT_API_KEY, pass --api-key, or use --cert and --key"),
    }
}

fn kind_label(raw: i32) -> String {
    kind_name(raw)
}

fn status_code(status: &Status) -> String {
    format!("{:?}", status.code())
}

/// What vault workers need to build requests.
struct VaultWorkload {
    prefix: String,
    customers: u64,
    batch: usize,
    purpose: String,
    sample: Arc<Vec<String>>,
}

impl VaultWorkload {
    fn customer(&self, rng: &mut impl Rng) -> String {
        data::customer_id(&self.prefix, rng.random_range(0..self.customers))
    }

    async fn call(&self, client: &mut Vault, op: Op, rng: &mut SmallRng) -> Outcome {
        let result = match op {
            Op::Put => client
                .put_fields(pb::PutFieldsRequest {
                    customer_id: self.customer(rng),
                    fields: data::profile(rng),
                    purpose: self.purpose.clone(),
                    token_format: pb::TokenFormat::Random as i32,
                    expected_revision: None,
                })
                .await
                .map(|r| Outcome::ok(r.into_inner().tokens.len())),
            Op::Get => client
                .get_fields(pb::GetFieldsRequest {
                    customer_id: self.customer(rng),
                    field_names: Vec::new(),
                    purpose: self.purpose.clone(),
                })
                .await
                .map(|r| {
                    let fields = r.into_inner().fields;
                    let refused = fields.iter().filter(|f| f.error.is_some()).count();
                    let mut outcome = Outcome::ok(fields.len() - refused);
                    outcome.item_errors = refused as u32;
                    outcome
                }),
            Op::Tokenize => client
                .tokenize(pb::TokenizeRequest {
                    customer_id: self.customer(rng),
                    items: data::tokenize_items(rng, self.batch),
                    purpose: self.purpose.clone(),
                    request_id: String::new(),
                })
                .await
                .map(|r| Outcome::ok(r.into_inner().tokens.len())),
            Op::Detokenize => {
                let tokens = (0..self.batch)
                    .map(|_| self.sample[rng.random_range(0..self.sample.len())].clone())
                    .collect();
                client
                    .detokenize(pb::DetokenizeRequest {
                        tokens,
                        purpose: self.purpose.clone(),
                    })
                    .await
                    .map(|r| {
                        let results = r.into_inner().results;
                        let refused = results.iter().filter(|r| r.error.is_some()).count();
                        let mut outcome = Outcome::ok(results.len() - refused);
                        outcome.item_errors = refused as u32;
                        outcome
                    })
            }
            Op::Health | Op::Mixed => return Outcome::failed("bench:bad-op"),
        };
        result.unwrap_or_else(|status| Outcome::failed(status_code(&status)))
    }
}

/// One concurrent request stream.
enum Worker {
    Vault(Vault, Arc<VaultWorkload>, Op),
    Health(HealthClient<Channel>),
    Pg(Arc<pg::PgConn>, Arc<pg::PgWorkload>, Op),
}

impl Worker {
    async fn call(&mut self, rng: &mut SmallRng) -> Outcome {
        match self {
            Worker::Vault(client, work, op) => {
                let op = op.concrete(rng);
                work.call(client, op, rng).await
            }
            Worker::Health(client) => match client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
            {
                Ok(_) => Outcome::ok(1),
                Err(status) => Outcome::failed(status_code(&status)),
            },
            Worker::Pg(conn, work, op) => {
                let op = op.concrete(rng);
                work.call(conn, op, rng).await
            }
        }
    }
}

/// How the load is applied.
#[derive(Clone, Copy, Debug)]
struct Shape {
    warmup: Duration,
    duration: Duration,
    /// Offered requests/s over all workers; `None`: closed loop.
    rate: Option<f64>,
}

/// Runs every worker until the end of the measurement window and merges
/// what they counted. Requests due in the warm-up, or finishing after the
/// window, are not counted.
async fn measure(workers: Vec<Worker>, shape: Shape) -> (Tally, Duration) {
    let count = workers.len();
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + shape.warmup;
    let end = measure_from + shape.duration;
    let period = shape
        .rate
        .map(|rate| Duration::from_secs_f64(count as f64 / rate.max(1e-3)));
    let mut tasks = Vec::with_capacity(count);
    for (index, mut worker) in workers.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut rng = data::fresh();
            let mut tally = Tally::default();
            let offset = period.map(|p| p.mul_f64(index as f64 / count as f64));
            tokio::time::sleep_until(start.into()).await;
            for slot in 0u64.. {
                let due = match (period, offset) {
                    (Some(period), Some(offset)) => {
                        let due = start + offset + period.mul_f64(slot as f64);
                        if due >= end {
                            break;
                        }
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    _ => Instant::now(),
                };
                let outcome = worker.call(&mut rng).await;
                let done = Instant::now();
                if done >= end {
                    break;
                }
                if due >= measure_from {
                    tally.record(outcome, done - due);
                }
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        if let Ok(tally) = task.await {
            total.merge(tally);
        }
    }
    (total, shape.duration)
}

fn describe_load(rate: Option<f64>) -> String {
    rate.map_or_else(|| "max".to_owned(), |rate| format!("{rate:.0}"))
}

/// The runs measured so far; each is announced on stderr as it finishes,
/// unless the report is JSON.
struct Measurements {
    runs: Vec<Summary>,
    quiet: bool,
}

impl Measurements {
    /// Measures `workers` under `shape` and keeps the summary.
    async fn run(
        &mut self,
        target: &str,
        op: &str,
        batch: usize,
        workers: Vec<Worker>,
        shape: Shape,
    ) -> Summary {
        let (tally, elapsed) = measure(workers, shape).await;
        let load = describe_load(shape.rate);
        let summary = Summary::new(target, op, batch, load, elapsed, tally);
        if !self.quiet {
            eprintln!(
                "  measured {} {}: {:.0} req/s",
                summary.target, summary.op, summary.requests_per_sec
            );
        }
        self.runs.push(summary.clone());
        summary
    }
}

/// The vault's run of one operation as ratios to the baselines that ran.
fn ratios_of(vault: &Summary, health: Option<&Summary>, postgres: Option<&Summary>) -> Value {
    let ratio =
        |num: f64, den: Option<f64>| den.filter(|d| *d > 0.0).map(|d| stats::round(num / d, 3));
    json!({
        "op": vault.op,
        "batch": vault.batch,
        "vs_health_requests": ratio(vault.requests_per_sec, health.map(|h| h.requests_per_sec)),
        "vs_postgres_requests": ratio(vault.requests_per_sec, postgres.map(|p| p.requests_per_sec)),
        "vs_postgres_values": ratio(vault.values_per_sec, postgres.map(|p| p.values_per_sec)),
        "vs_postgres_p99": ratio(vault.p99, postgres.map(|p| p.p99)),
    })
}

async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.connections == 0 || args.concurrency == 0 || args.batch == 0 || args.customers == 0 {
        bail!("--connections, --concurrency, --batch and --customers must be at least 1");
    }
    if args.batch > 1000 {
        bail!("--batch is at most 1000 (the vault's limit per Tokenize/Detokenize)");
    }
    let workers = args.connections * args.concurrency;
    let auth = bearer(&args.client)?;
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        channels.push(connect(&args.client).await?);
    }
    let vault_for = |index: usize| -> Vault {
        VaultServiceClient::with_interceptor(channels[index % channels.len()].clone(), auth.clone())
            .max_decoding_message_size(pii_vault::server::MAX_MESSAGE_BYTES)
    };

    // The data set.
    let stride = (args.customers / args.sample.max(1)).max(1);
    let existing = match args.populate {
        Populate::Always => false,
        Populate::Never => true,
        Populate::Auto => is_populated(&mut vault_for(0), &args).await?,
    };
    if !args.allow_existing_data {
        // With --populate always the data set may be there all the same.
        let present = existing || is_populated(&mut vault_for(0), &args).await?;
        refuse_other_data(&channels[0], &auth, &args, present).await?;
    }
    let needs_tokens = args
        .op
        .iter()
        .any(|op| matches!(op, Op::Detokenize | Op::Mixed));
    let (sample, populated_in) = if existing && !needs_tokens {
        (Vec::new(), None)
    } else if existing {
        if !args.client.json {
            eprintln!(
                "data set {}*: {} customers present",
                args.prefix, args.customers
            );
        }
        (
            sample_tokens(&vault_for, &args, workers, stride).await?,
            None,
        )
    } else {
        let started = Instant::now();
        let sample = populate(&vault_for, &args, workers, stride).await?;
        (sample, Some(started.elapsed()))
    };
    if args.populate_only {
        let report = json!({
            "customers": args.customers,
            "tokens": args.customers * (data::PROFILE_FIELDS.len() + args.standalone_tokens) as u64,
            "populated_in_s": populated_in.map(|d| stats::round(d.as_secs_f64(), 1)),
        });
        println!("{report}");
        return Ok(());
    }
    if sample.is_empty() && needs_tokens {
        bail!("no tokens to detokenize: the data set is empty");
    }
    let sample = Arc::new(sample);
    let vault_work = |op: Op| {
        Arc::new(VaultWorkload {
            prefix: args.prefix.clone(),
            customers: args.customers,
            batch: op.batch(args.batch),
            purpose: args.purpose.clone(),
            sample: Arc::clone(&sample),
        })
    };

    // The PostgreSQL baseline's data set and connections.
    let mut pg_state = None;
    if args.baseline {
        let pg_sample = pg::populate(
            &args.database_url,
            &args.prefix,
            args.customers,
            args.standalone_tokens,
            args.sample,
            &args.pg_encrypt_options,
        )
        .await?;
        let pool_size = args.pg_connections.unwrap_or(workers.min(80)).max(1);
        let mut pool = Vec::with_capacity(pool_size);
        for _ in 0..pool_size {
            pool.push(Arc::new(pg::connect(&args.database_url).await?));
        }
        pg_state = Some((pool, Arc::new(pg_sample)));
    }

    let shape = Shape {
        warmup: args.warmup,
        duration: args.duration,
        rate: args.rate,
    };
    let mut measured = Measurements {
        runs: Vec::new(),
        quiet: args.client.json,
    };
    let mut ratios: Vec<Value> = Vec::new();

    let health = if args.baseline || args.op.contains(&Op::Health) {
        let health_workers = (0..workers)
            .map(|i| Worker::Health(HealthClient::new(channels[i % channels.len()].clone())))
            .collect();
        Some(
            measured
                .run("health", "check", 1, health_workers, shape)
                .await,
        )
    } else {
        None
    };

    for &op in args.op.iter().filter(|op| **op != Op::Health) {
        let batch = op.batch(args.batch);
        let postgres = match &pg_state {
            Some((pool, pg_sample)) => {
                let work = Arc::new(pg::PgWorkload {
                    prefix: args.prefix.clone(),
                    customers: args.customers,
                    batch,
                    sample: Arc::clone(pg_sample),
                    encrypt_options: args.pg_encrypt_options.clone(),
                });
                let pg_workers = (0..workers)
                    .map(|i| Worker::Pg(Arc::clone(&pool[i % pool.len()]), Arc::clone(&work), op))
                    .collect();
                Some(
                    measured
                        .run("postgres", op.name(), batch, pg_workers, shape)
                        .await,
                )
            }
            None => None,
        };
        let work = vault_work(op);
        let vault_workers = (0..workers)
            .map(|i| Worker::Vault(vault_for(i), Arc::clone(&work), op))
            .collect();
        let vault = measured
            .run("vault", op.name(), batch, vault_workers, shape)
            .await;
        if args.half_rate && vault.requests_per_sec > 0.0 {
            let half = Shape {
                rate: Some(vault.requests_per_sec / 2.0),
                ..shape
            };
            let vault_workers = (0..workers)
                .map(|i| Worker::Vault(vault_for(i), Arc::clone(&work), op))
                .collect();
            measured
                .run("vault", op.name(), batch, vault_workers, half)
                .await;
        }
        if health.is_some() || postgres.is_some() {
            ratios.push(ratios_of(&vault, health.as_ref(), postgres.as_ref()));
        }
    }
    let runs = measured.runs;

    let config = json!({
        "addr": args.client.addr,
        "connections": args.connections,
        "concurrency": args.concurrency,
        "in_flight": workers,
        "duration_s": args.duration.as_secs_f64(),
        "warmup_s": args.warmup.as_secs_f64(),
        "batch": args.batch,
        "rate": args.rate,
        "purpose": args.purpose,
        "baseline": args.baseline,
        "pg_encrypt_options": args.baseline.then(|| args.pg_encrypt_options.clone()),
        "pg_connections": pg_state.as_ref().map(|(pool, _)| pool.len()),
    });
    let dataset = json!({
        "prefix": args.prefix,
        "customers": args.customers,
        "fields_per_customer": data::PROFILE_FIELDS.len(),
        "standalone_tokens_per_customer": args.standalone_tokens,
        "tokens": args.customers * (data::PROFILE_FIELDS.len() + args.standalone_tokens) as u64,
        "populated_in_s": populated_in.map(|d| stats::round(d.as_secs_f64(), 1)),
        "detokenize_sample": sample.len(),
    });
    if args.client.json {
        let report = json!({
            "config": config,
            "dataset": dataset,
            "runs": runs.iter().map(Summary::to_json).collect::<Vec<_>>(),
            "ratios": ratios,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_table(&args, &dataset["tokens"], &runs, &ratios);
    Ok(())
}

/// The human-readable report: the runs as a table, then the ratios and errors.
fn print_table(args: &BenchArgs, tokens: &Value, runs: &[Summary], ratios: &[Value]) {
    println!(
        "pii-vault-bench: {} connection(s) x {} concurrent, {:?} (+{:?} warm-up), {} customers, {} tokens",
        args.connections,
        args.concurrency,
        args.duration,
        args.warmup,
        args.customers,
        tokens
    );
    println!("{}", Summary::header());
    for run in runs {
        println!("{}", run.line());
    }
    for ratio in ratios {
        let show = |key: &str| {
            ratio[key]
                .as_f64()
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
        };
        println!(
            "{} (batch {}): {}x the health check's requests/s, {}x PostgreSQL+pgcrypto's values/s, p99 {}x",
            ratio["op"].as_str().unwrap_or(""),
            ratio["batch"],
            show("vs_health_requests"),
            show("vs_postgres_values"),
            show("vs_postgres_p99"),
        );
    }
    for run in runs.iter().filter(|r| r.errors > 0) {
        eprintln!("{} {}: errors {:?}", run.target, run.op, run.error_codes);
    }
}

/// The data set is there when its first and last customers have all their fields.
async fn is_populated(client: &mut Vault, args: &BenchArgs) -> anyhow::Result<bool> {
    for index in [0, args.customers - 1] {
        let request = pb::GetFieldsRequest {
            customer_id: data::customer_id(&args.prefix, index),
            field_names: Vec::new(),
            purpose: args.purpose.clone(),
        };
        match client.get_fields(request).await {
            Ok(response) if response.get_ref().fields.len() >= data::PROFILE_FIELDS.len() => {}
            Ok(_) => return Ok(false),
            Err(status) if status.code() == tonic::Code::NotFound => return Ok(false),
            Err(status) => {
                return Err(
                    pii_vault::cli::client::status_error(status).context("checking the data set")
                )
            }
        }
    }
    Ok(true)
}

/// Refuses a vault that holds customers besides the bench data set: bench
/// writes thousands of synthetic customers and overwrites their fields, which
/// has no place in a vault with real data. The vault's own count of customer
/// keys (GetKeyStatus, scope keys:admin) tells; with the data set `present`,
/// up to `--customers` of them are its own.
async fn refuse_other_data(
    channel: &Channel,
    auth: &Bearer,
    args: &BenchArgs,
    present: bool,
) -> anyhow::Result<()> {
    use pii_vault::cli::client::{CliError, Failure};
    let mut keys = KeyAdminServiceClient::with_interceptor(channel.clone(), auth.clone());
    let customers = match keys
        .get_key_status(pb::GetKeyStatusRequest::default())
        .await
    {
        Ok(status) => status.into_inner().customers,
        Err(status) => {
            return Err(CliError::new(
                Failure::Usage,
                "VAULT_NOT_EMPTY",
                format!(
                    "cannot tell whether the vault holds other data ({}); \
                     pass --allow-existing-data to run anyway",
                    pii_vault::cli::client::status_error(status)
                ),
            )
            .into())
        }
    };
    let own = if present { args.customers } else { 0 };
    if customers > own {
        return Err(CliError::new(
            Failure::Usage,
            "VAULT_NOT_EMPTY",
            format!(
                "the vault holds {customers} customer(s), more than the bench data set \
                 ({own}); bench writes to the vault: point it at a vault for \
                 benchmarks, or pass --allow-existing-data"
            ),
        )
        .into());
    }
    Ok(())
}

fn populating_failed(customer_id: &str, status: Status) -> anyhow::Error {
    pii_vault::cli::client::status_error(status).context(format!("populating {customer_id}"))
}

/// Creates customers `0..customers` (6 fields each, then standalone tokens)
/// with every worker at once; keeps the tokens of every `stride`-th customer.
async fn populate(
    vault_for: &impl Fn(usize) -> Vault,
    args: &BenchArgs,
    workers: usize,
    stride: u64,
) -> anyhow::Result<Vec<String>> {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(workers);
    for index in 0..workers {
        let mut client = vault_for(index);
        let (next, done) = (Arc::clone(&next), Arc::clone(&done));
        let (prefix, purpose) = (args.prefix.clone(), args.purpose.clone());
        let (customers, standalone) = (args.customers, args.standalone_tokens);
        tasks.push(tokio::spawn(async move {
            let mut kept = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= customers {
                    break;
                }
                let customer_id = data::customer_id(&prefix, index);
                let mut rng = data::seeded(index);
                let put = pb::PutFieldsRequest {
                    customer_id: customer_id.clone(),
                    fields: data::profile(&mut rng),
                    purpose: purpose.clone(),
                    token_format: pb::TokenFormat::Random as i32,
                    expected_revision: None,
                };
                let tokens = client
                    .put_fields(put)
                    .await
                    .map_err(|status| populating_failed(&customer_id, status))?
                    .into_inner()
                    .tokens;
                let keep = index % stride == 0;
                if keep {
                    kept.extend(tokens.into_values());
                }
                if standalone > 0 {
                    let tokenize = pb::TokenizeRequest {
                        customer_id: customer_id.clone(),
                        items: data::tokenize_items(&mut rng, standalone),
                        purpose: purpose.clone(),
                        request_id: String::new(),
                    };
                    let tokens = client
                        .tokenize(tokenize)
                        .await
                        .map_err(|status| populating_failed(&customer_id, status))?
                        .into_inner()
                        .tokens;
                    if keep {
                        kept.extend(tokens);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(kept)
        }));
    }
    let reporter = {
        let done = Arc::clone(&done);
        let customers = args.customers;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let done = done.load(Ordering::Relaxed);
                let seconds = started.elapsed().as_secs_f64();
                eprintln!(
                    "populating: {done}/{customers} customers in {seconds:.0} s ({:.0}/s)",
                    done as f64 / seconds
                );
            }
        })
    };
    let mut kept = Vec::new();
    let mut failure = None;
    for task in tasks {
        match task.await {
            Ok(Ok(tokens)) => kept.extend(tokens),
            Ok(Err(error)) => failure = Some(error),
            Err(error) => failure = Some(anyhow::anyhow!("a populating worker panicked: {error}")),
        }
    }
    reporter.abort();
    if let Some(error) = failure {
        return Err(error);
    }
    if !args.client.json {
        eprintln!(
            "populated {} customers in {:.1} s",
            args.customers,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(kept)
}

/// The field tokens of every `stride`-th customer of an existing data set.
async fn sample_tokens(
    vault_for: &impl Fn(usize) -> Vault,
    args: &BenchArgs,
    workers: usize,
    stride: u64,
) -> anyhow::Result<Vec<String>> {
    let wanted = args.customers.div_ceil(stride);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(workers);
    for index in 0..workers {
        let mut client = vault_for(index);
        let next = Arc::clone(&next);
        let (prefix, purpose) = (args.prefix.clone(), args.purpose.clone());
        tasks.push(tokio::spawn(async move {
            let mut kept = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= wanted {
                    break;
                }
                let request = pb::GetFieldsRequest {
                    customer_id: data::customer_id(&prefix, n * stride),
                    field_names: Vec::new(),
                    purpose: purpose.clone(),
                };
                match client.get_fields(request).await {
                    Ok(response) => kept.extend(
                        response
                            .into_inner()
                            .fields
                            .into_iter()
                            .map(|f| f.token)
                            .filter(|t| !t.is_empty()),
                    ),
                    Err(status) if status.code() == tonic::Code::NotFound => {}
                    Err(status) => return Err(pii_vault::cli::client::status_error(status)),
                }
            }
            Ok(kept)
        }));
    }
    let mut kept = Vec::new();
    for task in tasks {
        kept.extend(task.await.context("a sampling worker panicked")??);
    }
    Ok(kept)
}
