//! The vault's own id of each call, made before anything else can answer it,
//! so that every answer carries it in `x-request-id`: refusals of the
//! authentication, load-shedding and deadline layers included.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tower::{Layer, Service};

/// The id of the call a request belongs to, in the request's extensions.
#[derive(Clone, Debug)]
pub(super) struct RequestId(pub(super) String);

#[derive(Clone, Default)]
pub(super) struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIds<S>;

    fn layer(&self, inner: S) -> RequestIds<S> {
        RequestIds { inner }
    }
}

#[derive(Clone)]
pub(super) struct RequestIds<S> {
    inner: S,
}

type ResponseFuture<E> =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, E>> + Send + 'static>>;

impl<S> Service<http::Request<Body>> for RequestIds<S>
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

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let id = crate::vault::tokens::random_id("req");
        let header = http::HeaderValue::from_str(&id).ok();
        request.extensions_mut().insert(RequestId(id));
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            if let Some(header) = header {
                response.headers_mut().insert("x-request-id", header);
            }
            Ok(response)
        })
    }
}
