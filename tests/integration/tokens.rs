//! Tokenize, Detokenize and FindCustomers through the real gRPC server: token
//! formats, resolution with per-item errors and disclosure, batch validation and
//! limits, and equality search through the blind index.

use crate::common;

use common::{
    delete_customer, delete_fields, detokenize, expect_code, field, find_customers, put, tokenize,
    PutFields, Tokenize, VaultClient,
};
use pii_vault::pb::{self, Disclosure, FieldKind, TokenFormat};
use tonic::Code;

/// Luhn (mod 10) check of a string of ASCII digits.
fn luhn_valid(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(index, byte)| {
            let digit = u32::from(byte - b'0');
            if index % 2 == 1 {
                let doubled = digit * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                digit
            }
        })
        .sum();
    sum % 10 == 0
}

fn is_random_token(token: &str) -> bool {
    token.strip_prefix("tok_").is_some_and(|body| {
        body.len() == 26
            && body
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    })
}

fn is_deterministic_token(token: &str) -> bool {
    token.strip_prefix("dtk_").is_some_and(|body| {
        body.len() == 26
            && body
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    })
}

/// "9dd-dd-dddd": SSN-shaped, from the never-issued 900-999 area.
fn is_ssn_token(token: &str) -> bool {
    let bytes = token.as_bytes();
    bytes.len() == 11
        && bytes[0] == b'9'
        && bytes.iter().enumerate().all(|(index, byte)| match index {
            3 | 6 => *byte == b'-',
            _ => byte.is_ascii_digit(),
        })
}

async fn one_token(
    client: &mut VaultClient,
    customer: &str,
    kind: FieldKind,
    value: &str,
    format: TokenFormat,
) -> String {
    let tokens = tokenize(client, Tokenize::of(customer).item(kind, value, format))
        .await
        .unwrap();
    assert_eq!(tokens.len(), 1);
    tokens.into_iter().next().unwrap()
}

fn item_code(result: &pb::DetokenizeResult) -> Option<Code> {
    result.error.as_ref().map(|e| Code::from_i32(e.code))
}

#[tokio::test]
async fn random_tokens_are_tok_and_26_lowercase_base32_chars() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let standalone = tokenize(
        &mut admin,
        Tokenize::of("cust-1")
            .item(
                FieldKind::CardNumber,
                "4242424242424242",
                TokenFormat::Random,
            )
            .item(FieldKind::Email, "a@example.com", TokenFormat::Unspecified)
            .item(
                FieldKind::CardNumber,
                "4242424242424242",
                TokenFormat::Random,
            ),
    )
    .await
    .unwrap();
    let fields = put(
        &mut admin,
        PutFields::of("cust-1")
            .field("email", FieldKind::Email, "a@example.com")
            .field("note", FieldKind::Generic, "hello"),
    )
    .await
    .unwrap()
    .tokens;
    let all: Vec<&String> = standalone.iter().chain(fields.values()).collect();
    for token in &all {
        assert!(is_random_token(token), "{token}");
    }
    let distinct: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "random tokens never repeat");
}

#[tokio::test]
async fn format_preserving_tokens_keep_the_shape_but_can_never_be_real_values() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    const DRAWS: usize = 50;
    let fp = TokenFormat::FormatPreserving;
    let cards = ["4242 4242 4242 4242", "378282246310005", "4222222222222"];
    let mut items = Vec::new();
    for _ in 0..DRAWS {
        items.push((FieldKind::Ssn, "123-45-6789", fp));
        for card in cards {
            items.push((FieldKind::CardNumber, card, fp));
        }
        items.push((FieldKind::Email, "John.Doe@Example.com", fp));
        items.push((FieldKind::Phone, "(555) 123-4567", fp));
    }
    let tokens = tokenize(&mut admin, Tokenize::of("cust-1").items(items.clone()))
        .await
        .unwrap();
    assert_eq!(tokens.len(), items.len());
    for ((kind, value, _), token) in items.iter().zip(&tokens) {
        match kind {
            FieldKind::Ssn => assert!(is_ssn_token(token), "{token}"),
            FieldKind::CardNumber => {
                let digits: String = value.chars().filter(char::is_ascii_digit).collect();
                assert_eq!(token.len(), digits.len(), "{token}");
                assert!(token.bytes().all(|b| b.is_ascii_digit()), "{token}");
                assert_eq!(token[token.len() - 4..], digits[digits.len() - 4..]);
                assert!(!luhn_valid(token), "card token {token} passes Luhn");
            }
            FieldKind::Email => {
                let local = token.strip_suffix("@token.invalid").expect(token);
                assert_eq!(local.len(), "John.Doe".len(), "{token}");
            }
            FieldKind::Phone => {
                assert!(token.starts_with("+999"), "{token}");
                assert_eq!(token.len(), "+15551234567".len(), "{token}");
                assert!(token[1..].bytes().all(|b| b.is_ascii_digit()), "{token}");
            }
            _ => unreachable!(),
        }
    }
    let distinct: std::collections::HashSet<_> = tokens.iter().collect();
    assert_eq!(
        distinct.len(),
        tokens.len(),
        "format-preserving tokens are unique"
    );

    // They resolve like any other token.
    let results = detokenize(&mut admin, &tokens[..5], "billing")
        .await
        .unwrap();
    let values: Vec<&str> = results.iter().map(|r| r.value.as_str()).collect();
    assert_eq!(
        values,
        [
            "123-45-6789",
            "4242424242424242",
            "378282246310005",
            "4222222222222",
            "John.Doe@example.com"
        ]
    );

    // Field tokens come in the same shapes.
    let field_tokens = put(
        &mut admin,
        PutFields::of("cust-2")
            .field("ssn", FieldKind::Ssn, "123456789")
            .field("card", FieldKind::CardNumber, "4242 4242 4242 4242")
            .field("email", FieldKind::Email, "jane@example.com")
            .field("phone", FieldKind::Phone, "+44 20 7946 0958")
            .format(fp),
    )
    .await
    .unwrap()
    .tokens;
    assert!(is_ssn_token(&field_tokens["ssn"]), "{field_tokens:?}");
    let card = &field_tokens["card"];
    assert!(card.len() == 16 && card.ends_with("4242") && !luhn_valid(card));
    assert!(field_tokens["email"].ends_with("@token.invalid"));
    assert!(field_tokens["phone"].starts_with("+999"));
    assert_eq!(field_tokens["phone"].len(), "+442079460958".len());
}

#[tokio::test]
async fn deterministic_tokens_depend_on_customer_kind_and_normalized_value_only() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let det = TokenFormat::Deterministic;
    let first = one_token(&mut admin, "cust-1", FieldKind::Ssn, "123-45-6789", det).await;
    assert!(is_deterministic_token(&first), "{first}");

    let again = one_token(&mut admin, "cust-1", FieldKind::Ssn, "123-45-6789", det).await;
    assert_eq!(again, first, "same customer, kind and value");
    let unnormalized = one_token(&mut admin, "cust-1", FieldKind::Ssn, "123456789", det).await;
    assert_eq!(unnormalized, first, "the value is compared normalized");

    let other_customer = one_token(&mut admin, "cust-2", FieldKind::Ssn, "123-45-6789", det).await;
    assert_ne!(other_customer, first, "different customer");
    let other_value = one_token(&mut admin, "cust-1", FieldKind::Ssn, "123-45-6780", det).await;
    assert_ne!(other_value, first, "different value");

    let as_name = one_token(&mut admin, "cust-1", FieldKind::Name, "John", det).await;
    let as_generic = one_token(&mut admin, "cust-1", FieldKind::Generic, "John", det).await;
    assert!(is_deterministic_token(&as_name) && is_deterministic_token(&as_generic));
    assert_ne!(as_name, as_generic, "same value as a different kind");

    // Twice in one request: one token, stored once.
    let pair = tokenize(
        &mut admin,
        Tokenize::of("cust-3")
            .item(FieldKind::Email, "x@example.com", det)
            .item(FieldKind::Email, "x@EXAMPLE.com", det),
    )
    .await
    .unwrap();
    assert_eq!(pair[0], pair[1]);

    let results = detokenize(
        &mut admin,
        &[first.clone(), other_customer.clone()],
        "billing",
    )
    .await
    .unwrap();
    assert_eq!(results[0].customer_id, "cust-1");
    assert_eq!(results[0].value, "123-45-6789");
    assert_eq!(results[1].customer_id, "cust-2");

    // Deterministic tokens are stored once however often they are issued.
    let mut privacy = vault.privacy(common::ADMIN_KEY).await;
    let receipt = delete_customer(&mut privacy, "cust-3").await.unwrap();
    assert_eq!(receipt.tokens_erased, 1);
}

#[tokio::test]
async fn detokenize_resolves_tokens_in_request_order_and_reports_unknown_ones_per_item() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let tokens = tokenize(
        &mut admin,
        Tokenize::of("cust-1")
            .item(
                FieldKind::CardNumber,
                "4111 1111 1111 1111",
                TokenFormat::Random,
            )
            .item(FieldKind::Email, "Jane@Example.com", TokenFormat::Random),
    )
    .await
    .unwrap();
    let unknown = format!("tok_{}", "a".repeat(26));
    let request = vec![
        tokens[1].clone(),
        unknown.clone(),
        tokens[0].clone(),
        "not-a-token-at-all".to_owned(),
    ];
    let results = detokenize(&mut admin, &request, "billing").await.unwrap();
    assert_eq!(results.len(), 4);
    let echoed: Vec<&str> = results.iter().map(|r| r.token.as_str()).collect();
    assert_eq!(
        echoed,
        request.iter().map(String::as_str).collect::<Vec<_>>()
    );

    assert_eq!(results[0].customer_id, "cust-1");
    assert_eq!(results[0].kind, FieldKind::Email as i32);
    assert_eq!(results[0].value, "Jane@example.com");
    assert_eq!(results[0].disclosure, Disclosure::Plaintext as i32);
    assert_eq!(results[0].error, None);

    assert_eq!(results[2].customer_id, "cust-1");
    assert_eq!(results[2].kind, FieldKind::CardNumber as i32);
    assert_eq!(results[2].value, "4111111111111111");
    assert_eq!(results[2].error, None);

    for unresolved in [&results[1], &results[3]] {
        assert_eq!(
            item_code(unresolved),
            Some(Code::NotFound),
            "{unresolved:?}"
        );
        assert_eq!(unresolved.customer_id, "");
        assert_eq!(unresolved.value, "");
        assert_eq!(unresolved.disclosure, Disclosure::Denied as i32);
    }
}

#[tokio::test]
async fn a_field_token_resolves_to_the_fields_current_value() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let token = put(
        &mut admin,
        PutFields::of("cust-1").field("email", FieldKind::Email, "old@example.com"),
    )
    .await
    .unwrap()
    .tokens["email"]
        .clone();
    let results = detokenize(&mut admin, std::slice::from_ref(&token), "billing")
        .await
        .unwrap();
    assert_eq!(results[0].value, "old@example.com");
    assert_eq!(results[0].customer_id, "cust-1");
    assert_eq!(results[0].kind, FieldKind::Email as i32);

    put(
        &mut admin,
        PutFields::of("cust-1").field("email", FieldKind::Email, "new@Example.com"),
    )
    .await
    .unwrap();
    let results = detokenize(&mut admin, std::slice::from_ref(&token), "billing")
        .await
        .unwrap();
    assert_eq!(results[0].value, "new@example.com");
    assert_eq!(results[0].error, None);
}

#[tokio::test]
async fn checkout_detokenizes_cards_in_plaintext_other_kinds_masked_and_ssn_as_token_only() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let standalone = tokenize(
        &mut admin,
        Tokenize::of("cust-1")
            .item(
                FieldKind::CardNumber,
                "4242424242424242",
                TokenFormat::Random,
            )
            .item(FieldKind::Email, "john@example.com", TokenFormat::Random)
            .item(FieldKind::Phone, "(555) 123-4567", TokenFormat::Random)
            .item(FieldKind::Ssn, "123-45-6789", TokenFormat::Random)
            .item(FieldKind::DateOfBirth, "1985-07-04", TokenFormat::Random),
    )
    .await
    .unwrap();
    let fields = put(
        &mut admin,
        PutFields::of("cust-1")
            .field("card", FieldKind::CardNumber, "4111111111111111")
            .field("full_name", FieldKind::Name, "John Doe")
            .field("secret_note", FieldKind::Generic, "the vault password"),
    )
    .await
    .unwrap()
    .tokens;
    let mut request = standalone.clone();
    request.extend(["card", "full_name", "secret_note"].map(|f| fields[f].clone()));

    let mut checkout = vault.vault(common::CHECKOUT_KEY).await;
    let results = detokenize(&mut checkout, &request, "billing")
        .await
        .unwrap();
    let expected = [
        (Disclosure::Plaintext, "4242424242424242"),
        (Disclosure::Masked, "j***@example.com"),
        (Disclosure::Masked, "+*******4567"),
        (Disclosure::Token, ""),
        (Disclosure::Masked, "1985-**-**"),
        (Disclosure::Plaintext, "4111111111111111"),
        (Disclosure::Masked, "J*** D***"),
    ];
    for (index, (disclosure, value)) in expected.into_iter().enumerate() {
        let result = &results[index];
        assert_eq!(
            result.disclosure, disclosure as i32,
            "item {index}: {result:?}"
        );
        assert_eq!(result.value, value, "item {index}");
        assert_eq!(result.error, None, "item {index}");
        assert_eq!(result.customer_id, "cust-1", "item {index}");
    }
    let secret = &results[7];
    assert_eq!(
        item_code(secret),
        Some(Code::PermissionDenied),
        "{secret:?}"
    );
    assert_eq!(secret.value, "");
    assert_eq!(secret.disclosure, Disclosure::Denied as i32);

    // Support may only see emails (plaintext) and phones (masked).
    let mut support = vault.vault(common::SUPPORT_KEY).await;
    let results = detokenize(&mut support, &standalone[..3], "support")
        .await
        .unwrap();
    assert_eq!(item_code(&results[0]), Some(Code::PermissionDenied));
    assert_eq!(results[0].value, "");
    assert_eq!(results[1].value, "john@example.com");
    assert_eq!(results[2].value, "+*******4567");
}

#[tokio::test]
async fn detokenize_needs_the_detokenize_scope_and_an_allowed_purpose() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let token = one_token(
        &mut admin,
        "cust-1",
        FieldKind::CardNumber,
        "4242424242424242",
        TokenFormat::Random,
    )
    .await;
    let tokens = vec![token];

    let mut writer = vault.vault(common::WRITER_KEY).await;
    let status = expect_code(
        detokenize(&mut writer, &tokens, "billing").await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("tokens:detokenize"), "{status:?}");

    let mut checkout = vault.vault(common::CHECKOUT_KEY).await;
    let status = expect_code(
        detokenize(&mut checkout, &tokens, "support").await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("support"), "{status:?}");
    assert!(!status.message().contains("4242"));

    let results = detokenize(&mut checkout, &tokens, "billing").await.unwrap();
    assert_eq!(results[0].value, "4242424242424242");
}

#[tokio::test]
async fn a_deleted_fields_token_is_not_found() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let tokens = put(
        &mut admin,
        PutFields::of("cust-1")
            .field("email", FieldKind::Email, "john@example.com")
            .field("phone", FieldKind::Phone, "(555) 123-4567"),
    )
    .await
    .unwrap()
    .tokens;
    assert_eq!(
        delete_fields(&mut admin, "cust-1", &["email"])
            .await
            .unwrap(),
        1
    );
    let request = vec![tokens["email"].clone(), tokens["phone"].clone()];
    let results = detokenize(&mut admin, &request, "billing").await.unwrap();
    assert_eq!(item_code(&results[0]), Some(Code::NotFound), "{results:?}");
    assert_eq!(results[0].customer_id, "");
    assert_eq!(results[1].value, "+15551234567");

    // Deleting it again deletes nothing.
    assert_eq!(
        delete_fields(&mut admin, "cust-1", &["email"])
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn tokenize_rejects_a_bad_item_by_index_and_writes_nothing() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let rnd = TokenFormat::Random;
    let bad_batch = || {
        vec![
            (FieldKind::CardNumber, "4242424242424242", rnd),
            (
                FieldKind::Email,
                "a@example.com",
                TokenFormat::Deterministic,
            ),
            (FieldKind::Ssn, "666-12-3456", rnd),
            (FieldKind::Phone, "(555) 123-4567", rnd),
        ]
    };

    // A customer not yet held is not created.
    let status = expect_code(
        tokenize(&mut admin, Tokenize::of("fresh").items(bad_batch())).await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("item 2"), "{status:?}");
    assert!(!status.message().contains("666-12-3456"));
    assert!(!status.message().contains("666123456"));
    expect_code(
        common::get(&mut admin, "fresh", &[], "billing").await,
        Code::NotFound,
    );

    // A customer already held gets no new token.
    put(
        &mut admin,
        PutFields::of("existing").field("email", FieldKind::Email, "a@example.com"),
    )
    .await
    .unwrap();
    one_token(&mut admin, "existing", FieldKind::Generic, "kept", rnd).await;
    expect_code(
        tokenize(&mut admin, Tokenize::of("existing").items(bad_batch())).await,
        Code::InvalidArgument,
    );
    let status = expect_code(
        tokenize(
            &mut admin,
            Tokenize::of("existing")
                .item(FieldKind::Generic, "fine", rnd)
                .item(FieldKind::CardNumber, "4242424242424241", rnd),
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("item 1"), "{status:?}");
    assert!(status.message().contains("Luhn"), "{status:?}");
    let mut privacy = vault.privacy(common::ADMIN_KEY).await;
    let receipt = delete_customer(&mut privacy, "existing").await.unwrap();
    assert_eq!(receipt.fields_erased, 1);
    assert_eq!(
        receipt.tokens_erased, 2,
        "one field token, one standalone token"
    );
}

#[tokio::test]
async fn a_format_preserving_item_without_shape_is_rejected_by_index_and_writes_nothing() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let status = expect_code(
        tokenize(
            &mut admin,
            Tokenize::of("cust-1")
                .item(FieldKind::Generic, "fine", TokenFormat::Random)
                .item(FieldKind::Generic, "#!#!", TokenFormat::FormatPreserving),
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("item 1"), "{status:?}");
    assert!(!status.message().contains("#!#!"), "{status:?}");
    expect_code(
        common::get(&mut admin, "cust-1", &[], "billing").await,
        Code::NotFound,
    );

    let status = expect_code(
        admin
            .tokenize(
                Tokenize::of("cust-1")
                    .raw_item(FieldKind::Generic as i32, "fine", 99)
                    .build(),
            )
            .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("token format"), "{status:?}");
}

#[tokio::test]
async fn detokenize_rejects_empty_and_oversized_batches() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    expect_code(
        detokenize(&mut admin, &[], "billing").await,
        Code::InvalidArgument,
    );
    let too_many = vec![format!("tok_{}", "a".repeat(26)); 1001];
    let status = expect_code(
        detokenize(&mut admin, &too_many, "billing").await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("1000"), "{status:?}");
}

#[tokio::test]
async fn tokenize_rejects_empty_and_oversized_batches() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let status = expect_code(
        tokenize(&mut admin, Tokenize::of("cust-1")).await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("items"), "{status:?}");

    let too_many = vec![(FieldKind::Generic, "v", TokenFormat::Random); 1001];
    let status = expect_code(
        tokenize(&mut admin, Tokenize::of("cust-1").items(too_many)).await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("1000"), "{status:?}");
    expect_code(
        common::get(&mut admin, "cust-1", &[], "billing").await,
        Code::NotFound,
    );

    let just_enough = vec![(FieldKind::Generic, "v", TokenFormat::Random); 1000];
    let tokens = tokenize(&mut admin, Tokenize::of("cust-1").items(just_enough))
        .await
        .unwrap();
    assert_eq!(tokens.len(), 1000);
}

#[tokio::test]
async fn find_customers_matches_emails_by_normalized_value_whatever_the_domain_case() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    put(
        &mut admin,
        PutFields::of("cust-a").field("email", FieldKind::Email, "Jane.Doe@Example.com"),
    )
    .await
    .unwrap();
    put(
        &mut admin,
        PutFields::of("cust-b").field("email", FieldKind::Email, "Jane.Doe@EXAMPLE.COM"),
    )
    .await
    .unwrap();
    put(
        &mut admin,
        PutFields::of("cust-c").field("email", FieldKind::Email, "someone.else@example.com"),
    )
    .await
    .unwrap();

    for spelling in [
        "Jane.Doe@Example.com",
        "Jane.Doe@EXAMPLE.COM",
        " Jane.Doe@example.com ",
    ] {
        let found = find_customers(&mut admin, "email", spelling, "billing")
            .await
            .unwrap();
        assert_eq!(found, ["cust-a", "cust-b"], "searching {spelling:?}");
    }
    // The same value in another field is another index.
    let found = find_customers(&mut admin, "work_email", "Jane.Doe@example.com", "billing")
        .await
        .unwrap();
    assert!(found.is_empty(), "{found:?}");

    // After DeleteFields and DeleteCustomer they are no longer found.
    delete_fields(&mut admin, "cust-a", &["email"])
        .await
        .unwrap();
    let found = find_customers(&mut admin, "email", "Jane.Doe@example.com", "billing")
        .await
        .unwrap();
    assert_eq!(found, ["cust-b"]);
    let mut privacy = vault.privacy(common::ADMIN_KEY).await;
    delete_customer(&mut privacy, "cust-b").await.unwrap();
    let found = find_customers(&mut admin, "email", "Jane.Doe@example.com", "billing")
        .await
        .unwrap();
    assert!(found.is_empty(), "{found:?}");
    let found = find_customers(&mut admin, "email", "someone.else@example.com", "billing")
        .await
        .unwrap();
    assert_eq!(found, ["cust-c"]);
}

#[tokio::test]
async fn find_customers_matches_phones_and_ssns_after_normalization() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    put(
        &mut admin,
        PutFields::of("cust-a")
            .field("phone", FieldKind::Phone, "(555) 123-4567")
            .field("ssn", FieldKind::Ssn, "123456789"),
    )
    .await
    .unwrap();
    put(
        &mut admin,
        PutFields::of("cust-b").field("phone", FieldKind::Phone, "+44 20 7946 0958"),
    )
    .await
    .unwrap();

    for spelling in [
        "+15551234567",
        "555.123.4567",
        "1-555-123-4567",
        "+1 (555) 123 4567",
    ] {
        let found = find_customers(&mut admin, "phone", spelling, "billing")
            .await
            .unwrap();
        assert_eq!(found, ["cust-a"], "searching {spelling:?}");
    }
    let found = find_customers(&mut admin, "phone", "+442079460958", "billing")
        .await
        .unwrap();
    assert_eq!(found, ["cust-b"]);
    for spelling in ["123-45-6789", "123456789", "123 45 6789"] {
        let found = find_customers(&mut admin, "ssn", spelling, "billing")
            .await
            .unwrap();
        assert_eq!(found, ["cust-a"], "searching {spelling:?}");
    }

    // A replaced value is found by its new value only.
    put(
        &mut admin,
        PutFields::of("cust-a").field("phone", FieldKind::Phone, "(555) 765-4321"),
    )
    .await
    .unwrap();
    let old = find_customers(&mut admin, "phone", "5551234567", "billing")
        .await
        .unwrap();
    assert!(old.is_empty(), "{old:?}");
    let new = find_customers(&mut admin, "phone", "5557654321", "billing")
        .await
        .unwrap();
    assert_eq!(new, ["cust-a"]);

    let mut privacy = vault.privacy(common::ADMIN_KEY).await;
    delete_customer(&mut privacy, "cust-a").await.unwrap();
    for (field_name, value) in [("phone", "5557654321"), ("ssn", "123-45-6789")] {
        let found = find_customers(&mut admin, field_name, value, "billing")
            .await
            .unwrap();
        assert!(found.is_empty(), "{field_name}: {found:?}");
    }
}

#[tokio::test]
async fn find_customers_rejects_a_value_of_no_searchable_kind() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    put(
        &mut admin,
        PutFields::of("cust-a").field("full_name", FieldKind::Name, "Zorblax Quux"),
    )
    .await
    .unwrap();
    for value in ["Zorblax Quux", "1985-07-04", "4242424242424242", ""] {
        let status = expect_code(
            find_customers(&mut admin, "full_name", value, "billing").await,
            Code::InvalidArgument,
        );
        assert!(status.message().contains("searchable"), "{status:?}");
        if !value.is_empty() {
            assert!(!status.message().contains(value), "{status:?}");
        }
    }
}

/// Encryptions done under the customer's key: unchanged when nothing was written.
async fn encryptions(vault: &common::TestVault, customer: &str) -> u64 {
    vault
        .key_admin(common::ADMIN_KEY)
        .await
        .get_key_status(pb::GetKeyStatusRequest {
            customer_id: customer.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .customer_key_encryptions
}

#[tokio::test]
async fn deterministic_tokens_confirm_guesses_so_only_plaintext_readers_may_ask_for_them() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let det = TokenFormat::Deterministic;
    let held = one_token(
        &mut admin,
        "cust-1",
        FieldKind::DateOfBirth,
        "1985-07-14",
        det,
    )
    .await;
    assert!(is_deterministic_token(&held), "{held}");
    let before = encryptions(&vault, "cust-1").await;

    // A data:write-only principal holding that token cannot test guesses:
    // refused alike for the value that exists and for one that does not, so
    // the refusal itself says nothing.
    let mut writer = vault.vault(common::WRITER_KEY).await;
    for guess in ["1985-07-14", "1985-07-15"] {
        let status = expect_code(
            tokenize(
                &mut writer,
                Tokenize::of("cust-1").item(FieldKind::DateOfBirth, guess, det),
            )
            .await,
            Code::PermissionDenied,
        );
        assert!(
            status.message().contains("tokens:detokenize")
                && status.message().contains("item 0 (date_of_birth)")
                && !status.message().contains(guess),
            "{}",
            status.message()
        );
    }
    // A principal that may detokenize but sees dates of birth masked cannot
    // either: a matching token would tell it more than the mask.
    let mut checkout = vault.vault(common::CHECKOUT_KEY).await;
    let status = expect_code(
        tokenize(
            &mut checkout,
            Tokenize::of("cust-1").item(FieldKind::DateOfBirth, "1985-07-14", det),
        )
        .await,
        Code::PermissionDenied,
    );
    assert!(
        status.message().contains("plaintext"),
        "{}",
        status.message()
    );
    // Nor through a field: deleting one and putting guesses back with
    // deterministic tokens would compare the same way.
    let status = expect_code(
        put(
            &mut writer,
            PutFields::of("cust-1")
                .field("dob", FieldKind::DateOfBirth, "1985-07-14")
                .format(det),
        )
        .await,
        Code::PermissionDenied,
    );
    assert!(
        status.message().contains("field \"dob\" (date_of_birth)"),
        "{}",
        status.message()
    );
    assert_eq!(
        encryptions(&vault, "cust-1").await,
        before,
        "a refusal wrote"
    );

    // Random tokens stay open to writers; deterministic ones to principals
    // that see the kind in plaintext, new or existing.
    let random = one_token(
        &mut writer,
        "cust-1",
        FieldKind::DateOfBirth,
        "1985-07-14",
        TokenFormat::Random,
    )
    .await;
    assert!(is_random_token(&random), "{random}");
    let card = one_token(
        &mut checkout,
        "cust-1",
        FieldKind::CardNumber,
        "4242424242424242",
        det,
    )
    .await;
    let again = one_token(
        &mut checkout,
        "cust-1",
        FieldKind::CardNumber,
        "4242 4242 4242 4242",
        det,
    )
    .await;
    assert!(is_deterministic_token(&card) && card == again);
    let new = one_token(
        &mut admin,
        "cust-1",
        FieldKind::DateOfBirth,
        "1990-01-02",
        det,
    )
    .await;
    assert!(is_deterministic_token(&new) && new != held);
}

#[tokio::test]
async fn deterministic_tokenize_spends_the_detokenize_budget() {
    let policy = format!(
        r#"{}
[[principals]]
name = "matcher"
api_key_sha256 = "{}"
scopes = ["data:write", "tokens:detokenize"]
purposes = ["billing"]
[principals.disclosure]
"*" = "plaintext"
[principals.rate_limits]
detokenize_per_second = 2
"#,
        common::test_policy(),
        pii_vault::policy::api_key_sha256_hex("pv_test_matcher_key"),
    );
    let vault = common::spawn_vault_with_policy(&policy).await;
    let mut matcher = vault.vault("pv_test_matcher_key").await;
    let det = TokenFormat::Deterministic;
    let guesses = vec![
        (FieldKind::DateOfBirth, "1985-07-14", det),
        (FieldKind::DateOfBirth, "1985-07-15", det),
        (FieldKind::DateOfBirth, "1985-07-16", det),
    ];
    let status = expect_code(
        tokenize(&mut matcher, Tokenize::of("cust-1").items(guesses.clone())).await,
        Code::ResourceExhausted,
    );
    assert!(
        status.message().contains("rate limit"),
        "{}",
        status.message()
    );
    // Random tokens are not metered; two deterministic ones fit the budget.
    tokenize(
        &mut matcher,
        Tokenize::of("cust-1").items(vec![
            (
                FieldKind::DateOfBirth,
                "1985-07-14",
                TokenFormat::Random
            );
            3
        ]),
    )
    .await
    .unwrap();
    tokenize(
        &mut matcher,
        Tokenize::of("cust-1").items(guesses[..2].to_vec()),
    )
    .await
    .unwrap();
}

async fn delete_tokens(
    client: &mut VaultClient,
    customer: &str,
    tokens: &[&str],
) -> Result<u32, tonic::Status> {
    client
        .delete_tokens(pb::DeleteTokensRequest {
            customer_id: customer.into(),
            tokens: tokens.iter().map(|token| token.to_string()).collect(),
        })
        .await
        .map(|response| response.into_inner().deleted)
}

/// DeleteTokens removes standalone tokens and their values (issue #19, item
/// 9: a retried Tokenize leaves an orphan no RPC could delete). A retry
/// deletes nothing more and still succeeds; another customer's token is
/// skipped as if absent; a field's token is refused, the field kept; the
/// deletion is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_tokens_removes_standalone_tokens_and_is_safe_to_retry() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let mine = tokenize(
        &mut admin,
        Tokenize::of("holder")
            .item(
                FieldKind::CardNumber,
                "4242 4242 4242 4242",
                TokenFormat::Random,
            )
            .item(
                FieldKind::CardNumber,
                "5555 5555 5555 4444",
                TokenFormat::Random,
            ),
    )
    .await
    .unwrap();
    let theirs = tokenize(
        &mut admin,
        Tokenize::of("other").item(
            FieldKind::CardNumber,
            "4000 0566 5566 5556",
            TokenFormat::Random,
        ),
    )
    .await
    .unwrap();
    let fields = put(
        &mut admin,
        PutFields::of("holder").field("email", FieldKind::Email, "holder@example.com"),
    )
    .await
    .unwrap()
    .tokens;

    let deleted = delete_tokens(&mut admin, "holder", &[&mine[0], &theirs[0]]).await;
    assert_eq!(deleted.unwrap(), 1, "another customer's token is skipped");
    let again = delete_tokens(&mut admin, "holder", &[&mine[0]]).await;
    assert_eq!(again.unwrap(), 0, "a retry succeeds and deletes nothing");

    let request = vec![mine[0].clone(), mine[1].clone(), theirs[0].clone()];
    let results = detokenize(&mut admin, &request, "billing").await.unwrap();
    assert_eq!(item_code(&results[0]), Some(Code::NotFound), "{results:?}");
    assert_eq!(results[1].value, "5555555555554444");
    assert_eq!(results[2].value, "4000056655665556");

    let field_token = delete_tokens(&mut admin, "holder", &[&fields["email"]]).await;
    let status = expect_code(field_token, Code::FailedPrecondition);
    assert!(
        status.message().contains("DeleteFields"),
        "{}",
        status.message()
    );
    let results = detokenize(&mut admin, &[fields["email"].clone()], "billing")
        .await
        .unwrap();
    assert_eq!(results[0].value, "holder@example.com", "the field is kept");

    let empty = delete_tokens(&mut admin, "holder", &[]).await;
    expect_code(empty, Code::InvalidArgument);

    let mut audit = vault.audit(common::ADMIN_KEY).await;
    let events = audit
        .list_audit_events_page(pb::ListAuditEventsRequest {
            customer_id: "holder".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let deletions = events
        .iter()
        .filter(|event| event.action == "DeleteTokens")
        .count();
    assert_eq!(deletions, 4, "every call is audited, refusals included");
}

/// DeleteTokens needs data:write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_tokens_needs_data_write() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let tokens = tokenize(
        &mut admin,
        Tokenize::of("holder").item(
            FieldKind::CardNumber,
            "4242 4242 4242 4242",
            TokenFormat::Random,
        ),
    )
    .await
    .unwrap();
    let mut reader = vault.vault(common::SUPPORT_KEY).await;
    let refused = delete_tokens(&mut reader, "holder", &[&tokens[0]]).await;
    let status = expect_code(refused, Code::PermissionDenied);
    assert!(
        status.message().contains("data:write"),
        "{}",
        status.message()
    );
    let results = detokenize(&mut admin, &tokens, "billing").await.unwrap();
    assert_eq!(results[0].value, "4242424242424242");
}

async fn find_page(
    client: &mut VaultClient,
    field_name: &str,
    page_size: u32,
    page_token: &str,
) -> Result<pb::FindCustomersResponse, tonic::Status> {
    client
        .find_customers(pb::FindCustomersRequest {
            field_name: field_name.into(),
            value: "shared@example.com".into(),
            purpose: "billing".into(),
            page_size,
            page_token: page_token.into(),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn find_customers_pages_through_every_match_and_never_cuts_silently() {
    let options = pii_vault::app::VaultOptions {
        limits: pii_vault::vault::Limits {
            max_search_results: 4,
            ..Default::default()
        },
        ..Default::default()
    };
    let vault = common::spawn_vault_with(&common::test_policy(), options).await;
    let mut admin = vault.admin().await;
    let shared = field("email", FieldKind::Email, "shared@example.com");
    let expected: Vec<String> = (0..7).map(|n| format!("cust-{n}")).collect();
    for customer in &expected {
        put(
            &mut admin,
            PutFields::of(customer).fields(vec![shared.clone()]),
        )
        .await
        .unwrap();
    }
    let other = field("email", FieldKind::Email, "other@example.com");
    put(&mut admin, PutFields::of("cust-other").fields(vec![other]))
        .await
        .unwrap();

    // Pages of 3: 3 + 3 + 1, each pointing at the next, the last at none.
    let mut found = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = find_page(&mut admin, "email", 3, &token).await.unwrap();
        assert!(page.customer_ids.len() <= 3, "{page:?}");
        found.extend(page.customer_ids);
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages < 5, "the pages never end");
    }
    assert_eq!((found, pages), (expected.clone(), 3));

    // Asking for no size, or more than the server's maximum (4 here), gets
    // that maximum, and the response says more are left.
    for asked in [0, 4, 1000] {
        let page = find_page(&mut admin, "email", asked, "").await.unwrap();
        assert_eq!(page.customer_ids, expected[..4], "page_size {asked}");
        assert!(!page.next_page_token.is_empty(), "page_size {asked}");
        let rest = find_page(&mut admin, "email", asked, &page.next_page_token)
            .await
            .unwrap();
        assert_eq!(rest.customer_ids, expected[4..], "page_size {asked}");
        assert_eq!(rest.next_page_token, "", "page_size {asked}");
    }
}

#[tokio::test]
async fn find_customers_refuses_a_page_token_it_did_not_issue_for_that_search() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let shared = field("email", FieldKind::Email, "shared@example.com");
    for customer in ["cust-a", "cust-b"] {
        put(
            &mut admin,
            PutFields::of(customer).fields(vec![shared.clone()]),
        )
        .await
        .unwrap();
    }
    let first = find_page(&mut admin, "email", 1, "").await.unwrap();
    assert_eq!(first.customer_ids, ["cust-a"]);
    // Exactly a page of matches left: no token after it.
    let second = find_page(&mut admin, "email", 1, &first.next_page_token)
        .await
        .unwrap();
    assert_eq!(second.customer_ids, ["cust-b"]);
    assert_eq!(second.next_page_token, "");

    let forged = first.next_page_token.replace("fct_", "fct_00");
    for token in ["garbage", "fct_", "fct_zz", forged.as_str()] {
        let status = find_page(&mut admin, "email", 1, token).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{token}: {status:?}");
        assert!(status.message().contains("page_token"), "{status:?}");
    }
    // A token of a search of another field is refused too.
    let status = find_page(&mut admin, "work_email", 1, &first.next_page_token)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("page_token"), "{status:?}");
}

/// A customer id of the largest length (128 bytes), numbered `n` (0-99).
fn longest_customer_id(n: usize) -> String {
    format!("cust{n:02}-{}", "x".repeat(121))
}

#[tokio::test]
async fn a_detokenize_reply_over_the_message_limit_is_refused_before_it_is_audited() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    // 1,000 tokens (the most one call takes) of the longest values (generic,
    // 4,096 bytes) of customers with the longest ids: about 4.2 MB of reply,
    // over gRPC's 4 MiB per message.
    let longest_value = "v".repeat(pii_vault::vault::FieldKind::Generic.max_input_len());
    let mut tokens = Vec::new();
    // Spread over 100 customers: each token read decodes its customer's
    // whole entry, which would make a debug build time the call out.
    for n in 0..100 {
        let fields = (0..10)
            .map(|f| field(&format!("note_{f}"), FieldKind::Generic, &longest_value))
            .collect();
        let written = put(
            &mut admin,
            PutFields::of(&longest_customer_id(n)).fields(fields),
        )
        .await
        .unwrap();
        tokens.extend(written.tokens.into_values());
    }
    assert_eq!(tokens.len(), 1000);
    let status = detokenize(&mut admin, &tokens, "billing")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("4194304 bytes") && status.message().contains("smaller batches"),
        "{status:?}"
    );
    let mut audit = vault.audit(common::ADMIN_KEY).await;
    let detokenizations: Vec<_> = common::all_audit_events(&mut audit)
        .await
        .into_iter()
        .filter(|event| event.action == "Detokenize")
        .collect();
    assert!(
        detokenizations.iter().all(|event| event.outcome != "ok"),
        "a refused reply was audited as a disclosure: {detokenizations:?}"
    );
    assert!(!detokenizations.is_empty(), "the refusal was not audited");

    // As many of the same tokens as fit are answered in full.
    let results = detokenize(&mut admin, &tokens[..900], "billing")
        .await
        .unwrap();
    assert_eq!(results.len(), 900);
    assert!(results.iter().all(|result| result.value == longest_value));
}
