//! The one mapping from domain errors to gRPC statuses, with `google.rpc`
//! details: `ErrorInfo` (the reason) always, `BadRequest` when a request field
//! is at fault, `RetryInfo` when retrying cures the failure.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::vault::{Reason, VaultError};

/// The `ErrorInfo.domain` of every reason the vault sends.
const ERROR_DOMAIN: &str = "piivault.v1";

fn code_of(error: &VaultError) -> Code {
    match error.code_name() {
        "INVALID_ARGUMENT" => Code::InvalidArgument,
        "UNAUTHENTICATED" => Code::Unauthenticated,
        "PERMISSION_DENIED" => Code::PermissionDenied,
        "NOT_FOUND" => Code::NotFound,
        "ALREADY_EXISTS" => Code::AlreadyExists,
        "FAILED_PRECONDITION" => Code::FailedPrecondition,
        "RESOURCE_EXHAUSTED" => Code::ResourceExhausted,
        "ABORTED" => Code::Aborted,
        "DEADLINE_EXCEEDED" => Code::DeadlineExceeded,
        "UNAVAILABLE" => Code::Unavailable,
        "DATA_LOSS" => Code::DataLoss,
        _ => Code::Internal,
    }
}

/// The `google.rpc` details of `error`.
fn details_of(error: &VaultError) -> ErrorDetails {
    let metadata: HashMap<String, String> = error
        .metadata()
        .iter()
        .map(|(key, value)| ((*key).to_owned(), value.clone()))
        .collect();
    let reason = error.reason();
    let mut details = ErrorDetails::with_error_info(reason.name(), ERROR_DOMAIN, metadata);
    if let Some(field) = error.field() {
        details.add_bad_request_violation(field, error.message());
    }
    if let Some(delay) = reason.retry_delay() {
        details.set_retry_info(Some(delay));
    }
    details
}

impl From<VaultError> for Status {
    fn from(error: VaultError) -> Status {
        // The cause (engine text, an internal fault) goes to the log only.
        log_cause(&error);
        Status::with_error_details(code_of(&error), error.message(), details_of(&error))
    }
}

fn log_cause(error: &VaultError) {
    let reason = error.reason().name();
    let cause = error.cause_chain();
    let cause = cause.as_deref();
    match (error.reason(), cause) {
        (Reason::Internal, cause) => tracing::error!(cause, "internal error"),
        (Reason::IntegrityCheckFailed, cause) => {
            tracing::error!(
                cause,
                message = error.message(),
                "stored data failed an integrity check"
            )
        }
        (_, Some(cause)) => tracing::warn!(reason, cause, "call failed"),
        (_, None) => {}
    }
}

/// A per-item error inside a batch response.
pub fn item_error(error: &VaultError) -> crate::pb::ItemError {
    crate::pb::ItemError {
        code: code_of(error) as i32,
        message: error.message().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_maps_to_the_code_it_names() {
        for reason in Reason::ALL {
            let code = code_of(&VaultError::new(reason, "m"));
            let internal = reason == Reason::Internal;
            assert_eq!(code == Code::Internal, internal, "{reason:?}");
        }
    }

    /// INTERNAL cannot be provoked through the API (it marks a fault of the
    /// vault itself): what a client sees of one is checked here.
    #[test]
    fn an_internal_fault_reaches_the_client_as_internal_without_its_cause() {
        let cause = "keyring generation 7 missing from /var/lib/pii-vault";
        let status = Status::from(VaultError::internal(cause));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, "INTERNAL");
        assert_eq!(details.error_info().unwrap().domain, ERROR_DOMAIN);
        assert!(details.retry_info().is_none());
        assert!(details.bad_request().is_none());
        let sent = [status.message().as_bytes(), status.details()].concat();
        assert!(
            !sent.windows(7).any(|window| window == b"keyring"),
            "{status:?}"
        );
    }

    #[test]
    fn a_field_at_fault_is_a_bad_request_violation() {
        let status = Status::from(VaultError::invalid_field("customer_id", "too long"));
        let details = status.get_error_details();
        let violations = &details.bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, "customer_id");
        assert_eq!(details.error_info().unwrap().reason, "INVALID_ARGUMENT");
        assert_eq!(details.error_info().unwrap().domain, ERROR_DOMAIN);
    }
}
