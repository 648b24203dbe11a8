//! The customer's rights: consent, policy notices and re-consent, erasure with
//! its receipt, and export.

pub(super) mod consent;
pub(super) mod erasure;
pub(super) mod export;
pub(super) mod notices;
