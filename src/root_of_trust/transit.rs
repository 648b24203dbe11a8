//! OpenBao's (or HashiCorp Vault's) Transit secrets engine as a root of
//! trust: one named Transit key (aes256-gcm96), one Transit key version per
//! master version.
//!
//! `create_key` rotates the Transit key and names the new version in the
//! handle (`"<key>:<version>"`); `seal` and `unseal` use that version only,
//! with the seal context as associated data. `destroy` raises the key's
//! minimum decryption and encryption versions past the handle's version, then
//! trims: Transit deletes the key material of every version below
//! `min_available_version`. Transit can only destroy a prefix of versions, so
//! destroying version N destroys every earlier version too; the vault retires
//! master versions oldest first, so nothing still in use goes with it. The
//! latest Transit version is never destroyed (it seals the active master).
//!
//! The token needs, on `<mount>/keys/<key>`: read and create; on `rotate`,
//! `config`, `trim`, `encrypt` and `decrypt` below it: update. Deleting the key
//! is never needed, so `deletion_allowed` stays false.
//!
//! Redirects are not followed (the token would follow them): a standby
//! node's 307 is refused; give the active node's or a load balancer's
//! address.
//!
//! Limit: the JSON bodies carrying a master version in base64 (the encrypt
//! request, the decrypt answer) pass through reqwest's and hyper's buffers,
//! which are not wiped; what this module holds itself is.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use data_encoding::BASE64;
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Destruction, KeyHandle, RootError, RootKind, RootOfTrust, SealContext};

const KIND: &str = "transit";
const KEY_TYPE: &str = "aes256-gcm96";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Server error texts are cut to this many characters in our errors.
const MAX_REASON_CHARS: usize = 500;

/// Where the Transit key is and how to authenticate.
#[derive(Clone, Debug)]
pub struct TransitConfig {
    /// `http://127.0.0.1:8200`, `https://bao.example:8200`.
    pub addr: String,
    /// The Transit engine's mount path, usually `transit`.
    pub mount: String,
    /// The Transit key's name.
    pub key: String,
    pub token: TransitToken,
    /// A PEM CA certificate trusted for `https`, beside the system's roots.
    pub ca_file: Option<PathBuf>,
}

/// The OpenBao/Vault token.
#[derive(Clone)]
pub enum TransitToken {
    /// Read again at each call, so a rotated token (a Kubernetes Secret) is
    /// picked up without a restart.
    File(PathBuf),
    /// Given once (`BAO_TOKEN`, `VAULT_TOKEN`).
    Value(Zeroizing<String>),
}

impl fmt::Debug for TransitToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransitToken::File(path) => f.debug_tuple("File").field(path).finish(),
            TransitToken::Value(_) => f.write_str("Value([redacted])"),
        }
    }
}

pub struct TransitRoot {
    http: reqwest::Client,
    /// `<addr>/v1/<mount>`, without a trailing slash.
    base: String,
    addr: String,
    mount: String,
    key: String,
    token: TransitToken,
}

impl fmt::Debug for TransitRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransitRoot")
            .field("addr", &self.addr)
            .field("mount", &self.mount)
            .field("key", &self.key)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// A failed HTTP exchange, before it is given a meaning per operation.
enum Failure {
    /// No answer, a timeout, a 5xx or 429: worth retrying.
    Unreachable(String),
    /// A 4xx answer, with the server's error text.
    Status(StatusCode, String),
    /// Anything else the server cannot help with (a token file we cannot
    /// read, an answer we cannot parse).
    Local(String),
}

/// The parts of a Transit key's description (`GET <mount>/keys/<key>`) used
/// here.
#[derive(Deserialize)]
struct KeyInfo {
    #[serde(rename = "type")]
    key_type: String,
    #[serde(default)]
    derived: bool,
    latest_version: u32,
    #[serde(default)]
    min_available_version: u32,
    #[serde(default)]
    min_decryption_version: u32,
    #[serde(default)]
    min_encryption_version: u32,
}

#[derive(Deserialize)]
struct Answer<T> {
    data: T,
}

#[derive(Serialize)]
struct EncryptRequest<'a> {
    plaintext: &'a str,
    key_version: u32,
    associated_data: &'a str,
}

#[derive(Deserialize)]
struct Encrypted {
    ciphertext: String,
}

#[derive(Serialize)]
struct DecryptRequest<'a> {
    ciphertext: &'a str,
    associated_data: &'a str,
}

#[derive(Deserialize)]
struct Decrypted {
    plaintext: String,
}

#[derive(Deserialize)]
struct ServerErrors {
    #[serde(default)]
    errors: Vec<String>,
}

impl TransitRoot {
    /// Builds the HTTP client; does not call the server (see `check`).
    pub async fn connect(config: TransitConfig) -> Result<TransitRoot, RootError> {
        let addr = config.addr.trim_end_matches('/').to_string();
        if !(addr.starts_with("http://") || addr.starts_with("https://")) {
            return Err(refused(format!(
                "address {addr:?} is not an http:// or https:// URL"
            )));
        }
        let mount = config.mount.trim_matches('/').to_string();
        if mount.is_empty() {
            return Err(refused("the Transit mount path is empty"));
        }
        let key = config.key;
        if key.is_empty() || key.contains(['/', ':', '?', '#']) {
            return Err(refused(format!(
                "Transit key name {key:?} is empty or holds '/', ':', '?' or '#'"
            )));
        }
        let tls = tls_config(config.ca_file.as_deref())?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            // The token travels in X-Vault-Token, which reqwest would carry
            // to wherever a redirect points: give the active node's address
            // (or a load balancer's) instead of following a standby's 307.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| refused(format!("the HTTP client: {}", error_chain(&e))))?;
        Ok(TransitRoot {
            http,
            base: format!("{addr}/v1/{mount}"),
            addr,
            mount,
            key,
            token: config.token,
        })
    }

    fn token_header(&self) -> Result<HeaderValue, Failure> {
        let token = match &self.token {
            TransitToken::Value(token) => token.clone(),
            // A small local file, read at start, rotation and retirement only:
            // blocking for it is fine.
            TransitToken::File(path) => Zeroizing::new(
                std::fs::read_to_string(path)
                    .map_err(|e| Failure::Local(format!("token file {}: {e}", path.display())))?,
            ),
        };
        let token = token.trim();
        if token.is_empty() {
            return Err(Failure::Local("the token is empty".to_string()));
        }
        let mut header = HeaderValue::from_str(token).map_err(|_| {
            Failure::Local("the token holds characters not allowed in an HTTP header".to_string())
        })?;
        header.set_sensitive(true);
        Ok(header)
    }

    /// One call to `<mount>/<path>`; the answer's body on a 2xx.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<Zeroizing<Vec<u8>>, Failure> {
        let url = format!("{}/{path}", self.base);
        let mut request = self
            .http
            .request(method, &url)
            .header("X-Vault-Token", self.token_header()?);
        if let Some(body) = body {
            // A copy reqwest owns (and does not wipe): see the module's limit.
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        let response = request
            .send()
            .await
            .map_err(|e| Failure::Unreachable(error_chain(&e)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Failure::Unreachable(error_chain(&e)))?;
        let bytes = Zeroizing::new(bytes.to_vec());
        if status.is_success() {
            return Ok(bytes);
        }
        let text = server_errors(status, &bytes);
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Err(Failure::Unreachable(text))
        } else {
            Err(Failure::Status(status, text))
        }
    }

    async fn call_json<T: for<'de> Deserialize<'de>>(
        &self,
        method: Method,
        path: &str,
        body: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<T, Failure> {
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice::<Answer<T>>(&bytes)
            .map(|answer| answer.data)
            .map_err(|e| Failure::Local(format!("an answer to {path} did not parse: {e}")))
    }

    /// The key's description; `None` when it does not exist yet.
    async fn key_info(&self) -> Result<Option<KeyInfo>, Failure> {
        match self
            .call_json(Method::GET, &format!("keys/{}", self.key), None)
            .await
        {
            Ok(info) => Ok(Some(info)),
            // A missing key is a 404 with no error text; a missing mount is a
            // 404 that says "no handler for route".
            Err(Failure::Status(StatusCode::NOT_FOUND, text)) if text.is_empty() => Ok(None),
            Err(other) => Err(other),
        }
    }

    fn handle(&self, version: u32) -> KeyHandle {
        KeyHandle(format!("{}:{version}", self.key).into_bytes())
    }

    /// The Transit key version `handle` names, if it names one of this key.
    fn version_of(&self, handle: &KeyHandle) -> Result<u32, String> {
        let not_ours = || format!("{handle:?} is not a version of Transit key {:?}", self.key);
        let text = std::str::from_utf8(&handle.0).map_err(|_| not_ours())?;
        let (key, version) = text.rsplit_once(':').ok_or_else(not_ours)?;
        if key != self.key {
            return Err(not_ours());
        }
        match version.parse::<u32>() {
            Ok(version) if version > 0 => Ok(version),
            _ => Err(not_ours()),
        }
    }

    fn with_context(&self, failure: Failure, what: &str) -> RootError {
        match failure {
            Failure::Unreachable(reason) => RootError::Unreachable {
                kind: KIND,
                reason: format!("{what} at {}: {reason}", self.addr),
            },
            Failure::Status(status, reason) => refused(format!(
                "{what} (key {:?}, mount {:?}): {} {reason}",
                self.key,
                self.mount,
                status.as_u16()
            )),
            Failure::Local(reason) => refused(format!("{what}: {reason}")),
        }
    }
}

#[async_trait::async_trait]
impl RootOfTrust for TransitRoot {
    fn kind(&self) -> RootKind {
        RootKind::Transit
    }

    fn location(&self) -> String {
        format!("{} mount {} key {}", self.addr, self.mount, self.key)
    }

    async fn check(&self) -> Result<(), RootError> {
        // Reading the key checks the address, the token and the mount; a key
        // not created yet is fine (the first `create_key` creates it).
        self.key_info()
            .await
            .map(|_| ())
            .map_err(|f| self.with_context(f, "reading the Transit key"))
    }

    async fn create_key(&self, _context: &SealContext) -> Result<KeyHandle, RootError> {
        let key_path = format!("keys/{}", self.key);
        let info = match self
            .key_info()
            .await
            .map_err(|f| self.with_context(f, "reading the Transit key"))?
        {
            Some(info) => info,
            None => {
                let body = serde_json::to_vec(&serde_json::json!({ "type": KEY_TYPE }))
                    .map_err(|e| refused(format!("a request did not serialize: {e}")))?;
                self.call_json::<KeyInfo>(Method::POST, &key_path, Some(Zeroizing::new(body)))
                    .await
                    .map_err(|f| self.with_context(f, "creating the Transit key"))?
            }
        };
        if info.key_type != KEY_TYPE || info.derived {
            return Err(refused(format!(
                "Transit key {:?} is of type {}{}: it must be a non-derived {KEY_TYPE} key",
                self.key,
                info.key_type,
                if info.derived { " (derived)" } else { "" }
            )));
        }
        // Every master version gets a version of its own: the first rotation
        // leaves version 1 of a new key unused, which costs nothing.
        let rotate_path = format!("{key_path}/rotate");
        let bytes = self
            .call(Method::POST, &rotate_path, None)
            .await
            .map_err(|f| self.with_context(f, "rotating the Transit key"))?;
        // OpenBao answers the rotation with the key's description; older
        // Vaults answer 204 with no body.
        let latest = match serde_json::from_slice::<Answer<KeyInfo>>(&bytes) {
            Ok(answer) => answer.data.latest_version,
            Err(_) => {
                self.key_info()
                    .await
                    .map_err(|f| self.with_context(f, "reading the Transit key"))?
                    .ok_or_else(|| refused("the Transit key vanished after its rotation"))?
                    .latest_version
            }
        };
        Ok(self.handle(latest))
    }

    async fn seal(
        &self,
        handle: &KeyHandle,
        context: &SealContext,
        secret: &[u8],
    ) -> Result<Vec<u8>, RootError> {
        let version = self.version_of(handle).map_err(refused)?;
        let plaintext = Zeroizing::new(BASE64.encode(secret));
        let associated_data = BASE64.encode(&context.associated_data());
        let body = serde_json::to_vec(&EncryptRequest {
            plaintext: &plaintext,
            key_version: version,
            associated_data: &associated_data,
        })
        .map_err(|e| refused(format!("a request did not serialize: {e}")))?;
        let encrypted: Encrypted = self
            .call_json(
                Method::POST,
                &format!("encrypt/{}", self.key),
                Some(Zeroizing::new(body)),
            )
            .await
            .map_err(|f| {
                self.with_context(
                    f,
                    &format!("sealing master version {}", context.master_version),
                )
            })?;
        if !encrypted.ciphertext.starts_with(&version_prefix(version)) {
            return Err(refused(format!(
                "Transit sealed master version {} under another key version than {version}",
                context.master_version
            )));
        }
        Ok(encrypted.ciphertext.into_bytes())
    }

    async fn unseal(
        &self,
        handle: &KeyHandle,
        context: &SealContext,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, RootError> {
        let not_opened = |reason: String| RootError::NotOpened {
            kind: KIND,
            version: context.master_version,
            reason,
        };
        let version = self.version_of(handle).map_err(not_opened)?;
        let ciphertext = std::str::from_utf8(sealed)
            .ok()
            .filter(|text| text.starts_with(&version_prefix(version)))
            .ok_or_else(|| {
                not_opened(format!(
                    "the sealed bytes are not a Transit ciphertext of key version {version}"
                ))
            })?;
        let associated_data = BASE64.encode(&context.associated_data());
        let body = serde_json::to_vec(&DecryptRequest {
            ciphertext,
            associated_data: &associated_data,
        })
        .map_err(|e| refused(format!("a request did not serialize: {e}")))?;
        let decrypted: Result<Decrypted, Failure> = self
            .call_json(
                Method::POST,
                &format!("decrypt/{}", self.key),
                Some(Zeroizing::new(body)),
            )
            .await;
        match decrypted {
            Ok(decrypted) => BASE64
                .decode(Zeroizing::new(decrypted.plaintext).as_bytes())
                .map(Zeroizing::new)
                .map_err(|e| {
                    not_opened(format!("Transit answered a plaintext not in base64: {e}"))
                }),
            // A missing key is a setting to fix, not destroyed material.
            Err(Failure::Status(StatusCode::BAD_REQUEST, reason))
                if !reason.contains("encryption key not found") =>
            {
                // Trimmed or too old a version ("disallowed by policy"),
                // another context ("message authentication failed"), altered
                // bytes.
                Err(not_opened(format!(
                    "Transit key {:?} version {version}: {reason}",
                    self.key
                )))
            }
            Err(other) => Err(self.with_context(
                other,
                &format!("unsealing master version {}", context.master_version),
            )),
        }
    }

    async fn destroy(&self, handle: &KeyHandle) -> Result<Destruction, RootError> {
        let version = self.version_of(handle).map_err(refused)?;
        let key_path = format!("keys/{}", self.key);
        let info = self
            .key_info()
            .await
            .map_err(|f| self.with_context(f, "reading the Transit key"))?
            .ok_or_else(|| refused(format!("Transit key {:?} does not exist", self.key)))?;
        let first_kept = version.saturating_add(1);
        if info.min_available_version >= first_kept {
            return Ok(Destruction::Done);
        }
        if info.latest_version <= version {
            return Err(refused(format!(
                "version {version} is the latest of Transit key {:?}: it seals the active \
                 master version, and Transit can destroy only versions older than the latest",
                self.key
            )));
        }
        // Transit trims only below both minimums, and wants the encryption
        // minimum (0: the latest) at or above the decryption minimum.
        let min_decryption = info.min_decryption_version.max(first_kept);
        let min_encryption = info.min_encryption_version.max(min_decryption);
        if min_decryption != info.min_decryption_version
            || min_encryption != info.min_encryption_version
        {
            let body = serde_json::to_vec(&serde_json::json!({
                "min_decryption_version": min_decryption,
                "min_encryption_version": min_encryption,
            }))
            .map_err(|e| refused(format!("a request did not serialize: {e}")))?;
            self.call(
                Method::POST,
                &format!("{key_path}/config"),
                Some(Zeroizing::new(body)),
            )
            .await
            .map_err(|f| self.with_context(f, "raising the Transit key's minimum versions"))?;
        }
        let body = serde_json::to_vec(&serde_json::json!({ "min_available_version": first_kept }))
            .map_err(|e| refused(format!("a request did not serialize: {e}")))?;
        self.call(
            Method::POST,
            &format!("{key_path}/trim"),
            Some(Zeroizing::new(body)),
        )
        .await
        .map_err(|f| self.with_context(f, "trimming the Transit key"))?;
        Ok(Destruction::Done)
    }
}

fn version_prefix(version: u32) -> String {
    format!("vault:v{version}:")
}

fn refused(reason: impl Into<String>) -> RootError {
    RootError::Refused {
        kind: KIND,
        reason: reason.into(),
    }
}

/// The server's `errors` texts (they never hold key bytes), or the status.
fn server_errors(status: StatusCode, body: &[u8]) -> String {
    let text = match serde_json::from_slice::<ServerErrors>(body) {
        Ok(parsed) => parsed.errors.join("; "),
        Err(_) => status.canonical_reason().unwrap_or("").to_string(),
    };
    text.chars().take(MAX_REASON_CHARS).collect()
}

/// An error and its causes: reqwest's own text alone says only "error
/// sending request".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// rustls with ring, trusting the system's roots and the given CA file.
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, RootError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(ca_file) = ca_file {
        let bad_file =
            |e: &dyn fmt::Display| refused(format!("CA file {}: {e}", ca_file.display()));
        let mut added = 0;
        for certificate in CertificateDer::pem_file_iter(ca_file).map_err(|e| bad_file(&e))? {
            roots
                .add(certificate.map_err(|e| bad_file(&e))?)
                .map_err(|e| bad_file(&e))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad_file(&"holds no PEM certificate"));
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| refused(format!("TLS settings: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use pii_vault_testkit::openbao::OpenBao;

    use super::*;
    use crate::root_of_trust::conformance::{
        self, assert_opens, context, sealed_version, DestroyedOpens, Destroys, Expect,
        SwappedHandle,
    };

    const EXPECT: Expect = Expect {
        destroys: Destroys::Done,
        destroyed_opens: DestroyedOpens::Never,
        swapped_handle: SwappedHandle::NotOpened,
    };

    fn config(addr: &str, token: &str) -> TransitConfig {
        TransitConfig {
            addr: addr.to_string(),
            mount: "transit".to_string(),
            key: "pii-vault-test".to_string(),
            token: TransitToken::Value(Zeroizing::new(token.to_string())),
            ca_file: None,
        }
    }

    async fn root(bao: &OpenBao) -> TransitRoot {
        TransitRoot::connect(config(bao.addr(), bao.token()))
            .await
            .expect("connect")
    }

    #[tokio::test]
    #[ignore = "root of trust: needs OpenBao; .ci/root-of-trust-tools installs it"]
    async fn two_versions_seal_under_versions_of_their_own_and_open() {
        let bao = OpenBao::start();
        conformance::two_versions_seal_and_open(&root(&bao).await, EXPECT).await;
    }

    #[tokio::test]
    #[ignore = "root of trust: needs OpenBao; .ci/root-of-trust-tools installs it"]
    async fn a_sealed_version_moved_to_another_context_does_not_open() {
        let bao = OpenBao::start();
        let foreign = KeyHandle(b"root-key-file".to_vec());
        conformance::a_sealed_version_opens_only_under_its_own_context(&root(&bao).await, &foreign)
            .await;
    }

    #[tokio::test]
    #[ignore = "root of trust: needs OpenBao; .ci/root-of-trust-tools installs it"]
    async fn a_destroyed_version_no_longer_opens_and_the_next_still_does() {
        let bao = OpenBao::start();
        conformance::a_destroyed_version_no_longer_opens_and_the_others_still_do(
            &root(&bao).await,
            EXPECT,
        )
        .await;
    }

    #[tokio::test]
    #[ignore = "root of trust: needs OpenBao; .ci/root-of-trust-tools installs it"]
    async fn destroying_a_version_twice_succeeds() {
        let bao = OpenBao::start();
        conformance::destroying_a_version_twice_succeeds(&root(&bao).await, EXPECT).await;
    }

    #[tokio::test]
    #[ignore = "root of trust: needs OpenBao; .ci/root-of-trust-tools installs it"]
    async fn destroying_the_latest_version_is_refused() {
        let bao = OpenBao::start();
        let root = root(&bao).await;
        let (first, sealed_first) = sealed_version(&root, 1).await;
        let refused = root.destroy(&first).await;
        assert!(
            matches!(refused, Err(RootError::Refused { .. })),
            "{refused:?}"
        );
        assert_opens(&root, &first, 1, &sealed_first).await;
    }

    #[tokio::test]
    #[ignore = "root of trust: needs OpenBao; .ci/root-of-trust-tools installs it"]
    async fn a_wrong_token_is_refused_and_never_shown() {
        let bao = OpenBao::start();
        let root = TransitRoot::connect(config(bao.addr(), "not-the-token-s3cr3t"))
            .await
            .expect("connect");
        assert!(!format!("{root:?}").contains("s3cr3t"));
        let refused = root.create_key(&context(1)).await;
        let Err(error @ RootError::Refused { .. }) = refused else {
            panic!("{refused:?}");
        };
        assert!(!error.is_retryable());
        assert!(error.to_string().contains("permission denied"), "{error}");
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
        assert!(matches!(root.check().await, Err(RootError::Refused { .. })));
    }

    #[tokio::test]
    #[ignore = "root of trust: needs OpenBao; .ci/root-of-trust-tools installs it"]
    async fn a_token_file_is_read_at_each_call() {
        let bao = OpenBao::start();
        let dir = tempfile::tempdir().expect("dir");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "wrong\n").expect("write");
        let mut settings = config(bao.addr(), "");
        settings.token = TransitToken::File(token_file.clone());
        let root = TransitRoot::connect(settings).await.expect("connect");
        assert!(matches!(root.check().await, Err(RootError::Refused { .. })));
        std::fs::write(&token_file, format!("{}\n", bao.token())).expect("write");
        root.check().await.expect("check with the new token");
    }

    #[tokio::test]
    #[ignore = "root of trust: needs OpenBao; .ci/root-of-trust-tools installs it"]
    async fn nothing_listening_is_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        let root = TransitRoot::connect(config(&format!("http://127.0.0.1:{port}"), "t"))
            .await
            .expect("connect");
        let error = root.check().await.expect_err("nothing listens");
        assert!(error.is_retryable(), "{error}");
        let error = root
            .create_key(&context(1))
            .await
            .expect_err("nothing listens");
        assert!(error.is_retryable(), "{error}");
    }

    #[tokio::test]
    #[ignore = "root of trust: needs OpenBao; .ci/root-of-trust-tools installs it"]
    async fn a_sealed_server_is_unreachable_until_unsealed() {
        let mut bao = OpenBao::start();
        let root = root(&bao).await;
        let (handle, sealed) = sealed_version(&root, 1).await;
        bao.seal();
        let error = root
            .unseal(&handle, &context(1), &sealed)
            .await
            .expect_err("sealed");
        assert!(error.is_retryable(), "{error}");
        assert!(root.check().await.expect_err("sealed").is_retryable());
        bao.unseal();
        assert_opens(&root, &handle, 1, &sealed).await;
    }

    #[tokio::test]
    #[ignore = "root of trust: needs OpenBao; .ci/root-of-trust-tools installs it"]
    async fn https_works_with_the_given_ca_only() {
        let bao = OpenBao::start_tls();
        assert!(bao.addr().starts_with("https://"));
        let mut settings = config(bao.addr(), bao.token());
        settings.ca_file = bao.ca_file().map(Path::to_path_buf);
        let root = TransitRoot::connect(settings).await.expect("connect");
        let (handle, sealed) = sealed_version(&root, 1).await;
        assert_opens(&root, &handle, 1, &sealed).await;
        // Without the CA, the certificate is not trusted: refused or
        // unreachable, but never opened.
        let untrusted = TransitRoot::connect(config(bao.addr(), bao.token()))
            .await
            .expect("connect");
        assert!(untrusted.check().await.is_err());
    }

    #[tokio::test]
    async fn the_token_is_never_in_debug_output() {
        let settings = config("http://127.0.0.1:1", "hvs.s3cr3t");
        assert!(!format!("{settings:?}").contains("s3cr3t"));
        let root = TransitRoot::connect(settings).await.expect("connect");
        assert!(!format!("{root:?}").contains("s3cr3t"));
    }

    #[tokio::test]
    async fn handles_of_other_keys_are_not_ours() {
        let root = TransitRoot::connect(config("http://127.0.0.1:1", "t"))
            .await
            .expect("connect");
        assert_eq!(root.version_of(&root.handle(7)), Ok(7));
        for foreign in [
            "other:1",
            "pii-vault-test:0",
            "pii-vault-test:x",
            "root-key-file",
        ] {
            assert!(
                root.version_of(&KeyHandle(foreign.into())).is_err(),
                "{foreign}"
            );
        }
    }
}
