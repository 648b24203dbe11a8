//! `pii-vault serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::app::{self, StorageBackend, VaultOptions, VaultPaths};
use crate::crypto::KeyFileAccess;
use crate::server::{ServerLimits, ServerOptions, TlsFiles};
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
    #[arg(long, env = "PII_VAULT_ROOT_KEY_FILE")]
    pub root_key_file: Option<PathBuf>,
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
    /// How often a master key rotation with retirement runs by itself (e.g. 24h,
    /// 7d, 90m). It also bounds when an erasure becomes cryptographic.
    #[arg(long, env = "PII_VAULT_MASTER_ROTATION_INTERVAL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub master_rotation_interval: std::time::Duration,
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
    /// system's roots when TLS is used (the URL's sslmode: prefer or require).
    #[arg(long, env = "PII_VAULT_DATABASE_CA")]
    pub database_ca: Option<PathBuf>,
    /// Connections to PostgreSQL per vault process.
    #[arg(long, env = "PII_VAULT_DATABASE_POOL", default_value_t = 16)]
    pub database_pool: usize,
    /// Most open client connections; the listener waits while this many are open.
    #[arg(long, env = "PII_VAULT_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Most calls in progress at once; past it calls are refused at once with
    /// RESOURCE_EXHAUSTED (load shedding) rather than queued.
    #[arg(long, env = "PII_VAULT_MAX_CONCURRENT_CALLS", default_value_t = 1024)]
    pub max_concurrent_calls: usize,
    /// Serves Prometheus metrics at /metrics on this address.
    #[arg(long, env = "PII_VAULT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
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
    init_logging(args.log_format);
    for warning in crate::crypto::protect_process_memory() {
        tracing::warn!("{warning}");
    }
    let paths = if args.dev {
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
        storage: storage(&args)?,
        key_file_access,
        rotation: RotationPolicy {
            master_interval: args.master_rotation_interval,
            dek_max_encryptions: args.dek_max_encryptions,
        },
        ..VaultOptions::default()
    };
    let vault = Arc::new(app::open_vault(&paths, &options).await?);
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
        key_file_access,
        limits: ServerLimits {
            max_connections: args.max_connections,
            max_concurrent_calls: args.max_concurrent_calls,
            ..ServerLimits::default()
        },
    };
    let server = crate::server::start(vault, server_options).await?;
    println!("pii-vault listening on {}", server.local_addr);
    server.run_until(shutdown_signal()).await
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
    Ok(VaultPaths {
        data_dir: on_sled(&args.data_dir, "--data-dir")?,
        keyring_file: on_sled(&args.keyring_file, "--keyring-file")?,
        root_key_file: required(&args.root_key_file, "--root-key-file")?,
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
        }),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PII_VAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
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
