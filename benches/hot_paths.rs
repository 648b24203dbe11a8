//! Micro-benchmarks of the vault's hot paths, through the library's public API:
//! field encryption, DEK unwrap with and without the cache, nonces, token
//! generation of each format, blind indexes, normalization and masking, and
//! protobuf encoding of requests. `cargo bench --bench hot_paths`
//! (`-- --quick` for a fast pass; see BENCHMARKS.md for figures).
//!
//! The server's proto <-> domain conversion (`server::convert`) is private, so
//! "request conversion" here is prost encode/decode of the messages, which is
//! what tonic does for every call.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pii_vault::crypto::{Binding, DataCipher, Dek, DekCache, Keyring};
use pii_vault::pb;
use pii_vault::vault::tokens::{
    deterministic_token, format_preserving_token, random_token, TokenFormat,
};
use pii_vault::vault::FieldKind;
use prost::Message;
use rand::{RngCore, TryRngCore};
use std::sync::Arc;
use time::macros::date;

const CUSTOMER: &str = "bench-000004242";
const FIELD: Binding<'static> = Binding::Field {
    customer_id: CUSTOMER,
    field: "card",
};

/// The "today" that bounds the samples' dates of birth.
const TODAY: time::Date = date!(2026 - 11 - 29);

/// A raw and a normalized sample value of every kind.
fn samples() -> Vec<(FieldKind, &'static str, &'static str)> {
    vec![
        (FieldKind::Ssn, "123 45 6789", "123-45-6789"),
        (
            FieldKind::CardNumber,
            "4242 4242 4242 4242",
            "4242424242424242",
        ),
        (
            FieldKind::Email,
            " Jane.Doe+news@Example.COM ",
            "Jane.Doe+news@example.com",
        ),
        (FieldKind::Phone, "(415) 555-0134", "+14155550134"),
        (FieldKind::DateOfBirth, "1985-07-14", "1985-07-14"),
        (FieldKind::Name, "  Jane Q. Doe ", "Jane Q. Doe"),
        (
            FieldKind::Address,
            "1600 Amphitheatre Pkwy\nMountain View, CA 94043",
            "1600 Amphitheatre Pkwy\nMountain View, CA 94043",
        ),
        (
            FieldKind::Generic,
            "loyalty tier: gold",
            "loyalty tier: gold",
        ),
    ]
}

fn crypto(c: &mut Criterion) {
    let dek = Dek::generate();
    let cipher = DataCipher::new(&dek, 1);
    let mut group = c.benchmark_group("field");
    for size in [32usize, 256, 4096] {
        let plaintext = vec![0x41u8; size];
        let sealed = cipher.encrypt(&FIELD, &plaintext);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("encrypt_{size}B"), |b| {
            b.iter(|| cipher.encrypt(black_box(&FIELD), black_box(&plaintext)))
        });
        group.bench_function(format!("decrypt_{size}B"), |b| {
            b.iter(|| {
                cipher
                    .decrypt(black_box(&FIELD), black_box(&sealed))
                    .expect("decrypts")
            })
        });
    }
    let plaintext = [0x41u8; 32];
    group.throughput(Throughput::Elements(1));
    group.bench_function("encrypt_32B_cipher_rebuilt_per_call", |b| {
        b.iter(|| DataCipher::new(black_box(&dek), 1).encrypt(&FIELD, black_box(&plaintext)))
    });
    group.finish();

    let mut group = c.benchmark_group("nonce");
    group.bench_function("thread_rng_12B", |b| {
        b.iter(|| {
            let mut nonce = [0u8; 12];
            rand::rng().fill_bytes(&mut nonce);
            nonce
        })
    });
    group.bench_function("os_rng_12B", |b| {
        b.iter(|| {
            let mut nonce = [0u8; 12];
            rand::rngs::OsRng
                .try_fill_bytes(&mut nonce)
                .expect("the OS generator works");
            nonce
        })
    });
    group.finish();
}

fn dek(c: &mut Criterion) {
    let keyring = Keyring::generate(0);
    let dek = Dek::generate();
    let wrapped = keyring.active().wrap_dek(&dek, CUSTOMER, 1);
    let mut group = c.benchmark_group("dek");
    group.bench_function("wrap", |b| {
        b.iter(|| keyring.active().wrap_dek(black_box(&dek), CUSTOMER, 1))
    });
    group.bench_function("unwrap_uncached", |b| {
        b.iter(|| {
            let dek = keyring
                .unwrap_dek(black_box(&wrapped), CUSTOMER, 1)
                .expect("unwraps");
            DataCipher::new(&dek, 1)
        })
    });
    // A full cache of 10,000 customers (the default size), hit for one of them.
    let cache = DekCache::new(10_000, std::time::Duration::from_secs(300));
    let ids: Vec<String> = (0..10_000).map(|i| format!("bench-{i:09}")).collect();
    let entries: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| {
            let dek = Dek::generate();
            let wrapped = keyring.active().wrap_dek(&dek, id, 1);
            cache.insert(id, &wrapped, Arc::new(DataCipher::new(&dek, 1)));
            wrapped
        })
        .collect();
    let mut next = 0usize;
    group.bench_function("cache_hit_of_10000", |b| {
        b.iter(|| {
            next = (next + 7919) % ids.len();
            cache
                .get(black_box(&ids[next]), black_box(&entries[next]))
                .expect("cached")
        })
    });
    group.bench_function("cache_miss_unwrap_insert", |b| {
        let cache = DekCache::new(10_000, std::time::Duration::from_secs(300));
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let id = format!("miss-{n}");
            if cache.get(&id, &wrapped).is_none() {
                let dek = keyring.unwrap_dek(&wrapped, CUSTOMER, 1).expect("unwraps");
                cache.insert(&id, &wrapped, Arc::new(DataCipher::new(&dek, 1)));
            }
        })
    });
    group.finish();
}

fn tokens(c: &mut Criterion) {
    let keyring = Keyring::generate(0);
    let index_key = keyring.active().index_key();
    let token_key = pii_vault::crypto::TokenKey::generate();
    let mut group = c.benchmark_group("token");
    group.bench_function("random", |b| b.iter(random_token));
    group.bench_function("deterministic", |b| {
        b.iter(|| {
            deterministic_token(&token_key.deterministic_token(
                black_box(CUSTOMER),
                "card",
                "card_number",
                black_box("4242424242424242"),
            ))
        })
    });
    for (kind, raw, _) in samples() {
        let value = kind.normalize(raw, TODAY).expect("valid");
        group.bench_function(
            format!("{}_{}", TokenFormat::FormatPreserving.name(), kind.name()),
            |b| b.iter(|| format_preserving_token(black_box(&value)).expect("shaped")),
        );
    }
    group.finish();

    let mut group = c.benchmark_group("blind_index");
    for (kind, _, normalized) in samples().into_iter().filter(|(k, _, _)| k.is_searchable()) {
        group.bench_function(kind.name(), |b| {
            b.iter(|| index_key.blind_index("field", kind.name(), black_box(normalized)))
        });
    }
    group.finish();
}

fn kinds(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize");
    for (kind, raw, _) in samples() {
        group.bench_function(kind.name(), |b| {
            b.iter(|| kind.normalize(black_box(raw), TODAY).expect("valid"))
        });
    }
    group.finish();
    let mut group = c.benchmark_group("mask");
    for (kind, raw, _) in samples() {
        let value = kind.normalize(raw, TODAY).expect("valid");
        group.bench_function(kind.name(), |b| b.iter(|| black_box(&value).mask()));
    }
    group.finish();
}

fn put_request() -> pb::PutFieldsRequest {
    let field = |name: &str, kind: pb::FieldKind, value: &str| pb::Field {
        name: name.into(),
        kind: kind as i32,
        value: value.into(),
    };
    pb::PutFieldsRequest {
        customer_id: CUSTOMER.into(),
        fields: vec![
            field("full_name", pb::FieldKind::Name, "Jane Doe"),
            field("email", pb::FieldKind::Email, "jane.doe@example.com"),
            field("phone", pb::FieldKind::Phone, "(415) 555-0134"),
            field("ssn", pb::FieldKind::Ssn, "123-45-6789"),
            field("date_of_birth", pb::FieldKind::DateOfBirth, "1985-07-14"),
            field("card", pb::FieldKind::CardNumber, "4242 4242 4242 4242"),
        ],
        purpose: "billing".into(),
        token_format: pb::TokenFormat::Random as i32,
        expected_revision: None,
    }
}

fn requests(c: &mut Criterion) {
    let put = put_request();
    let tokenize = pb::TokenizeRequest {
        customer_id: CUSTOMER.into(),
        items: (0..100)
            .map(|i| pb::TokenizeItem {
                value: format!("4242 4242 4242 {i:04}"),
                kind: pb::FieldKind::CardNumber as i32,
                format: pb::TokenFormat::Random as i32,
            })
            .collect(),
        purpose: "billing".into(),
        request_id: String::new(),
    };
    let detokenized = pb::DetokenizeResponse {
        results: (0..100)
            .map(|i| pb::DetokenizeResult {
                token: random_token().into(),
                customer_id: format!("bench-{i:09}"),
                kind: pb::FieldKind::CardNumber as i32,
                value: format!("424242424242{i:04}"),
                disclosure: pb::Disclosure::Plaintext as i32,
                error: None,
            })
            .collect(),
    };
    let mut group = c.benchmark_group("proto");
    let put_bytes = put.encode_to_vec();
    group.bench_function("put_fields_request_6_fields_encode", |b| {
        b.iter(|| black_box(&put).encode_to_vec())
    });
    group.bench_function("put_fields_request_6_fields_decode", |b| {
        b.iter(|| pb::PutFieldsRequest::decode(black_box(&put_bytes[..])).expect("decodes"))
    });
    let tokenize_bytes = tokenize.encode_to_vec();
    group.throughput(Throughput::Elements(100));
    group.bench_function("tokenize_request_100_decode", |b| {
        b.iter(|| pb::TokenizeRequest::decode(black_box(&tokenize_bytes[..])).expect("decodes"))
    });
    group.bench_function("detokenize_response_100_encode", |b| {
        b.iter_batched(
            || detokenized.clone(),
            |response| response.encode_to_vec(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = crypto, dek, tokens, kinds, requests
}
criterion_main!(benches);
