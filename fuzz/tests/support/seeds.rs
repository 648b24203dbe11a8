//! The seed corpus of every target (written to `corpus/<target>/seed-*` by
//! `write_seed_corpus`) and the words its mutations splice in.

use pii_vault::pb::{self, FieldKind, TokenFormat};
use pii_vault::policy::{api_key_sha256_hex, dev_policy_toml};
use prost::Message;

/// FieldKind::ALL's order, as the `values` target's first byte picks it.
const GENERIC: u8 = 0;
const SSN: u8 = 1;
const EMAIL: u8 = 2;
const PHONE: u8 = 3;
const ADDRESS: u8 = 4;
const NAME: u8 = 5;
const DATE_OF_BIRTH: u8 = 6;
const CARD: u8 = 7;

pub fn all() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        ("values", values()),
        ("ids_and_tokens", ids_and_tokens()),
        ("ciphertexts", ciphertexts()),
        ("policy", policies()),
        ("requests", requests()),
        ("grpc", grpc()),
    ]
}

fn with_selector(selector: u8, rest: &[u8]) -> Vec<u8> {
    let mut seed = vec![selector];
    seed.extend_from_slice(rest);
    seed
}

fn values() -> Vec<Vec<u8>> {
    let cases: &[(u8, &str)] = &[
        (SSN, "123-45-6789"),
        (SSN, "123456789"),
        (SSN, "123 45 6789"),
        (SSN, " 899-99-9999\n"),
        (SSN, "666-12-3456"),
        (EMAIL, "Jane.Doe@Example.COM"),
        (EMAIL, "a+tag@mail.example-1.co.uk"),
        (EMAIL, "john@exämple.com"),
        (PHONE, "(555) 123-4567"),
        (PHONE, "+44 20 7946 0958"),
        (PHONE, "1-555-123-4567"),
        (ADDRESS, "1 Main St,\nApt 2"),
        (ADDRESS, "Straße 5"),
        (NAME, "  Jane   Q.  O'Neil-Smith, Jr. "),
        (NAME, "山田 太郎"),
        (NAME, "Seán O’Brien"),
        (DATE_OF_BIRTH, "1985-07-04"),
        (DATE_OF_BIRTH, "2000-02-29"),
        (DATE_OF_BIRTH, "１９８５-07-04"),
        (CARD, "4242 4242 4242 4242"),
        (CARD, "3782-822463-10005"),
        (CARD, "4222222222222"),
        (GENERIC, "likes tea\tand\ncoffee"),
        (GENERIC, "٣٤٥ shape"),
        (GENERIC, "!!!"),
    ];
    cases
        .iter()
        .map(|(kind, value)| with_selector(*kind, value.as_bytes()))
        .collect()
}

fn ids_and_tokens() -> Vec<Vec<u8>> {
    [
        "cust-42",
        "tenant:7.user_9",
        "jane@example.com",
        "email_home",
        "tok_lgkarp3tecpsblk72lkwom6ole",
        "dtk_aaaaaaaaaaaaaaaaaaaaaaaaaa",
        "970-62-9083",
        "4242424242424242",
        "6842904831994242",
        "format_preserving",
        "card_number",
        "a\u{0}b",
        "\u{0430}lice",
    ]
    .iter()
    .map(|text| text.as_bytes().to_vec())
    .chain([vec![7u8; 16]])
    .collect()
}

fn ciphertexts() -> Vec<Vec<u8>> {
    let mut header = vec![1u8, 0, 0, 0, 3];
    header.extend_from_slice(&[0xa0; 12]);
    header.extend_from_slice(b"0123456789abcdef0123456789");
    let mut wrapped = vec![1u8, 0, 0, 0, 1];
    wrapped.extend_from_slice(&[0xc0; 12 + 32 + 16]);
    let mut sealed = b"PVKR\x01".to_vec();
    sealed.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 7]);
    sealed.extend_from_slice(&[0x11; 12]);
    sealed.extend_from_slice(&[0, 0, 0, 96]);
    let ledger = postcard_ledger();
    vec![
        with_selector(0, &header),
        with_selector(0, &[]),
        with_selector(1, b"\x05123-45-6789"),
        with_selector(2, b"cust-1\x00ssn\x00123-45-6789"),
        with_selector(2, b"ab\0c\0v"),
        with_selector(3, &wrapped),
        with_selector(4, &sealed),
        with_selector(4, b"\x00\x10\x03"),
        with_selector(
            5,
            b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
        ),
        with_selector(5, &[0x42; 32]),
        with_selector(5, b"not a key"),
        with_selector(6, &ledger),
    ]
}

/// A ledger with one consent and one acknowledgement, as postcard encodes it.
fn postcard_ledger() -> Vec<u8> {
    // consents: 1 x (purpose, granted, policy_version, source, recorded_at_ms),
    // acknowledged: 1 x (policy_version, at_ms); strings are length-prefixed,
    // integers are zigzag varints.
    let mut bytes = vec![1, 9];
    bytes.extend_from_slice(b"marketing");
    bytes.push(1);
    bytes.push(7);
    bytes.extend_from_slice(b"2025-01");
    bytes.push(3);
    bytes.extend_from_slice(b"web");
    bytes.extend_from_slice(&[0x80, 0x01]);
    bytes.push(1);
    bytes.push(7);
    bytes.extend_from_slice(b"2025-01");
    bytes.push(4);
    bytes
}

/// The example policy of docs/policy.md (its first TOML block).
fn documented_example() -> &'static str {
    include_str!("../../../docs/policy.md")
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/policy.md opens with a TOML example")
}

fn policies() -> Vec<Vec<u8>> {
    let hash = api_key_sha256_hex("checkout-key");
    let documented = documented_example().replace("<hex sha256 of the bearer key>", &hash);
    let mesh = format!(
        "{documented}\n[[principals]]\nname = \"mesh\"\nspiffe_id = \"spiffe://example.org/ns/pii/sa/billing\"\nscopes = [\"data:read\"]\npurposes = [\"*\"]\n\n[[principals]]\nname = \"ops\"\ncert_subject = \"CN=ops,O=Example\"\nscopes = [\"keys:admin\", \"audit:read\", \"privacy:admin\", \"consent:write\"]\n"
    );
    vec![
        documented.clone().into_bytes(),
        mesh.into_bytes(),
        dev_policy_toml(&api_key_sha256_hex("dev")).into_bytes(),
        documented
            .replace("\"data:read\"", "\"data:reed\"")
            .into_bytes(),
        documented
            .replacen(
                "basis = \"consent\"",
                "basis = \"consent\"\nbasis = \"contract\"",
                1,
            )
            .into_bytes(),
        documented
            .replace(&hash, "pv_live_pasted_key_0123456789")
            .into_bytes(),
        b"[[purposes]]\nname = \"x\"\n".to_vec(),
        Vec::new(),
    ]
}

fn put_fields() -> pb::PutFieldsRequest {
    pb::PutFieldsRequest {
        customer_id: "alice".into(),
        fields: vec![
            pb::Field {
                name: "ssn".into(),
                kind: FieldKind::Ssn as i32,
                value: "123-45-6789".into(),
            },
            pb::Field {
                name: "email".into(),
                kind: FieldKind::Email as i32,
                value: "Jane.Doe@Example.COM".into(),
            },
            pb::Field {
                name: "card".into(),
                kind: FieldKind::CardNumber as i32,
                value: "4242 4242 4242 4242".into(),
            },
        ],
        purpose: "billing".into(),
        token_format: TokenFormat::FormatPreserving as i32,
        expected_revision: None,
    }
}

/// One well-formed request of each kind, encoded, by the `requests` selector.
fn encoded_requests() -> Vec<(u8, Vec<u8>)> {
    let customer = || "alice".to_owned();
    vec![
        (0, put_fields().encode_to_vec()),
        (
            1,
            pb::GetFieldsRequest {
                customer_id: customer(),
                field_names: vec!["ssn".into(), "email".into()],
                purpose: "billing".into(),
            }
            .encode_to_vec(),
        ),
        (
            2,
            pb::DeleteFieldsRequest {
                customer_id: customer(),
                field_names: vec!["card".into()],
            }
            .encode_to_vec(),
        ),
        (
            3,
            pb::TokenizeRequest {
                customer_id: customer(),
                items: vec![
                    pb::TokenizeItem {
                        value: "4242424242424242".into(),
                        kind: FieldKind::CardNumber as i32,
                        format: TokenFormat::Deterministic as i32,
                    },
                    pb::TokenizeItem {
                        value: "+15551234567".into(),
                        kind: FieldKind::Phone as i32,
                        format: TokenFormat::FormatPreserving as i32,
                    },
                ],
                purpose: "billing".into(),
                request_id: String::new(),
            }
            .encode_to_vec(),
        ),
        (
            4,
            pb::DetokenizeRequest {
                tokens: vec![
                    "tok_lgkarp3tecpsblk72lkwom6ole".into(),
                    "970-62-9083".into(),
                ],
                purpose: "billing".into(),
            }
            .encode_to_vec(),
        ),
        (
            5,
            pb::FindCustomersRequest {
                field_name: "email".into(),
                value: "jane.doe@example.com".into(),
                purpose: "billing".into(),
                page_size: 10,
                page_token: String::new(),
            }
            .encode_to_vec(),
        ),
        (
            6,
            pb::SetConsentRequest {
                customer_id: customer(),
                purpose: "marketing".into(),
                granted: true,
                policy_version: "2025-01".into(),
                source: "web-signup".into(),
            }
            .encode_to_vec(),
        ),
        (
            7,
            pb::ListConsentsRequest {
                customer_id: customer(),
                include_history: true,
            }
            .encode_to_vec(),
        ),
        (
            8,
            pb::ExportCustomerRequest {
                customer_id: customer(),
                format: pb::ExportFormat::Text as i32,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            9,
            pb::DeleteCustomerRequest {
                customer_id: "bob".into(),
                reason: "customer request".into(),
            }
            .encode_to_vec(),
        ),
        (
            10,
            pb::GetDeletionStatusRequest {
                receipt_id: "rcpt_diyycdipvsqr752rxwcujir6gm".into(),
            }
            .encode_to_vec(),
        ),
        (
            11,
            pb::PublishPolicyRequest {
                version: "2026-12".into(),
                summary: "We now send offers by text message.".into(),
                changed_purposes: vec!["marketing".into()],
                requires_reconsent: true,
            }
            .encode_to_vec(),
        ),
        (
            12,
            pb::ListNoticesRequest {
                customer_id: customer(),
            }
            .encode_to_vec(),
        ),
        (
            13,
            pb::AcknowledgeNoticeRequest {
                customer_id: customer(),
                policy_version: "2026-12".into(),
            }
            .encode_to_vec(),
        ),
        (
            14,
            pb::RotateMasterKeyRequest {
                retire_previous: true,
            }
            .encode_to_vec(),
        ),
        (
            15,
            pb::RotateCustomerKeyRequest {
                customer_id: customer(),
            }
            .encode_to_vec(),
        ),
        (
            16,
            pb::GetKeyStatusRequest {
                customer_id: customer(),
            }
            .encode_to_vec(),
        ),
        (
            17,
            pb::ListAuditEventsRequest {
                customer_id: customer(),
                principal: "admin".into(),
                since: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                limit: 10,
                after_seq: 0,
            }
            .encode_to_vec(),
        ),
    ]
}

fn requests() -> Vec<Vec<u8>> {
    encoded_requests()
        .into_iter()
        .map(|(selector, bytes)| with_selector(selector, &bytes))
        .collect()
}

/// The `grpc` target's method index for each `requests` selector.
fn method_of(request_selector: u8) -> Option<u8> {
    match request_selector {
        0..=5 => Some(request_selector),
        6..=13 => Some(request_selector + 1),
        15 => Some(16),
        16 => Some(17),
        _ => None,
    }
}

fn grpc() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (selector, bytes) in encoded_requests() {
        let Some(method) = method_of(selector) else {
            continue;
        };
        let mut admin = vec![method, 0];
        admin.extend_from_slice(&bytes);
        seeds.push(admin);
        // The same request from the checkout principal, and with no valid key.
        let mut checkout = vec![method, 1];
        checkout.extend_from_slice(&bytes);
        seeds.push(checkout);
    }
    // ListPurposes, ListPolicyVersions, VerifyAuditLog take empty messages.
    for method in [6u8, 13, 18] {
        seeds.push(vec![method, 0]);
        seeds.push(vec![method, 4]);
    }
    seeds
}

pub fn dictionary(target: &str) -> &'static [&'static [u8]] {
    match target {
        "values" => &[
            b"@",
            b"-",
            b"+1",
            b"+44",
            b"(",
            b")",
            b" ",
            b"1985-",
            b"-02-29",
            b"4242",
            b"900-",
            b"000",
            b"666",
            b".com",
            b"@example.com",
            b"\xc2\xa0",
            b"\xe2\x80\x99",
        ],
        "ids_and_tokens" => &[
            b"tok_", b"dtk_", b"rcpt_", b"cust-", b":", b".", b"_", b"-", b"@", b"4242",
        ],
        "policy" => &[
            b"[[purposes]]\n",
            b"[[principals]]\n",
            b"[principals.disclosure]\n",
            b"name = \"",
            b"description = \"",
            b"basis = \"consent\"\n",
            b"basis = \"contract\"\n",
            b"scopes = [\"data:read\", \"privacy:admin\"]\n",
            b"purposes = [\"*\"]\n",
            b"api_key_sha256 = \"",
            b"spiffe_id = \"spiffe://",
            b"cert_subject = \"CN=",
            b"\"*\" = \"plaintext\"\n",
            b"ssn = \"none\"\n",
            b"\"\"\"",
            b"'''",
            b"\\u0000",
            b" = ",
            b"# ",
            b"=",
            b"\"",
            b",",
            b"{ a = 1 }",
        ],
        _ => &[
            b"alice",
            b"billing",
            b"marketing",
            b"ssn",
            b"email",
            b"tok_",
            b"dtk_",
            b"\x08\x02",
            b"\x08\xff\xff\xff\xff\x0f",
            b"\x10\x01",
            b"\x12\x00",
            b"\x1a\x07billing",
        ],
    }
}
