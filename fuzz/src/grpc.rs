//! Arbitrary bytes as the body of every unary call, sent to a real server
//! (in this process, on loopback) as one of the policy's principals: tonic's
//! decoding, the handlers' conversions and the domain's parses, end to end.
//!
//! Every answer must be a clear one: a status other than UNKNOWN, UNAVAILABLE
//! or an INTERNAL that is not a decode error, with a short one-line message;
//! no task of the server may panic; and a customer planted at start-up with an
//! id nobody can guess must read back unchanged afterwards.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use pii_vault::app::VaultOptions;
use pii_vault::pb;
use pii_vault::server::RunningServer;
use pii_vault_testkit::policy::{test_policy, ADMIN_KEY, CHECKOUT_KEY, SUPPORT_KEY, WRITER_KEY};
use pii_vault_testkit::raw_grpc;
use pii_vault_testkit::vault::prepare_dir;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// API keys of the principals of the tests' policy, as the first byte after
/// the method picks them, and one that names nobody.
const KEYS: [&str; 5] = [
    ADMIN_KEY,
    CHECKOUT_KEY,
    SUPPORT_KEY,
    WRITER_KEY,
    "not-a-key",
];

/// A check of the planted customer every this many calls.
const SENTINEL_EVERY: u64 = 64;

struct Server {
    runtime: tokio::runtime::Runtime,
    channel: Channel,
    sentinel_id: String,
    sentinel_token: Mutex<String>,
    /// A request named the planted customer: it may have changed, legitimately.
    sentinel_touched: AtomicBool,
    calls: AtomicU64,
    _running: RunningServer,
    _dir: tempfile::TempDir,
}

/// Set when a thread of the server's runtime panics.
static PANICKED: AtomicBool = AtomicBool::new(false);
const SERVER_THREAD: &str = "fuzzed-vault";

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some(SERVER_THREAD) {
                PANICKED.store(true, Ordering::SeqCst);
            }
            previous(info);
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(SERVER_THREAD)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = crate::scratch_dir("grpc");
        let paths = prepare_dir(dir.path(), &test_policy());
        let (running, channel) = runtime.block_on(async {
            let running = pii_vault_testkit::vault::start(&paths, &VaultOptions::default()).await;
            let channel = Channel::from_shared(format!("http://{}", running.local_addr))
                .expect("uri")
                .connect()
                .await
                .expect("connects");
            (running, channel)
        });
        let sentinel_id = format!("sentinel-{}-{:016x}", std::process::id(), rand_u64());
        let sentinel_token = runtime.block_on(plant(&channel, &sentinel_id));
        Server {
            runtime,
            channel,
            sentinel_id,
            sentinel_token: Mutex::new(sentinel_token),
            sentinel_touched: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            _running: running,
            _dir: dir,
        }
    })
}

const PUT_FIELDS: &str = "/piivault.v1.VaultService/PutFields";

/// Stores the planted customer, afresh, with one field; returns its token.
async fn plant(channel: &Channel, sentinel_id: &str) -> String {
    let erase = pb::DeleteCustomerRequest {
        customer_id: sentinel_id.to_owned(),
        reason: "replanted".into(),
    };
    match call(
        channel,
        "/piivault.v1.PrivacyService/DeleteCustomer",
        KEYS[0],
        erase.encode_to_vec(),
    )
    .await
    {
        Ok(_) => {}
        Err(status) if status.code() == Code::NotFound => {}
        Err(status) => panic!("the planted customer cannot be erased: {status:?}"),
    }
    let put = pb::PutFieldsRequest {
        customer_id: sentinel_id.to_owned(),
        fields: vec![pb::Field {
            name: "note".into(),
            kind: pb::FieldKind::Generic as i32,
            value: "planted".into(),
        }],
        purpose: "billing".into(),
        token_format: 0,
        expected_revision: None,
    };
    let response = call(channel, PUT_FIELDS, KEYS[0], put.encode_to_vec())
        .await
        .expect("sentinel planted");
    let response = pb::PutFieldsResponse::decode(&response[..]).expect("response");
    response.tokens["note"].clone()
}

/// 64 bits from the OS generator (by way of a hasher's random keys).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// Every unary method, with a check of its successful answer.
type Answer = fn(&[u8]);
const METHODS: [(&str, Answer); 20] = [
    (PUT_FIELDS, |b| decodes::<pb::PutFieldsResponse>(b)),
    ("/piivault.v1.VaultService/GetFields", |b| {
        for field in decoded::<pb::GetFieldsResponse>(b).fields {
            item(field.error.as_ref());
        }
    }),
    ("/piivault.v1.VaultService/DeleteFields", |b| {
        decodes::<pb::DeleteFieldsResponse>(b)
    }),
    ("/piivault.v1.VaultService/Tokenize", |b| {
        decodes::<pb::TokenizeResponse>(b)
    }),
    ("/piivault.v1.VaultService/Detokenize", |b| {
        for result in decoded::<pb::DetokenizeResponse>(b).results {
            item(result.error.as_ref());
        }
    }),
    ("/piivault.v1.VaultService/FindCustomers", |b| {
        decodes::<pb::FindCustomersResponse>(b)
    }),
    ("/piivault.v1.PrivacyService/ListPurposes", |b| {
        decodes::<pb::ListPurposesResponse>(b)
    }),
    ("/piivault.v1.PrivacyService/SetConsent", |b| {
        decodes::<pb::ConsentRecord>(b)
    }),
    ("/piivault.v1.PrivacyService/ListConsents", |b| {
        decodes::<pb::ListConsentsResponse>(b)
    }),
    ("/piivault.v1.PrivacyService/ExportCustomer", |b| {
        decodes::<pb::ExportCustomerResponse>(b)
    }),
    ("/piivault.v1.PrivacyService/DeleteCustomer", |b| {
        decodes::<pb::DeletionReceipt>(b)
    }),
    ("/piivault.v1.PrivacyService/GetDeletionStatus", |b| {
        decodes::<pb::DeletionReceipt>(b)
    }),
    ("/piivault.v1.PrivacyService/PublishPolicy", |b| {
        decodes::<pb::PolicyVersion>(b)
    }),
    ("/piivault.v1.PrivacyService/ListPolicyVersions", |b| {
        decodes::<pb::ListPolicyVersionsResponse>(b)
    }),
    ("/piivault.v1.PrivacyService/ListNotices", |b| {
        decodes::<pb::ListNoticesResponse>(b)
    }),
    ("/piivault.v1.PrivacyService/AcknowledgeNotice", |b| {
        decodes::<pb::AcknowledgeNoticeResponse>(b)
    }),
    ("/piivault.v1.KeyAdminService/RotateCustomerKey", |b| {
        decodes::<pb::RotateCustomerKeyResponse>(b)
    }),
    ("/piivault.v1.KeyAdminService/GetKeyStatus", |b| {
        decodes::<pb::KeyStatus>(b)
    }),
    // Refused whatever the bytes say: the fuzzed vault keeps the default
    // minimum retention, and every event is younger.
    ("/piivault.v1.AuditService/TrimAuditLog", |b| {
        decodes::<pb::TrimAuditLogResponse>(b)
    }),
    ("/piivault.v1.AuditService/VerifyAuditLog", |b| {
        let verification = decoded::<pb::VerifyAuditLogResponse>(b);
        assert!(
            verification.intact,
            "the audit chain broke: {verification:?}"
        );
    }),
];

fn decoded<M: Message + Default>(bytes: &[u8]) -> M {
    M::decode(bytes).expect("the server's answer decodes")
}

fn decodes<M: Message + Default>(bytes: &[u8]) {
    decoded::<M>(bytes);
}

fn item(error: Option<&pb::ItemError>) {
    if let Some(error) = error {
        crate::assert_clear_message(&error.message);
        assert!(
            ![Code::Unknown as i32, Code::Internal as i32].contains(&error.code),
            "item failed with {}: {}",
            error.code,
            error.message
        );
    }
}

/// The first byte picks the method, the second the principal, the rest is
/// the request body as it goes on the wire.
pub fn grpc(data: &[u8]) {
    let [selector, principal, body @ ..] = data else {
        return;
    };
    let server = server();
    if contains(body, server.sentinel_id.as_bytes()) {
        server.sentinel_touched.store(true, Ordering::SeqCst);
    }
    let (path, check_answer) = METHODS[usize::from(*selector) % METHODS.len()];
    let key = KEYS[usize::from(*principal) % KEYS.len()];
    let answer = server
        .runtime
        .block_on(call(&server.channel, path, key, body.to_vec()));
    assert!(
        !PANICKED.load(Ordering::SeqCst),
        "the server panicked on {path}"
    );
    match answer {
        Ok(bytes) => check_answer(&bytes),
        Err(status) => check_refusal(path, &status),
    }
    if server
        .calls
        .fetch_add(1, Ordering::Relaxed)
        .is_multiple_of(SENTINEL_EVERY)
    {
        check_sentinel(server);
    }
}

fn check_refusal(path: &str, status: &Status) {
    let message = status.message();
    crate::assert_clear_message(message);
    match status.code() {
        Code::Unknown | Code::Unavailable | Code::DataLoss | Code::Unimplemented => {
            panic!("{path} answered {status:?}")
        }
        // tonic's answer to bytes that are not the request message.
        Code::Internal => assert!(
            message.starts_with("failed to decode Protobuf message"),
            "{path} failed inside the vault: {status:?}"
        ),
        _ => assert!(
            !message.is_empty(),
            "{path}: {:?} without a message",
            status.code()
        ),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The planted customer reads back as planted, by field and by token (or is
/// planted again, when a request named it).
fn check_sentinel(server: &Server) {
    let mut sentinel_token = server
        .sentinel_token
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if server.sentinel_touched.swap(false, Ordering::SeqCst) {
        *sentinel_token = server
            .runtime
            .block_on(plant(&server.channel, &server.sentinel_id));
        return;
    }
    let get = pb::GetFieldsRequest {
        customer_id: server.sentinel_id.clone(),
        field_names: vec![],
        purpose: "billing".into(),
    };
    let detokenize = pb::DetokenizeRequest {
        tokens: vec![sentinel_token.clone()],
        purpose: "billing".into(),
    };
    let (fields, values) = server.runtime.block_on(async {
        let fields = call(
            &server.channel,
            "/piivault.v1.VaultService/GetFields",
            KEYS[0],
            get.encode_to_vec(),
        )
        .await;
        let values = call(
            &server.channel,
            "/piivault.v1.VaultService/Detokenize",
            KEYS[0],
            detokenize.encode_to_vec(),
        )
        .await;
        (fields, values)
    });
    let fields =
        pb::GetFieldsResponse::decode(&fields.expect("sentinel readable")[..]).expect("decodes");
    let values =
        pb::DetokenizeResponse::decode(&values.expect("sentinel token")[..]).expect("decodes");
    assert_eq!(fields.fields.len(), 1, "{fields:?}");
    assert_eq!(fields.fields[0].value, "planted");
    assert_eq!(values.results[0].value, "planted", "{values:?}");
}

async fn call(
    channel: &Channel,
    path: &'static str,
    key: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, Status> {
    raw_grpc::call_raw(channel.clone(), path, key, body).await
}
