//! Builders for the requests tests send most: each starts from what most tests
//! want ("billing", random tokens) and says only what a test changes, so a
//! test reads as the request it makes, and one place builds each request.

use pii_vault::pb;
use pii_vault::pb::vault_service_client::VaultServiceClient;
use tonic::transport::Channel;

use super::VaultClient;

pub fn field(name: &str, kind: pb::FieldKind, value: &str) -> pb::Field {
    pb::Field {
        name: name.into(),
        kind: kind as i32,
        value: value.into(),
    }
}

/// A PutFields request: for "billing", random tokens, no expected revision,
/// unless a test says otherwise.
#[derive(Clone, Debug)]
pub struct PutFields(pb::PutFieldsRequest);

impl PutFields {
    pub fn of(customer: &str) -> PutFields {
        PutFields(pb::PutFieldsRequest {
            customer_id: customer.into(),
            fields: Vec::new(),
            purpose: "billing".into(),
            token_format: pb::TokenFormat::Random as i32,
            expected_revision: None,
        })
    }

    pub fn field(mut self, name: &str, kind: pb::FieldKind, value: &str) -> PutFields {
        self.0.fields.push(field(name, kind, value));
        self
    }

    pub fn fields(mut self, fields: Vec<pb::Field>) -> PutFields {
        self.0.fields.extend(fields);
        self
    }

    pub fn purpose(mut self, purpose: &str) -> PutFields {
        self.0.purpose = purpose.into();
        self
    }

    pub fn format(mut self, format: pb::TokenFormat) -> PutFields {
        self.0.token_format = format as i32;
        self
    }

    /// A token format number the API does not define.
    pub fn unknown_format(mut self, number: i32) -> PutFields {
        self.0.token_format = number;
        self
    }

    /// Written only if the customer's record is still at `revision`.
    pub fn expected_revision(mut self, revision: Option<u64>) -> PutFields {
        self.0.expected_revision = revision;
        self
    }

    pub fn build(self) -> pb::PutFieldsRequest {
        self.0
    }
}

/// A GetFields request: every field, for "billing", unless a test says
/// otherwise.
#[derive(Clone, Debug)]
pub struct GetFields(pb::GetFieldsRequest);

impl GetFields {
    pub fn of(customer: &str) -> GetFields {
        GetFields(pb::GetFieldsRequest {
            customer_id: customer.into(),
            field_names: Vec::new(),
            purpose: "billing".into(),
        })
    }

    pub fn names(mut self, names: &[&str]) -> GetFields {
        self.0.field_names = names.iter().map(|name| name.to_string()).collect();
        self
    }

    pub fn purpose(mut self, purpose: &str) -> GetFields {
        self.0.purpose = purpose.into();
        self
    }

    pub fn build(self) -> pb::GetFieldsRequest {
        self.0
    }
}

/// A Tokenize request: for "billing", with no client request id, unless a
/// test says otherwise.
#[derive(Clone, Debug)]
pub struct Tokenize(pb::TokenizeRequest);

impl Tokenize {
    pub fn of(customer: &str) -> Tokenize {
        Tokenize(pb::TokenizeRequest {
            customer_id: customer.into(),
            items: Vec::new(),
            purpose: "billing".into(),
            request_id: String::new(),
        })
    }

    pub fn item(self, kind: pb::FieldKind, value: &str, format: pb::TokenFormat) -> Tokenize {
        self.raw_item(kind as i32, value, format as i32)
    }

    /// An item by kind and format numbers, which the API may not define.
    pub fn raw_item(mut self, kind: i32, value: &str, format: i32) -> Tokenize {
        self.0.items.push(pb::TokenizeItem {
            value: value.into(),
            kind,
            format,
        });
        self
    }

    /// Items as `(kind, value, format)`, in order.
    pub fn items(self, items: Vec<(pb::FieldKind, &str, pb::TokenFormat)>) -> Tokenize {
        items
            .into_iter()
            .fold(self, |request, (kind, value, format)| {
                request.item(kind, value, format)
            })
    }

    /// One card number, with a random token.
    pub fn card(self) -> Tokenize {
        self.item(
            pb::FieldKind::CardNumber,
            "4242424242424242",
            pb::TokenFormat::Random,
        )
    }

    pub fn purpose(mut self, purpose: &str) -> Tokenize {
        self.0.purpose = purpose.into();
        self
    }

    /// A client request id (AIP-155; empty: none).
    pub fn request_id(mut self, request_id: &str) -> Tokenize {
        self.0.request_id = request_id.into();
        self
    }

    pub fn build(self) -> pb::TokenizeRequest {
        self.0
    }
}

pub async fn put(
    client: &mut VaultClient,
    request: PutFields,
) -> Result<pb::PutFieldsResponse, tonic::Status> {
    client
        .put_fields(request.build())
        .await
        .map(|r| r.into_inner())
}

/// The tokens of a Tokenize, in the order of its items.
pub async fn tokenize(
    client: &mut VaultClient,
    request: Tokenize,
) -> Result<Vec<String>, tonic::Status> {
    client
        .tokenize(request.build())
        .await
        .map(|r| r.into_inner().tokens)
}

pub async fn get(
    client: &mut VaultClient,
    customer: &str,
    names: &[&str],
    purpose: &str,
) -> Result<pb::GetFieldsResponse, tonic::Status> {
    client
        .get_fields(
            GetFields::of(customer)
                .names(names)
                .purpose(purpose)
                .build(),
        )
        .await
        .map(|r| r.into_inner())
}

pub async fn detokenize(
    client: &mut VaultClient,
    tokens: &[String],
    purpose: &str,
) -> Result<Vec<pb::DetokenizeResult>, tonic::Status> {
    client
        .detokenize(pb::DetokenizeRequest {
            tokens: tokens.to_vec(),
            purpose: purpose.into(),
        })
        .await
        .map(|r| r.into_inner().results)
}

pub fn value_of<'a>(response: &'a pb::GetFieldsResponse, name: &str) -> &'a pb::FieldValue {
    response
        .fields
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("field {name} missing from response"))
}

/// The status of a call that must fail with `code`; panics on success or on
/// another code, showing the message.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
) -> tonic::Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got success: {value:?}"),
        Err(status) => {
            assert_eq!(
                status.code(),
                code,
                "expected {code:?}, got {:?}: {}",
                status.code(),
                status.message()
            );
            status
        }
    }
}

pub async fn find_customers(
    client: &mut VaultClient,
    field_name: &str,
    value: &str,
    purpose: &str,
) -> Result<Vec<String>, tonic::Status> {
    client
        .find_customers(pb::FindCustomersRequest {
            field_name: field_name.into(),
            value: value.into(),
            purpose: purpose.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().customer_ids)
}

pub async fn delete_fields(
    client: &mut VaultClient,
    customer: &str,
    names: &[&str],
) -> Result<u32, tonic::Status> {
    client
        .delete_fields(pb::DeleteFieldsRequest {
            customer_id: customer.into(),
            field_names: names.iter().map(|n| n.to_string()).collect(),
        })
        .await
        .map(|r| r.into_inner().deleted)
}

/// `message` with `x-request-id: <id>` metadata.
pub fn with_request_id<T>(message: T, id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-request-id", id.parse().unwrap());
    request
}

/// Tries to collect for `purpose` both ways, a PutFields of an e-mail and a
/// Tokenize of a card, and returns the two refusals (PermissionDenied each).
pub async fn refused_collection(
    client: &mut VaultClient,
    customer: &str,
    purpose: &str,
) -> [tonic::Status; 2] {
    let email = PutFields::of(customer)
        .field("email", pb::FieldKind::Email, "ann.new@example.com")
        .purpose(purpose);
    [
        expect_code(put(client, email).await, tonic::Code::PermissionDenied),
        expect_code(
            tokenize(client, Tokenize::of(customer).card().purpose(purpose)).await,
            tonic::Code::PermissionDenied,
        ),
    ]
}

/// GetFields of every field for "billing", over a client that adds no credentials
/// (mTLS authenticates by the connection's certificate).
pub async fn get_plain(
    client: &mut VaultServiceClient<Channel>,
    customer: &str,
) -> Result<pb::GetFieldsResponse, tonic::Status> {
    client
        .get_fields(GetFields::of(customer).build())
        .await
        .map(|r| r.into_inner())
}
