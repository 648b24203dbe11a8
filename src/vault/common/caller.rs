use crate::vault::Reason;
use std::net::IpAddr;
use std::sync::Arc;

use crate::policy::{Policy, Principal, Scope};

use crate::vault::VaultError;

/// Who is asking, as the gRPC layer authenticated them, and the id that ties the
/// call's log lines and audit events together.
#[derive(Clone)]
pub struct Caller {
    pub principal: Arc<Principal>,
    /// The policy the caller was authenticated against: the whole call is
    /// decided by it, even if the policy is reloaded meanwhile.
    pub policy: Arc<Policy>,
    pub request_id: String,
    /// The address the call came from (an IPv4 address or an IPv6 /64), when
    /// known: refusals are budgeted per address as well as per principal.
    pub source: Option<IpAddr>,
}

impl Caller {
    pub fn name(&self) -> &str {
        self.principal.name()
    }

    pub fn require_scope(&self, scope: Scope) -> Result<(), VaultError> {
        if self.principal.has_scope(scope) {
            Ok(())
        } else {
            let refusal = VaultError::new(
                Reason::ScopeMissing,
                format!(
                    "principal \"{}\" lacks the scope {}",
                    self.name(),
                    scope.name()
                ),
            );
            Err(refusal.with("scope", scope.name()))
        }
    }
}
