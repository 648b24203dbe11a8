//! Client commands for people: talk to a running vault and print readable output
//! (or JSON with --json).

use anyhow::{bail, Context};
use serde_json::json;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::pb::{
    self, privacy_service_client::PrivacyServiceClient, vault_service_client::VaultServiceClient,
};

#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// The vault's address.
    #[arg(
        long,
        env = "PII_VAULT_ADDR",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub addr: String,
    /// API key (prefer the environment variable: command lines are visible to other users).
    #[arg(long, env = "PII_VAULT_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct PutArgs {
    pub customer: String,
    /// Fields as name:kind=value (kind: generic, ssn, email, phone, address, name,
    /// date_of_birth, card_number; default generic).
    #[arg(required = true)]
    pub fields: Vec<String>,
    #[arg(long)]
    pub purpose: String,
    /// Token format for new fields: random, format_preserving or deterministic.
    #[arg(long, default_value = "random")]
    pub format: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    pub customer: String,
    /// Field names; none means every field.
    pub fields: Vec<String>,
    #[arg(long)]
    pub purpose: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct TokenizeArgs {
    pub customer: String,
    /// Values as kind=value (or just value, for generic).
    #[arg(required = true)]
    pub values: Vec<String>,
    #[arg(long)]
    pub purpose: String,
    #[arg(long, default_value = "random")]
    pub format: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct DetokenizeArgs {
    #[arg(required = true)]
    pub tokens: Vec<String>,
    #[arg(long)]
    pub purpose: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct DeleteCustomerArgs {
    pub customer: String,
    #[arg(long, default_value = "customer request")]
    pub reason: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Adds `authorization: Bearer <api key>` to every call.
type BearerInterceptor = Box<dyn FnMut(Request<()>) -> Result<Request<()>, Status> + Send>;
type Authorized = InterceptedService<Channel, BearerInterceptor>;

async fn connect(args: &ClientArgs) -> anyhow::Result<Channel> {
    Endpoint::from_shared(args.addr.clone())
        .context("--addr is not a valid URI")?
        .connect()
        .await
        .with_context(|| format!("cannot reach the vault at {}", args.addr))
}

fn bearer(args: &ClientArgs) -> anyhow::Result<BearerInterceptor> {
    let api_key = args
        .api_key
        .clone()
        .context("no API key: set PII_VAULT_API_KEY or pass --api-key")?;
    let header: MetadataValue<_> = format!("Bearer {api_key}")
        .parse()
        .context("the API key has characters that cannot go in a header")?;
    Ok(Box::new(move |mut request: Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", header.clone());
        Ok(request)
    }))
}

async fn vault_client(args: &ClientArgs) -> anyhow::Result<VaultServiceClient<Authorized>> {
    Ok(VaultServiceClient::with_interceptor(
        connect(args).await?,
        bearer(args)?,
    ))
}

async fn privacy_client(args: &ClientArgs) -> anyhow::Result<PrivacyServiceClient<Authorized>> {
    Ok(PrivacyServiceClient::with_interceptor(
        connect(args).await?,
        bearer(args)?,
    ))
}

fn status_error(status: Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

fn parse_kind(name: &str) -> anyhow::Result<pb::FieldKind> {
    pb::FieldKind::from_str_name(&format!("FIELD_KIND_{}", name.to_ascii_uppercase()))
        .with_context(|| format!("unknown kind {name:?}"))
}

fn parse_format(name: &str) -> anyhow::Result<pb::TokenFormat> {
    pb::TokenFormat::from_str_name(&format!("TOKEN_FORMAT_{}", name.to_ascii_uppercase()))
        .with_context(|| format!("unknown token format {name:?}"))
}

fn kind_name(raw: i32) -> String {
    pb::FieldKind::try_from(raw)
        .map(|kind| {
            kind.as_str_name()
                .trim_start_matches("FIELD_KIND_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| raw.to_string())
}

fn disclosure_name(raw: i32) -> String {
    pb::Disclosure::try_from(raw)
        .map(|d| {
            d.as_str_name()
                .trim_start_matches("DISCLOSURE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| raw.to_string())
}

/// `name:kind=value` (kind optional).
fn parse_field(spec: &str) -> anyhow::Result<pb::Field> {
    let (target, value) = spec
        .split_once('=')
        .with_context(|| "fields are written name:kind=value".to_owned())?;
    let (name, kind) = match target.split_once(':') {
        Some((name, kind)) => (name, parse_kind(kind)?),
        None => (target, pb::FieldKind::Generic),
    };
    Ok(pb::Field {
        name: name.to_owned(),
        kind: kind as i32,
        value: value.to_owned(),
    })
}

/// `kind=value`, or a bare value (generic).
fn parse_item(spec: &str, format: pb::TokenFormat) -> anyhow::Result<pb::TokenizeItem> {
    let (kind, value) = match spec.split_once('=') {
        Some((kind, value)) if parse_kind(kind).is_ok() => (parse_kind(kind)?, value),
        _ => (pb::FieldKind::Generic, spec),
    };
    Ok(pb::TokenizeItem {
        value: value.to_owned(),
        kind: kind as i32,
        format: format as i32,
    })
}

pub async fn put(args: PutArgs) -> anyhow::Result<()> {
    let fields = args
        .fields
        .iter()
        .map(|spec| parse_field(spec))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let request = pb::PutFieldsRequest {
        customer_id: args.customer.clone(),
        fields,
        purpose: args.purpose,
        token_format: parse_format(&args.format)? as i32,
    };
    let response = vault_client(&args.client)
        .await?
        .put_fields(request)
        .await
        .map_err(status_error)?
        .into_inner();
    let mut tokens: Vec<_> = response.tokens.into_iter().collect();
    tokens.sort();
    if args.client.json {
        println!(
            "{}",
            json!({ "customer_id": args.customer, "tokens": tokens.into_iter().collect::<std::collections::BTreeMap<_, _>>() })
        );
    } else {
        println!("stored {} field(s) for {}", tokens.len(), args.customer);
        for (name, token) in tokens {
            println!("  {name:<24} {token}");
        }
    }
    Ok(())
}

pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let request = pb::GetFieldsRequest {
        customer_id: args.customer,
        field_names: args.fields,
        purpose: args.purpose,
    };
    let response = vault_client(&args.client)
        .await?
        .get_fields(request)
        .await
        .map_err(status_error)?
        .into_inner();
    if args.client.json {
        let fields: Vec<_> = response
            .fields
            .iter()
            .map(|f| {
                json!({
                    "name": f.name, "kind": kind_name(f.kind), "value": f.value, "token": f.token,
                    "disclosure": disclosure_name(f.disclosure),
                    "error": f.error.as_ref().map(|e| e.message.clone()),
                })
            })
            .collect();
        println!(
            "{}",
            json!({ "customer_id": response.customer_id, "fields": fields })
        );
        return Ok(());
    }
    println!("customer {}", response.customer_id);
    for field in response.fields {
        let shown = match &field.error {
            Some(error) => format!("({})", error.message),
            None if field.value.is_empty() => format!("[{}]", field.token),
            None => field.value.clone(),
        };
        println!(
            "  {:<24} {:<14} {:<10} {}",
            field.name,
            kind_name(field.kind),
            disclosure_name(field.disclosure),
            shown
        );
    }
    Ok(())
}

pub async fn tokenize(args: TokenizeArgs) -> anyhow::Result<()> {
    let format = parse_format(&args.format)?;
    let items = args
        .values
        .iter()
        .map(|spec| parse_item(spec, format))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let request = pb::TokenizeRequest {
        customer_id: args.customer,
        items,
        purpose: args.purpose,
    };
    let response = vault_client(&args.client)
        .await?
        .tokenize(request)
        .await
        .map_err(status_error)?
        .into_inner();
    if args.client.json {
        println!("{}", json!({ "tokens": response.tokens }));
    } else {
        for token in response.tokens {
            println!("{token}");
        }
    }
    Ok(())
}

pub async fn detokenize(args: DetokenizeArgs) -> anyhow::Result<()> {
    let request = pb::DetokenizeRequest {
        tokens: args.tokens,
        purpose: args.purpose,
    };
    let response = vault_client(&args.client)
        .await?
        .detokenize(request)
        .await
        .map_err(status_error)?
        .into_inner();
    if args.client.json {
        let results: Vec<_> = response
            .results
            .iter()
            .map(|r| json!({
                "token": r.token, "customer_id": r.customer_id, "kind": kind_name(r.kind), "value": r.value,
                "disclosure": disclosure_name(r.disclosure),
                "error": r.error.as_ref().map(|e| e.message.clone()),
            }))
            .collect();
        println!("{}", json!({ "results": results }));
        return Ok(());
    }
    let mut refused = 0;
    for result in response.results {
        match &result.error {
            Some(error) => {
                refused += 1;
                println!("{}  refused: {}", result.token, error.message);
            }
            None => println!(
                "{}  {}  {}  {}",
                result.token,
                result.customer_id,
                kind_name(result.kind),
                result.value
            ),
        }
    }
    if refused > 0 {
        bail!("{refused} token(s) refused");
    }
    Ok(())
}

pub async fn delete_customer(args: DeleteCustomerArgs) -> anyhow::Result<()> {
    let request = pb::DeleteCustomerRequest {
        customer_id: args.customer,
        reason: args.reason,
    };
    let receipt = privacy_client(&args.client)
        .await?
        .delete_customer(request)
        .await
        .map_err(status_error)?
        .into_inner();
    let state = pb::ErasureState::try_from(receipt.state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("ERASURE_STATE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if args.client.json {
        println!(
            "{}",
            json!({
                "receipt_id": receipt.receipt_id, "customer_id": receipt.customer_id,
                "fields_erased": receipt.fields_erased, "tokens_erased": receipt.tokens_erased,
                "data_keys_destroyed": receipt.data_keys_destroyed, "state": state,
                "audit_hash": receipt.audit_hash,
            })
        );
    } else {
        println!("erased customer {}", receipt.customer_id);
        println!("  receipt        {}", receipt.receipt_id);
        println!("  fields erased  {}", receipt.fields_erased);
        println!("  tokens erased  {}", receipt.tokens_erased);
        println!(
            "  keys destroyed {}",
            receipt.data_keys_destroyed.join(", ")
        );
        println!("  erasure state  {state}");
    }
    Ok(())
}
