//! Who is calling: the bearer API key in the `authorization` metadata, or the
//! client certificate of an mTLS connection, checked against the policy.

use std::sync::Arc;

use tonic::metadata::MetadataMap;
use tonic::Status;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::policy::{Policy, Principal};

/// An API key when the call carries one, else the connection's client certificate.
pub fn authenticate<T>(
    policy: &Policy,
    request: &tonic::Request<T>,
) -> Result<Arc<Principal>, Status> {
    if request.metadata().get("authorization").is_some() {
        return authenticate_api_key(policy, request.metadata());
    }
    match request.peer_certs() {
        Some(chain) if !chain.is_empty() => authenticate_certificate(policy, chain[0].as_ref()),
        _ => Err(Status::unauthenticated(
            "missing credentials: send authorization metadata (Bearer <api key>) or a client certificate",
        )),
    }
}

fn authenticate_api_key(policy: &Policy, metadata: &MetadataMap) -> Result<Arc<Principal>, Status> {
    let header = metadata.get("authorization").ok_or_else(|| {
        Status::unauthenticated("missing authorization metadata (Bearer <api key>)")
    })?;
    let header = header
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization metadata is not valid ASCII"))?;
    let api_key = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| Status::unauthenticated("authorization must be \"Bearer <api key>\""))?
        .trim();
    policy
        .authenticate_api_key(api_key)
        .ok_or_else(|| Status::unauthenticated("unknown API key"))
}

/// Maps the leaf certificate (already verified against the client CA by the
/// TLS layer) to the principal whose `spiffe_id` is one of its URI SANs or whose
/// `cert_subject` is its subject, written `CN=...,O=...` in certificate order.
fn authenticate_certificate(policy: &Policy, der: &[u8]) -> Result<Arc<Principal>, Status> {
    let (_, certificate) = X509Certificate::from_der(der)
        .map_err(|_| Status::unauthenticated("the client certificate cannot be parsed"))?;
    let subject = certificate.subject().to_string().replace(", ", ",");
    let uri_sans: Vec<String> = certificate
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|extension| {
            extension
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some((*uri).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    policy
        .authenticate_certificate(Some(&subject), &uri_sans)
        .ok_or_else(|| {
            Status::unauthenticated("no principal of the policy matches this client certificate")
        })
}
