use crate::vault::Reason;
use std::time::Duration;

/// Bounds on one request, and on what one customer may grow to, so that no
/// client can make the vault do unbounded work: a customer's entry is read
/// and rewritten whole by every change to them.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_fields_per_request: usize,
    pub max_batch_items: usize,
    /// Most customer ids in one FindCustomers page (its default page size).
    pub max_search_results: usize,
    pub max_reason_len: usize,
    /// Fields one customer may hold.
    pub max_fields_per_customer: usize,
    /// Standalone tokens (Tokenize) one customer may hold.
    pub max_tokens_per_customer: usize,
    /// Past consent and acknowledgement events kept per customer besides the
    /// current one per purpose and per policy version.
    pub ledger_history: usize,
    /// Most access events in one page of an export's access history.
    pub export_access_page: usize,
    /// Largest export document: its access history is cut into pages to stay
    /// within it (below the gRPC layer's 4 MiB per message).
    pub max_export_bytes: usize,
    /// Largest response message, the gRPC layer's own limit
    /// (`server::MAX_MESSAGE_BYTES`): a Detokenize whose results would not
    /// fit is refused before anything is audited as disclosed.
    pub max_reply_bytes: usize,
    pub refusals: RefusalLimits,
}

/// How many refused calls are audited one by one: refusals cost the caller
/// nothing, so without a bound they would be a write path anyone with an API
/// key could flood. The rest are counted into one audit event per window.
#[derive(Clone, Debug)]
pub struct RefusalLimits {
    /// Identical refusals (same principal, action, outcome and customer)
    /// recorded one by one in a window; the rest are counted.
    pub recorded_per_window: u32,
    /// How long repeated refusals are counted before their event is written.
    pub window: Duration,
    /// Refusals recorded one by one, per principal...
    pub per_principal: RefusalBudget,
    /// ...and per source address (an IPv4 address or an IPv6 /64).
    pub per_address: RefusalBudget,
}

/// A token bucket: `burst` refusals at once, refilled at `per_second`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RefusalBudget {
    pub per_second: f64,
    pub burst: f64,
}

impl Default for RefusalLimits {
    fn default() -> Self {
        RefusalLimits {
            recorded_per_window: 3,
            window: Duration::from_secs(60),
            per_principal: RefusalBudget {
                per_second: 1.0,
                burst: 20.0,
            },
            per_address: RefusalBudget {
                per_second: 5.0,
                burst: 50.0,
            },
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_fields_per_request: 100,
            max_batch_items: 1000,
            max_search_results: 1000,
            max_reason_len: 512,
            max_fields_per_customer: 1000,
            max_tokens_per_customer: 10_000,
            ledger_history: 100,
            export_access_page: 10_000,
            max_export_bytes: 3 * 1024 * 1024,
            max_reply_bytes: 4 * 1024 * 1024,
            refusals: RefusalLimits::default(),
        }
    }
}

impl Limits {
    /// Refuses a request listing more than `max` items in its field `what`:
    /// INVALID_ARGUMENT, since sending the same request again cannot succeed.
    pub fn check_count(
        what: &'static str,
        count: usize,
        max: usize,
    ) -> Result<(), crate::vault::VaultError> {
        if count > max {
            let refusal = crate::vault::VaultError::new(
                Reason::RequestTooLarge,
                format!("{what}: at most {max} per request, got {count}"),
            );
            Err(refusal.in_field(what).with("limit", max.to_string()))
        } else {
            Ok(())
        }
    }
}
