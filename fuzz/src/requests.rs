//! Arbitrary protobuf bytes into every request type, then through the parses
//! the domain does on what a handler hands it. (The handlers themselves, with
//! the server's own conversions, are fuzzed end to end by `grpc`.)

use pii_vault::pb;
use pii_vault::vault::kinds::FieldKind;
use pii_vault::vault::tokens::Token;
use pii_vault::vault::{CustomerId, FieldName};
use prost::Message;

/// The first byte picks the request type, the rest is its encoding.
pub fn requests(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 18 {
        0 => check::<pb::PutFieldsRequest>(bytes, |r| {
            customer(&r.customer_id);
            for field in &r.fields {
                name(&field.name);
                value(field.kind, &field.value);
            }
            token_format(r.token_format);
        }),
        1 => check::<pb::GetFieldsRequest>(bytes, |r| {
            customer(&r.customer_id);
            r.field_names.iter().for_each(|n| name(n));
        }),
        2 => check::<pb::DeleteFieldsRequest>(bytes, |r| {
            customer(&r.customer_id);
            r.field_names.iter().for_each(|n| name(n));
        }),
        3 => check::<pb::TokenizeRequest>(bytes, |r| {
            customer(&r.customer_id);
            for item in &r.items {
                value(item.kind, &item.value);
                token_format(item.format);
            }
        }),
        4 => check::<pb::DetokenizeRequest>(bytes, |r| {
            for token in &r.tokens {
                let _ = Token::parse(token);
            }
        }),
        5 => check::<pb::FindCustomersRequest>(bytes, |r| {
            name(&r.field_name);
            for kind in FieldKind::ALL.into_iter().filter(|k| k.is_searchable()) {
                value(kind_number(kind), &r.value);
            }
        }),
        6 => check::<pb::SetConsentRequest>(bytes, |r| customer(&r.customer_id)),
        7 => check::<pb::ListConsentsRequest>(bytes, |r| customer(&r.customer_id)),
        8 => check::<pb::ExportCustomerRequest>(bytes, |r| {
            customer(&r.customer_id);
            let _ = pb::ExportFormat::try_from(r.format);
        }),
        9 => check::<pb::DeleteCustomerRequest>(bytes, |r| customer(&r.customer_id)),
        10 => check::<pb::GetDeletionStatusRequest>(bytes, |_| {}),
        11 => check::<pb::PublishPolicyRequest>(bytes, |_| {}),
        12 => check::<pb::ListNoticesRequest>(bytes, |r| customer(&r.customer_id)),
        13 => check::<pb::AcknowledgeNoticeRequest>(bytes, |r| customer(&r.customer_id)),
        14 => check::<pb::RotateMasterKeyRequest>(bytes, |_| {}),
        15 => check::<pb::RotateCustomerKeyRequest>(bytes, |r| customer(&r.customer_id)),
        16 => check::<pb::GetKeyStatusRequest>(bytes, |r| customer(&r.customer_id)),
        _ => check::<pb::ListAuditEventsRequest>(bytes, |r| {
            if let Some(since) = &r.since {
                // The server turns it into milliseconds with saturating math.
                let _ = since.seconds.saturating_mul(1000);
            }
        }),
    }
}

/// Decodes; what decodes re-encodes to something that decodes to the same
/// message, and goes through the domain's parses without a panic.
fn check<M: Message + Default + PartialEq>(bytes: &[u8], parse: impl Fn(&M)) {
    let Ok(request) = M::decode(bytes) else {
        return;
    };
    let encoded = request.encode_to_vec();
    let again = M::decode(&encoded[..]).expect("a re-encoded message decodes");
    assert!(again == request, "a message changed on a round trip");
    parse(&request);
}

fn customer(raw: &str) {
    if let Ok(id) = CustomerId::parse(raw) {
        assert_eq!(id.as_str(), raw);
    }
}

fn name(raw: &str) {
    if let Ok(name) = FieldName::parse(raw) {
        assert_eq!(name.as_str(), raw);
    }
}

/// What the server does with a kind number: unknown numbers are refused,
/// UNSPECIFIED means generic.
fn value(kind: i32, raw: &str) {
    let Ok(kind) = pb::FieldKind::try_from(kind) else {
        return;
    };
    let kind = match kind {
        pb::FieldKind::Unspecified => FieldKind::Generic,
        other => {
            let name = other.as_str_name().trim_start_matches("FIELD_KIND_");
            FieldKind::from_name(&name.to_ascii_lowercase())
                .unwrap_or_else(|| panic!("no domain kind for {name}"))
        }
    };
    let today = time::OffsetDateTime::now_utc().date();
    if let Ok(normalized) = kind.normalize(raw, today) {
        assert!(kind.normalize(normalized.as_str(), today).is_ok());
    }
}

fn kind_number(kind: FieldKind) -> i32 {
    let name = format!("FIELD_KIND_{}", kind.name().to_ascii_uppercase());
    pb::FieldKind::from_str_name(&name)
        .unwrap_or_else(|| panic!("no protobuf kind for {}", kind.name())) as i32
}

fn token_format(raw: i32) {
    let _ = pb::TokenFormat::try_from(raw);
}
