//! The vault in process: spawned on 127.0.0.1:0 over a temporary directory,
//! and the authenticated tonic clients that talk to it.

use std::net::SocketAddr;
use std::sync::Arc;

use pii_vault::app::{self, VaultOptions, VaultPaths};
use pii_vault::pb::audit_service_client::AuditServiceClient;
use pii_vault::pb::key_admin_service_client::KeyAdminServiceClient;
use pii_vault::pb::privacy_service_client::PrivacyServiceClient;
use pii_vault::pb::vault_service_client::VaultServiceClient;
use pii_vault::server::RunningServer;
use pii_vault::vault::ManualClock;
use pii_vault_testkit::vault::{serve, start as start_server};
use tempfile::TempDir;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;

use super::{on_postgres, prepare_dir, test_policy, TestDatabase, ADMIN_KEY};

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
    TestVault::serving(server, paths, options, database, dir)
}

/// A vault whose clock stands still until the test moves it, for tests that
/// need time to pass between two calls: `clock.advance(..)`, not a sleep.
pub async fn spawn_vault_on_a_manual_clock(policy: &str) -> (TestVault, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::starting_now());
    let options = VaultOptions {
        clock: Arc::clone(&clock) as _,
        ..VaultOptions::default()
    };
    (spawn_vault_with(policy, options).await, clock)
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
    TestVault::serving(server, paths, options, None, dir)
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
    TestVault::serving(server, paths, options, None, dir)
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

impl TestVault {
    fn serving(
        server: RunningServer,
        paths: VaultPaths,
        options: VaultOptions,
        database: Option<TestDatabase>,
        dir: TempDir,
    ) -> TestVault {
        TestVault {
            addr: server.local_addr,
            paths,
            options,
            server: Some(server),
            database,
            dir,
        }
    }

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
        connect(self.addr).await
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

    pub async fn audit(&self, api_key: &str) -> AuditClient {
        AuditServiceClient::with_interceptor(self.channel().await, Bearer::new(api_key))
    }

    pub async fn key_admin(&self, api_key: &str) -> KeyAdminClient {
        KeyAdminServiceClient::with_interceptor(self.channel().await, Bearer::new(api_key))
    }

    /// Runs a master rotation to the end, as the admin, and returns its last
    /// progress message.
    pub async fn rotate_master(&self, retire: bool) -> pii_vault::pb::RotationProgress {
        super::rotate_master(&mut self.key_admin(ADMIN_KEY).await, retire).await
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

/// A plain channel to the vault listening on `addr`.
pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub type VaultClient = VaultServiceClient<InterceptedService<Channel, Bearer>>;
pub type PrivacyClient = PrivacyServiceClient<InterceptedService<Channel, Bearer>>;
pub type AuditClient = AuditServiceClient<InterceptedService<Channel, Bearer>>;
pub type KeyAdminClient = KeyAdminServiceClient<InterceptedService<Channel, Bearer>>;

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
