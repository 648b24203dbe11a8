//! Call deadlines: the client's `grpc-timeout` or the server's own limit,
//! whichever is shorter. A call past it is dropped (the work it was waiting
//! on included: a store job whose caller has gone is skipped) and answered
//! DEADLINE_EXCEEDED, counted and logged with its method only.

use std::sync::Arc;
use std::time::Duration;

use tonic::body::Body;
use tonic::codegen::http;
use tower::Service;

use super::call_layer::{CallLayer, ResponseFuture};
use super::metrics::Metrics;
use crate::vault::{Reason, VaultError};

#[derive(Clone)]
pub(super) struct DeadlineLayer {
    limit: Duration,
    metrics: Arc<Metrics>,
}

impl DeadlineLayer {
    pub(super) fn new(limit: Duration, metrics: Arc<Metrics>) -> DeadlineLayer {
        DeadlineLayer { limit, metrics }
    }
}

impl CallLayer for DeadlineLayer {
    fn call<S>(&self, inner: &mut S, request: http::Request<Body>) -> ResponseFuture<S::Error>
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>>,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        let limit =
            client_timeout(request.headers()).map_or(self.limit, |asked| asked.min(self.limit));
        let method = loggable_path(request.uri().path());
        let metrics = Arc::clone(&self.metrics);
        let answer = inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(limit, answer).await {
                Ok(response) => response,
                Err(_) => {
                    metrics.count_timed_out_call();
                    let deadline_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
                    tracing::warn!(%method, deadline_ms, "call abandoned at its deadline");
                    let status = tonic::Status::from(VaultError::new(
                        Reason::DeadlineExceeded,
                        format!(
                            "the call did not finish within its deadline of {} ms",
                            limit.as_millis()
                        ),
                    ));
                    Ok(status.into_http())
                }
            }
        })
    }
}

/// The request path when it can only be a method name: a client chooses it,
/// so anything else (or anything shaped like personal data) is not logged.
fn loggable_path(path: &str) -> String {
    let plain = path.len() <= 128
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'.' || b == b'_');
    if plain && crate::vault::personal_shape(path).is_none() {
        path.to_owned()
    } else {
        "(unnamed)".to_owned()
    }
}

/// The `grpc-timeout` header: at most 8 digits and a unit (H, M, S, m, u, n).
fn client_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let text = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout_of(header: &str) -> Option<Duration> {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", header.parse().unwrap());
        client_timeout(&headers)
    }

    #[test]
    fn grpc_timeouts_parse_every_unit_and_refuse_malformed_ones() {
        assert_eq!(timeout_of("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout_of("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout_of("10S"), Some(Duration::from_secs(10)));
        assert_eq!(timeout_of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(timeout_of("7u"), Some(Duration::from_micros(7)));
        assert_eq!(timeout_of("1n"), Some(Duration::from_nanos(1)));
        for bad in ["", "S", "123456789S", "10x", "-1S", "1.5S", "10"] {
            assert_eq!(timeout_of(bad), None, "{bad:?}");
        }
        assert_eq!(client_timeout(&http::HeaderMap::new()), None);
    }
}
