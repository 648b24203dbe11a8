//! gRPC calls with message bodies as they are, both ways, so a test or a fuzz
//! target can put bytes on the wire that the generated client cannot send.
//! Shared by the hostile-input tests and the fuzz crate's `grpc` target.

use std::time::Duration;

use prost::bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::Status;

/// Calls `path` (e.g. "/piivault.v1.VaultService/GetFields") with `body` as
/// the request message, authenticated with `api_key`; returns the response
/// message's bytes.
pub async fn call_raw(
    channel: Channel,
    path: &'static str,
    api_key: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|error| Status::unavailable(error.to_string()))?;
    let mut request = tonic::Request::new(body);
    let bearer = format!("Bearer {api_key}")
        .parse()
        .map_err(|_| Status::invalid_argument("the API key is not ASCII"))?;
    request.metadata_mut().insert("authorization", bearer);
    request.set_timeout(Duration::from_secs(30));
    grpc.unary(request, PathAndQuery::from_static(path), RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

#[derive(Clone, Copy, Default)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut body = vec![0u8; src.remaining()];
        src.copy_to_slice(&mut body);
        Ok(Some(body))
    }
}
