//! The one mapping from domain errors to gRPC statuses.

use tonic::{Code, Status};

use crate::vault::VaultError;

pub fn code_of(error: &VaultError) -> Code {
    match error {
        VaultError::InvalidArgument(_) => Code::InvalidArgument,
        VaultError::PermissionDenied(_) => Code::PermissionDenied,
        VaultError::NotFound(_) => Code::NotFound,
        VaultError::AlreadyExists(_) => Code::AlreadyExists,
        VaultError::FailedPrecondition(_) => Code::FailedPrecondition,
        VaultError::ResourceExhausted(_) => Code::ResourceExhausted,
        VaultError::Unavailable(_) => Code::Unavailable,
        VaultError::Internal(_) => Code::Internal,
    }
}

/// The message a client sees: the domain's message, except for internal faults,
/// which are logged with their cause and reach the client without detail.
pub fn client_message(error: &VaultError) -> String {
    match error {
        VaultError::Internal(_) => "internal error".to_owned(),
        other => other.to_string(),
    }
}

impl From<VaultError> for Status {
    fn from(error: VaultError) -> Status {
        if let VaultError::Internal(cause) = &error {
            tracing::error!(%cause, "internal error");
        }
        Status::new(code_of(&error), client_message(&error))
    }
}

/// A per-item error inside a batch response.
pub fn item_error(error: &VaultError) -> crate::pb::ItemError {
    crate::pb::ItemError {
        code: code_of(error) as i32,
        message: client_message(error),
    }
}
