//! The test principals, their API keys, and the policy that names them.

use pii_vault::policy::api_key_sha256_hex;

pub const ADMIN_KEY: &str = "pv_test_admin_key";
pub const CHECKOUT_KEY: &str = "pv_test_checkout_key";
pub const SUPPORT_KEY: &str = "pv_test_support_key";
pub const WRITER_KEY: &str = "pv_test_writer_key";
/// privacy:admin alone, with disclosure rules that deny by default.
pub const DPO_KEY: &str = "pv_test_dpo_key";
/// privacy:export alone: the plaintext export, whatever its disclosure rules say.
pub const EXPORTER_KEY: &str = "pv_test_exporter_key";

/// Purposes of every basis, and principals with different scopes, purposes and
/// disclosure rules.
pub fn test_policy() -> String {
    format!(
        r#"
[[purposes]]
name = "billing"
description = "Charging you for the orders you place."
basis = "contract"

[[purposes]]
name = "marketing"
description = "Sending you offers picked for you."
basis = "consent"

[[purposes]]
name = "support"
description = "Helping you when you contact us."
basis = "legitimate_interest"

[[principals]]
name = "admin"
api_key_sha256 = "{admin}"
scopes = ["data:write", "data:read", "tokens:detokenize", "consent:write", "privacy:admin", "keys:admin", "audit:read"]
purposes = ["*"]
[principals.disclosure]
"*" = "plaintext"

[[principals]]
name = "checkout"
api_key_sha256 = "{checkout}"
scopes = ["data:write", "data:read", "tokens:detokenize"]
purposes = ["billing"]
[principals.disclosure]
"*" = "masked"
card_number = "plaintext"
ssn = "token"
secret_note = "none"

[[principals]]
name = "support"
api_key_sha256 = "{support}"
scopes = ["data:read", "tokens:detokenize"]
purposes = ["support"]
[principals.disclosure]
email = "plaintext"
phone = "masked"

[[principals]]
name = "writer"
api_key_sha256 = "{writer}"
scopes = ["data:write"]
purposes = ["billing", "marketing"]

[[principals]]
name = "dpo"
api_key_sha256 = "{dpo}"
scopes = ["privacy:admin"]
[principals.disclosure]
"*" = "none"
email = "plaintext"
phone = "masked"
card_number = "token"

[[principals]]
name = "exporter"
api_key_sha256 = "{exporter}"
scopes = ["privacy:export"]
[principals.disclosure]
"*" = "none"
"#,
        admin = api_key_sha256_hex(ADMIN_KEY),
        checkout = api_key_sha256_hex(CHECKOUT_KEY),
        support = api_key_sha256_hex(SUPPORT_KEY),
        writer = api_key_sha256_hex(WRITER_KEY),
        dpo = api_key_sha256_hex(DPO_KEY),
        exporter = api_key_sha256_hex(EXPORTER_KEY),
    )
}
