use crate::crypto::CryptoError;
use crate::store::{CommitError, StoreError};

/// Every way a vault operation can fail. Messages name the problem and never
/// contain a value; the gRPC layer maps each variant to one status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A fault of the vault itself; logged, and shown to clients without detail.
    #[error("internal error: {0}")]
    Internal(String),
}

impl VaultError {
    /// The status code's name, as audit events record a refusal.
    pub fn code_name(&self) -> &'static str {
        match self {
            VaultError::InvalidArgument(_) => "INVALID_ARGUMENT",
            VaultError::PermissionDenied(_) => "PERMISSION_DENIED",
            VaultError::NotFound(_) => "NOT_FOUND",
            VaultError::AlreadyExists(_) => "ALREADY_EXISTS",
            VaultError::FailedPrecondition(_) => "FAILED_PRECONDITION",
            VaultError::ResourceExhausted(_) => "RESOURCE_EXHAUSTED",
            VaultError::Unavailable(_) => "UNAVAILABLE",
            VaultError::Internal(_) => "INTERNAL",
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        VaultError::InvalidArgument(message.into())
    }

    pub fn denied(message: impl Into<String>) -> Self {
        VaultError::PermissionDenied(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        VaultError::NotFound(message.into())
    }
}

impl From<StoreError> for VaultError {
    fn from(error: StoreError) -> Self {
        VaultError::Unavailable(error.to_string())
    }
}

impl From<CryptoError> for VaultError {
    fn from(error: CryptoError) -> Self {
        // Stored data that fails to decrypt is an integrity fault, not bad input.
        VaultError::Internal(error.to_string())
    }
}

impl From<CommitError> for VaultError {
    fn from(error: CommitError) -> Self {
        match error {
            CommitError::Store(error) => error.into(),
            // Retried by the caller; only reaches here when retries ran out.
            CommitError::Conflict | CommitError::Taken | CommitError::StaleKeyring => {
                VaultError::Unavailable(
                    "too many concurrent changes to this customer; retry".into(),
                )
            }
        }
    }
}
