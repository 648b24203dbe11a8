//! Who is calling: the bearer API key in the `authorization` metadata, checked
//! against the policy.

use std::sync::Arc;

use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::policy::{Policy, Principal};

pub fn authenticate(policy: &Policy, metadata: &MetadataMap) -> Result<Arc<Principal>, Status> {
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
