//! The shared harness: a real vault on 127.0.0.1:0 with a temporary data
//! directory, and real tonic clients that authenticate as the test principals.
#![allow(dead_code)]

pub mod pg_tls_proxy;
pub mod raw_grpc;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pii_vault::app::{self, VaultOptions, VaultPaths};
use pii_vault::crypto::RootKey;
use pii_vault::pb;
use pii_vault::pb::privacy_service_client::PrivacyServiceClient;
use pii_vault::pb::vault_service_client::VaultServiceClient;
use pii_vault::policy::api_key_sha256_hex;
use pii_vault::server::RunningServer;
use tempfile::TempDir;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;

pub const ADMIN_KEY: &str = "pv_test_admin_key";
pub const CHECKOUT_KEY: &str = "pv_test_checkout_key";
pub const SUPPORT_KEY: &str = "pv_test_support_key";
pub const WRITER_KEY: &str = "pv_test_writer_key";
/// privacy:admin alone, with disclosure rules that deny by default.
pub const DPO_KEY: &str = "pv_test_dpo_key";
/// privacy:export alone: the plaintext export, whatever its disclosure rules say.
pub const EXPORTER_KEY: &str = "pv_test_exporter_key";

/// Purposes of every basis, and principals with different scopes, purposes and
/// disclosure rules.
pub fn test_policy() -> String {
    format!(
        r#"
[[purposes]]
name = "billing"
description = "Charging you for the orders you place."
basis = "contract"

[[purposes]]
name = "marketing"
description = "Sending you offers picked for you."
basis = "consent"

[[purposes]]
name = "support"
description = "Helping you when you contact us."
basis = "legitimate_interest"

[[principals]]
name = "admin"
api_key_sha256 = "{admin}"
scopes = ["data:write", "data:read", "tokens:detokenize", "consent:write", "privacy:admin", "keys:admin", "audit:read"]
purposes = ["*"]
[principals.disclosure]
"*" = "plaintext"

[[principals]]
name = "checkout"
api_key_sha256 = "{checkout}"
scopes = ["data:write", "data:read", "tokens:detokenize"]
purposes = ["billing"]
[principals.disclosure]
"*" = "masked"
card_number = "plaintext"
ssn = "token"
secret_note = "none"

[[principals]]
name = "support"
api_key_sha256 = "{support}"
scopes = ["data:read", "tokens:detokenize"]
purposes = ["support"]
[principals.disclosure]
email = "plaintext"
phone = "masked"

[[principals]]
name = "writer"
api_key_sha256 = "{writer}"
scopes = ["data:write"]
purposes = ["billing", "marketing"]

[[principals]]
name = "dpo"
api_key_sha256 = "{dpo}"
scopes = ["privacy:admin"]
[principals.disclosure]
"*" = "none"
email = "plaintext"
phone = "masked"
card_number = "token"

[[principals]]
name = "exporter"
api_key_sha256 = "{exporter}"
scopes = ["privacy:export"]
[principals.disclosure]
"*" = "none"
"#,
        admin = api_key_sha256_hex(ADMIN_KEY),
        checkout = api_key_sha256_hex(CHECKOUT_KEY),
        support = api_key_sha256_hex(SUPPORT_KEY),
        writer = api_key_sha256_hex(WRITER_KEY),
        dpo = api_key_sha256_hex(DPO_KEY),
        exporter = api_key_sha256_hex(EXPORTER_KEY),
    )
}

/// Writes a root key and the policy into `dir`; the store and keyring are created
/// by the vault on first start.
pub fn prepare_dir(dir: &Path, policy: &str) -> VaultPaths {
    let paths = VaultPaths {
        data_dir: dir.join("data"),
        keyring_file: dir.join("keyring"),
        root_key_file: dir.join("root.key"),
        policy_file: dir.join("policy.toml"),
    };
    if !paths.root_key_file.exists() {
        RootKey::generate_file(&paths.root_key_file).unwrap();
    }
    std::fs::write(&paths.policy_file, policy).unwrap();
    paths
}

pub struct TestVault {
    pub addr: SocketAddr,
    pub paths: VaultPaths,
    pub options: VaultOptions,
    server: Option<RunningServer>,
    /// The test's own database when the suite runs on PostgreSQL.
    pub database: Option<TestDatabase>,
    // Dropped last: the directory outlives the server.
    pub dir: TempDir,
}

/// The engine the suite runs on: sled, or PostgreSQL with
/// `PII_VAULT_TEST_STORE=postgres` (`.ci/run` runs the suite both ways).
pub fn on_postgres() -> bool {
    std::env::var("PII_VAULT_TEST_STORE").is_ok_and(|store| store == "postgres")
}

/// For tests that look inside sled's files: false (with the reason printed)
/// when the suite runs on PostgreSQL.
pub fn sled_only(test: &str) -> bool {
    if on_postgres() {
        eprintln!("{test}: skipped on PostgreSQL: it inspects sled's files directly");
        return false;
    }
    true
}

/// Where tests reach PostgreSQL to create their databases.
pub fn postgres_admin_url() -> String {
    std::env::var("PII_VAULT_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=postgres".to_owned())
}

/// The local server may offer TLS with a certificate nothing here can verify
/// (Debian's self-signed one): the vault, which always verifies, is told to
/// speak plain unless the admin URL says otherwise.
fn plain_unless_asked() -> &'static str {
    if postgres_admin_url().contains("sslmode") {
        ""
    } else {
        " sslmode=disable"
    }
}

/// A database of one test's own, dropped (with its connections) when dropped.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    /// `serve` arguments that put a vault process on this database (in clear
    /// on purpose, as `storage` does).
    pub fn serve_args(&self) -> [&str; 5] {
        [
            "--store",
            "postgres",
            "--database-url",
            &self.url,
            "--database-allow-plaintext",
        ]
    }

    /// A fresh database for a PostgreSQL test. Such tests run in the
    /// `PII_VAULT_TEST_STORE=postgres` pass of the suite, where an unreachable
    /// PostgreSQL fails them; in the sled pass they print that they are skipped
    /// and return (`None`).
    pub async fn create() -> Option<TestDatabase> {
        if !on_postgres() {
            eprintln!("skipped: a PostgreSQL test; it runs with PII_VAULT_TEST_STORE=postgres");
            return None;
        }
        let admin =
            match tokio_postgres::connect(&postgres_admin_url(), tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    client
                }
                Err(error) => panic!(
                "PII_VAULT_TEST_STORE=postgres, but PostgreSQL is not reachable at {:?}: {error}",
                postgres_admin_url()
            ),
            };
        let name = format!(
            "pv_test_{}",
            pii_vault::vault::tokens::random_id("db").trim_start_matches("db_")
        );
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let url = format!(
            "{} dbname={name}{}",
            postgres_admin_url().replace("dbname=postgres", ""),
            plain_unless_asked(),
        );
        Some(TestDatabase { name, url })
    }

    pub fn storage(&self) -> app::StorageBackend {
        app::StorageBackend::Postgres {
            url: self.url.clone(),
            pool_size: 8,
            ca_file: None,
            // Plain on purpose (see `plain_unless_asked`); TLS has tests of its own.
            allow_plaintext: true,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any runtime: a thread with its own does the async work.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime
                .block_on(async move {
                    let (client, connection) =
                        tokio_postgres::connect(&postgres_admin_url(), tokio_postgres::NoTls)
                            .await?;
                    tokio::spawn(connection);
                    client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await
                })
                .map_err(std::io::Error::other)
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

pub async fn spawn_vault() -> TestVault {
    spawn_vault_with_policy(&test_policy()).await
}

pub async fn spawn_vault_with_policy(policy: &str) -> TestVault {
    spawn_vault_with(policy, VaultOptions::default()).await
}

/// A vault with `options`; in the PostgreSQL pass on a fresh database of its
/// own, unless `options` already names a PostgreSQL store.
pub async fn spawn_vault_with(policy: &str, mut options: VaultOptions) -> TestVault {
    let dir = tempfile::tempdir().unwrap();
    let paths = prepare_dir(dir.path(), policy);
    let own_database = on_postgres() && matches!(options.storage, app::StorageBackend::Sled);
    let database = if own_database {
        let database = TestDatabase::create()
            .await
            .expect("PII_VAULT_TEST_STORE=postgres needs a reachable PostgreSQL");
        options.storage = database.storage();
        Some(database)
    } else {
        None
    };
    let server = start_server(&paths, &options).await;
    TestVault {
        addr: server.local_addr,
        paths,
        options,
        server: Some(server),
        database,
        dir,
    }
}

/// A vault on files laid out elsewhere (a copied data directory, say); `dir`
/// only keeps a temporary directory alive for as long as the vault runs.
pub async fn spawn_vault_on(paths: VaultPaths, dir: TempDir) -> TestVault {
    spawn_vault_on_with(paths, dir, VaultOptions::default()).await
}

/// `spawn_vault_on` with options of its own.
pub async fn spawn_vault_on_with(
    paths: VaultPaths,
    dir: TempDir,
    options: VaultOptions,
) -> TestVault {
    let server = start_server(&paths, &options).await;
    TestVault {
        addr: server.local_addr,
        paths,
        options,
        server: Some(server),
        database: None,
        dir,
    }
}

/// A sled vault whose store is `wrap`ped by the test (to order events the
/// vault cannot be made to order through its API), wired as `open_vault` does.
pub async fn spawn_vault_on_wrapped_store(
    wrap: impl FnOnce(Arc<dyn pii_vault::store::Store>) -> Arc<dyn pii_vault::store::Store>,
) -> TestVault {
    spawn_vault_on_wrapped_store_with(VaultOptions::default(), wrap).await
}

/// `spawn_vault_on_wrapped_store` with `options`.
pub async fn spawn_vault_on_wrapped_store_with(
    options: VaultOptions,
    wrap: impl FnOnce(Arc<dyn pii_vault::store::Store>) -> Arc<dyn pii_vault::store::Store>,
) -> TestVault {
    let dir = tempfile::tempdir().unwrap();
    let paths = prepare_dir(dir.path(), &test_policy());
    let vault = app::open_vault_wrapped(&paths, &options, wrap)
        .await
        .unwrap();
    let server = serve(vault).await;
    TestVault {
        addr: server.local_addr,
        paths,
        options,
        server: Some(server),
        database: None,
        dir,
    }
}

/// `spawn_vault_on_wrapped_store` on the engine the suite runs on: in the
/// PostgreSQL pass a fresh database of its own (the keyring in its table).
pub async fn spawn_vault_on_wrapped_store_of_the_suite(
    wrap: impl FnOnce(Arc<dyn pii_vault::store::Store>) -> Arc<dyn pii_vault::store::Store>,
) -> TestVault {
    if !on_postgres() {
        return spawn_vault_on_wrapped_store(wrap).await;
    }
    let database = TestDatabase::create()
        .await
        .expect("PII_VAULT_TEST_STORE=postgres needs a reachable PostgreSQL");
    let options = VaultOptions {
        storage: database.storage(),
        ..VaultOptions::default()
    };
    let mut vault = spawn_vault_on_wrapped_store_with(options, wrap).await;
    vault.database = Some(database);
    vault
}

async fn start_server(paths: &VaultPaths, options: &VaultOptions) -> RunningServer {
    serve(app::open_vault(paths, options).await.unwrap()).await
}

async fn serve(vault: pii_vault::vault::Vault) -> RunningServer {
    pii_vault::server::start(
        Arc::new(vault),
        pii_vault::server::ServerOptions::plain("127.0.0.1:0".parse().unwrap()),
    )
    .await
    .unwrap()
}

impl TestVault {
    /// Gracefully stops the server and starts a new one on the same files.
    pub async fn restart(&mut self) {
        self.stop().await;
        let server = start_server(&self.paths, &self.options).await;
        self.addr = server.local_addr;
        self.server = Some(server);
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.unwrap();
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn vault(&self, api_key: &str) -> VaultClient {
        VaultServiceClient::with_interceptor(self.channel().await, Bearer::new(api_key))
    }

    pub async fn privacy(&self, api_key: &str) -> PrivacyClient {
        PrivacyServiceClient::with_interceptor(self.channel().await, Bearer::new(api_key))
    }

    pub async fn admin(&self) -> VaultClient {
        self.vault(ADMIN_KEY).await
    }
}

pub type VaultClient = VaultServiceClient<InterceptedService<Channel, Bearer>>;
pub type PrivacyClient = PrivacyServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <key>`; an empty key sends no header at all.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    pub fn new(api_key: &str) -> Bearer {
        Bearer((!api_key.is_empty()).then(|| format!("Bearer {api_key}").parse().unwrap()))
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub fn field(name: &str, kind: pb::FieldKind, value: &str) -> pb::Field {
    pb::Field {
        name: name.into(),
        kind: kind as i32,
        value: value.into(),
    }
}

pub async fn put(
    client: &mut VaultClient,
    customer: &str,
    fields: Vec<pb::Field>,
) -> Result<pb::PutFieldsResponse, tonic::Status> {
    put_with_format(client, customer, fields, pb::TokenFormat::Random).await
}

pub async fn put_with_format(
    client: &mut VaultClient,
    customer: &str,
    fields: Vec<pb::Field>,
    format: pb::TokenFormat,
) -> Result<pb::PutFieldsResponse, tonic::Status> {
    client
        .put_fields(pb::PutFieldsRequest {
            customer_id: customer.into(),
            fields,
            purpose: "billing".into(),
            token_format: format as i32,
            expected_revision: None,
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn get(
    client: &mut VaultClient,
    customer: &str,
    names: &[&str],
    purpose: &str,
) -> Result<pb::GetFieldsResponse, tonic::Status> {
    client
        .get_fields(pb::GetFieldsRequest {
            customer_id: customer.into(),
            field_names: names.iter().map(|n| n.to_string()).collect(),
            purpose: purpose.into(),
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn tokenize(
    client: &mut VaultClient,
    customer: &str,
    items: Vec<(pb::FieldKind, &str, pb::TokenFormat)>,
) -> Result<Vec<String>, tonic::Status> {
    client
        .tokenize(pb::TokenizeRequest {
            customer_id: customer.into(),
            items: items
                .into_iter()
                .map(|(kind, value, format)| pb::TokenizeItem {
                    value: value.into(),
                    kind: kind as i32,
                    format: format as i32,
                })
                .collect(),
            purpose: "billing".into(),
            request_id: String::new(),
        })
        .await
        .map(|r| r.into_inner().tokens)
}

pub async fn detokenize(
    client: &mut VaultClient,
    tokens: &[String],
    purpose: &str,
) -> Result<Vec<pb::DetokenizeResult>, tonic::Status> {
    client
        .detokenize(pb::DetokenizeRequest {
            tokens: tokens.to_vec(),
            purpose: purpose.into(),
        })
        .await
        .map(|r| r.into_inner().results)
}

pub fn value_of<'a>(response: &'a pb::GetFieldsResponse, name: &str) -> &'a pb::FieldValue {
    response
        .fields
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("field {name} missing from response"))
}

/// Every file under `dir`, as bytes.
pub fn all_file_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The real binary, serving on a free port with JSON logs captured to a file.
pub struct VaultProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub log_file: PathBuf,
}

impl VaultProcess {
    pub fn start(paths: &VaultPaths, log_file: &Path) -> VaultProcess {
        Self::start_with(paths, log_file, &[])
    }

    /// `start` with more `serve` arguments (`--store postgres --database-url ...`).
    pub fn start_with(paths: &VaultPaths, log_file: &Path, extra_args: &[&str]) -> VaultProcess {
        let already_logged = std::fs::metadata(log_file).map_or(0, |m| m.len() as usize);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_file)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pii-vault"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--data-dir")
            .arg(&paths.data_dir)
            .arg("--keyring-file")
            .arg(&paths.keyring_file)
            .arg("--root-key-file")
            .arg(&paths.root_key_file)
            .arg("--policy")
            .arg(&paths.policy_file)
            .args(extra_args)
            .env("PII_VAULT_LOG", "debug")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let addr = wait_for_listening(log_file, already_logged);
        VaultProcess {
            child,
            addr,
            log_file: log_file.to_path_buf(),
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn vault(&self, api_key: &str) -> VaultClient {
        VaultServiceClient::with_interceptor(self.channel().await, Bearer::new(api_key))
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    pub async fn audit(&self, api_key: &str) -> AuditClient {
        AuditServiceClient::with_interceptor(self.channel().await, Bearer::new(api_key))
    }

    pub async fn key_admin(&self, api_key: &str) -> KeyAdminClient {
        pii_vault::pb::key_admin_service_client::KeyAdminServiceClient::with_interceptor(
            self.channel().await,
            Bearer::new(api_key),
        )
    }

    /// The whole audit log's verification, as the admin sees it.
    pub async fn verify_audit_log(&self) -> pb::VerifyAuditLogResponse {
        verify_audit_log(&mut self.audit(ADMIN_KEY).await)
            .await
            .unwrap()
    }

    /// Sends `signal` to the vault (SIGHUP to reload, SIGSTOP to freeze it).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.child.wait().unwrap()
    }
}

/// A test that fails, or never stops its vault, must not leave the process
/// running: it would hold CPU, ports and PostgreSQL connections for the rest
/// of the suite.
impl Drop for VaultProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address from the "pii-vault listening on ADDR" line logged after `offset`.
pub fn wait_for_listening(log_file: &Path, offset: usize) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let bytes = std::fs::read(log_file).unwrap_or_default();
        let log = String::from_utf8_lossy(&bytes[offset.min(bytes.len())..]).into_owned();
        if let Some(line) = log
            .lines()
            .find(|l| l.starts_with("pii-vault listening on "))
        {
            return line["pii-vault listening on ".len()..]
                .trim()
                .parse()
                .unwrap();
        }
        assert!(Instant::now() < deadline, "vault did not start:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Helpers for the value, token, access and erasure tests.
// ---------------------------------------------------------------------------

/// The status of a call that must fail with `code`; panics on success or on
/// another code, showing the message.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
) -> tonic::Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got success: {value:?}"),
        Err(status) => {
            assert_eq!(
                status.code(),
                code,
                "expected {code:?}, got {:?}: {}",
                status.code(),
                status.message()
            );
            status
        }
    }
}

pub async fn find_customers(
    client: &mut VaultClient,
    field_name: &str,
    value: &str,
    purpose: &str,
) -> Result<Vec<String>, tonic::Status> {
    client
        .find_customers(pb::FindCustomersRequest {
            field_name: field_name.into(),
            value: value.into(),
            purpose: purpose.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().customer_ids)
}

pub async fn delete_fields(
    client: &mut VaultClient,
    customer: &str,
    names: &[&str],
) -> Result<u32, tonic::Status> {
    client
        .delete_fields(pb::DeleteFieldsRequest {
            customer_id: customer.into(),
            field_names: names.iter().map(|n| n.to_string()).collect(),
        })
        .await
        .map(|r| r.into_inner().deleted)
}

pub async fn delete_customer(
    client: &mut PrivacyClient,
    customer: &str,
) -> Result<pb::DeletionReceipt, tonic::Status> {
    client
        .delete_customer(pb::DeleteCustomerRequest {
            customer_id: customer.into(),
            reason: "customer request".into(),
        })
        .await
        .map(|r| r.into_inner())
}

/// The current state of an erasure, by its receipt id.
pub async fn deletion_status(
    client: &mut PrivacyClient,
    receipt_id: &str,
) -> Result<pb::DeletionReceipt, tonic::Status> {
    client
        .get_deletion_status(pb::GetDeletionStatusRequest {
            receipt_id: receipt_id.into(),
        })
        .await
        .map(|r| r.into_inner())
}

// ---------------------------------------------------------------------------
// Helpers for the consent, audit and export tests.
// ---------------------------------------------------------------------------

use pii_vault::pb::audit_service_client::AuditServiceClient;

pub type AuditClient = AuditServiceClient<InterceptedService<Channel, Bearer>>;

impl TestVault {
    pub async fn audit(&self, api_key: &str) -> AuditClient {
        AuditServiceClient::with_interceptor(self.channel().await, Bearer::new(api_key))
    }

    /// Starts a server on the same files after `stop` (which leaves the files
    /// closed, so a test may change them in between).
    pub async fn start_again(&mut self) {
        assert!(self.server.is_none(), "start_again needs a stopped vault");
        let server = start_server(&self.paths, &self.options).await;
        self.addr = server.local_addr;
        self.server = Some(server);
    }
}

/// `message` with `x-request-id: <id>` metadata.
pub fn with_request_id<T>(message: T, id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-request-id", id.parse().unwrap());
    request
}

/// PutFields with random tokens for a purpose of the caller's choosing.
pub async fn put_for(
    client: &mut VaultClient,
    customer: &str,
    fields: Vec<pb::Field>,
    purpose: &str,
) -> Result<pb::PutFieldsResponse, tonic::Status> {
    client
        .put_fields(pb::PutFieldsRequest {
            customer_id: customer.into(),
            fields,
            purpose: purpose.into(),
            token_format: pb::TokenFormat::Random as i32,
            expected_revision: None,
        })
        .await
        .map(|r| r.into_inner())
}

/// One card number to tokenize, with a random token.
pub fn card() -> Vec<(pb::FieldKind, &'static str, pb::TokenFormat)> {
    vec![(
        pb::FieldKind::CardNumber,
        "4242424242424242",
        pb::TokenFormat::Random,
    )]
}

/// Tokenize for a purpose of the caller's choosing.
pub async fn tokenize_for(
    client: &mut VaultClient,
    customer: &str,
    items: Vec<(pb::FieldKind, &str, pb::TokenFormat)>,
    purpose: &str,
) -> Result<Vec<String>, tonic::Status> {
    tokenize_with_request_id(client, customer, items, purpose, "").await
}

/// Tokenize with a client request id (AIP-155; empty: none).
pub async fn tokenize_with_request_id(
    client: &mut VaultClient,
    customer: &str,
    items: Vec<(pb::FieldKind, &str, pb::TokenFormat)>,
    purpose: &str,
    request_id: &str,
) -> Result<Vec<String>, tonic::Status> {
    client
        .tokenize(pb::TokenizeRequest {
            customer_id: customer.into(),
            items: items
                .into_iter()
                .map(|(kind, value, format)| pb::TokenizeItem {
                    value: value.into(),
                    kind: kind as i32,
                    format: format as i32,
                })
                .collect(),
            purpose: purpose.into(),
            request_id: request_id.into(),
        })
        .await
        .map(|r| r.into_inner().tokens)
}

/// Tries to collect for `purpose` both ways, a PutFields of an e-mail and a
/// Tokenize of a card, and returns the two refusals (PermissionDenied each).
pub async fn refused_collection(
    client: &mut VaultClient,
    customer: &str,
    purpose: &str,
) -> [tonic::Status; 2] {
    let email = vec![field("email", pb::FieldKind::Email, "ann.new@example.com")];
    [
        expect_code(
            put_for(client, customer, email, purpose).await,
            tonic::Code::PermissionDenied,
        ),
        expect_code(
            tokenize_for(client, customer, card(), purpose).await,
            tonic::Code::PermissionDenied,
        ),
    ]
}

/// SetConsent under no policy version (none is published) from source "test".
pub async fn set_consent(
    client: &mut PrivacyClient,
    customer: &str,
    purpose: &str,
    granted: bool,
) -> Result<pb::ConsentRecord, tonic::Status> {
    set_consent_from(client, customer, purpose, granted, "", "test").await
}

pub async fn set_consent_from(
    client: &mut PrivacyClient,
    customer: &str,
    purpose: &str,
    granted: bool,
    policy_version: &str,
    source: &str,
) -> Result<pb::ConsentRecord, tonic::Status> {
    client
        .set_consent(pb::SetConsentRequest {
            customer_id: customer.into(),
            purpose: purpose.into(),
            granted,
            policy_version: policy_version.into(),
            source: source.into(),
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn list_consents(
    client: &mut PrivacyClient,
    customer: &str,
    include_history: bool,
) -> Result<Vec<pb::ConsentRecord>, tonic::Status> {
    client
        .list_consents(pb::ListConsentsRequest {
            customer_id: customer.into(),
            include_history,
        })
        .await
        .map(|r| r.into_inner().consents)
}

pub async fn export(
    client: &mut PrivacyClient,
    customer: &str,
    format: pb::ExportFormat,
) -> Result<pb::ExportCustomerResponse, tonic::Status> {
    export_page(client, customer, format, "", 0).await
}

/// One page of an export's access history: after `page_token` (empty: the
/// newest), at most `page_size` events (0: the server's page size).
pub async fn export_page(
    client: &mut PrivacyClient,
    customer: &str,
    format: pb::ExportFormat,
    page_token: &str,
    page_size: u32,
) -> Result<pb::ExportCustomerResponse, tonic::Status> {
    client
        .export_customer(pb::ExportCustomerRequest {
            customer_id: customer.into(),
            format: format as i32,
            access_history_page_token: page_token.into(),
            access_history_page_size: page_size,
        })
        .await
        .map(|r| r.into_inner())
}

/// Every event ListAuditEvents streams for `request`.
pub async fn audit_events(
    client: &mut AuditClient,
    request: pb::ListAuditEventsRequest,
) -> Result<Vec<pb::AuditEvent>, tonic::Status> {
    let mut stream = client.list_audit_events(request).await?.into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await? {
        events.push(event);
    }
    Ok(events)
}

/// The whole audit log, oldest first (up to the server's largest page).
pub async fn all_audit_events(client: &mut AuditClient) -> Vec<pb::AuditEvent> {
    audit_events(
        client,
        pb::ListAuditEventsRequest {
            limit: 10_000,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

pub async fn verify_audit_log(
    client: &mut AuditClient,
) -> Result<pb::VerifyAuditLogResponse, tonic::Status> {
    client
        .verify_audit_log(pb::VerifyAuditLogRequest::default())
        .await
        .map(|r| r.into_inner())
}

pub type KeyAdminClient = pii_vault::pb::key_admin_service_client::KeyAdminServiceClient<
    InterceptedService<Channel, Bearer>,
>;

impl TestVault {
    pub async fn key_admin(&self, api_key: &str) -> KeyAdminClient {
        pii_vault::pb::key_admin_service_client::KeyAdminServiceClient::with_interceptor(
            self.channel().await,
            Bearer::new(api_key),
        )
    }
}

/// Copies a directory tree (a backup of a data directory, say).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers for the policy-version and notice tests.
// ---------------------------------------------------------------------------

pub async fn publish_policy(
    client: &mut PrivacyClient,
    version: &str,
    summary: &str,
    changed_purposes: &[&str],
    requires_reconsent: bool,
) -> Result<pb::PolicyVersion, tonic::Status> {
    client
        .publish_policy(pb::PublishPolicyRequest {
            version: version.into(),
            summary: summary.into(),
            changed_purposes: changed_purposes.iter().map(|p| p.to_string()).collect(),
            requires_reconsent,
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn list_policy_versions(
    client: &mut PrivacyClient,
) -> Result<Vec<pb::PolicyVersion>, tonic::Status> {
    client
        .list_policy_versions(pb::ListPolicyVersionsRequest {})
        .await
        .map(|r| r.into_inner().versions)
}

pub async fn list_notices(
    client: &mut PrivacyClient,
    customer: &str,
) -> Result<Vec<pb::Notice>, tonic::Status> {
    client
        .list_notices(pb::ListNoticesRequest {
            customer_id: customer.into(),
        })
        .await
        .map(|r| r.into_inner().notices)
}

pub async fn acknowledge_notice(
    client: &mut PrivacyClient,
    customer: &str,
    policy_version: &str,
) -> Result<(), tonic::Status> {
    client
        .acknowledge_notice(pb::AcknowledgeNoticeRequest {
            customer_id: customer.into(),
            policy_version: policy_version.into(),
        })
        .await
        .map(|_| ())
}

/// GetFields of every field for "billing", over a client that adds no credentials
/// (mTLS authenticates by the connection's certificate).
pub async fn get_plain(
    client: &mut VaultServiceClient<Channel>,
    customer: &str,
) -> Result<pb::GetFieldsResponse, tonic::Status> {
    client
        .get_fields(pb::GetFieldsRequest {
            customer_id: customer.into(),
            field_names: Vec::new(),
            purpose: "billing".into(),
        })
        .await
        .map(|r| r.into_inner())
}

/// The text of `GET /metrics` from a metrics listener.
pub async fn scrape_metrics(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The sled tree in `dir`, once the vault that just closed it lets go of its
/// lock: sled's I/O threads release it a moment after the last handle drops.
pub fn open_sled_when_released(dir: &Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(error) => panic!("{error}"),
        }
    }
}
