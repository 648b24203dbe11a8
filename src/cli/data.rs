//! Data-plane commands: put, get, tokenize, detokenize.

use anyhow::Context;
use serde_json::json;

use crate::pb;

use super::client::{disclosure_name, kind_name, status_error, vault_client, ClientArgs};

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
    /// A UUID you pick for this request and give again when you retry it:
    /// the retry gets the first call's tokens and creates none
    /// (docs/retries-and-limits.md). Without it every call makes new tokens.
    #[arg(long, default_value = "")]
    pub request_id: String,
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

fn parse_kind(name: &str) -> anyhow::Result<pb::FieldKind> {
    pb::FieldKind::from_str_name(&format!("FIELD_KIND_{}", name.to_ascii_uppercase()))
        .with_context(|| format!("unknown kind {name:?}"))
}

fn parse_format(name: &str) -> anyhow::Result<pb::TokenFormat> {
    pb::TokenFormat::from_str_name(&format!("TOKEN_FORMAT_{}", name.to_ascii_uppercase()))
        .with_context(|| format!("unknown token format {name:?}"))
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
        expected_revision: None,
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
        request_id: args.request_id,
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
        return Err(super::client::CliError::new(
            super::client::Failure::Refused,
            "REFUSED",
            format!("{refused} token(s) refused"),
        )
        .reported()
        .into());
    }
    Ok(())
}
