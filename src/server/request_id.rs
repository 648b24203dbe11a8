//! The vault's own id of each call, made before anything else can answer it,
//! so that every answer carries it in `x-request-id`: refusals of the
//! authentication, load-shedding and deadline layers included.

use tonic::body::Body;
use tonic::codegen::http;
use tower::Service;

use super::call_layer::{CallLayer, ResponseFuture};

/// The id of the call a request belongs to, in the request's extensions.
#[derive(Clone, Debug)]
pub(super) struct RequestId(pub(super) String);

#[derive(Clone, Default)]
pub(super) struct RequestIdLayer;

impl CallLayer for RequestIdLayer {
    fn call<S>(&self, inner: &mut S, mut request: http::Request<Body>) -> ResponseFuture<S::Error>
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>>,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        let id = crate::vault::tokens::random_id("req");
        let header = http::HeaderValue::from_str(&id).ok();
        request.extensions_mut().insert(RequestId(id));
        let answer = inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            if let Some(header) = header {
                response.headers_mut().insert("x-request-id", header);
            }
            Ok(response)
        })
    }
}
