//! Audit commands for security teams: list events, verify the hash chain,
//! archive and trim the oldest events, verify archives.

use serde_json::json;

use crate::pb;

use super::client::{audit_client, status_error, when, ClientArgs};

#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Lists audit events, oldest first.
    List(AuditListArgs),
    /// Walks the hash chain and reports the first broken link.
    Verify(AuditVerifyArgs),
    /// Writes the events older than --before to a file (JSON lines), then
    /// trims them from the vault (TrimAuditLog).
    Archive(super::audit_archive::AuditArchiveArgs),
    /// Checks archive files offline: every event's hash, and the chain across
    /// the files; prints the last hash, which is the vault's anchor hash.
    VerifyArchive(super::audit_archive::AuditVerifyArchiveArgs),
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
    /// The most events listed (0: every matching one); fetched page by page.
    #[arg(long, default_value_t = 100)]
    pub limit: u64,
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
        AuditCommand::Archive(args) => super::audit_archive::archive(args).await,
        AuditCommand::VerifyArchive(args) => super::audit_archive::verify_archive(args),
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
    let mut client = audit_client(&args.client).await?;
    let mut request = pb::ListAuditEventsRequest {
        customer_id: args.customer.unwrap_or_default(),
        principal: args.principal.unwrap_or_default(),
        since,
        ..Default::default()
    };
    let mut listed: u64 = 0;
    // Page after page (each at most PAGE events) until the last one or --limit.
    loop {
        let wanted = match args.limit {
            0 => PAGE,
            limit => PAGE.min(limit - listed),
        };
        request.limit = wanted as u32;
        let page = client
            .list_audit_events_page(request.clone())
            .await
            .map_err(status_error)?
            .into_inner();
        for event in &page.events {
            print_event(event, args.client.json);
        }
        listed += page.events.len() as u64;
        let reached_limit = args.limit != 0 && listed >= args.limit;
        if page.next_after_seq == 0 || reached_limit {
            break;
        }
        request.after_seq = page.next_after_seq;
    }
    Ok(())
}

/// The most events one ListAuditEventsPage call returns.
const PAGE: u64 = 1000;

fn print_event(event: &pb::AuditEvent, json: bool) {
    if json {
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

async fn verify(args: AuditVerifyArgs) -> anyhow::Result<()> {
    let mut client = audit_client(&args.client).await?;
    // Each call checks a bounded stretch of the chain: go on until one
    // reaches the head (or finds a break).
    let mut request = pb::VerifyAuditLogRequest::default();
    let mut checked = 0;
    let mut result = loop {
        let result = client
            .verify_audit_log(request)
            .await
            .map_err(status_error)?
            .into_inner();
        checked += result.events_checked;
        if result.complete {
            break result;
        }
        request = pb::VerifyAuditLogRequest {
            after_seq: result.next_after_seq,
            ..Default::default()
        };
    };
    result.events_checked = checked;
    if args.client.json {
        println!(
            "{}",
            json!({
                "intact": result.intact, "events_checked": result.events_checked,
                "first_bad_seq": result.first_bad_seq, "head_hash": result.head_hash,
                "anchor_seq": result.anchor_seq, "anchor_hash": result.anchor_hash,
            })
        );
    } else if result.intact {
        println!(
            "audit log intact: {} events, head {}",
            result.events_checked, result.head_hash
        );
        if result.anchor_seq > 0 {
            println!(
                "it starts after the events up to {} trimmed into the archive, whose last \
                 hash must be {}",
                result.anchor_seq, result.anchor_hash
            );
        }
    } else {
        println!("audit log BROKEN at event {}", result.first_bad_seq);
    }
    if !result.intact {
        return Err(super::client::CliError::new(
            super::client::Failure::Integrity,
            "INTEGRITY",
            "the audit log does not verify",
        )
        .reported()
        .into());
    }
    Ok(())
}
