//! Wiring: opens the root key, keyring, policy and store named by the
//! configuration, and builds the vault the server serves. Also prepares the
//! self-contained `serve --dev` directory.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::crypto::{
    is_root_key_image, root_key_opens, DekCache, KeyFileAccess, Keyring, KeyringFile, RootKey,
};
use crate::policy::{self, Policy};
use crate::root_of_trust::aws_kms::{AwsKmsConfig, AwsKmsRoot};
use crate::root_of_trust::file::FileRoot;
use crate::root_of_trust::pkcs11::{Pkcs11Config, Pkcs11Root};
use crate::root_of_trust::transit::{TransitConfig, TransitRoot};
use crate::root_of_trust::RootOfTrust;
use crate::store::{ErasureJournal, KeyringTable, PgSessionSettings, PgStore, SledStore, Store};
use crate::vault::{
    open_keyring, seal_new_versions, Clock, FileKeyring, KeyManager, Limits, Reason,
    RotationPolicy, Sealing, SystemClock, TableKeyring, Vault, VaultError,
};

/// The files a vault runs on.
#[derive(Clone, Debug)]
pub struct VaultPaths {
    pub data_dir: PathBuf,
    pub keyring_file: PathBuf,
    pub root_key_file: PathBuf,
    pub policy_file: PathBuf,
}

/// Which engine keeps the data.
#[derive(Clone, Debug, Default)]
pub enum StorageBackend {
    /// Embedded sled store in the data directory: one process.
    #[default]
    Sled,
    /// PostgreSQL: any number of vault processes on one database; the keyring
    /// lives in the database too, sealed by the root key. `ca_file` (PEM)
    /// verifies the server when TLS is used, instead of the system's roots.
    /// A URL whose sslmode is not `require` is refused unless `allow_plaintext`.
    Postgres {
        url: String,
        pool_size: usize,
        ca_file: Option<PathBuf>,
        allow_plaintext: bool,
    },
}

/// What seals the master key versions.
#[derive(Clone, Debug, Default)]
pub enum RootOfTrustChoice {
    /// The root key file, `VaultPaths::root_key_file`, seals the keyring as
    /// a whole.
    #[default]
    File,
    /// OpenBao or HashiCorp Vault Transit: a key version per master version.
    Transit(TransitConfig),
    /// An HSM (or any PKCS#11 token): a key object per master version.
    Pkcs11(Pkcs11Config),
    /// AWS KMS, configured by the SDK's standard environment: a KMS key per
    /// master version.
    AwsKms(AwsKmsConfig),
    /// A root of trust already connected (Transit, an HSM, a KMS), which
    /// seals each version with material of its own.
    Connected(Arc<dyn RootOfTrust>),
}

/// Tunables with production defaults.
#[derive(Clone, Debug)]
pub struct VaultOptions {
    pub storage: StorageBackend,
    pub root_of_trust: RootOfTrustChoice,
    /// The root key file that seals the keyring now, while it is replaced:
    /// by a new root key file (`VaultPaths::root_key_file`), or by another
    /// root of trust. MigrateRootOfTrust moves the keyring off it.
    pub previous_root_key_file: Option<PathBuf>,
    /// The root of trust (transit, pkcs11, aws-kms) that seals the keyring
    /// now, while the vault moves to another kind: MigrateRootOfTrust moves
    /// the keyring off it.
    pub previous_root_of_trust: Option<RootOfTrustChoice>,
    /// Unwrapped customer keys kept in memory.
    pub dek_cache_capacity: usize,
    /// How long one stays cached: bounds how long a key of a customer erased
    /// on another replica stays in this one's memory.
    pub dek_cache_ttl: Duration,
    /// sled's page cache, in bytes.
    pub store_cache_bytes: u64,
    /// Free space sled keeps on its disk: below it writes are refused.
    pub store_min_free_bytes: u64,
    pub limits: Limits,
    pub rotation: RotationPolicy,
    /// Whether key files may be readable by their group (Kubernetes Secrets).
    pub key_file_access: KeyFileAccess,
    /// The erasure journal. On sled by default the keyring file's path with
    /// `.erasures` appended (beside the keyring, apart from the store); on
    /// PostgreSQL none unless given.
    pub erasure_journal: Option<PathBuf>,
    /// PostgreSQL sessions' timeouts (the isolation level and
    /// `synchronous_commit` are pinned whatever these say).
    pub database_session: PgSessionSettings,
    /// Audit events younger than this are never trimmed (TrimAuditLog).
    pub audit_min_retention: Duration,
    /// Where the vault's timestamps come from: the system's clock, or a
    /// test's `ManualClock`.
    pub clock: Arc<dyn Clock>,
}

impl Default for VaultOptions {
    fn default() -> Self {
        VaultOptions {
            storage: StorageBackend::Sled,
            root_of_trust: RootOfTrustChoice::File,
            previous_root_key_file: None,
            previous_root_of_trust: None,
            dek_cache_capacity: 10_000,
            dek_cache_ttl: Duration::from_secs(5 * 60),
            store_cache_bytes: 256 * 1024 * 1024,
            store_min_free_bytes: 0,
            limits: Limits::default(),
            rotation: RotationPolicy::default(),
            key_file_access: KeyFileAccess::OwnerOnly,
            erasure_journal: None,
            database_session: PgSessionSettings::default(),
            audit_min_retention: crate::vault::DEFAULT_AUDIT_MIN_RETENTION,
            clock: Arc::new(SystemClock),
        }
    }
}

pub async fn open_vault(paths: &VaultPaths, options: &VaultOptions) -> anyhow::Result<Vault> {
    open_vault_wrapped(paths, options, |store| store).await
}

/// `open_vault`, with the store the vault serves from passed through `wrap`
/// first: tests put a store of their own around the real one to order events
/// the API cannot order. The keyring and the start-up checks use the real
/// store.
pub async fn open_vault_wrapped(
    paths: &VaultPaths,
    options: &VaultOptions,
    wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
) -> anyhow::Result<Vault> {
    let policy = Policy::load(&paths.policy_file)?;
    for warning in crate::vault::kind_named_rule_warnings(&policy) {
        tracing::warn!("policy: {warning}");
    }
    let configured = root_of_trust(&options.root_of_trust, paths, options).await?;
    let (store, keys): (Arc<dyn Store>, KeyManager) = match &options.storage {
        StorageBackend::Sled => {
            let image = crate::crypto::keyring_file_contents(&paths.keyring_file)?;
            let (root, target) = opening_root(paths, options, configured, image.as_deref()).await?;
            let (store, keys) = open_sled(paths, options, &root).await?;
            (store, with_migration_target(keys, target))
        }
        StorageBackend::Postgres {
            url,
            pool_size,
            ca_file,
            allow_plaintext,
        } => {
            let store = Arc::new(
                PgStore::connect_with(
                    url,
                    *pool_size,
                    ca_file.as_deref(),
                    *allow_plaintext,
                    &options.database_session,
                )
                .await
                .context("connecting to PostgreSQL")?,
            );
            let row = store.keyring_row().await?;
            if row.is_none() && store.holds_data().await? {
                anyhow::bail!(
                    "the keyring table is empty, but the database holds data: restore the \
                     keyring row from its backup (a new keyring could read none of it)"
                );
            }
            let image = row.as_ref().map(|(_, _, image)| image.as_slice());
            let (root, target) = opening_root(paths, options, configured, image).await?;
            let (table, keyring) = retrying_the_root_of_trust("opening the keyring table", || {
                TableKeyring::open(
                    Arc::clone(&store),
                    sealing(&root),
                    Keyring::generate(now_ms()),
                )
            })
            .await
            .context("opening the keyring table")?;
            let keys = KeyManager::new(keyring, Box::new(table), root.arc(), dek_cache(options));
            (store, with_migration_target(keys, target))
        }
    };
    check_key_anchor(store.as_ref(), &keys).await?;
    // A retirement cut short (a crash, or the root of trust out of reach)
    // destroys what it left; if it cannot yet, the next rotation retries.
    if let Err(error) = keys.finish_destructions(options.clock.now_ms()).await {
        tracing::warn!(%error, "retired master versions still wait for the root of trust to destroy them");
    }
    let mut vault = Vault::new(
        wrap(store),
        keys,
        Arc::new(policy),
        options.limits.clone(),
        options.rotation.clone(),
    );
    vault.set_audit_min_retention(options.audit_min_retention);
    vault.set_clock(Arc::clone(&options.clock));
    if let Some(journal_path) = erasure_journal_path(paths, options) {
        let (journal, receipts) = ErasureJournal::open(&journal_path)
            .with_context(|| format!("opening the erasure journal {}", journal_path.display()))?;
        vault
            .use_erasure_journal(journal, receipts)
            .await
            .context("re-applying the erasure journal")?;
    }
    Ok(vault)
}

/// Where the erasure journal is kept: as configured, else on sled beside the
/// keyring file. PostgreSQL keeps its keyring in the database, which a
/// restore rolls back too: there the journal needs a place of its own.
pub fn erasure_journal_path(paths: &VaultPaths, options: &VaultOptions) -> Option<PathBuf> {
    match (&options.erasure_journal, &options.storage) {
        (Some(path), _) => Some(path.clone()),
        (None, StorageBackend::Sled) => {
            let mut path = paths.keyring_file.clone().into_os_string();
            path.push(".erasures");
            Some(PathBuf::from(path))
        }
        (None, StorageBackend::Postgres { .. }) => None,
    }
}

/// Refuses a keyring that does not belong to the store, or that is older than
/// what the store has seen of it; then records the keyring in the store.
async fn check_key_anchor(store: &dyn Store, keys: &KeyManager) -> anyhow::Result<()> {
    if let Some(anchor) = store.key_anchor().await? {
        if let Err(refusal) = keys.check_anchor(&anchor) {
            anyhow::bail!("{refusal}");
        }
    }
    // A retirement cut short resumes with the rotation; until then nothing is refused.
    store
        .set_key_anchor(keys.anchor(Default::default()))
        .await?;
    Ok(())
}

/// The root of trust in use: the root key file's, or the one connected.
enum OpenedRoot {
    File(Arc<FileRoot>),
    Connected(Arc<dyn RootOfTrust>),
}

impl OpenedRoot {
    fn arc(&self) -> Arc<dyn RootOfTrust> {
        match self {
            OpenedRoot::File(root) => Arc::clone(root) as Arc<dyn RootOfTrust>,
            OpenedRoot::Connected(root) => Arc::clone(root),
        }
    }
}

/// Loads the root key file, or connects to the root of trust `choice` names
/// (until it answers, if it is out of reach).
async fn root_of_trust(
    choice: &RootOfTrustChoice,
    paths: &VaultPaths,
    options: &VaultOptions,
) -> anyhow::Result<OpenedRoot> {
    let connected: Arc<dyn RootOfTrust> = match choice {
        RootOfTrustChoice::File => {
            let root_key = RootKey::load_with(&paths.root_key_file, options.key_file_access)?;
            let root = FileRoot::new(root_key, &paths.root_key_file);
            return Ok(OpenedRoot::File(Arc::new(root)));
        }
        RootOfTrustChoice::Transit(config) => {
            let root = TransitRoot::connect(config.clone()).await?;
            retrying_the_root_of_trust("reaching Transit", || async { Ok(root.check().await?) })
                .await
                .context("reaching the Transit root of trust")?;
            Arc::new(root)
        }
        RootOfTrustChoice::Pkcs11(config) => {
            let root = retrying_the_root_of_trust("connecting to the HSM", || async {
                Ok(Pkcs11Root::connect(config.clone()).await?)
            })
            .await
            .context("connecting to the PKCS#11 root of trust")?;
            Arc::new(root)
        }
        RootOfTrustChoice::AwsKms(config) => {
            let root = AwsKmsRoot::connect(config.clone()).await?;
            retrying_the_root_of_trust("reaching AWS KMS", || async { Ok(root.check().await?) })
                .await
                .context("reaching the AWS KMS root of trust")?;
            Arc::new(root)
        }
        RootOfTrustChoice::Connected(root) => Arc::clone(root),
    };
    tracing::info!(
        root_of_trust = connected.kind().name(),
        location = %connected.location(),
        "root of trust in use"
    );
    Ok(OpenedRoot::Connected(connected))
}

/// The root of trust that opens the keyring, and the one a migration moves
/// it to: a vault started with a new root of trust and the previous one
/// (`--previous-root-of-trust`, or a root key file) opens the keyring with
/// the previous one while it seals the keyring, until MigrateRootOfTrust.
async fn opening_root(
    paths: &VaultPaths,
    options: &VaultOptions,
    configured: OpenedRoot,
    keyring_image: Option<&[u8]>,
) -> anyhow::Result<(OpenedRoot, Option<Arc<dyn RootOfTrust>>)> {
    if let Some(previous) = &options.previous_root_of_trust {
        let sealing =
            previous_root_if_it_seals(previous, paths, options, &configured, keyring_image);
        if let Some(previous) = sealing.await? {
            tracing::warn!(
                root_of_trust = configured.arc().kind().name(),
                previous = previous.arc().kind().name(),
                "the keyring is still sealed by the previous root of trust: run `pii-vault keys \
                 migrate-root-of-trust` to move it to the root of trust the vault was started with"
            );
            return Ok((previous, Some(configured.arc())));
        }
    }
    opening_root_key_file(paths, options, configured, keyring_image)
}

/// The previous root of trust, connected, when it seals the keyring (the
/// keyring's newest image is sealed version by version and opens with it);
/// `None` when the root of trust the vault was started with seals it, or
/// nothing does yet.
async fn previous_root_if_it_seals(
    choice: &RootOfTrustChoice,
    paths: &VaultPaths,
    options: &VaultOptions,
    configured: &OpenedRoot,
    keyring_image: Option<&[u8]>,
) -> anyhow::Result<Option<OpenedRoot>> {
    let sealed = || keyring_image.and_then(newest_sealed_by_version);
    if sealed().is_none() {
        tracing::warn!(
            "the previous root of trust is no longer needed: it does not seal the keyring; \
             start without --previous-root-of-trust"
        );
        return Ok(None);
    }
    let previous = root_of_trust(choice, paths, options).await?.arc();
    let opened = retrying_the_root_of_trust("opening the keyring with the previous root", || {
        let previous = Arc::clone(&previous);
        let sealed = sealed();
        async move {
            let sealed = sealed.ok_or_else(|| VaultError::internal("the keyring image changed"))?;
            open_keyring(previous.as_ref(), sealed).await.map(drop)
        }
    })
    .await;
    let Err(previous_error) = opened else {
        return Ok(Some(OpenedRoot::Connected(previous)));
    };
    let by_configured = match (configured, sealed()) {
        (OpenedRoot::Connected(root), Some(sealed)) => {
            open_keyring(root.as_ref(), sealed).await.is_ok()
        }
        _ => false,
    };
    if !by_configured {
        return Err(anyhow::Error::new(previous_error).context(
            "the keyring opens neither with the previous root of trust nor with the one the \
             vault was started with",
        ));
    }
    tracing::warn!(
        "the previous root of trust is no longer needed: the keyring is sealed by the root of \
         trust the vault was started with; start without --previous-root-of-trust, and \
         destroy the previous one's material"
    );
    Ok(None)
}

/// The newest image sealed version by version among slot images (a file's
/// two, or a table's one).
fn newest_sealed_by_version(contents: &[u8]) -> Option<crate::crypto::SealedKeyring> {
    contents
        .chunks(64 * 1024)
        .filter_map(|slot| crate::crypto::decode_image(slot).ok())
        .max_by_key(|sealed| sealed.generation)
}

/// The root of trust that opens the keyring when a root key file may seal
/// it: a vault started with a new root of trust (another kind, or a new
/// root key file) and the root key file that seals its keyring now
/// (`--previous-root-key-file`, or `--root-key-file` beside another kind)
/// opens the keyring with that file until MigrateRootOfTrust.
fn opening_root_key_file(
    paths: &VaultPaths,
    options: &VaultOptions,
    configured: OpenedRoot,
    keyring_image: Option<&[u8]>,
) -> anyhow::Result<(OpenedRoot, Option<Arc<dyn RootOfTrust>>)> {
    let previous_file = match &configured {
        OpenedRoot::File(_) => options.previous_root_key_file.clone(),
        OpenedRoot::Connected(_) => options.previous_root_key_file.clone().or_else(|| {
            let given = !paths.root_key_file.as_os_str().is_empty();
            given.then(|| paths.root_key_file.clone())
        }),
    };
    let Some(previous_file) = previous_file else {
        return Ok((configured, None));
    };
    let target = configured.arc();
    // Loaded only when a root key file seals the keyring at all.
    let previous = match keyring_image.filter(|image| is_root_key_image(image)) {
        Some(image) => {
            let key = RootKey::load_with(&previous_file, options.key_file_access)?;
            // Both are root key files: the one that opens the keyring seals it.
            let seals =
                matches!(configured, OpenedRoot::Connected(_)) || root_key_opens(&key, image);
            seals.then_some(key)
        }
        None => None,
    };
    let Some(previous) = previous else {
        tracing::warn!(
            root_of_trust = target.kind().name(),
            file = %previous_file.display(),
            "the previous root key file is no longer needed: the keyring is not sealed by it; \
             start without it, and destroy the file and its copies"
        );
        return Ok((configured, None));
    };
    tracing::warn!(
        root_of_trust = target.kind().name(),
        "the keyring is still sealed by the previous root key file: run `pii-vault keys \
         migrate-root-of-trust` to move it to the root of trust the vault was started with"
    );
    let file = FileRoot::new(previous, &previous_file);
    Ok((OpenedRoot::File(Arc::new(file)), Some(target)))
}

fn with_migration_target(keys: KeyManager, target: Option<Arc<dyn RootOfTrust>>) -> KeyManager {
    if let Some(target) = target {
        keys.set_migration_target(target);
    }
    keys
}

/// How the keyring is sealed under `root`: the root key file seals it as a
/// whole; any other root of trust version by version.
fn sealing(root: &OpenedRoot) -> Sealing {
    match root {
        OpenedRoot::File(file) => Sealing::Whole(file.root_key().clone()),
        OpenedRoot::Connected(root) => Sealing::ByVersion(Arc::clone(root)),
    }
}

/// Runs `attempt` until it succeeds or fails for a reason other than the
/// root of trust being out of reach, waiting longer each time (up to 30 s):
/// meanwhile health answers NOT_SERVING and the log says why.
async fn retrying_the_root_of_trust<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, VaultError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, VaultError>>,
{
    let mut delay = Duration::from_millis(250);
    loop {
        match attempt().await {
            Err(error) if error.reason() == Reason::RootOfTrustUnavailable => {
                tracing::warn!(%error, retry_in = ?delay, "{what}: the root of trust is out of reach; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            other => return other,
        }
    }
}

async fn open_sled(
    paths: &VaultPaths,
    options: &VaultOptions,
    root: &OpenedRoot,
) -> anyhow::Result<(Arc<dyn Store>, KeyManager)> {
    create_private_dir(&paths.data_dir)?;
    // Opening may fold a store written by an older release, which takes
    // minutes on a large one: off the runtime's threads, so that whatever
    // else runs on them (a health listener) keeps answering meanwhile.
    let (data_dir, cache_bytes, min_free_bytes) = (
        paths.data_dir.clone(),
        options.store_cache_bytes,
        options.store_min_free_bytes,
    );
    let store = tokio::task::spawn_blocking(move || {
        SledStore::open_with_reserve(&data_dir, cache_bytes, min_free_bytes)
    })
    .await
    .context("the task opening the store failed")?
    .with_context(|| format!("opening store in {}", paths.data_dir.display()))?;
    let keyring_path = &paths.keyring_file;
    let holds_data = store.holds_data().await?;
    let missing = || {
        anyhow::anyhow!(
            "the keyring file {} is missing, but the store in {} holds data: restore the \
             keyring file from its backup (a new keyring could read none of the store)",
            keyring_path.display(),
            paths.data_dir.display()
        )
    };
    let keyring_store: (Box<dyn crate::vault::KeyringStore>, Keyring) = match sealing(root) {
        Sealing::Whole(root_key) => {
            let opened = KeyringFile::open_with(keyring_path, &root_key, options.key_file_access)
                .with_context(|| format!("opening keyring {}", keyring_path.display()))?;
            let (keyring_file, keyring) = match opened {
                Some(opened) => opened,
                None if holds_data => return Err(missing()),
                None => KeyringFile::create(keyring_path, &root_key, now_ms())
                    .with_context(|| format!("creating keyring {}", keyring_path.display()))?,
            };
            (Box::new(FileKeyring::new(keyring_file)), keyring)
        }
        Sealing::ByVersion(root) => {
            let (keyring_file, keyring) = retrying_the_root_of_trust("opening the keyring", || {
                open_keyring_file(
                    keyring_path,
                    root.as_ref(),
                    options.key_file_access,
                    holds_data,
                )
            })
            .await
            .with_context(|| format!("opening keyring {}", keyring_path.display()))?
            .ok_or_else(missing)?;
            (
                Box::new(FileKeyring::sealed_by(keyring_file, root)),
                keyring,
            )
        }
    };
    let keys = KeyManager::new(
        keyring_store.1,
        keyring_store.0,
        root.arc(),
        dek_cache(options),
    );
    Ok((Arc::new(store), keys))
}

/// The keyring file sealed version by version by `root`, created when there
/// is none and the store is empty; `None` when there is none and the store
/// holds data.
async fn open_keyring_file(
    path: &Path,
    root: &dyn RootOfTrust,
    access: KeyFileAccess,
    store_holds_data: bool,
) -> Result<Option<(KeyringFile, Keyring)>, VaultError> {
    if let Some((file, sealed)) = KeyringFile::open_sealed_by_version(path, access)? {
        let keyring = open_keyring(root, sealed).await?;
        return Ok(Some((file, keyring)));
    }
    if store_holds_data {
        return Ok(None);
    }
    let mut keyring = Keyring::generate(now_ms());
    seal_new_versions(root, &mut keyring).await?;
    let file = KeyringFile::create_sealed_by_version(path, &keyring)?;
    Ok(Some((file, keyring)))
}

fn dek_cache(options: &VaultOptions) -> DekCache {
    DekCache::new(options.dek_cache_capacity, options.dek_cache_ttl)
}

/// A development vault's directory, and the API key when it was just created
/// (it is printed once; it also stays in `dev-api-key`, mode 0600).
pub struct DevSetup {
    pub paths: VaultPaths,
    pub new_api_key: Option<String>,
    pub api_key_file: PathBuf,
}

/// Creates (once) a root key, a development policy with one all-powerful key,
/// and the data directory under `dir`.
pub fn prepare_dev(dir: &Path) -> anyhow::Result<DevSetup> {
    create_private_dir(dir)?;
    let paths = VaultPaths {
        data_dir: dir.join("store"),
        keyring_file: dir.join("keyring"),
        root_key_file: dir.join("root.key"),
        policy_file: dir.join("policy.toml"),
    };
    let api_key_file = dir.join("dev-api-key");
    if !paths.root_key_file.exists() {
        RootKey::generate_file(&paths.root_key_file)?;
    }
    let mut new_api_key = None;
    if !paths.policy_file.exists() {
        let api_key = policy::generate_api_key();
        let policy_text = policy::dev_policy_toml(&policy::api_key_sha256_hex(&api_key));
        write_new_file(&api_key_file, format!("{api_key}\n").as_bytes())?;
        write_new_file(&paths.policy_file, policy_text.as_bytes())?;
        new_api_key = Some(api_key);
    }
    Ok(DevSetup {
        paths,
        new_api_key,
        api_key_file,
    })
}

/// Creates a directory (and its parents) that only its owner may enter.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating directory {}", dir.display()))
}

/// Creates a file readable by its owner only; refuses to overwrite.
fn write_new_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
