use std::sync::Arc;
use std::time::Duration;

use crate::crypto::CryptoError;
use crate::store::{CommitError, StoreError};

/// Why a vault operation failed, decided where the refusal is decided. Each
/// reason is a stable name clients may branch on (docs/errors.md lists them)
/// and belongs to one gRPC status code; the gRPC layer sends it as
/// `google.rpc.ErrorInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    InvalidArgument,
    RequestTooLarge,
    PurposeUnknown,
    CredentialsMissing,
    ApiKeyInvalid,
    CertificateUnknown,
    ScopeMissing,
    PurposeNotAllowed,
    FieldNotVisible,
    ConsentMissing,
    ConsentWithdrawn,
    ConsentOutdated,
    CustomerNotFound,
    FieldNotFound,
    TokenNotFound,
    ReceiptNotFound,
    PolicyVersionNotFound,
    PolicyVersionExists,
    RequestIdReused,
    FieldKindMismatch,
    TokenBoundToField,
    CustomerFieldLimit,
    CustomerTokenLimit,
    TokenSpaceExhausted,
    ExportTooLarge,
    RotationRunning,
    RateLimited,
    Overloaded,
    RevisionMismatch,
    ConcurrentChange,
    DeadlineExceeded,
    StoreUnavailable,
    StoreFull,
    RotationIncomplete,
    RootOfTrustUnavailable,
    IntegrityCheckFailed,
    AuditTrimRefused,
    AuditEventsTrimmed,
    Internal,
}

impl Reason {
    pub const ALL: [Reason; 39] = [
        Reason::InvalidArgument,
        Reason::RequestTooLarge,
        Reason::PurposeUnknown,
        Reason::CredentialsMissing,
        Reason::ApiKeyInvalid,
        Reason::CertificateUnknown,
        Reason::ScopeMissing,
        Reason::PurposeNotAllowed,
        Reason::FieldNotVisible,
        Reason::ConsentMissing,
        Reason::ConsentWithdrawn,
        Reason::ConsentOutdated,
        Reason::CustomerNotFound,
        Reason::FieldNotFound,
        Reason::TokenNotFound,
        Reason::ReceiptNotFound,
        Reason::PolicyVersionNotFound,
        Reason::PolicyVersionExists,
        Reason::RequestIdReused,
        Reason::FieldKindMismatch,
        Reason::TokenBoundToField,
        Reason::CustomerFieldLimit,
        Reason::CustomerTokenLimit,
        Reason::TokenSpaceExhausted,
        Reason::ExportTooLarge,
        Reason::RotationRunning,
        Reason::RateLimited,
        Reason::Overloaded,
        Reason::RevisionMismatch,
        Reason::ConcurrentChange,
        Reason::DeadlineExceeded,
        Reason::StoreUnavailable,
        Reason::StoreFull,
        Reason::RotationIncomplete,
        Reason::RootOfTrustUnavailable,
        Reason::IntegrityCheckFailed,
        Reason::AuditTrimRefused,
        Reason::AuditEventsTrimmed,
        Reason::Internal,
    ];

    /// The stable name sent as `ErrorInfo.reason`.
    pub fn name(self) -> &'static str {
        match self {
            Reason::InvalidArgument => "INVALID_ARGUMENT",
            Reason::RequestTooLarge => "REQUEST_TOO_LARGE",
            Reason::PurposeUnknown => "PURPOSE_UNKNOWN",
            Reason::CredentialsMissing => "CREDENTIALS_MISSING",
            Reason::ApiKeyInvalid => "API_KEY_INVALID",
            Reason::CertificateUnknown => "CERTIFICATE_UNKNOWN",
            Reason::ScopeMissing => "SCOPE_MISSING",
            Reason::PurposeNotAllowed => "PURPOSE_NOT_ALLOWED",
            Reason::FieldNotVisible => "FIELD_NOT_VISIBLE",
            Reason::ConsentMissing => "CONSENT_MISSING",
            Reason::ConsentWithdrawn => "CONSENT_WITHDRAWN",
            Reason::ConsentOutdated => "CONSENT_OUTDATED",
            Reason::CustomerNotFound => "CUSTOMER_NOT_FOUND",
            Reason::FieldNotFound => "FIELD_NOT_FOUND",
            Reason::TokenNotFound => "TOKEN_NOT_FOUND",
            Reason::ReceiptNotFound => "RECEIPT_NOT_FOUND",
            Reason::PolicyVersionNotFound => "POLICY_VERSION_NOT_FOUND",
            Reason::PolicyVersionExists => "POLICY_VERSION_EXISTS",
            Reason::RequestIdReused => "REQUEST_ID_REUSED",
            Reason::FieldKindMismatch => "FIELD_KIND_MISMATCH",
            Reason::TokenBoundToField => "TOKEN_BOUND_TO_FIELD",
            Reason::CustomerFieldLimit => "CUSTOMER_FIELD_LIMIT",
            Reason::CustomerTokenLimit => "CUSTOMER_TOKEN_LIMIT",
            Reason::TokenSpaceExhausted => "TOKEN_SPACE_EXHAUSTED",
            Reason::ExportTooLarge => "EXPORT_TOO_LARGE",
            Reason::RotationRunning => "ROTATION_RUNNING",
            Reason::RateLimited => "RATE_LIMITED",
            Reason::Overloaded => "OVERLOADED",
            Reason::RevisionMismatch => "REVISION_MISMATCH",
            Reason::ConcurrentChange => "CONCURRENT_CHANGE",
            Reason::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Reason::StoreUnavailable => "STORE_UNAVAILABLE",
            Reason::StoreFull => "STORE_FULL",
            Reason::RotationIncomplete => "ROTATION_INCOMPLETE",
            Reason::RootOfTrustUnavailable => "ROOT_OF_TRUST_UNAVAILABLE",
            Reason::IntegrityCheckFailed => "INTEGRITY_CHECK_FAILED",
            Reason::AuditTrimRefused => "AUDIT_TRIM_REFUSED",
            Reason::AuditEventsTrimmed => "AUDIT_EVENTS_TRIMMED",
            Reason::Internal => "INTERNAL",
        }
    }

    /// The name of the gRPC status code this reason is answered with, as
    /// audit events record a refusal. RESOURCE_EXHAUSTED is kept for limits
    /// that retrying later cures; a cap that retrying cannot cure is
    /// FAILED_PRECONDITION, a request too large INVALID_ARGUMENT.
    pub fn code_name(self) -> &'static str {
        use Reason::*;
        match self {
            InvalidArgument | RequestTooLarge | PurposeUnknown | AuditTrimRefused
            | AuditEventsTrimmed => "INVALID_ARGUMENT",
            CredentialsMissing | ApiKeyInvalid | CertificateUnknown => "UNAUTHENTICATED",
            ScopeMissing | PurposeNotAllowed | FieldNotVisible | ConsentMissing
            | ConsentWithdrawn | ConsentOutdated => "PERMISSION_DENIED",
            CustomerNotFound
            | FieldNotFound
            | TokenNotFound
            | ReceiptNotFound
            | PolicyVersionNotFound => "NOT_FOUND",
            PolicyVersionExists | RequestIdReused => "ALREADY_EXISTS",
            FieldKindMismatch | TokenBoundToField | CustomerFieldLimit | CustomerTokenLimit
            | TokenSpaceExhausted | ExportTooLarge | RotationRunning => "FAILED_PRECONDITION",
            RateLimited | Overloaded => "RESOURCE_EXHAUSTED",
            RevisionMismatch | ConcurrentChange => "ABORTED",
            DeadlineExceeded => "DEADLINE_EXCEEDED",
            StoreUnavailable | StoreFull | RotationIncomplete | RootOfTrustUnavailable => {
                "UNAVAILABLE"
            }
            IntegrityCheckFailed => "DATA_LOSS",
            Internal => "INTERNAL",
        }
    }

    /// How long a client should wait before retrying the same call, for the
    /// failures that retrying cures; `None` for the rest.
    pub fn retry_delay(self) -> Option<Duration> {
        match self {
            Reason::RateLimited | Reason::Overloaded | Reason::StoreUnavailable => {
                Some(Duration::from_secs(1))
            }
            Reason::ConcurrentChange => Some(Duration::from_millis(100)),
            Reason::RotationIncomplete | Reason::RootOfTrustUnavailable => {
                Some(Duration::from_secs(5))
            }
            Reason::StoreFull => Some(Duration::from_secs(30)),
            _ => None,
        }
    }
}

/// Every way a vault operation can fail: why (the reason), the message a
/// client sees (it names the problem and never contains a value), the request
/// field at fault if one is, and the error that caused it, which is logged
/// (with its own sources) and never sent.
#[derive(Debug, Clone)]
pub struct VaultError {
    reason: Reason,
    message: String,
    field: Option<&'static str>,
    metadata: Vec<(&'static str, String)>,
    cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl std::fmt::Display for VaultError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// By hand rather than derived: the source is the cause itself, not the `Arc`
/// around it, so the log (and a test) can see what it is.
impl std::error::Error for VaultError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let cause: &(dyn std::error::Error + 'static) = self.cause.as_deref()?;
        Some(cause)
    }
}

/// Two errors are the same refusal when all a client sees of them is: the
/// cause is for the log.
impl PartialEq for VaultError {
    fn eq(&self, other: &Self) -> bool {
        (self.reason, &self.message, self.field, &self.metadata)
            == (other.reason, &other.message, other.field, &other.metadata)
    }
}

impl Eq for VaultError {}

/// A cause known only as text: a fault the vault found in itself.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Detail(String);

impl VaultError {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        VaultError {
            reason,
            message: message.into(),
            field: None,
            metadata: Vec::new(),
            cause: None,
        }
    }

    /// A generic invalid argument; prefer `invalid_field` when one request
    /// field is at fault.
    pub fn invalid(message: impl Into<String>) -> Self {
        VaultError::new(Reason::InvalidArgument, message)
    }

    /// An invalid argument in the request field `field` (a field path).
    pub fn invalid_field(field: &'static str, message: impl Into<String>) -> Self {
        VaultError::invalid(message).in_field(field)
    }

    pub fn customer_not_found() -> Self {
        VaultError::new(Reason::CustomerNotFound, "customer not found")
    }

    /// Stored data that does not open where its records say it belongs (moved,
    /// relabelled, re-pointed or rolled back): logged, and shown to clients
    /// as DATA_LOSS naming what failed, never its value.
    pub fn integrity(message: impl std::fmt::Display) -> Self {
        VaultError::new(
            Reason::IntegrityCheckFailed,
            format!("integrity check failed: {message}"),
        )
    }

    /// A fault of the vault itself; `detail` is logged, and clients see none.
    pub fn internal(detail: impl Into<String>) -> Self {
        VaultError::new(Reason::Internal, "internal error").caused_by(Detail(detail.into()))
    }

    /// Names the request field at fault (a field path such as `customer_id`).
    pub fn in_field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }

    /// Adds an `ErrorInfo` metadata entry. Never a value or personal data:
    /// only names from the policy (a scope, a purpose) or numbers (a limit).
    pub fn with(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.metadata.push((key, value.into()));
        self
    }

    /// The error behind this one (a store's failure, say), for the log only.
    pub fn caused_by(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.cause = Some(Arc::new(cause));
        self
    }

    pub fn reason(&self) -> Reason {
        self.reason
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn field(&self) -> Option<&'static str> {
        self.field
    }

    pub fn metadata(&self) -> &[(&'static str, String)] {
        &self.metadata
    }

    /// The cause and each of its sources, outermost first, joined by ": ",
    /// as the log shows them.
    pub fn cause_chain(&self) -> Option<String> {
        let cause: &(dyn std::error::Error + 'static) = self.cause.as_deref()?;
        let mut text = cause.to_string();
        let mut source = cause.source();
        while let Some(error) = source {
            text.push_str(": ");
            text.push_str(&error.to_string());
            source = error.source();
        }
        Some(text)
    }

    /// The status code's name, as audit events record a refusal.
    pub fn code_name(&self) -> &'static str {
        self.reason.code_name()
    }
}

/// Engine text goes to the log only: clients see a stable message.
impl From<StoreError> for VaultError {
    fn from(error: StoreError) -> Self {
        let refusal = match &error {
            StoreError::Engine(_) => {
                VaultError::new(Reason::StoreUnavailable, "storage unavailable; retry later")
            }
            StoreError::NotDurable(_) => VaultError::new(
                Reason::StoreUnavailable,
                "storage unavailable: a flush to disk failed, so this replica serves no \
                 more writes until it restarts",
            ),
            // The message names no path and no engine detail: it is the store's own.
            StoreError::DiskFull { .. } => VaultError::new(Reason::StoreFull, error.to_string()),
            // A permanent failure: retrying cannot cure it.
            StoreError::Corrupt(what) => VaultError::integrity(format!("a stored {what}")),
        };
        refusal.caused_by(error)
    }
}

impl From<CryptoError> for VaultError {
    fn from(error: CryptoError) -> Self {
        // Stored data that fails to decrypt is an integrity fault, not bad input.
        VaultError::internal(error.to_string())
    }
}

impl From<crate::root_of_trust::RootError> for VaultError {
    fn from(error: crate::root_of_trust::RootError) -> Self {
        use crate::root_of_trust::RootError;
        let reason = match &error {
            RootError::Unreachable { .. } => Reason::RootOfTrustUnavailable,
            RootError::Refused { .. } | RootError::NotOpened { .. } => Reason::Internal,
        };
        // Its message names the service, key and reason, never key bytes.
        VaultError::new(reason, error.to_string())
    }
}

impl From<CommitError> for VaultError {
    fn from(error: CommitError) -> Self {
        match error {
            CommitError::Store(error) => error.into(),
            // Retried by the caller; only reaches here when retries ran out.
            CommitError::Conflict | CommitError::Taken | CommitError::StaleKeyring => {
                VaultError::new(
                    Reason::ConcurrentChange,
                    "the customer kept changing under concurrent writes; retry",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_race_lost_on_every_retry_is_aborted_not_unavailable() {
        for lost in [
            CommitError::Conflict,
            CommitError::Taken,
            CommitError::StaleKeyring,
        ] {
            let error = VaultError::from(lost);
            assert_eq!(error.code_name(), "ABORTED", "{error}");
            assert_eq!(error.reason(), Reason::ConcurrentChange);
            assert!(error.reason().retry_delay().is_some());
            assert!(error.to_string().contains("retry"));
        }
    }

    #[test]
    fn the_store_error_behind_a_refusal_is_its_source_for_the_log() {
        let refusal = VaultError::from(StoreError::Corrupt("customer record"));
        let source = std::error::Error::source(&refusal).expect("a source");
        assert!(
            source.downcast_ref::<StoreError>().is_some(),
            "the store's own error, not its text: {source:?}"
        );
        assert_eq!(
            refusal.cause_chain().as_deref(),
            Some("stored record is corrupt: customer record")
        );
        let internal = VaultError::internal("an access event does not serialize");
        assert_eq!(
            internal.cause_chain().as_deref(),
            Some("an access event does not serialize")
        );
        assert!(!internal.message().contains("serialize"));
    }

    #[test]
    fn store_errors_reach_clients_without_engine_text() {
        let engine = VaultError::from(CommitError::Store(StoreError::engine(
            "postgres",
            std::io::Error::other("db error: No space left on device (os error 28)"),
        )));
        assert_eq!(engine.code_name(), "UNAVAILABLE");
        assert_eq!(engine.reason(), Reason::StoreUnavailable);
        assert!(!engine.message().contains("postgres"), "{engine}");
        assert!(!engine.message().contains("os error"), "{engine}");
        assert!(engine.cause_chain().unwrap().contains("os error 28"));

        let not_durable = VaultError::from(StoreError::NotDurable("EIO on /data".into()));
        assert_eq!(not_durable.reason(), Reason::StoreUnavailable);
        assert!(!not_durable.message().contains("/data"), "{not_durable}");
    }

    #[test]
    fn a_corrupt_record_is_permanent_data_loss_not_retryable() {
        let corrupt = VaultError::from(StoreError::Corrupt("customer record"));
        assert_eq!(corrupt.code_name(), "DATA_LOSS");
        assert_eq!(corrupt.reason(), Reason::IntegrityCheckFailed);
        assert_eq!(corrupt.reason().retry_delay(), None);
    }

    #[test]
    fn resource_exhausted_is_kept_for_limits_that_retrying_cures() {
        for reason in Reason::ALL {
            if reason.code_name() == "RESOURCE_EXHAUSTED" {
                assert!(reason.retry_delay().is_some(), "{reason:?}");
            }
        }
    }

    #[test]
    fn reason_names_are_distinct_upper_snake_case() {
        let mut names: Vec<&str> = Reason::ALL.iter().map(|r| r.name()).collect();
        assert!(names
            .iter()
            .all(|name| name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Reason::ALL.len());
    }
}
