//! The limit on calls served at once. A call past it is refused at once
//! (RESOURCE_EXHAUSTED, retryable) rather than queued, so that a brown-out
//! sheds load instead of timing out every caller. Health checks are exempt:
//! a probe must see how the vault is, not wait behind the calls that load it,
//! or an overload would fail every replica's probes at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::codegen::http;
use tower::{Layer, Service};

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

impl<S> Layer<S> for CallLimitLayer {
    type Service = CallLimit<S>;

    fn layer(&self, inner: S) -> CallLimit<S> {
        CallLimit {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub(super) struct CallLimit<S> {
    inner: S,
    layer: CallLimitLayer,
}

type ResponseFuture<E> =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, E>> + Send + 'static>>;

impl<S> Service<http::Request<Body>> for CallLimit<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path().starts_with(HEALTH_PATH) {
            return Box::pin(self.inner.call(request));
        }
        let Ok(permit) = Arc::clone(&self.layer.permits).try_acquire_owned() else {
            self.layer.metrics.count_shed_call();
            let refusal = VaultError::new(
                Reason::Overloaded,
                format!(
                    "the vault is serving its limit of {} calls at once; retry with backoff",
                    self.layer.limit
                ),
            );
            let status = tonic::Status::from(refusal.with("limit", self.layer.limit.to_string()));
            return Box::pin(std::future::ready(Ok(status.into_http())));
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await;
            drop(permit);
            response
        })
    }
}
