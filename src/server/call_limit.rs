//! The limit on calls served at once. A call past it is refused at once
//! (RESOURCE_EXHAUSTED, retryable) rather than queued, so that a brown-out
//! sheds load instead of timing out every caller. Health checks are exempt:
//! a probe must see how the vault is, not wait behind the calls that load it,
//! or an overload would fail every replica's probes at once.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::codegen::http;
use tower::Service;

use super::call_layer::{CallLayer, ResponseFuture};
use super::metrics::Metrics;
use crate::vault::{Reason, VaultError};

const HEALTH_PATH: &str = "/grpc.health.v1.Health/";

#[derive(Clone)]
pub(super) struct CallLimitLayer {
    permits: Arc<Semaphore>,
    limit: usize,
    metrics: Arc<Metrics>,
}

impl CallLimitLayer {
    pub(super) fn new(limit: usize, metrics: Arc<Metrics>) -> CallLimitLayer {
        CallLimitLayer {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            metrics,
        }
    }
}

impl CallLayer for CallLimitLayer {
    fn call<S>(&self, inner: &mut S, request: http::Request<Body>) -> ResponseFuture<S::Error>
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>>,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        if request.uri().path().starts_with(HEALTH_PATH) {
            return Box::pin(inner.call(request));
        }
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            self.metrics.count_shed_call();
            let refusal = VaultError::new(
                Reason::Overloaded,
                format!(
                    "the vault is serving its limit of {} calls at once; retry with backoff",
                    self.limit
                ),
            );
            let status = tonic::Status::from(refusal.with("limit", self.limit.to_string()));
            return Box::pin(std::future::ready(Ok(status.into_http())));
        };
        let answer = inner.call(request);
        Box::pin(async move {
            let response = answer.await;
            drop(permit);
            response
        })
    }
}
