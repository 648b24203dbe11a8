//! The frame of every handler: a request id, authentication, a tracing span with
//! ids (never values), and one log line with the outcome.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::policy::Policy;
use crate::vault::{Caller, VaultError};

use super::auth::authenticate;
use super::metrics::Metrics;

/// Runs one call: authenticates, then hands the caller and the request to `handler`.
pub async fn handle<Req, Resp, F, Fut>(
    policy: &Policy,
    metrics: &Metrics,
    method: &'static str,
    request: Request<Req>,
    handler: F,
) -> Result<Response<Resp>, Status>
where
    F: FnOnce(Caller, Req) -> Fut,
    Fut: Future<Output = Result<Resp, VaultError>>,
{
    let request_id = request_id(&request);
    let span = tracing::info_span!(
        "call",
        method,
        request_id = %request_id,
        principal = tracing::field::Empty
    );
    let started = Instant::now();
    let outcome = async {
        let principal = authenticate(policy, &request)?;
        tracing::Span::current().record("principal", principal.name());
        let caller = Caller {
            principal: Arc::clone(&principal),
            request_id: request_id.clone(),
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
    let mut response = outcome.map(Response::new)?;
    if let Ok(value) = request_id.parse() {
        response.metadata_mut().insert("x-request-id", value);
    }
    Ok(response)
}

/// The client's `x-request-id` when it is a short printable token, else a new one.
fn request_id<T>(request: &Request<T>) -> String {
    let given = request
        .metadata()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        });
    match given {
        Some(id) => id.to_owned(),
        None => crate::vault::tokens::random_id("req"),
    }
}
