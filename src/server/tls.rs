//! TLS terminated by the vault itself, so that the certificate, its key and
//! the client CA can be replaced while it serves: each new connection's
//! handshake takes the configuration in force when it starts, whole (never
//! part of the old files and part of the new); connections already open keep
//! the one they began with.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

use super::TlsFiles;
use crate::crypto::{read_private_file, KeyFileAccess};
use crate::vault::{ReloadTrigger, TlsReload, Vault};

/// The protocol gRPC runs on.
const ALPN_H2: &[u8] = b"h2";

/// The TLS files, the configuration built from them, and what was last read.
pub struct ServerTls {
    files: TlsFiles,
    key_access: KeyFileAccess,
    config: RwLock<Arc<ServerConfig>>,
    /// sha256 over the files' contents as last read (`None`: unreadable).
    last_seen: Mutex<Option<[u8; 32]>>,
}

/// The files' contents, read together.
struct TlsText {
    cert: Vec<u8>,
    key: zeroize::Zeroizing<Vec<u8>>,
    client_ca: Option<Vec<u8>>,
}

impl ServerTls {
    /// Reads the files; at start, files it cannot use are an error.
    pub fn load(files: &TlsFiles, key_access: KeyFileAccess) -> anyhow::Result<ServerTls> {
        let text = TlsText::read(files, key_access)?;
        let (config, _) = server_config(&text)?;
        Ok(ServerTls {
            files: files.clone(),
            key_access,
            config: RwLock::new(Arc::new(config)),
            last_seen: Mutex::new(Some(text.sha256())),
        })
    }

    /// An acceptor for one new connection, with the configuration in force.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .config
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        TlsAcceptor::from(Arc::clone(&config))
    }

    /// Re-reads the files when signalled, or when their content changed since
    /// the last look; puts them in force, or refuses them (the configuration
    /// in force stays). Logged, counted and audited; never key material.
    pub async fn reload(&self, vault: &Vault, trigger: ReloadTrigger) {
        let text = TlsText::read(&self.files, self.key_access);
        if !self.note_seen(&text, trigger) {
            return;
        }
        let reload = match text {
            Err(error) => refused(TlsReload::Unreadable, &error, trigger),
            Ok(text) => match self.put_in_force(&text) {
                Ok(certificate) => reloaded(certificate, trigger),
                Err(error) => refused(TlsReload::Invalid, &error, trigger),
            },
        };
        vault.record_tls_reload(reload, trigger).await;
    }

    /// Records what was read; whether it is to be reloaded (signalled, or
    /// changed since the last look).
    fn note_seen(&self, text: &anyhow::Result<TlsText>, trigger: ReloadTrigger) -> bool {
        let seen = text.as_ref().ok().map(TlsText::sha256);
        let mut last_seen = self.lock_last_seen();
        let changed = seen != *last_seen;
        *last_seen = seen;
        changed || trigger == ReloadTrigger::Signal
    }

    /// Swaps the whole configuration in: the next handshake takes it.
    fn put_in_force(&self, text: &TlsText) -> anyhow::Result<CertificateSummary> {
        let (config, certificate) = server_config(text)?;
        *self
            .config
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(config);
        Ok(certificate)
    }

    fn lock_last_seen(&self) -> std::sync::MutexGuard<'_, Option<[u8; 32]>> {
        self.last_seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl TlsText {
    fn read(files: &TlsFiles, key_access: KeyFileAccess) -> anyhow::Result<TlsText> {
        Ok(TlsText {
            cert: read(&files.cert)?,
            key: read_private_file(&files.key, key_access)?,
            client_ca: files.client_ca.as_deref().map(read).transpose()?,
        })
    }

    /// Compared only in memory, to notice a change; never shown.
    fn sha256(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        for part in [&self.cert[..], &self.key[..]] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        if let Some(client_ca) = &self.client_ca {
            hash.update(client_ca);
        }
        hash.finalize().into()
    }
}

fn reloaded(certificate: CertificateSummary, trigger: ReloadTrigger) -> TlsReload {
    tracing::info!(
        trigger = trigger.name(),
        fingerprint = %certificate.fingerprint,
        not_after = %certificate.not_after,
        "TLS certificate reloaded"
    );
    TlsReload::InForce {
        fingerprint: certificate.fingerprint,
        not_after: certificate.not_after,
    }
}

/// The error names the file and what is wrong with it, never its bytes.
fn refused(refusal: TlsReload, error: &anyhow::Error, trigger: ReloadTrigger) -> TlsReload {
    tracing::error!(
        trigger = trigger.name(),
        error = format!("{error:#}"),
        "new TLS files refused; the TLS configuration in force stays"
    );
    refusal
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// What the audit and the log say of a certificate put in force.
struct CertificateSummary {
    /// sha256 of the leaf certificate (DER), in hex.
    fingerprint: String,
    /// RFC 3339.
    not_after: String,
}

/// tonic's TLS settings (rustls' default versions and ciphers, h2 offered),
/// from the files' contents; refuses a key that is not the certificate's.
fn server_config(text: &TlsText) -> anyhow::Result<(ServerConfig, CertificateSummary)> {
    let chain = CertificateDer::pem_slice_iter(&text.cert)
        .collect::<Result<Vec<_>, _>>()
        .context("the TLS certificate is not PEM")?;
    let leaf = chain
        .first()
        .context("the TLS certificate file holds no certificate")?;
    let summary = summarize(leaf)?;
    // The parse error could quote the key: it is not shown.
    let key = PrivateKeyDer::from_pem_slice(&text.key)
        .map_err(|_| anyhow::anyhow!("the TLS key is not a PEM private key"))?;
    let builder = ServerConfig::builder();
    let builder = match &text.client_ca {
        None => builder.with_no_client_auth(),
        Some(client_ca) => builder.with_client_cert_verifier(client_verifier(client_ca)?),
    };
    // Fails when the key is not the certificate's (a pair half written).
    let mut config = builder
        .with_single_cert(chain, key)
        .context("the TLS key does not match the certificate")?;
    config.alpn_protocols.push(ALPN_H2.into());
    Ok((config, summary))
}

/// With a client CA, a client without a certificate it signed is refused.
fn client_verifier(
    client_ca: &[u8],
) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(client_ca) {
        let certificate = certificate.context("the TLS client CA is not PEM")?;
        roots
            .add(certificate)
            .context("the TLS client CA holds an invalid certificate")?;
    }
    WebPkiClientVerifier::builder(roots.into())
        .build()
        .context("the TLS client CA holds no certificate")
}

fn summarize(leaf: &CertificateDer<'_>) -> anyhow::Result<CertificateSummary> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, certificate) = X509Certificate::from_der(leaf)
        .map_err(|_| anyhow::anyhow!("the TLS certificate is not a valid X.509 certificate"))?;
    let not_after = certificate
        .validity()
        .not_after
        .to_datetime()
        .format(&time::format_description::well_known::Rfc3339)
        .context("formatting the TLS certificate's expiry")?;
    Ok(CertificateSummary {
        fingerprint: crate::vault::hex(&Sha256::digest(leaf).into()),
        not_after,
    })
}
