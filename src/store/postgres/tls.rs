//! TLS to PostgreSQL through rustls with the ring provider. The URL's
//! `sslmode` decides whether TLS is used (`disable`: never; `prefer`: when the
//! server offers it; `require`: always); whenever it is, the server's
//! certificate is verified against the given CA bundle or the system's roots,
//! and its name checked against the host connected to.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

/// The connector for `config`; `ca_file` (PEM) replaces the system's roots.
pub fn connector(
    config: &tokio_postgres::Config,
    ca_file: Option<&Path>,
) -> Result<MakeRustlsConnect, StoreError> {
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
    let tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| tls_error(format!("TLS configuration: {error}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(tls))
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
    StoreError::Engine(format!("TLS to PostgreSQL: {message}"))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn config(url: &str) -> tokio_postgres::Config {
        tokio_postgres::Config::from_str(url).expect("a valid URL")
    }

    fn refusal(url: &str, ca_file: Option<&Path>) -> String {
        match connector(&config(url), ca_file) {
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
        assert!(connector(&config("host=db sslmode=disable"), None).is_ok());
    }
}
