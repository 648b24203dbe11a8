//! The frame of the server's own tower layers (request ids, the call limit,
//! deadlines): each says only what it does with one call, in `CallLayer`,
//! and `Framed` makes it a `tower::Layer` whose service is always ready when
//! the service behind it is.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tower::{Layer, Service};

/// The answer to one call, as a layer hands it back.
pub(super) type ResponseFuture<E> =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, E>> + Send + 'static>>;

/// What a layer does with one call: it may change the request, answer it
/// itself, or hand it to `inner` and change or watch the answer.
pub(super) trait CallLayer: Clone {
    fn call<S>(&self, inner: &mut S, request: http::Request<Body>) -> ResponseFuture<S::Error>
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>>,
        S::Future: Send + 'static,
        S::Error: Send + 'static;
}

/// A `CallLayer` as a `tower::Layer`.
#[derive(Clone)]
pub(super) struct Framed<L>(pub L);

impl<L: CallLayer, S> Layer<S> for Framed<L> {
    type Service = FramedService<L, S>;

    fn layer(&self, inner: S) -> FramedService<L, S> {
        FramedService {
            layer: self.0.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub(super) struct FramedService<L, S> {
    layer: L,
    inner: S,
}

impl<L, S> Service<http::Request<Body>> for FramedService<L, S>
where
    L: CallLayer,
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
        self.layer.call(&mut self.inner, request)
    }
}
