//! `serve`'s reloading: on SIGHUP, and whenever the content of the policy
//! file or of the TLS files changes (polled, since Kubernetes updates a
//! mounted ConfigMap or Secret by swapping a symlink, which file events on
//! the old target miss), the vault re-reads them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::policy::PolicyText;
use crate::server::ServerTls;
use crate::vault::{ReloadTrigger, Vault};

/// The policy file, what was last seen in it (its sha256, or `None` when it
/// could not be read), and the SIGHUP handler.
pub struct PolicyWatch {
    path: PathBuf,
    last_seen: Option<String>,
    hangup: Hangup,
}

impl PolicyWatch {
    /// Call before the vault loads the policy: a change made in between is
    /// then seen as a change (and reloaded once more), never missed; and a
    /// SIGHUP from then on no longer ends the process (its default action).
    pub fn start(path: PathBuf) -> PolicyWatch {
        let last_seen = PolicyText::read(&path).ok().map(|read| read.sha256);
        PolicyWatch {
            path,
            last_seen,
            hangup: hangup_signal(),
        }
    }

    /// Reloads the policy and the TLS files (when served) on SIGHUP, and
    /// every `every` those whose content changed, for as long as the vault
    /// serves.
    pub async fn run(mut self, vault: Arc<Vault>, tls: Option<Arc<ServerTls>>, every: Duration) {
        // The first look is one interval on: the vault has just read the file.
        let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                Some(()) = recv(&mut self.hangup) => ReloadTrigger::Signal,
                _ = poll.tick() => ReloadTrigger::FileChange,
            };
            self.check(&vault, trigger).await;
            if let Some(tls) = &tls {
                tls.reload(&vault, trigger).await;
            }
        }
    }

    /// Reloads when signalled, or when the content differs from the last seen.
    async fn check(&mut self, vault: &Vault, trigger: ReloadTrigger) {
        let read = PolicyText::read(&self.path);
        let seen = read.as_ref().ok().map(|read| read.sha256.clone());
        if trigger == ReloadTrigger::FileChange && seen == self.last_seen {
            return;
        }
        self.last_seen = seen;
        // Refusals are logged, counted and audited by the vault.
        let _ = vault.reload_policy(read, trigger).await;
    }
}

type Hangup = Option<tokio::signal::unix::Signal>;

fn hangup_signal() -> Hangup {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; the policy file is still polled");
            None
        }
    }
}

/// The next SIGHUP; never, without a handler.
async fn recv(hangup: &mut Hangup) -> Option<()> {
    match hangup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
