//! Putting a new policy file in force while the vault serves (on SIGHUP or
//! when the file changes): all of it at once, for calls that start from then
//! on, or none of it. Every attempt is logged, counted and audited, naming
//! the file's sha256, never its content.

use crate::vault::Action;
use std::sync::Arc;

use crate::policy::{Policy, PolicyError, PolicyText};
use crate::store::AuditEntry;

use crate::vault::Vault;

/// What started a reload: the audit event's request id says which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadTrigger {
    Signal,
    FileChange,
}

impl ReloadTrigger {
    pub fn name(self) -> &'static str {
        match self {
            ReloadTrigger::Signal => "sighup",
            ReloadTrigger::FileChange => "file-change",
        }
    }
}

impl Vault {
    /// Puts the policy in `read` in force, or refuses it (unreadable or
    /// invalid) and keeps the one in force.
    pub async fn reload_policy(
        &self,
        read: Result<PolicyText, PolicyError>,
        trigger: ReloadTrigger,
    ) -> Result<(), PolicyError> {
        let sha256 = read.as_ref().ok().map(|read| read.sha256.clone());
        let mut audit = self.system_entry(Action::ReloadPolicy, "", trigger.name());
        audit
            .fields
            .extend(sha256.iter().map(|sha256| format!("sha256:{sha256}")));
        let result = read.and_then(|read| Policy::parse(&read.text));
        match &result {
            Ok(_) => self.stats.policy_reloaded(),
            Err(error) => {
                audit.outcome = refusal_code(error).into();
                self.stats.policy_reload_refused();
            }
        }
        let result = result.map(|policy| self.put_in_force(policy, &mut audit));
        // A store that cannot take the event does not hold a revocation back.
        if let Err(error) = self.append_audit(vec![audit]).await {
            tracing::error!(%error, "could not audit the policy reload");
        }
        // Last, once the audit event is written: the line marks the end.
        log_reload(&result, sha256.as_deref(), trigger);
        result.map(|_| ())
    }

    /// Swaps the whole policy in; returns how many principals and purposes it has.
    fn put_in_force(&self, policy: Policy, audit: &mut AuditEntry) -> (usize, usize) {
        for warning in crate::vault::kind_named_rule_warnings(&policy) {
            tracing::warn!("policy: {warning}");
        }
        let counts = (policy.principals().count(), policy.purposes().len());
        audit.fields.push(format!("principals:{}", counts.0));
        audit.fields.push(format!("purposes:{}", counts.1));
        self.replace_policy(Arc::new(policy));
        counts
    }
}

fn refusal_code(error: &PolicyError) -> &'static str {
    match error {
        PolicyError::Io { .. } => "UNAVAILABLE",
        PolicyError::Syntax { .. } | PolicyError::Invalid { .. } => "INVALID_ARGUMENT",
    }
}

fn log_reload(
    result: &Result<(usize, usize), PolicyError>,
    sha256: Option<&str>,
    trigger: ReloadTrigger,
) {
    let trigger = trigger.name();
    match result {
        Ok((principals, purposes)) => {
            tracing::info!(trigger, sha256, principals, purposes, "policy reloaded")
        }
        // The error names a line and what is wrong there, never the file's values.
        Err(error) => tracing::error!(
            trigger,
            sha256,
            %error,
            "new policy refused; the policy in force stays"
        ),
    }
}
