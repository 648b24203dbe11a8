//! TLS to PostgreSQL through rustls with the ring provider. The URL's
//! `sslmode` decides whether TLS is used (`disable`: never; `prefer`: when the
//! server offers it; `require`, `verify-ca`, `verify-full`: always); whenever
//! it is, the server's certificate is verified against the given CA bundle or
//! the system's roots, and, except with `verify-ca`, its name checked against
//! the host connected to. (libpq's `require` checks nothing unless a root
//! certificate is configured; here it means `verify-full`, the safe reading.)
//! `disable` and `prefer` (which an on-path attacker downgrades by answering
//! that the server has no TLS) are refused unless the operator allows clear
//! text on purpose.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

/// What is checked of the server's certificate besides its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameCheck {
    /// The certificate must name the host connected to (`require`,
    /// `verify-full`).
    HostName,
    /// Any name will do (`verify-ca`): for a server reached by an address its
    /// certificate does not name, from a CA that issues only to your servers.
    None,
}

/// Parses a database URL as libpq does. tokio-postgres reads `sslmode`
/// disable, prefer and require only: libpq's `verify-ca` and `verify-full`
/// are read here and handed on as `require`, with the check they ask for.
pub fn parse_url(url: &str) -> Result<(tokio_postgres::Config, NameCheck), StoreError> {
    let name_check = if url.contains("sslmode=verify-ca") {
        NameCheck::None
    } else {
        NameCheck::HostName
    };
    let understood = url
        .replace("sslmode=verify-ca", "sslmode=require")
        .replace("sslmode=verify-full", "sslmode=require");
    let config = tokio_postgres::Config::from_str(&understood)
        .map_err(|_| StoreError::engine_refused("the database URL cannot be parsed"))?;
    Ok((config, name_check))
}

/// What to do when the server's certificate does not name the host in the
/// URL, added to the refusal.
pub const NAME_MISMATCH_FIX: &str = "The certificate does not name the host in the database \
    URL: connect by a name the certificate holds (e.g. localhost for a certificate made for \
    localhost), or, if its CA issues certificates only to your database servers, put \
    sslmode=verify-ca in the URL (with --database-ca naming that CA); sslmode=disable with \
    --database-allow-plaintext only on purpose";

/// The connector for `config`; `ca_file` (PEM) replaces the system's roots.
/// Unless `allow_plaintext`, only an sslmode that always uses TLS is
/// accepted.
pub fn connector(
    config: &tokio_postgres::Config,
    name_check: NameCheck,
    ca_file: Option<&Path>,
    allow_plaintext: bool,
) -> Result<MakeRustlsConnect, StoreError> {
    let clear_text_mode = match config.get_ssl_mode() {
        SslMode::Disable => Some("disable"),
        SslMode::Prefer => Some("prefer"),
        _ => None,
    };
    if let (Some(mode), false) = (clear_text_mode, allow_plaintext) {
        return Err(tls_error(format!(
            "the database URL says sslmode={mode} (libpq's default is prefer), which lets the \
             password, ids and tokens cross the network in clear{}: put sslmode=require in the \
             URL, or pass --database-allow-plaintext to accept clear text on purpose",
            if mode == "prefer" {
                " whenever an on-path attacker answers that the server has no TLS"
            } else {
                ""
            }
        )));
    }
    let roots = match (config.get_ssl_mode(), ca_file) {
        (SslMode::Disable, Some(_)) => {
            return Err(tls_error(
                "a database CA was given but the URL says sslmode=disable",
            ))
        }
        (SslMode::Disable, None) => RootCertStore::empty(),
        (_, Some(ca_file)) => ca_roots(ca_file)?,
        (SslMode::Require, None) => system_roots(true)?,
        (_, None) => system_roots(false)?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| tls_error(format!("TLS configuration: {error}")))?;
    let tls = match name_check {
        NameCheck::HostName => builder.with_root_certificates(roots),
        NameCheck::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly {
                roots,
                algorithms: provider.signature_verification_algorithms,
            })),
    }
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(tls))
}

/// `verify-ca`: the server's chain must lead to a trusted root, whatever
/// name its certificate holds. The handshake signatures are checked as
/// always, so the server must hold the certificate's key.
#[derive(Debug)]
struct ChainOnly {
    roots: RootCertStore,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let certificate = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &certificate,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, certificate, signature, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, certificate, signature, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn ca_roots(ca_file: &Path) -> Result<RootCertStore, StoreError> {
    let bad_file = |error: &dyn std::fmt::Display| {
        tls_error(format!("CA file {}: {error}", ca_file.display()))
    };
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca_file).map_err(|e| bad_file(&e))? {
        roots
            .add(certificate.map_err(|e| bad_file(&e))?)
            .map_err(|e| bad_file(&e))?;
    }
    if roots.is_empty() {
        return Err(bad_file(&"holds no PEM certificate"));
    }
    Ok(roots)
}

/// The platform's trusted roots; with `required`, having none is an error
/// (`prefer` may still reach a server that offers no TLS).
fn system_roots(required: bool) -> Result<RootCertStore, StoreError> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if roots.is_empty() {
        let problem = "no trusted CA certificate found on this system to verify the server's certificate: give the database's CA (--database-ca)";
        if required {
            return Err(tls_error(problem));
        }
        tracing::warn!("TLS to PostgreSQL: {problem}");
    }
    Ok(roots)
}

fn tls_error(message: impl std::fmt::Display) -> StoreError {
    StoreError::engine_refused(format!("TLS to PostgreSQL: {message}"))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn config(url: &str) -> tokio_postgres::Config {
        tokio_postgres::Config::from_str(url).expect("a valid URL")
    }

    fn refusal(url: &str, ca_file: Option<&Path>) -> String {
        match connector(&config(url), NameCheck::HostName, ca_file, true) {
            Ok(_) => panic!("accepted {url} with {ca_file:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn a_ca_with_sslmode_disable_is_refused() {
        let ca = tempfile::NamedTempFile::new().expect("temp file");
        let said = refusal("host=db sslmode=disable", Some(ca.path()));
        assert!(said.contains("sslmode=disable"), "{said}");
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let ca = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(ca.path(), "not a certificate\n").expect("write");
        let said = refusal("host=db sslmode=require", Some(ca.path()));
        assert!(
            said.contains("TLS") && said.contains("no PEM certificate"),
            "{said}"
        );
    }

    #[test]
    fn a_missing_ca_file_is_refused_naming_it() {
        let said = refusal(
            "host=db sslmode=require",
            Some(Path::new("/nonexistent/ca.pem")),
        );
        assert!(said.contains("/nonexistent/ca.pem"), "{said}");
    }

    #[test]
    fn sslmode_disable_needs_no_roots() {
        assert!(connector(
            &config("host=db sslmode=disable"),
            NameCheck::HostName,
            None,
            true
        )
        .is_ok());
    }

    #[test]
    fn clear_text_modes_are_refused_unless_allowed_on_purpose() {
        // libpq's default, with no sslmode, is prefer.
        for (url, mode) in [
            ("host=db sslmode=disable", "disable"),
            ("host=db sslmode=prefer", "prefer"),
            ("host=db", "prefer"),
            ("postgres://vault@db/vault?sslmode=prefer", "prefer"),
        ] {
            let said = match connector(&config(url), NameCheck::HostName, None, false) {
                Ok(_) => panic!("{url} accepted"),
                Err(error) => error.to_string(),
            };
            assert!(
                said.contains(&format!("sslmode={mode}"))
                    && said.contains("sslmode=require")
                    && said.contains("--database-allow-plaintext"),
                "{url}: {said}"
            );
            assert!(
                connector(&config(url), NameCheck::HostName, None, true).is_ok(),
                "{url}"
            );
        }
        let ca = tempfile::NamedTempFile::new().expect("temp file");
        let certified = rcgen::generate_simple_self_signed(vec!["db".into()]).expect("a CA");
        std::fs::write(ca.path(), certified.cert.pem()).expect("write");
        assert!(connector(
            &config("host=db sslmode=require"),
            NameCheck::HostName,
            Some(ca.path()),
            false
        )
        .is_ok());
    }

    #[test]
    fn libpq_verify_modes_are_read_as_require_with_their_name_check() {
        for (url, name_check) in [
            ("host=db sslmode=verify-full", NameCheck::HostName),
            ("host=db sslmode=verify-ca", NameCheck::None),
            (
                "postgres://vault@db/vault?sslmode=verify-ca",
                NameCheck::None,
            ),
            (
                "postgres://vault@db/vault?sslmode=require",
                NameCheck::HostName,
            ),
            ("host=db", NameCheck::HostName),
        ] {
            let (config, read) = parse_url(url).expect("a URL libpq accepts");
            assert_eq!(read, name_check, "{url}");
            if url.contains("sslmode") {
                assert_eq!(config.get_ssl_mode(), SslMode::Require, "{url}");
            }
        }
        assert!(parse_url("host=db sslmode=verify-everything").is_err());
    }
}
