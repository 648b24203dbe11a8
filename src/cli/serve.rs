//! `pii-vault serve`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use super::reload::PolicyWatch;
use super::root_of_trust::RootOfTrustArgs;
use crate::app::{self, StorageBackend, VaultOptions, VaultPaths};
use crate::crypto::KeyFileAccess;
use crate::server::{Opening, ServerLimits, ServerOptions, StoreFailed, TlsFiles};
use crate::vault::RotationPolicy;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on for gRPC.
    #[arg(long, env = "PII_VAULT_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Directory of the embedded store.
    #[arg(long, env = "PII_VAULT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The keyring file (master key versions, wrapped by the root key).
    #[arg(long, env = "PII_VAULT_KEYRING_FILE")]
    pub keyring_file: Option<PathBuf>,
    /// The root key file (64 hex characters, mode 0600); see `pii-vault keygen`.
    /// With another --root-of-trust: the file that seals the keyring until
    /// `pii-vault keys migrate-root-of-trust` moves it there.
    #[arg(long, env = "PII_VAULT_ROOT_KEY_FILE")]
    pub root_key_file: Option<PathBuf>,
    /// The root key file that seals the keyring now, while it is replaced by
    /// a new one (--root-key-file) or by another --root-of-trust: the vault
    /// opens the keyring with it until `pii-vault keys migrate-root-of-trust`
    /// seals it by the new one. Afterwards start without it and destroy it.
    #[arg(long, env = "PII_VAULT_PREVIOUS_ROOT_KEY_FILE")]
    pub previous_root_key_file: Option<PathBuf>,
    #[command(flatten)]
    pub root: RootOfTrustArgs,
    /// The policy file (TOML): purposes, principals, scopes, disclosure.
    #[arg(long, env = "PII_VAULT_POLICY")]
    pub policy: Option<PathBuf>,
    /// Development mode: creates everything it needs under --data-dir
    /// (default ./.pii-vault-dev) and prints an all-powerful API key once.
    #[arg(long)]
    pub dev: bool,
    /// Log format on stdout.
    #[arg(long, env = "PII_VAULT_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// How many unwrapped customer keys to keep in memory.
    #[arg(long, env = "PII_VAULT_DEK_CACHE", default_value_t = 10_000)]
    pub dek_cache: usize,
    /// How long an unwrapped customer key stays in memory (e.g. 5m, 30s): a key
    /// of a customer erased through another replica is gone from this one's
    /// memory at most this long (plus half of it, for the sweep) later.
    #[arg(long, env = "PII_VAULT_DEK_CACHE_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub dek_cache_ttl: std::time::Duration,
    /// sled's page cache (e.g. 256MiB, 1GiB): most of the memory a sled vault
    /// uses; size the pod's memory from it (docs/operations.md, "Disk and memory").
    #[arg(long, env = "PII_VAULT_CACHE_SIZE", default_value = "256MiB", value_parser = byte_size)]
    pub cache_size: u64,
    /// Free space kept on the sled store's disk (e.g. 256MiB, 0 for none).
    /// Below it the vault refuses writes, audited reads included, and reports
    /// NOT_SERVING; it takes writes again by itself once space is freed.
    #[arg(long, env = "PII_VAULT_MIN_FREE_DISK", default_value = "256MiB", value_parser = byte_size)]
    pub min_free_disk: u64,
    /// How often a master key rotation with retirement runs by itself (e.g. 24h,
    /// 7d, 90m). It also bounds when an erasure becomes cryptographic.
    #[arg(long, env = "PII_VAULT_MASTER_ROTATION_INTERVAL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub master_rotation_interval: std::time::Duration,
    /// How long backups (snapshots, dumps) of the keyring and the store are
    /// kept (e.g. 30d, 0s). A destroyed master key lives on in them, so an
    /// erasure is reported CRYPTOGRAPHIC only this long after the versions
    /// that covered it were destroyed; 0s declares that no backup is kept.
    #[arg(long, env = "PII_VAULT_BACKUP_RETENTION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub backup_retention: std::time::Duration,
    /// How old an audit event must be before TrimAuditLog may delete it (e.g.
    /// 7d, 90d, 0s): recent history stays in the live log whoever asks, so a
    /// stolen admin credential cannot wipe it (docs/audit-retention.md).
    #[arg(long, env = "PII_VAULT_AUDIT_MIN_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub audit_min_retention: std::time::Duration,
    /// The erasure journal: every erasure's receipt, kept apart from the store
    /// so that restoring an old store does not bring erased customers back.
    /// Default on sled: the keyring file's path with `.erasures` appended; on
    /// PostgreSQL none unless given (put it on durable storage of its own).
    #[arg(long, env = "PII_VAULT_ERASURE_JOURNAL")]
    pub erasure_journal: Option<PathBuf>,
    /// Fields one customer may hold: every change to a customer reads and
    /// rewrites their whole entry, so it must stay bounded.
    #[arg(
        long,
        env = "PII_VAULT_MAX_FIELDS_PER_CUSTOMER",
        default_value_t = 1000
    )]
    pub max_fields_per_customer: usize,
    /// Standalone tokens (Tokenize) one customer may hold: re-keying a
    /// customer re-encrypts all of them in one commit, and erasing one
    /// deletes them all in one, so they must stay bounded.
    #[arg(
        long,
        env = "PII_VAULT_MAX_TOKENS_PER_CUSTOMER",
        default_value_t = 10_000
    )]
    pub max_tokens_per_customer: usize,
    /// Past consent and acknowledgement events kept per customer, besides the
    /// current consent of each purpose and the latest acknowledgement of each
    /// policy version (which are always kept).
    #[arg(long, env = "PII_VAULT_CONSENT_HISTORY", default_value_t = 100)]
    pub consent_history: usize,
    /// Encryptions under one customer key before it is replaced automatically.
    #[arg(long, env = "PII_VAULT_DEK_MAX_ENCRYPTIONS", default_value_t = 1 << 28)]
    pub dek_max_encryptions: u64,
    /// The server's TLS certificate chain (PEM); serves TLS when given with --tls-key.
    #[arg(long, env = "PII_VAULT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The server's TLS private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "PII_VAULT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that signs client certificates: clients must then present one
    /// (mTLS), and policy principals can be matched by their subject or SPIFFE id.
    #[arg(long, env = "PII_VAULT_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Where the data lives.
    #[arg(long, env = "PII_VAULT_STORE", value_enum, default_value = "sled")]
    pub store: StoreKind,
    /// PostgreSQL connection string, e.g. postgres://vault@db/vault (with --store postgres).
    #[arg(long, env = "PII_VAULT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// CA bundle (PEM) that signs PostgreSQL's certificate, used instead of the
    /// system's roots when TLS is used (the URL's sslmode: prefer, require,
    /// verify-ca or verify-full).
    #[arg(long, env = "PII_VAULT_DATABASE_CA")]
    pub database_ca: Option<PathBuf>,
    /// Accept a database URL whose sslmode is disable or prefer (libpq's
    /// default), which may speak to PostgreSQL in clear; without it only
    /// sslmode=require, verify-ca or verify-full starts.
    #[arg(long, env = "PII_VAULT_DATABASE_ALLOW_PLAINTEXT")]
    pub database_allow_plaintext: bool,
    /// Connections to PostgreSQL per vault process.
    #[arg(long, env = "PII_VAULT_DATABASE_POOL", default_value_t = 16)]
    pub database_pool: usize,
    /// Longest a PostgreSQL statement may run (statement_timeout; 0s: no limit).
    #[arg(long, env = "PII_VAULT_DATABASE_STATEMENT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub database_statement_timeout: std::time::Duration,
    /// Longest a PostgreSQL statement waits for a lock, the audit chain's
    /// included (lock_timeout; 0s: no limit).
    #[arg(long, env = "PII_VAULT_DATABASE_LOCK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub database_lock_timeout: std::time::Duration,
    /// A PostgreSQL session idle this long inside a transaction (its vault
    /// process frozen or cut off) is ended by the server, releasing the audit
    /// chain's lock for the other replicas (idle_in_transaction_session_timeout;
    /// 0s: never).
    #[arg(long, env = "PII_VAULT_DATABASE_IDLE_IN_TRANSACTION_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub database_idle_in_transaction_timeout: std::time::Duration,
    /// Data to PostgreSQL unacknowledged this long ends the connection (TCP
    /// user timeout; keepalives after a third of it idle; 0s: the system's).
    #[arg(long, env = "PII_VAULT_DATABASE_TCP_USER_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub database_tcp_user_timeout: std::time::Duration,
    /// Longest to open a PostgreSQL connection, or to wait for a free one in
    /// the pool, before the call fails.
    #[arg(long, env = "PII_VAULT_DATABASE_CONNECT_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub database_connect_timeout: std::time::Duration,
    /// Most open client connections; the listener waits while this many are open.
    #[arg(long, env = "PII_VAULT_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Most open client connections from one IPv4 address (or IPv6 /64); more
    /// are closed as soon as they are accepted.
    #[arg(long, env = "PII_VAULT_MAX_CONNECTIONS_PER_IP", default_value = "256")]
    pub max_connections_per_ip: std::num::NonZeroUsize,
    /// After this a connection is asked to go away (GOAWAY; its calls may
    /// finish), so that clients spread over replicas that started later.
    #[arg(long, env = "PII_VAULT_MAX_CONNECTION_AGE", default_value = "30m", value_parser = positive_duration)]
    pub max_connection_age: std::time::Duration,
    /// How long a new connection has to finish its TLS handshake and send its
    /// first request (e.g. 10s, 500ms); one that has not is closed.
    #[arg(long, env = "PII_VAULT_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub handshake_timeout: std::time::Duration,
    /// Most calls in progress at once; past it calls are refused at once with
    /// RESOURCE_EXHAUSTED (load shedding) rather than queued.
    #[arg(long, env = "PII_VAULT_MAX_CONCURRENT_CALLS", default_value_t = 1024)]
    pub max_concurrent_calls: usize,
    /// Serves Prometheus metrics at /metrics on this address.
    #[arg(long, env = "PII_VAULT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Also serves the gRPC health service, and only it, on this address (with
    /// --listen's TLS settings and 64 connections of its own), so probes are
    /// answered when clients hold every connection of --listen.
    #[arg(long, env = "PII_VAULT_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
    /// How often the policy file and the TLS files are read to see whether
    /// they changed; changed ones are reloaded (as on SIGHUP; see
    /// docs/reload.md).
    #[arg(long, env = "PII_VAULT_RELOAD_INTERVAL", default_value = "5s", value_parser = positive_duration)]
    pub reload_interval: std::time::Duration,
    /// Accept key files (root key, keyring, TLS key) readable by their group,
    /// never by others: Kubernetes mounts Secrets 0440 to a pod's fsGroup.
    #[arg(long, env = "PII_VAULT_ALLOW_GROUP_READABLE_KEYS")]
    pub allow_group_readable_keys: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum StoreKind {
    /// The embedded store in --data-dir: one vault process.
    Sled,
    /// PostgreSQL at --database-url: any number of vault processes.
    Postgres,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LogFormat {
    Text,
    Json,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let log = init_logging(args.log_format);
    for warning in crate::crypto::protect_process_memory() {
        tracing::warn!("{warning}");
    }
    let paths = if args.dev {
        check_dev(&args)?;
        dev_paths(args.data_dir.clone())?
    } else {
        production_paths(&args)?
    };
    let key_file_access = if args.allow_group_readable_keys {
        KeyFileAccess::OwnerAndGroup
    } else {
        KeyFileAccess::OwnerOnly
    };
    let options = VaultOptions {
        dek_cache_capacity: args.dek_cache,
        dek_cache_ttl: args.dek_cache_ttl,
        store_cache_bytes: args.cache_size,
        store_min_free_bytes: args.min_free_disk,
        storage: storage(&args)?,
        root_of_trust: args.root.choice(key_file_access)?,
        previous_root_key_file: args.previous_root_key_file.clone(),
        previous_root_of_trust: args.root.previous_choice(key_file_access)?,
        key_file_access,
        rotation: RotationPolicy {
            master_interval: args.master_rotation_interval,
            dek_max_encryptions: args.dek_max_encryptions,
            backup_retention: args.backup_retention,
        },
        erasure_journal: args.erasure_journal.clone(),
        audit_min_retention: args.audit_min_retention,
        database_session: crate::store::PgSessionSettings {
            statement_timeout: args.database_statement_timeout,
            lock_timeout: args.database_lock_timeout,
            idle_in_transaction_timeout: args.database_idle_in_transaction_timeout,
            tcp_user_timeout: args.database_tcp_user_timeout,
            connect_timeout: args.database_connect_timeout,
        },
        limits: crate::vault::Limits {
            max_fields_per_customer: args.max_fields_per_customer,
            max_tokens_per_customer: args.max_tokens_per_customer,
            ledger_history: args.consent_history,
            ..crate::vault::Limits::default()
        },
        clock: std::sync::Arc::new(crate::vault::SystemClock),
    };
    let server_options = ServerOptions {
        listen: args.listen,
        tls: args
            .tls_cert
            .clone()
            .zip(args.tls_key.clone())
            .map(|(cert, key)| TlsFiles {
                cert,
                key,
                client_ca: args.tls_client_ca.clone(),
            }),
        metrics_listen: args.metrics_listen,
        health_listen: args.health_listen,
        key_file_access,
        limits: ServerLimits {
            max_connections: args.max_connections,
            max_connections_per_ip: args.max_connections_per_ip.get(),
            handshake_timeout: args.handshake_timeout,
            max_concurrent_calls: args.max_concurrent_calls,
            max_connection_age: args.max_connection_age,
            ..ServerLimits::default()
        },
    };
    let policy_watch = PolicyWatch::start(paths.policy_file.clone());
    let opening = Opening::answer_health(&server_options).await?;
    let vault = app::open_vault(&paths, &options).await;
    opening.stop().await;
    let vault = Arc::new(vault?);
    let server = crate::server::start(Arc::clone(&vault), server_options).await?;
    tokio::spawn(policy_watch.run(vault, server.tls(), args.reload_interval));
    // After the lines logged while opening, as scripts and tests expect.
    let mut stdout = log.stdout.clone();
    let _ = writeln!(stdout, "pii-vault listening on {}", server.local_addr);
    let result = server.run_until(shutdown_signal()).await;
    if let Some(failed) = result
        .as_ref()
        .err()
        .and_then(|error| error.downcast_ref::<StoreFailed>())
    {
        // Not a return through the runtime: the store's writer thread may
        // never finish, and dropping the store waits for it.
        tracing::error!("{failed}; exiting so that a restart recovers what is durable");
        eprintln!("error: {failed}");
        // Exiting skips destructors: flush the log's queue first.
        drop(log);
        std::process::exit(EXIT_STORE_FAILED);
    }
    result
}

/// The exit status when the store failed (EX_IOERR from sysexits.h).
pub const EXIT_STORE_FAILED: i32 = 74;

/// A size in bytes: a number, optionally followed by KiB, MiB, GiB or TiB
/// (Ki, Mi, Gi, Ti as Kubernetes writes them).
fn byte_size(text: &str) -> Result<u64, String> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let shift = match unit {
        "" | "B" => 0,
        "K" | "Ki" | "KiB" => 10,
        "M" | "Mi" | "MiB" => 20,
        "G" | "Gi" | "GiB" => 30,
        "T" | "Ti" | "TiB" => 40,
        other => return Err(format!("unknown unit {other:?}: use KiB, MiB, GiB or TiB")),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 512MiB or 2GiB"))?;
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn positive_duration(text: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err("must be more than 0".to_owned()),
        Ok(duration) => Ok(duration),
        Err(error) => Err(error.to_string()),
    }
}

/// A dev vault keeps its root key next to its data and has an all-powerful
/// API key: it serves only this machine, and flags it would ignore (it makes
/// its own policy and keys) are refused rather than silently dropped.
fn check_dev(args: &ServeArgs) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "serve --dev listens only on a loopback address (its root key sits next to its data \
             and its API key can do anything), and --listen {} is not one; serve without --dev \
             to listen on the network",
            args.listen
        );
    }
    let ignored = [
        ("--root-of-trust", !args.root.uses_root_key_file()),
        ("--policy", args.policy.is_some()),
        ("--root-key-file", args.root_key_file.is_some()),
        (
            "--previous-root-key-file",
            args.previous_root_key_file.is_some(),
        ),
        (
            "--previous-root-of-trust",
            args.root.previous_root_of_trust.is_some(),
        ),
        ("--keyring-file", args.keyring_file.is_some()),
    ];
    if let Some((flag, _)) = ignored.into_iter().find(|(_, given)| *given) {
        anyhow::bail!(
            "{flag} is not used with --dev, which writes its own development policy and keys \
             under --data-dir; serve without --dev to use yours"
        );
    }
    Ok(())
}

fn dev_paths(data_dir: Option<PathBuf>) -> anyhow::Result<VaultPaths> {
    let dir = data_dir.unwrap_or_else(|| PathBuf::from(".pii-vault-dev"));
    let setup = app::prepare_dev(&dir)?;
    if let Some(api_key) = &setup.new_api_key {
        println!("Development vault created in {}.", dir.display());
        println!(
            "Its all-powerful API key (shown once; also in {}):",
            setup.api_key_file.display()
        );
        println!();
        println!("    export PII_VAULT_API_KEY={api_key}");
        println!();
        println!("Never use --dev for real data: the root key sits next to the data.");
    }
    Ok(setup.paths)
}

fn production_paths(args: &ServeArgs) -> anyhow::Result<VaultPaths> {
    let required = |value: &Option<PathBuf>, flag: &str| {
        value
            .clone()
            .with_context(|| format!("{flag} is required (or run `pii-vault serve --dev`)"))
    };
    // On PostgreSQL the data and the keyring live in the database.
    let on_sled = |value: &Option<PathBuf>, flag: &str| match args.store {
        StoreKind::Sled => required(value, flag),
        StoreKind::Postgres => Ok(value.clone().unwrap_or_default()),
    };
    // With another root of trust, a root key file given is the one that
    // seals the keyring until `keys migrate-root-of-trust` moves it.
    let root_key_file = match (args.root.uses_root_key_file(), &args.root_key_file) {
        (true, file) => required(file, "--root-key-file")?,
        (false, file) => file.clone().unwrap_or_default(),
    };
    Ok(VaultPaths {
        data_dir: on_sled(&args.data_dir, "--data-dir")?,
        keyring_file: on_sled(&args.keyring_file, "--keyring-file")?,
        root_key_file,
        policy_file: required(&args.policy, "--policy")?,
    })
}

fn storage(args: &ServeArgs) -> anyhow::Result<StorageBackend> {
    match args.store {
        StoreKind::Sled => Ok(StorageBackend::Sled),
        StoreKind::Postgres => Ok(StorageBackend::Postgres {
            url: args
                .database_url
                .clone()
                .context("--store postgres needs --database-url (or PII_VAULT_DATABASE_URL)")?,
            pool_size: args.database_pool,
            ca_file: args.database_ca.clone(),
            allow_plaintext: args.database_allow_plaintext,
        }),
    }
}

/// The log's way to stdout, and what flushes it.
struct Log {
    /// Lines written here keep their order among the log's lines.
    stdout: tracing_appender::non_blocking::NonBlocking,
    /// Flushes what is queued when dropped: kept until the process ends.
    _flush: tracing_appender::non_blocking::WorkerGuard,
}

/// Installs the log: lines go to stdout from a thread of their own, so a
/// request never waits for the terminal or pipe behind it. Never lossy: past
/// 128,000 lines queued, callers wait rather than lines being dropped (a
/// dropped warning could be the one that mattered).
fn init_logging(format: LogFormat) -> Log {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let filter = tracing_subscriber::EnvFilter::try_from_env("PII_VAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (stdout, flush) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("pii-vault-log")
        .finish(std::io::stdout());
    let layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(stdout.clone())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(stdout.clone())
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(
            layer
                .with_filter(filter)
                .with_filter(tracing_subscriber::filter::filter_fn(|event| {
                    !logs_statement_parameters(event)
                })),
        )
        .try_init();
    Log {
        stdout,
        _flush: flush,
    }
}

/// Debug and trace events of the PostgreSQL client carry every statement's
/// parameters (blind indexes, tokens): they are dropped whatever
/// PII_VAULT_LOG asks for, since logs outlive an erasure.
fn logs_statement_parameters(event: &tracing::Metadata<'_>) -> bool {
    let target = event.target();
    let postgres_client = ["tokio_postgres", "postgres_protocol", "deadpool_postgres"]
        .iter()
        .any(|crate_name| target == *crate_name || target.starts_with(&format!("{crate_name}::")));
    postgres_client && *event.level() > tracing::Level::INFO
}

/// Completes on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

#[cfg(test)]
mod tests {
    use super::{byte_size, check_dev, ServeArgs};
    use clap::Parser;

    fn serve_args(flags: &[&str]) -> ServeArgs {
        let cli =
            crate::cli::Cli::try_parse_from(["pii-vault", "serve", "--dev"].iter().chain(flags))
                .expect("the flags parse");
        match cli.command {
            crate::cli::Command::Serve(args) => *args,
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn serve_dev_refuses_the_flags_it_would_not_use_naming_each() {
        assert!(check_dev(&serve_args(&[])).is_ok());
        assert!(check_dev(&serve_args(&["--root-of-trust", "file"])).is_ok());
        for (flags, named) in [
            (&["--policy", "p.toml"][..], "--policy"),
            (&["--root-key-file", "root.key"][..], "--root-key-file"),
            (&["--keyring-file", "keyring"][..], "--keyring-file"),
            (&["--root-of-trust", "aws-kms"][..], "--root-of-trust"),
        ] {
            let refused = check_dev(&serve_args(flags)).expect_err("refused");
            assert!(refused.to_string().starts_with(named), "{refused}");
        }
        let public = serve_args(&["--listen", "0.0.0.0:50051"]);
        assert!(check_dev(&public).is_err());
    }

    #[test]
    fn sizes_read_with_binary_units_and_refuse_anything_else() {
        assert_eq!(byte_size("0"), Ok(0));
        assert_eq!(byte_size("4096"), Ok(4096));
        assert_eq!(byte_size("256MiB"), Ok(256 << 20));
        assert_eq!(byte_size("2Gi"), Ok(2 << 30));
        assert_eq!(byte_size("1T"), Ok(1 << 40));
        assert!(byte_size("12MB").unwrap_err().contains("unknown unit"));
        assert!(byte_size("MiB").unwrap_err().contains("not a size"));
        assert!(byte_size("-1").unwrap_err().contains("not a size"));
        assert!(byte_size("99999999999TiB")
            .unwrap_err()
            .contains("too large"));
    }
}
