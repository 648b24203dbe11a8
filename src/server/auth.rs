//! Who is calling: the bearer API key in the `authorization` metadata, or the
//! client certificate of an mTLS connection, checked against the policy.

use std::sync::Arc;

use tonic::metadata::MetadataMap;
use x509_parser::asn1_rs::{Any, Tag};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate, X509Name};

use crate::policy::{Attribute, AttributeType, DistinguishedName, Policy, Principal};
use crate::vault::{Reason, VaultError};

/// An API key when the call carries one, else the connection's client certificate.
pub fn authenticate<T>(
    policy: &Policy,
    request: &tonic::Request<T>,
) -> Result<Arc<Principal>, VaultError> {
    if request.metadata().get("authorization").is_some() {
        return authenticate_api_key(policy, request.metadata());
    }
    match request.peer_certs() {
        Some(chain) if !chain.is_empty() => authenticate_certificate(policy, chain[0].as_ref()),
        _ => Err(VaultError::new(
            Reason::CredentialsMissing,
            "missing credentials: send authorization metadata (Bearer <api key>) or a client certificate",
        )),
    }
}

fn authenticate_api_key(
    policy: &Policy,
    metadata: &MetadataMap,
) -> Result<Arc<Principal>, VaultError> {
    let header = metadata.get("authorization").ok_or_else(|| {
        VaultError::new(
            Reason::CredentialsMissing,
            "missing authorization metadata (Bearer <api key>)",
        )
    })?;
    let header = header.to_str().map_err(|_| {
        VaultError::new(
            Reason::ApiKeyInvalid,
            "authorization metadata is not valid ASCII",
        )
    })?;
    let api_key = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| {
            VaultError::new(
                Reason::ApiKeyInvalid,
                "authorization must be \"Bearer <api key>\"",
            )
        })?
        .trim();
    policy
        .authenticate_api_key(api_key)
        .ok_or_else(|| VaultError::new(Reason::ApiKeyInvalid, "unknown API key"))
}

/// Maps the leaf certificate (already verified against the client CA by the
/// TLS layer) to the principal whose `spiffe_id` is its one URI SAN or whose
/// `cert_subject` is its subject, compared as names (attribute types and
/// values), never as rendered text.
fn authenticate_certificate(policy: &Policy, der: &[u8]) -> Result<Arc<Principal>, VaultError> {
    let (_, certificate) = X509Certificate::from_der(der).map_err(|_| {
        VaultError::new(
            Reason::CertificateUnknown,
            "the client certificate cannot be parsed",
        )
    })?;
    let subject = distinguished_name(certificate.subject());
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
        .authenticate_certificate(subject.as_ref(), &uri_sans)
        .ok_or_else(|| {
            VaultError::new(
                Reason::CertificateUnknown,
                "no principal of the policy matches this client certificate",
            )
        })
}

/// The certificate's subject as a name, or `None` when one of its values is
/// not a string this can read exactly (such a subject matches no cert_subject).
fn distinguished_name(name: &X509Name) -> Option<DistinguishedName> {
    let rdns = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attribute| {
                    Some(Attribute {
                        attribute_type: AttributeType::from_der_content(
                            attribute.attr_type().as_bytes(),
                        ),
                        value: directory_string(attribute.attr_value())?,
                    })
                })
                .collect::<Option<Vec<_>>>()
        })
        .collect::<Option<Vec<_>>>()?;
    Some(DistinguishedName::from_rdns(rdns))
}

/// The text of an attribute value of one of the ASN.1 string types X.509
/// names use. TeletexString is left out: its character set is ambiguous, so
/// two readers could see two different names in it.
fn directory_string(value: &Any) -> Option<String> {
    let bytes = value.data;
    match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => String::from_utf8(bytes.to_vec()).ok(),
        Tag::BmpString if bytes.len() % 2 == 0 => char::decode_utf16(
            bytes
                .chunks_exact(2)
                .map(|unit| u16::from_be_bytes([unit[0], unit[1]])),
        )
        .collect::<Result<String, _>>()
        .ok(),
        Tag::UniversalString if bytes.len() % 4 == 0 => bytes
            .chunks_exact(4)
            .map(|unit| char::from_u32(u32::from_be_bytes([unit[0], unit[1], unit[2], unit[3]])))
            .collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of a DER string of type `tag` holding `content`.
    fn value_of(tag: u8, content: &[u8]) -> Option<String> {
        let mut der = vec![tag, content.len() as u8];
        der.extend_from_slice(content);
        let (_, value) = Any::from_der(&der).expect("test DER parses");
        directory_string(&value)
    }

    #[test]
    fn string_types_of_names_are_read_as_the_text_they_hold() {
        let utf8 = 0x0c;
        let printable = 0x13;
        let ia5 = 0x16;
        let bmp = 0x1e;
        let universal = 0x1c;
        assert_eq!(value_of(utf8, "café".as_bytes()).as_deref(), Some("café"));
        assert_eq!(
            value_of(printable, b"Acme, Inc.").as_deref(),
            Some("Acme, Inc.")
        );
        assert_eq!(
            value_of(ia5, b"a@example.org").as_deref(),
            Some("a@example.org")
        );
        assert_eq!(value_of(0x12, b"0042").as_deref(), Some("0042")); // NumericString
        assert_eq!(value_of(0x1a, b"ops").as_deref(), Some("ops")); // VisibleString
        assert_eq!(value_of(bmp, &[0, b'c', 0, 0xe9]).as_deref(), Some("cé"));
        assert_eq!(
            value_of(universal, &[0, 0, 0, b'c', 0, 0, 0, 0xe9]).as_deref(),
            Some("cé")
        );
    }

    #[test]
    fn values_that_are_not_exactly_readable_text_match_nothing() {
        let teletex = 0x14;
        let bmp = 0x1e;
        let universal = 0x1c;
        let octet_string = 0x04;
        assert_eq!(value_of(teletex, b"payments"), None);
        assert_eq!(value_of(octet_string, b"payments"), None);
        assert_eq!(value_of(bmp, &[0, b'c', 0]), None);
        assert_eq!(value_of(bmp, &[0xd8, 0x00]), None); // a lone surrogate
        assert_eq!(value_of(universal, &[0, 0x11, 0, 0]), None); // past U+10FFFF
        assert_eq!(value_of(0x0c, &[0xff]), None);
    }
}
