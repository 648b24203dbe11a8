//! Tokenize request ids (AIP-155): a retry of a call that did commit gets the
//! first call's tokens instead of new ones. The customer's record remembers
//! each id with a keyed digest of its request (never a value) and the tokens
//! it produced, and goes with the customer's erasure.

use crate::crypto::TokenKey;
use crate::store::{CustomerRecord, RememberedRequest};

use crate::vault::tokenize::ValidItem;
use crate::vault::{Reason, VaultError};

/// How many request ids a customer's record remembers, and how many tokens
/// of theirs in all (the newest id is kept whatever its size); the oldest
/// goes first. Bounds, because the record is rewritten by every change.
pub const REMEMBERED_REQUESTS: usize = 32;
pub const REMEMBERED_TOKENS: usize = 2_000;

/// A Tokenize call's request id and who sent it: a retry must repeat both.
pub(in crate::vault) struct RequestId<'a> {
    id: String,
    principal: &'a str,
}

impl<'a> RequestId<'a> {
    /// `None` for an empty id; a UUID in any case is kept in lower case.
    pub fn parse(id: &str, principal: &'a str) -> Result<Option<Self>, VaultError> {
        if id.is_empty() {
            return Ok(None);
        }
        let is_uuid = id.len() == 36
            && id.char_indices().all(|(at, c)| match at {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_hexdigit(),
            });
        if !is_uuid {
            return Err(VaultError::invalid(
                "request_id: must be a UUID (such as 123e4567-e89b-12d3-a456-426614174000) or empty",
            ));
        }
        Ok(Some(RequestId {
            id: id.to_ascii_lowercase(),
            principal,
        }))
    }

    /// The request as the record remembers it: equal for a retry by the same
    /// principal with the same purpose and items (normalized values, kinds
    /// and formats, in order), different for anything else.
    pub fn digest(
        &self,
        token_key: &TokenKey,
        customer_id: &str,
        purpose: &str,
        items: &[ValidItem],
    ) -> [u8; 32] {
        let head = [self.id.as_str(), self.principal, purpose];
        let items = items.iter().flat_map(|item| {
            [
                item.value.kind().name(),
                item.format.name(),
                item.value.as_str(),
            ]
        });
        token_key.request_digest(customer_id, head.into_iter().chain(items))
    }

    /// The tokens this id produced for the same request; `None` if the record
    /// does not remember the id. The id of another request is refused.
    pub fn remembered(
        &self,
        record: &CustomerRecord,
        digest: &[u8; 32],
    ) -> Result<Option<Vec<String>>, VaultError> {
        let Some(earlier) = record.requests.iter().find(|r| r.request_id == self.id) else {
            return Ok(None);
        };
        if earlier.digest != *digest {
            let refusal = VaultError::new(
                Reason::RequestIdReused,
                "request_id: already used for a different Tokenize request of this customer \
                 (another principal, purpose or items); a retry must repeat the request, \
                 a new request needs a new request_id",
            );
            return Err(refusal.in_field("request_id"));
        }
        Ok(Some(earlier.tokens.clone()))
    }

    /// Remembers the id with its request's digest and tokens, forgetting the
    /// oldest ids beyond the bounds.
    pub fn remember(&self, record: &mut CustomerRecord, digest: [u8; 32], tokens: &[String]) {
        record.requests.push(RememberedRequest {
            request_id: self.id.clone(),
            digest,
            tokens: tokens.to_vec(),
        });
        let excess = record.requests.len().saturating_sub(REMEMBERED_REQUESTS);
        record.requests.drain(..excess);
        let mut remembered_tokens: usize = record.requests.iter().map(|r| r.tokens.len()).sum();
        while remembered_tokens > REMEMBERED_TOKENS && record.requests.len() > 1 {
            remembered_tokens -= record.requests.remove(0).tokens.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_empty_id_or_a_uuid_is_accepted() {
        assert!(RequestId::parse("", "p").unwrap().is_none());
        let id = RequestId::parse("123E4567-e89b-12d3-a456-426614174000", "p")
            .unwrap()
            .unwrap();
        assert_eq!(id.id, "123e4567-e89b-12d3-a456-426614174000");
        for bad in [
            "123e4567e89b12d3a456426614174000",
            "123e4567-e89b-12d3-a456-42661417400g",
            "123e4567-e89b-12d3-a456-4266141740001",
            "{123e4567-e89b-12d3-a456-426614174000}",
            "123e4567-e89b-12d3-a456_426614174000",
        ] {
            let error = RequestId::parse(bad, "p").err().unwrap();
            assert!(error.to_string().contains("request_id"), "{error}");
        }
    }
}
