//! AWS KMS as a root of trust: each master version is sealed by a KMS key of
//! its own (Encrypt and Decrypt, bound to the version by an encryption
//! context), and retiring the version schedules that key's deletion.
//!
//! The client takes the SDK's standard settings from the environment:
//! `AWS_REGION`, `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_KMS`, and the default
//! credentials chain (environment, profile, web identity / IRSA, ECS, IMDS).
//! Its HTTPS is rustls on ring, the vault's one crypto provider, trusting the
//! system's root certificates.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyState, KeyUsageType, Tag};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use zeroize::Zeroizing;

use super::{Destruction, KeyHandle, RootError, RootKind, RootOfTrust, SealContext};

const KIND: &str = "aws-kms";

/// The encryption context key binding a sealed version to its keyring and
/// version (the value is the hex of [`SealContext::associated_data`]).
const CONTEXT_KEY: &str = "piivault";

/// The tag every key the vault creates carries (value: the version's label),
/// so an operator can find them, and scope IAM policies to them.
const TAG_KEY: &str = "pii-vault";

/// What an operator sets beyond the SDK's own environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsKmsConfig {
    /// Days a retired version's key stays pending deletion (restorable) before
    /// KMS deletes it for good: 7 to 30.
    pub pending_window_days: i32,
}

impl Default for AwsKmsConfig {
    fn default() -> AwsKmsConfig {
        AwsKmsConfig {
            pending_window_days: 7,
        }
    }
}

pub struct AwsKmsRoot {
    client: aws_sdk_kms::Client,
    config: AwsKmsConfig,
    region: String,
    endpoint: Option<String>,
}

impl std::fmt::Debug for AwsKmsRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKmsRoot")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AwsKmsRoot {
    /// A client configured by the SDK's standard environment, with bounded
    /// timeouts (the SDK sets none on an operation by default).
    pub async fn connect(config: AwsKmsConfig) -> Result<AwsKmsRoot, RootError> {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(10))
            .operation_timeout(Duration::from_secs(30))
            .build();
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .http_client(https_client())
            .timeout_config(timeouts)
            .load()
            .await;
        let mut root = AwsKmsRoot::from_sdk_config(&sdk, config)?;
        // For `location` only: the KMS client resolves this one itself (it
        // overrides AWS_ENDPOINT_URL), and `sdk` does not show it.
        if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL_KMS") {
            root.endpoint = Some(endpoint);
        }
        Ok(root)
    }

    /// A client from settings built elsewhere (tests: an explicit endpoint,
    /// region and credentials, without the process environment). Without an
    /// HTTP client of its own, `sdk` gets the rustls-on-ring one.
    pub fn from_sdk_config(sdk: &SdkConfig, config: AwsKmsConfig) -> Result<AwsKmsRoot, RootError> {
        if !(7..=30).contains(&config.pending_window_days) {
            return Err(refused(format!(
                "the pending-deletion window is {} days: KMS accepts 7 to 30",
                config.pending_window_days
            )));
        }
        let region = sdk
            .region()
            .map(|region| region.to_string())
            .ok_or_else(|| refused("no AWS region is set (AWS_REGION or a profile's region)"))?;
        let mut kms_config = aws_sdk_kms::config::Builder::from(sdk);
        if sdk.http_client().is_none() {
            kms_config = kms_config.http_client(https_client());
        }
        Ok(AwsKmsRoot {
            client: aws_sdk_kms::Client::from_conf(kms_config.build()),
            config,
            region,
            endpoint: sdk.endpoint_url().map(str::to_owned),
        })
    }

    /// The key's state and, when it is pending deletion, the date.
    async fn deletion_date(&self, key_arn: &str) -> Result<Option<i64>, SdkErrorKind> {
        let described = self
            .client
            .describe_key()
            .key_id(key_arn)
            .send()
            .await
            .map_err(|e| SdkErrorKind::of(&e))?;
        let Some(metadata) = described.key_metadata() else {
            return Err(SdkErrorKind::Refused(
                "DescribeKey returned no key metadata".into(),
            ));
        };
        if metadata.key_state() != Some(&KeyState::PendingDeletion) {
            return Ok(None);
        }
        match metadata.deletion_date() {
            Some(date) => Ok(Some(millis(date)?)),
            None => Err(SdkErrorKind::Refused(
                "the key is pending deletion without a deletion date".into(),
            )),
        }
    }
}

/// rustls with ring (not the SDK's default aws-lc-rs), native root certificates.
fn https_client() -> aws_sdk_kms::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

#[async_trait::async_trait]
impl RootOfTrust for AwsKmsRoot {
    fn kind(&self) -> RootKind {
        RootKind::AwsKms
    }

    fn location(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("region {} at {endpoint}", self.region),
            None => format!("region {}", self.region),
        }
    }

    async fn check(&self) -> Result<(), RootError> {
        self.client
            .list_keys()
            .limit(1)
            .send()
            .await
            .map_err(|e| SdkErrorKind::of(&e).into_root_error())?;
        Ok(())
    }

    async fn create_key(&self, context: &SealContext) -> Result<KeyHandle, RootError> {
        let label = context.label();
        let tag = Tag::builder()
            .tag_key(TAG_KEY)
            .tag_value(&label)
            .build()
            .map_err(|e| refused(format!("a tag for {label}: {e}")))?;
        let created = self
            .client
            .create_key()
            .description(&label)
            .key_spec(KeySpec::SymmetricDefault)
            .key_usage(KeyUsageType::EncryptDecrypt)
            .tags(tag)
            .send()
            .await
            .map_err(|e| SdkErrorKind::of(&e).into_root_error())?;
        let arn = created
            .key_metadata()
            .and_then(|metadata| metadata.arn())
            .ok_or_else(|| refused(format!("CreateKey for {label} returned no key ARN")))?;
        Ok(KeyHandle(arn.as_bytes().to_vec()))
    }

    async fn seal(
        &self,
        handle: &KeyHandle,
        context: &SealContext,
        secret: &[u8],
    ) -> Result<Vec<u8>, RootError> {
        let key_arn = self.key_arn(handle).map_err(refused)?;
        let encrypted = self
            .client
            .encrypt()
            .key_id(key_arn)
            .plaintext(Blob::new(secret))
            .encryption_context(CONTEXT_KEY, context_value(context))
            .send()
            .await
            .map_err(|e| SdkErrorKind::of(&e).into_root_error())?;
        match encrypted.ciphertext_blob {
            Some(sealed) => Ok(sealed.into_inner()),
            None => Err(refused(format!(
                "Encrypt with {key_arn} returned no ciphertext"
            ))),
        }
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
        let key_arn = self.key_arn(handle).map_err(not_opened)?;
        let mut decrypted = self
            .client
            .decrypt()
            .key_id(key_arn)
            .ciphertext_blob(Blob::new(sealed))
            .encryption_context(CONTEXT_KEY, context_value(context))
            .send()
            .await
            .map_err(|e| match SdkErrorKind::of(&e) {
                // A key deleted for good answers NotFound: what it sealed
                // is gone, as retiring the version meant.
                SdkErrorKind::Decrypt(reason) | SdkErrorKind::NotFound(reason) => {
                    not_opened(reason)
                }
                other => other.into_root_error(),
            })?;
        // The SDK's own buffers (the response body, its base64) are not
        // wiped; this copy, the one the vault keeps, is.
        match decrypted.plaintext.take() {
            Some(secret) => Ok(Zeroizing::new(secret.into_inner())),
            None => Err(not_opened(format!(
                "Decrypt with {key_arn} returned no plaintext"
            ))),
        }
    }

    async fn destroy(&self, handle: &KeyHandle) -> Result<Destruction, RootError> {
        let key_arn = self.key_arn(handle).map_err(refused)?;
        // Already pending deletion: its date stands (moto would move it,
        // KMS would refuse with KMSInvalidStateException).
        match self.deletion_date(key_arn).await {
            Ok(Some(at_ms)) => return Ok(Destruction::Scheduled { at_ms }),
            Ok(None) => {}
            Err(SdkErrorKind::NotFound(_)) => return Ok(Destruction::Done),
            Err(other) => return Err(other.into_root_error()),
        }
        // The key id, not the ARN: the same key to KMS (deletion is never
        // cross-account), and moto 5.2 fails with a 500 on an ARN here.
        let key_id = key_arn.rsplit_once(":key/").map_or(key_arn, |(_, id)| id);
        let scheduled = self
            .client
            .schedule_key_deletion()
            .key_id(key_id)
            .pending_window_in_days(self.config.pending_window_days)
            .send()
            .await;
        let scheduled = match scheduled {
            Ok(scheduled) => scheduled,
            Err(error) => {
                return match SdkErrorKind::of(&error) {
                    SdkErrorKind::NotFound(_) => Ok(Destruction::Done),
                    // Scheduled meanwhile by another replica's retirement.
                    SdkErrorKind::Decrypt(reason) if is_invalid_state(&error) => {
                        match self.deletion_date(key_arn).await {
                            Ok(Some(at_ms)) => Ok(Destruction::Scheduled { at_ms }),
                            Ok(None) => Err(refused(reason)),
                            Err(SdkErrorKind::NotFound(_)) => Ok(Destruction::Done),
                            Err(other) => Err(other.into_root_error()),
                        }
                    }
                    other => Err(other.into_root_error()),
                };
            }
        };
        match scheduled.deletion_date() {
            Some(date) => Ok(Destruction::Scheduled {
                at_ms: millis(date).map_err(SdkErrorKind::into_root_error)?,
            }),
            None => Err(refused(format!(
                "ScheduleKeyDeletion of {key_arn} returned no deletion date"
            ))),
        }
    }
}

impl AwsKmsRoot {
    /// The key ARN a handle holds, in this client's region: a key of another
    /// region would answer NotFound, which `destroy` must not take for done.
    fn key_arn<'h>(&self, handle: &'h KeyHandle) -> Result<&'h str, String> {
        let arn = std::str::from_utf8(&handle.0)
            .ok()
            .filter(|arn| arn.starts_with("arn:") && arn.contains(":key/"))
            .ok_or_else(|| format!("{handle:?} is not a KMS key ARN (another root of trust?)"))?;
        match arn.split(':').nth(3) {
            Some(region) if region == self.region => Ok(arn),
            Some(region) => Err(format!(
                "key {arn} is in region {region}, the client in {}",
                self.region
            )),
            None => Err(format!("{arn} is not a KMS key ARN")),
        }
    }
}

fn context_value(context: &SealContext) -> String {
    data_encoding::HEXLOWER.encode(&context.associated_data())
}

fn millis(date: &aws_sdk_kms::primitives::DateTime) -> Result<i64, SdkErrorKind> {
    date.to_millis()
        .map_err(|e| SdkErrorKind::Refused(format!("deletion date {date}: {e}")))
}

fn refused(reason: impl Into<String>) -> RootError {
    RootError::Refused {
        kind: KIND,
        reason: reason.into(),
    }
}

fn is_invalid_state<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    error.as_service_error().and_then(|e| e.code()) == Some("KMSInvalidStateException")
}

/// What a failed call means to the vault; each holds the SDK's description
/// of the error (which never holds the plaintext).
#[derive(Debug)]
enum SdkErrorKind {
    /// Not reached, timed out, throttled, or KMS failing inside: retry.
    Unreachable(String),
    /// The key does not exist (or not in this region, or not for us).
    NotFound(String),
    /// A Decrypt of these bytes with this key cannot succeed: the sealed
    /// bytes, the context or the key state is wrong.
    Decrypt(String),
    /// Denied, bad credentials, bad request.
    Refused(String),
}

impl SdkErrorKind {
    fn of<E>(error: &SdkError<E, HttpResponse>) -> SdkErrorKind
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        // A service error's code and message, not the SDK's whole context
        // (which shows the raw response).
        let reason = match error {
            SdkError::ServiceError(context) => format!(
                "{} (HTTP {})",
                DisplayErrorContext(context.err()),
                context.raw().status().as_u16()
            ),
            _ => DisplayErrorContext(error).to_string(),
        };
        match error {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => SdkErrorKind::Unreachable(reason),
            SdkError::ConstructionFailure(_) => {
                // Credentials not loaded yet because IMDS or STS did not
                // answer is worth a retry; no credentials at all is not.
                if credentials_unavailable(error) {
                    SdkErrorKind::Unreachable(reason)
                } else {
                    SdkErrorKind::Refused(reason)
                }
            }
            SdkError::ServiceError(context) => {
                let status = context.raw().status().as_u16();
                match context.err().code() {
                    Some(
                        "ThrottlingException"
                        | "KMSInternalException"
                        | "DependencyTimeoutException"
                        | "KeyUnavailableException"
                        | "ServiceUnavailableException"
                        | "InternalFailure",
                    ) => SdkErrorKind::Unreachable(reason),
                    Some("NotFoundException") => SdkErrorKind::NotFound(reason),
                    Some(
                        "InvalidCiphertextException"
                        | "KMSInvalidStateException"
                        | "IncorrectKeyException"
                        | "DisabledException",
                    ) => SdkErrorKind::Decrypt(reason),
                    _ if status == 429 || status >= 500 => SdkErrorKind::Unreachable(reason),
                    _ => SdkErrorKind::Refused(reason),
                }
            }
            _ => SdkErrorKind::Refused(reason),
        }
    }

    /// Outside Decrypt: a missing key and a key in the wrong state are
    /// refusals (a bad handle, a disabled key).
    fn into_root_error(self) -> RootError {
        match self {
            SdkErrorKind::Unreachable(reason) => RootError::Unreachable { kind: KIND, reason },
            SdkErrorKind::NotFound(reason)
            | SdkErrorKind::Decrypt(reason)
            | SdkErrorKind::Refused(reason) => refused(reason),
        }
    }
}

fn credentials_unavailable<E>(error: &SdkError<E, HttpResponse>) -> bool
where
    E: std::error::Error + 'static,
{
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(credentials) = cause.downcast_ref::<CredentialsError>() {
            return matches!(
                credentials,
                CredentialsError::ProviderTimedOut(_) | CredentialsError::ProviderError(_)
            );
        }
        source = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kms::config::{Credentials, Region, SharedCredentialsProvider};
    use aws_sdk_kms::error::ErrorMetadata;
    use aws_sdk_kms::operation::decrypt::DecryptError;
    use aws_sdk_kms::operation::schedule_key_deletion::ScheduleKeyDeletionError;
    use pii_vault_testkit::moto::{self, Moto};

    use crate::root_of_trust::conformance::{
        self, context, DestroyedOpens, Destroys, Expect, SwappedHandle,
    };

    /// KMS answers KMSInvalidStateException for a key pending deletion
    /// (NotOpened: checked below without a server); moto 5.2 keeps no key
    /// state on Decrypt and still opens it. Decrypt under another key's ARN:
    /// KMS answers IncorrectKeyException, moto AccessDeniedException.
    const EXPECT: Expect = Expect {
        destroys: Destroys::Scheduled,
        destroyed_opens: DestroyedOpens::Either,
        swapped_handle: SwappedHandle::Fails,
    };

    /// Settings for `endpoint` with moto's credentials, one attempt per call.
    fn sdk_config(endpoint: &str) -> SdkConfig {
        let credentials = Credentials::new(
            moto::ACCESS_KEY_ID,
            moto::SECRET_ACCESS_KEY,
            None,
            None,
            "moto",
        );
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(moto::REGION))
            .endpoint_url(endpoint)
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(Duration::from_secs(60))
                    .build(),
            )
            .build()
    }

    fn root_at(endpoint: &str) -> AwsKmsRoot {
        AwsKmsRoot::from_sdk_config(&sdk_config(endpoint), AwsKmsConfig::default())
            .expect("a client")
    }

    fn now_ms() -> i64 {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970");
        i64::try_from(since_epoch.as_millis()).expect("ms fit in i64")
    }

    #[tokio::test]
    #[ignore = "root of trust: needs moto; .ci/root-of-trust-tools installs it"]
    async fn two_versions_are_sealed_by_keys_of_their_own_and_open() {
        let moto = Moto::start();
        let root = root_at(&moto.endpoint_url());
        let [(handle_1, _), _] = conformance::two_versions_seal_and_open(&root, EXPECT).await;
        assert!(
            handle_1.0.starts_with(b"arn:aws:kms:us-east-1:"),
            "{handle_1:?}"
        );
    }

    #[tokio::test]
    #[ignore = "root of trust: needs moto; .ci/root-of-trust-tools installs it"]
    async fn a_sealed_version_does_not_open_under_another_context() {
        let moto = Moto::start();
        let root = root_at(&moto.endpoint_url());
        let foreign = KeyHandle(b"root-key-file".to_vec());
        conformance::a_sealed_version_opens_only_under_its_own_context(&root, &foreign).await;
    }

    #[tokio::test]
    #[ignore = "root of trust: needs moto; .ci/root-of-trust-tools installs it"]
    async fn a_destroyed_version_no_longer_opens_and_the_others_still_do() {
        let moto = Moto::start();
        let root = root_at(&moto.endpoint_url());
        conformance::a_destroyed_version_no_longer_opens_and_the_others_still_do(&root, EXPECT)
            .await;
    }

    #[tokio::test]
    #[ignore = "root of trust: needs moto; .ci/root-of-trust-tools installs it"]
    async fn destroying_a_version_twice_succeeds() {
        let moto = Moto::start();
        let root = root_at(&moto.endpoint_url());
        conformance::destroying_a_version_twice_succeeds(&root, EXPECT).await;
    }

    #[tokio::test]
    #[ignore = "root of trust: needs moto; .ci/root-of-trust-tools installs it"]
    async fn a_destroyed_version_is_scheduled_for_deletion_once() {
        let moto = Moto::start();
        let root = root_at(&moto.endpoint_url());
        let handle = root.create_key(&context(1)).await.expect("key");
        let before_ms = now_ms();
        let destroyed = root.destroy(&handle).await.expect("destroy");
        let Destruction::Scheduled { at_ms } = destroyed else {
            panic!("not scheduled: {destroyed:?}");
        };
        let seven_days_ms = 7 * 24 * 3600 * 1000;
        assert!(
            (before_ms + seven_days_ms - 1000..=now_ms() + seven_days_ms + 1000).contains(&at_ms),
            "{at_ms} is not 7 days after {before_ms}"
        );
        let key_arn = std::str::from_utf8(&handle.0).expect("an ARN");
        assert_eq!(
            root.deletion_date(key_arn).await.expect("described"),
            Some(at_ms)
        );
        // moto moves the date on a second ScheduleKeyDeletion: the client
        // keeps the first.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(root.destroy(&handle).await.expect("again"), destroyed);
    }

    #[tokio::test]
    #[ignore = "root of trust: needs moto; .ci/root-of-trust-tools installs it"]
    async fn destroying_a_key_that_is_gone_is_done() {
        let moto = Moto::start();
        let root = root_at(&moto.endpoint_url());
        let gone = KeyHandle(
            b"arn:aws:kms:us-east-1:123456789012:key/0b9bdc0e-5d4f-4b3a-9d1e-1a2b3c4d5e6f".to_vec(),
        );
        assert_eq!(
            root.destroy(&gone).await.expect("destroy"),
            Destruction::Done
        );
        let elsewhere = KeyHandle(
            b"arn:aws:kms:eu-west-1:123456789012:key/0b9bdc0e-5d4f-4b3a-9d1e-1a2b3c4d5e6f".to_vec(),
        );
        let refused = root.destroy(&elsewhere).await;
        assert!(
            matches!(refused, Err(RootError::Refused { .. })),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable_and_worth_a_retry() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("its address")
            .port();
        let root = root_at(&format!("http://127.0.0.1:{port}"));
        let error = root.check().await.expect_err("nothing listens");
        assert!(error.is_retryable(), "{error:?}");
        let error = root
            .create_key(&context(1))
            .await
            .expect_err("nothing listens");
        assert!(matches!(error, RootError::Unreachable { .. }), "{error:?}");
    }

    fn service_error<E>(error: E, status: u16) -> SdkError<E, HttpResponse> {
        let status = status.try_into().expect("a status code");
        SdkError::service_error(error, HttpResponse::new(status, "".into()))
    }

    fn decrypt_error(code: &str, status: u16) -> SdkError<DecryptError, HttpResponse> {
        let meta = ErrorMetadata::builder()
            .code(code)
            .message("as KMS says")
            .build();
        service_error(DecryptError::generic(meta), status)
    }

    #[test]
    fn kms_answers_are_sorted_into_retry_refusal_and_not_opened() {
        for code in [
            "KMSInvalidStateException",
            "InvalidCiphertextException",
            "IncorrectKeyException",
            "DisabledException",
        ] {
            let kind = SdkErrorKind::of(&decrypt_error(code, 400));
            assert!(matches!(kind, SdkErrorKind::Decrypt(_)), "{code}: {kind:?}");
        }
        for (code, status) in [
            ("ThrottlingException", 400),
            ("KMSInternalException", 500),
            ("DependencyTimeoutException", 503),
            ("SomethingNew", 503),
            ("SomethingNew", 429),
        ] {
            let kind = SdkErrorKind::of(&decrypt_error(code, status));
            assert!(
                matches!(kind, SdkErrorKind::Unreachable(_)),
                "{code}: {kind:?}"
            );
        }
        for code in [
            "AccessDeniedException",
            "InvalidKeyUsageException",
            "UnrecognizedClientException",
        ] {
            let kind = SdkErrorKind::of(&decrypt_error(code, 400));
            assert!(matches!(kind, SdkErrorKind::Refused(_)), "{code}: {kind:?}");
        }
        let kind = SdkErrorKind::of(&decrypt_error("NotFoundException", 400));
        assert!(matches!(kind, SdkErrorKind::NotFound(_)), "{kind:?}");
        // Outside Decrypt, a key in the wrong state is a refusal.
        let meta = ErrorMetadata::builder()
            .code("KMSInvalidStateException")
            .build();
        let error = service_error(ScheduleKeyDeletionError::generic(meta), 400);
        assert!(is_invalid_state(&error));
        let root_error = SdkErrorKind::of(&error).into_root_error();
        assert!(
            matches!(root_error, RootError::Refused { .. }),
            "{root_error:?}"
        );
    }

    #[test]
    fn a_pending_window_outside_7_to_30_days_is_refused() {
        for days in [6, 31] {
            let config = AwsKmsConfig {
                pending_window_days: days,
            };
            let refused = AwsKmsRoot::from_sdk_config(&sdk_config("http://127.0.0.1:1"), config);
            assert!(matches!(refused, Err(RootError::Refused { .. })), "{days}");
        }
    }
}
