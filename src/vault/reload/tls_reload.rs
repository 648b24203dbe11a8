//! Recording a reload of the server's TLS files (done by the gRPC edge):
//! counted and audited, naming the certificate put in force by its
//! fingerprint and expiry, never key material.

use crate::vault::Action;
use crate::vault::{ReloadTrigger, Vault};

/// What became of new TLS files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsReload {
    /// In force for new connections.
    InForce {
        /// sha256 of the leaf certificate (DER), in hex.
        fingerprint: String,
        /// The certificate's expiry, RFC 3339.
        not_after: String,
    },
    /// Not valid PEM, or a key that is not the certificate's.
    Invalid,
    /// A file could not be read.
    Unreadable,
}

impl Vault {
    /// Counts the reload and writes its audit event: principal `pii-vault`,
    /// action `ReloadTls`.
    pub async fn record_tls_reload(&self, reload: TlsReload, trigger: ReloadTrigger) {
        let mut audit = self.system_entry(Action::ReloadTls, "", trigger.name());
        match reload {
            TlsReload::InForce {
                fingerprint,
                not_after,
            } => {
                self.stats.tls_reloaded();
                audit.fields.push(format!("fingerprint:{fingerprint}"));
                audit.fields.push(format!("not_after:{not_after}"));
            }
            TlsReload::Invalid => {
                self.stats.tls_reload_refused();
                audit.outcome = "INVALID_ARGUMENT".into();
            }
            TlsReload::Unreadable => {
                self.stats.tls_reload_refused();
                audit.outcome = "UNAVAILABLE".into();
            }
        }
        if let Err(error) = self.append_audit(vec![audit]).await {
            tracing::error!(%error, "could not audit the TLS reload");
        }
    }
}
