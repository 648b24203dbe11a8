//! Audit commands for security teams: list events, verify the hash chain.

use serde_json::json;

use crate::pb;

use super::client::{audit_client, status_error, when, ClientArgs};

#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Lists audit events, oldest first.
    List(AuditListArgs),
    /// Walks the hash chain and reports the first broken link.
    Verify(AuditVerifyArgs),
}

#[derive(clap::Args, Debug)]
pub struct AuditListArgs {
    #[arg(long)]
    pub customer: Option<String>,
    #[arg(long)]
    pub principal: Option<String>,
    /// Only events at or after this RFC 3339 time, e.g. 2026-11-01T00:00:00Z.
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct AuditVerifyArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::List(args) => list(args).await,
        AuditCommand::Verify(args) => verify(args).await,
    }
}

async fn list(args: AuditListArgs) -> anyhow::Result<()> {
    let since = args
        .since
        .as_deref()
        .map(|text| {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map(|at| prost_types::Timestamp {
                    seconds: at.unix_timestamp(),
                    nanos: 0,
                })
                .map_err(|_| anyhow::anyhow!("--since must be an RFC 3339 time"))
        })
        .transpose()?;
    let request = pb::ListAuditEventsRequest {
        customer_id: args.customer.unwrap_or_default(),
        principal: args.principal.unwrap_or_default(),
        since,
        limit: args.limit,
    };
    let mut stream = audit_client(&args.client)
        .await?
        .list_audit_events(request)
        .await
        .map_err(status_error)?
        .into_inner();
    while let Some(event) = stream.message().await.map_err(status_error)? {
        if args.client.json {
            println!(
                "{}",
                json!({
                    "seq": event.seq, "at": when(event.at.as_ref()), "principal": event.principal,
                    "action": event.action, "customer_id": event.customer_id, "fields": event.fields,
                    "purpose": event.purpose, "outcome": event.outcome, "request_id": event.request_id,
                    "prev_hash": event.prev_hash, "hash": event.hash,
                })
            );
        } else {
            println!(
                "{:>6} {} {:<12} {:<16} {:<14} {:<12} {:<18} [{}]",
                event.seq,
                when(event.at.as_ref()),
                event.principal,
                event.action,
                event.customer_id,
                event.purpose,
                event.outcome,
                event.fields.join(",")
            );
        }
    }
    Ok(())
}

async fn verify(args: AuditVerifyArgs) -> anyhow::Result<()> {
    let result = audit_client(&args.client)
        .await?
        .verify_audit_log(pb::VerifyAuditLogRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    if args.client.json {
        println!(
            "{}",
            json!({
                "intact": result.intact, "events_checked": result.events_checked,
                "first_bad_seq": result.first_bad_seq, "head_hash": result.head_hash,
            })
        );
    } else if result.intact {
        println!(
            "audit log intact: {} events, head {}",
            result.events_checked, result.head_hash
        );
    } else {
        println!("audit log BROKEN at event {}", result.first_bad_seq);
    }
    if !result.intact {
        anyhow::bail!("the audit log does not verify");
    }
    Ok(())
}
