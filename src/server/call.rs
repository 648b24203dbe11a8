//! The frame of every handler: a request id of the vault's own, authentication,
//! a tracing span with ids (never values), and one log line with the outcome.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::policy::Policy;
use crate::vault::{Caller, VaultError};

use super::auth::authenticate;
use super::metrics::Metrics;
use super::request_id::RequestId;

/// Runs one call: authenticates, then hands the caller and the request to `handler`.
pub async fn handle<Req, Resp, F, Fut>(
    policy: Arc<Policy>,
    metrics: &Metrics,
    method: &'static str,
    request: Request<Req>,
    handler: F,
) -> Result<Response<Resp>, Status>
where
    F: FnOnce(Caller, Req) -> Fut,
    Fut: Future<Output = Result<Resp, VaultError>>,
{
    // The vault's own id (made by `RequestIdLayer`, which also puts it in
    // the answer) goes into the audit log and the logs; the client's, if
    // usable, only into the logs, to match theirs.
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map_or_else(|| crate::vault::tokens::random_id("req"), |id| id.0.clone());
    let client_request_id = client_request_id(&request).unwrap_or_default();
    let span = tracing::info_span!(
        "call",
        method,
        request_id = %request_id,
        client_request_id,
        principal = tracing::field::Empty
    );
    let started = Instant::now();
    let outcome = async {
        let principal = authenticate(&policy, &request).map_err(Status::from)?;
        tracing::Span::current().record("principal", principal.name());
        let caller = Caller {
            principal: Arc::clone(&principal),
            policy,
            request_id: request_id.clone(),
            source: request
                .remote_addr()
                .map(|addr| super::connections::source_of(addr.ip())),
        };
        handler(caller, request.into_inner())
            .await
            .map_err(Status::from)
    }
    .instrument(span.clone())
    .await;
    let elapsed = started.elapsed();
    let code = outcome
        .as_ref()
        .map_or_else(|status| status.code(), |_| tonic::Code::Ok);
    metrics.observe_call(method, code, elapsed);
    let elapsed_us = elapsed.as_micros() as u64;
    span.in_scope(|| match &outcome {
        Ok(_) => tracing::info!(code = "OK", elapsed_us, "call finished"),
        Err(status) => {
            tracing::info!(code = ?status.code(), elapsed_us, "call refused")
        }
    });
    outcome.map(Response::new)
}

/// The client's `x-request-id` when it is a short token of `A-Z a-z 0-9 - _ .
/// :` holding no number shaped like personal data (the customer id rule);
/// anything else is not logged at all.
fn client_request_id<T>(request: &Request<T>) -> Option<&str> {
    request
        .metadata()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
                && crate::vault::personal_shape(id).is_none()
        })
}
