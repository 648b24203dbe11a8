//! Privacy commands: purposes, consent, export, erasure and its receipts.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;

use crate::pb;

use super::client::{erasure_state_name, privacy_client, status_error, when, ClientArgs};

#[derive(clap::Args, Debug)]
pub struct DeleteCustomerArgs {
    pub customer: String,
    #[arg(long, default_value = "customer request")]
    pub reason: String,
    /// Erase without asking (needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct DeletionStatusArgs {
    /// The receipt id DeleteCustomer returned.
    pub receipt: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct PurposesArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum ConsentCommand {
    /// Records an opt-in (--granted) or an opt-out (--withdrawn).
    Set(ConsentSetArgs),
    /// Lists a customer's consents (current state, or --history).
    List(ConsentListArgs),
}

#[derive(clap::Args, Debug)]
pub struct ConsentSetArgs {
    pub customer: String,
    pub purpose: String,
    #[arg(
        long,
        conflicts_with = "withdrawn",
        required_unless_present = "withdrawn"
    )]
    pub granted: bool,
    #[arg(long)]
    pub withdrawn: bool,
    /// The privacy-policy version the customer saw.
    #[arg(long, default_value = "")]
    pub policy_version: String,
    /// Where the choice was made, e.g. web-signup.
    #[arg(long, default_value = "cli")]
    pub source: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct ConsentListArgs {
    pub customer: String,
    #[arg(long)]
    pub history: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    pub customer: String,
    /// json (machine-readable) or text (a plain-English report).
    #[arg(long, value_parser = ["json", "text"], default_value = "json")]
    pub format: String,
    /// Write the document here instead of stdout, to a new file readable by
    /// its owner only. An existing path is refused, a symbolic link always.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// The page of older access events a previous export named.
    #[arg(long, default_value = "")]
    pub access_history_page_token: String,
    /// With --out: replace an existing regular file (by a new owner-only file;
    /// a symbolic link is still refused, never followed).
    #[arg(long, requires = "out")]
    pub force: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn delete_customer(args: DeleteCustomerArgs) -> anyhow::Result<()> {
    super::client::confirm(
        args.yes,
        &format!("Erasing customer {:?} (crypto-shredding)", args.customer),
    )?;
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
    print_receipt(&receipt, args.client.json);
    Ok(())
}

pub async fn deletion_status(args: DeletionStatusArgs) -> anyhow::Result<()> {
    let request = pb::GetDeletionStatusRequest {
        receipt_id: args.receipt,
    };
    let receipt = privacy_client(&args.client)
        .await?
        .get_deletion_status(request)
        .await
        .map_err(status_error)?
        .into_inner();
    print_receipt(&receipt, args.client.json);
    Ok(())
}

fn print_receipt(receipt: &pb::DeletionReceipt, as_json: bool) {
    let state = erasure_state_name(receipt.state);
    if as_json {
        println!(
            "{}",
            json!({
                "receipt_id": receipt.receipt_id, "customer_id": receipt.customer_id,
                "deleted_at": when(receipt.deleted_at.as_ref()),
                "fields_erased": receipt.fields_erased, "tokens_erased": receipt.tokens_erased,
                "data_keys_destroyed": receipt.data_keys_destroyed, "state": state,
                "cryptographic_erasure_due": receipt.cryptographic_erasure_due.as_ref().map(|t| when(Some(t))),
                "audit_hash": receipt.audit_hash,
            })
        );
        return;
    }
    println!("erased customer {}", receipt.customer_id);
    println!("  receipt        {}", receipt.receipt_id);
    println!("  erased at      {}", when(receipt.deleted_at.as_ref()));
    println!("  fields erased  {}", receipt.fields_erased);
    println!("  tokens erased  {}", receipt.tokens_erased);
    println!(
        "  keys destroyed {}",
        receipt.data_keys_destroyed.join(", ")
    );
    println!("  erasure state  {state}");
    if receipt.cryptographic_erasure_due.is_some() {
        println!(
            "  final by       {}",
            when(receipt.cryptographic_erasure_due.as_ref())
        );
    }
    println!("  audit event    {}", receipt.audit_hash);
}

pub async fn purposes(args: PurposesArgs) -> anyhow::Result<()> {
    let response = privacy_client(&args.client)
        .await?
        .list_purposes(pb::ListPurposesRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let basis = |raw: i32| {
        pb::LegalBasis::try_from(raw)
            .map(|b| {
                b.as_str_name()
                    .trim_start_matches("LEGAL_BASIS_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_default()
    };
    if args.client.json {
        let purposes: Vec<_> = response
            .purposes
            .iter()
            .map(|p| json!({"name": p.name, "description": p.description, "basis": basis(p.basis)}))
            .collect();
        println!("{}", json!({ "purposes": purposes }));
        return Ok(());
    }
    for purpose in response.purposes {
        println!(
            "{:<20} {:<20} {}",
            purpose.name,
            basis(purpose.basis),
            purpose.description
        );
    }
    Ok(())
}

pub async fn consent(command: ConsentCommand) -> anyhow::Result<()> {
    match command {
        ConsentCommand::Set(args) => consent_set(args).await,
        ConsentCommand::List(args) => consent_list(args).await,
    }
}

async fn consent_set(args: ConsentSetArgs) -> anyhow::Result<()> {
    let request = pb::SetConsentRequest {
        customer_id: args.customer,
        purpose: args.purpose,
        granted: args.granted,
        policy_version: args.policy_version,
        source: args.source,
    };
    let record = privacy_client(&args.client)
        .await?
        .set_consent(request)
        .await
        .map_err(status_error)?
        .into_inner();
    print_consents(&[record], args.client.json);
    Ok(())
}

async fn consent_list(args: ConsentListArgs) -> anyhow::Result<()> {
    let request = pb::ListConsentsRequest {
        customer_id: args.customer,
        include_history: args.history,
    };
    let response = privacy_client(&args.client)
        .await?
        .list_consents(request)
        .await
        .map_err(status_error)?
        .into_inner();
    print_consents(&response.consents, args.client.json);
    Ok(())
}

fn print_consents(consents: &[pb::ConsentRecord], as_json: bool) {
    if as_json {
        let consents: Vec<_> = consents
            .iter()
            .map(|c| {
                json!({
                    "customer_id": c.customer_id, "purpose": c.purpose, "granted": c.granted,
                    "policy_version": c.policy_version, "source": c.source,
                    "recorded_at": when(c.recorded_at.as_ref()),
                })
            })
            .collect();
        println!("{}", json!({ "consents": consents }));
        return;
    }
    for consent in consents {
        let state = if consent.granted {
            "granted"
        } else {
            "withdrawn"
        };
        println!(
            "{:<12} {:<20} {:<10} policy {:<10} via {:<14} {}",
            consent.customer_id,
            consent.purpose,
            state,
            consent.policy_version,
            consent.source,
            when(consent.recorded_at.as_ref())
        );
    }
}

pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let format = match args.format.as_str() {
        "text" => pb::ExportFormat::Text,
        _ => pb::ExportFormat::Json,
    };
    let request = pb::ExportCustomerRequest {
        customer_id: args.customer,
        format: format as i32,
        access_history_page_token: args.access_history_page_token,
        ..Default::default()
    };
    let response = privacy_client(&args.client)
        .await?
        .export_customer(request)
        .await
        .map_err(status_error)?
        .into_inner();
    match &args.out {
        Some(path) => {
            write_private(path, &response.document, args.force)?;
            eprintln!("wrote {} ({})", path.display(), response.content_type);
        }
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&response.document)?;
        }
    }
    if !response.next_access_history_page_token.is_empty() {
        eprintln!(
            "older access events were left out of this document; for them, export again with \
             --access-history-page-token {}",
            response.next_access_history_page_token
        );
    }
    Ok(())
}

/// An export is the customer's personal data: it goes to a new file readable
/// by its owner only. `create_new` (O_CREAT|O_EXCL) neither opens an existing
/// file, which would keep its mode, nor follows a symbolic link, even a
/// dangling one. With `force` an existing regular file is replaced: the
/// document is written to a new file beside it, then renamed over it, and a
/// rename replaces a link rather than following it.
fn write_private(path: &std::path::Path, bytes: &[u8], force: bool) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(existing) if existing.file_type().is_symlink() => anyhow::bail!(
            "refusing to write {}: it is a symbolic link, which an export never follows",
            path.display()
        ),
        Ok(existing) if !force || !existing.is_file() => anyhow::bail!(
            "refusing to write {}: it already exists (--force replaces a regular file)",
            path.display()
        ),
        Ok(_) => replace_private(path, bytes),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => create_private(path, bytes)
            .map_err(|error| {
                let exists = error.kind() == std::io::ErrorKind::AlreadyExists;
                anyhow::Error::new(error).context(if exists {
                    format!(
                        "refusing to write {}: it appeared meanwhile (a file or a link)",
                        path.display()
                    )
                } else {
                    format!("creating {}", path.display())
                })
            }),
        Err(error) => Err(error).with_context(|| format!("checking {}", path.display())),
    }
}

fn create_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn replace_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(format!(".{}.tmp", std::process::id()));
    let temporary = path.with_file_name(temporary_name);
    let written = create_private(&temporary, bytes)
        .and_then(|()| std::fs::rename(&temporary, path))
        .with_context(|| format!("replacing {}", path.display()));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}
