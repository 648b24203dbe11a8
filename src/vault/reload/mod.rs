//! Reloading the policy and the TLS files without a restart, audited.

pub(super) mod policy_reload;
pub(super) mod tls_reload;
