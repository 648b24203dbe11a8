//! What every operation shares: the caller, the error model, parsed ids,
//! request limits, abuse limits, disclosure rule names, ledger sealing and
//! counters.

pub(super) mod abuse;
pub(super) mod caller;
pub(super) mod clock;
pub(super) mod error;
pub(super) mod ids;
pub(super) mod limits;
pub(super) mod rule_names;
pub(super) mod sealing;
pub(super) mod stats;
