//! Policy file parsing: the example of docs/policy.md, and one test per
//! validation error, each checking the reported line and that the message names the problem.

use super::{api_key_sha256_hex, Disclosure, LegalBasis, Policy, PolicyError, Scope};

/// The example policy of docs/policy.md (its first TOML block), with a real
/// hash in place of the placeholder.
fn documented_example() -> String {
    let page = include_str!("../../docs/policy.md");
    let example = page
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/policy.md opens with a TOML example");
    example.replace(
        "<hex sha256 of the bearer key>",
        &api_key_sha256_hex("checkout-key"),
    )
}

/// Lines 1-4 declare the purpose "billing"; principals start on line 5.
fn with_billing_purpose(principals: &str) -> String {
    format!("[[purposes]]\nname = \"billing\"\ndescription = \"Charging you.\"\nbasis = \"contract\"\n{principals}")
}

/// A principal starting on line 5 whose line 8 (after `scopes`) is `extra`.
fn principal_with(extra: &str) -> String {
    with_billing_purpose(&format!(
        "[[principals]]\nname = \"checkout\"\napi_key_sha256 = \"{}\"\nscopes = [\"data:read\"]\n{extra}\n",
        api_key_sha256_hex("k")
    ))
}

/// The line and Display text of the error a policy text is rejected with.
fn rejection(text: &str) -> (Option<usize>, String) {
    let err = Policy::parse(text).expect_err("policy is rejected");
    let line = match &err {
        PolicyError::Syntax { line, .. } => Some(*line),
        PolicyError::Invalid { line, .. } => *line,
        PolicyError::Io { .. } => panic!("parse never does I/O"),
    };
    (line, err.to_string())
}

fn assert_rejected_at(text: &str, expected_line: usize, expected_fragments: &[&str]) {
    let (line, message) = rejection(text);
    assert_eq!(line, Some(expected_line), "wrong line in: {message}");
    assert!(
        message.starts_with(&format!("policy line {expected_line}: ")),
        "{message}"
    );
    for fragment in expected_fragments {
        assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
    }
}

#[test]
fn documented_example_parses_into_purposes_and_a_principal() {
    let policy = Policy::parse(&documented_example()).expect("the documented example parses");
    assert_eq!(policy.purposes().len(), 2);
    assert_eq!(
        policy.purpose("billing").map(|p| p.basis),
        Some(LegalBasis::Contract)
    );
    let checkout = policy
        .authenticate_api_key("checkout-key")
        .expect("checkout");
    assert_eq!(checkout.name(), "checkout");
    assert!(checkout.has_scope(Scope::TokensDetokenize));
    assert!(!checkout.has_scope(Scope::ConsentWrite));
    assert!(checkout.may_use_purpose("billing"));
    assert!(!checkout.may_use_purpose("marketing"));
    assert_eq!(
        checkout.disclosure_for(None, "card_number"),
        Disclosure::Plaintext
    );
    assert_eq!(
        checkout.disclosure_for(Some("email"), "email"),
        Disclosure::Masked
    );
}

#[test]
fn toml_syntax_error_names_its_line() {
    let text = with_billing_purpose("[[principals]]\nname = \"checkout\nscopes = []\n");
    let (line, message) = rejection(&text);
    assert_eq!(line, Some(6), "{message}");
    assert!(matches!(
        Policy::parse(&text),
        Err(PolicyError::Syntax { .. })
    ));
}

#[test]
fn misspelt_top_level_table_is_an_unknown_field() {
    let text = with_billing_purpose("[[principal]]\nname = \"checkout\"\n");
    assert_rejected_at(&text, 5, &["unknown field `principal`"]);
}

#[test]
fn misspelt_purpose_key_is_an_unknown_field() {
    let text =
        "[[purposes]]\nname = \"billing\"\ndescripton = \"Charging you.\"\nbasis = \"contract\"\n";
    assert_rejected_at(text, 3, &["unknown field `descripton`"]);
}

#[test]
fn misspelt_principal_key_is_an_unknown_field() {
    assert_rejected_at(
        &principal_with("purpose = [\"billing\"]"),
        9,
        &["unknown field `purpose`"],
    );
}

#[test]
fn wrongly_typed_value_names_its_line() {
    let text = with_billing_purpose("[[principals]]\nname = \"checkout\"\nspiffe_id = \"spiffe://a/b\"\nscopes = \"data:read\"\n");
    assert_rejected_at(&text, 8, &["invalid type"]);
}

#[test]
fn missing_scopes_names_the_principal_line() {
    let text =
        with_billing_purpose("[[principals]]\nname = \"checkout\"\nspiffe_id = \"spiffe://a/b\"\n");
    let (line, message) = rejection(&text);
    assert!(message.contains("missing field `scopes`"), "{message}");
    assert_eq!(line, Some(5), "{message}");
}

#[test]
fn policy_without_purposes_is_rejected() {
    let (line, message) =
        rejection("[[principals]]\nname = \"x\"\nspiffe_id = \"spiffe://a/b\"\nscopes = []\n");
    assert_eq!(line, None);
    assert_eq!(
        message,
        "policy: at least one purpose is required: add a [[purposes]] table"
    );
}

#[test]
fn empty_purpose_list_is_rejected_at_its_line() {
    assert_rejected_at(
        "# no purposes yet\npurposes = []\n",
        2,
        &["at least one purpose"],
    );
}

#[test]
fn purpose_name_with_capitals_is_rejected() {
    let text = "[[purposes]]\nname = \"Billing\"\ndescription = \"d\"\nbasis = \"contract\"\n";
    assert_rejected_at(
        text,
        2,
        &["purpose name \"Billing\" is not valid", "lowercase"],
    );
}

#[test]
fn purpose_name_longer_than_64_characters_is_rejected() {
    let long_name = "a".repeat(65);
    let text = format!(
        "[[purposes]]\nname = \"{long_name}\"\ndescription = \"d\"\nbasis = \"contract\"\n"
    );
    assert_rejected_at(&text, 2, &["is not valid", "1 to 64"]);
    let longest = text.replace(&long_name, &"a".repeat(64));
    assert!(Policy::parse(&longest).is_ok());
}

#[test]
fn purpose_declared_twice_is_rejected_at_the_second() {
    let text = with_billing_purpose(
        "\n[[purposes]]\nname = \"billing\"\ndescription = \"d\"\nbasis = \"consent\"\n",
    );
    assert_rejected_at(
        &text,
        7,
        &["purpose \"billing\" is declared twice (first on line 2)"],
    );
}

#[test]
fn purpose_with_empty_description_is_rejected() {
    let text = "[[purposes]]\nname = \"billing\"\ndescription = \"  \"\nbasis = \"contract\"\n";
    assert_rejected_at(text, 3, &["purpose \"billing\": description is empty"]);
}

#[test]
fn purpose_with_unknown_basis_lists_the_valid_ones() {
    let text = "[[purposes]]\nname = \"billing\"\ndescription = \"d\"\nbasis = \"contrat\"\n";
    assert_rejected_at(
        text,
        4,
        &[
            "purpose \"billing\": unknown legal basis \"contrat\"",
            "consent, contract, legal_obligation, legitimate_interest",
        ],
    );
}

#[test]
fn principal_with_empty_name_is_rejected() {
    let text = with_billing_purpose(
        "[[principals]]\nname = \"\"\nspiffe_id = \"spiffe://a/b\"\nscopes = []\n",
    );
    assert_rejected_at(&text, 6, &["principal name is empty"]);
}

#[test]
fn principal_declared_twice_is_rejected_at_the_second() {
    let twice = "[[principals]]\nname = \"svc\"\nspiffe_id = \"spiffe://a/b\"\nscopes = []\n\
                 [[principals]]\nname = \"svc\"\nspiffe_id = \"spiffe://a/c\"\nscopes = []\n";
    assert_rejected_at(
        &with_billing_purpose(twice),
        10,
        &["principal \"svc\" is declared twice (first on line 6)"],
    );
}

#[test]
fn principal_without_credential_is_rejected() {
    let text = with_billing_purpose("[[principals]]\nname = \"svc\"\nscopes = []\n");
    assert_rejected_at(
        &text,
        6,
        &["principal \"svc\": needs one of api_key_sha256, spiffe_id or cert_subject"],
    );
}

#[test]
fn principal_with_two_credentials_is_rejected() {
    let text = principal_with("cert_subject = \"CN=checkout\"");
    assert_rejected_at(
        &text,
        9,
        &[
            "principal \"checkout\": needs exactly one",
            "api_key_sha256 and cert_subject",
        ],
    );
}

#[test]
fn api_key_hash_that_is_not_64_hex_characters_is_rejected_without_echoing_it() {
    let text = with_billing_purpose(
        "[[principals]]\nname = \"svc\"\napi_key_sha256 = \"pv_secretkey\"\nscopes = []\n",
    );
    assert_rejected_at(
        &text,
        7,
        &["principal \"svc\": api_key_sha256 must be 64 hex characters"],
    );
    assert!(!rejection(&text).1.contains("pv_secretkey"));
}

#[test]
fn api_key_hash_of_the_empty_key_is_rejected() {
    let hash = api_key_sha256_hex("");
    let text = with_billing_purpose(&format!(
        "[[principals]]\nname = \"svc\"\napi_key_sha256 = \"{hash}\"\nscopes = []\n"
    ));
    assert_rejected_at(&text, 7, &["hash of an empty key"]);
}

#[test]
fn api_key_hash_shared_by_two_principals_is_rejected() {
    let hash = api_key_sha256_hex("shared");
    let twice = format!(
        "[[principals]]\nname = \"a\"\napi_key_sha256 = \"{hash}\"\nscopes = []\n\
         [[principals]]\nname = \"b\"\napi_key_sha256 = \"{}\"\nscopes = []\n",
        hash.to_uppercase()
    );
    assert_rejected_at(
        &with_billing_purpose(&twice),
        11,
        &["principal \"b\": api_key_sha256 is already used by principal \"a\""],
    );
}

#[test]
fn spiffe_id_shared_by_two_principals_is_rejected() {
    let twice = "[[principals]]\nname = \"a\"\nspiffe_id = \"spiffe://a/b\"\nscopes = []\n\
                 [[principals]]\nname = \"b\"\nspiffe_id = \"spiffe://a/b\"\nscopes = []\n";
    assert_rejected_at(
        &with_billing_purpose(twice),
        11,
        &["spiffe_id \"spiffe://a/b\" is already used by principal \"a\""],
    );
}

#[test]
fn spiffe_id_without_the_scheme_is_rejected() {
    let text = with_billing_purpose(
        "[[principals]]\nname = \"svc\"\nspiffe_id = \"example.org/svc\"\nscopes = []\n",
    );
    assert_rejected_at(
        &text,
        7,
        &["principal \"svc\": spiffe_id must start with \"spiffe://\""],
    );
}

#[test]
fn empty_cert_subject_is_rejected() {
    let text =
        with_billing_purpose("[[principals]]\nname = \"svc\"\ncert_subject = \"\"\nscopes = []\n");
    assert_rejected_at(&text, 7, &["principal \"svc\": cert_subject is empty"]);
}

#[test]
fn unparsable_cert_subject_is_rejected_naming_the_principal() {
    let text = with_billing_purpose(
        "[[principals]]\nname = \"svc\"\ncert_subject = \"CN=Acme, Inc.\"\nscopes = []\n",
    );
    assert_rejected_at(
        &text,
        7,
        &[
            "principal \"svc\": cert_subject: expected \"=\" after \"Inc.\"",
            "\\,",
        ],
    );
}

#[test]
fn cert_subject_shared_by_two_principals_is_rejected_however_it_is_spelt() {
    let twice = "[[principals]]\nname = \"a\"\ncert_subject = \"CN=svc,O=Example\"\nscopes = []\n\
                 [[principals]]\nname = \"b\"\ncert_subject = \"cn=svc, o=Example\"\nscopes = []\n";
    assert_rejected_at(
        &with_billing_purpose(twice),
        11,
        &["cert_subject \"CN=svc,O=Example\" is already used by principal \"a\""],
    );
}

#[test]
fn unknown_scope_is_named_with_the_valid_ones() {
    let text = with_billing_purpose(&format!(
        "\n\n\n\n\n\n[[principals]]\nname = \"checkout\"\napi_key_sha256 = \"{}\"\nscopes = [\n  \"data:read\",\n  \"data:wrte\",\n]\n",
        api_key_sha256_hex("k")
    ));
    let (line, message) = rejection(&text);
    assert_eq!(line, Some(16));
    let valid = "data:write, data:read, tokens:detokenize, consent:write, privacy:admin, privacy:export, keys:admin, audit:read";
    assert_eq!(
        message,
        format!(
            "policy line 16: principal \"checkout\": unknown scope \"data:wrte\" (valid: {valid})"
        )
    );
}

#[test]
fn unknown_purpose_is_named_with_the_declared_ones() {
    let text = principal_with("purposes = [\"biling\"]");
    assert_rejected_at(
        &text,
        9,
        &[
            "principal \"checkout\": unknown purpose \"biling\"",
            "declared: billing",
            "\"*\"",
        ],
    );
}

#[test]
fn disclosure_key_that_is_not_a_name_is_rejected() {
    let text = principal_with(
        "[principals.disclosure]\n\"*\" = \"masked\"\n\"Card Number\" = \"plaintext\"",
    );
    assert_rejected_at(
        &text,
        11,
        &["principal \"checkout\": disclosure key \"Card Number\" is not"],
    );
}

#[test]
fn disclosure_value_outside_the_four_rules_is_rejected() {
    let text = principal_with("[principals.disclosure]\ncard_number = \"plain\"");
    assert_rejected_at(
        &text,
        10,
        &[
            "principal \"checkout\": disclosure for \"card_number\" is \"plain\"",
            "plaintext, masked, token or none",
        ],
    );
}

#[test]
fn misspelt_disclosure_table_is_an_unknown_field() {
    let text = principal_with("[principals.disclosures]\ncard_number = \"masked\"");
    assert_rejected_at(&text, 9, &["unknown field `disclosures`"]);
}

#[test]
fn a_key_given_twice_is_named_with_its_line() {
    let text = principal_with("scopes = [\"data:write\"]");
    assert_rejected_at(&text, 9, &["duplicate key `scopes`"]);
    let text = "[[purposes]]\nname = \"billing\"\nbasis = \"contract\"\nbasis = \"consent\"\n";
    assert_rejected_at(text, 4, &["duplicate key `basis`"]);
}
