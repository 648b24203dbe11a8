//! `audit archive` and `audit verify-archive`: the audit log's oldest events
//! moved to files of JSON lines, then trimmed from the vault
//! (docs/audit-retention.md). A line holds every part of an event its hash
//! covers, as the store keeps it, so that the file verifies offline with the
//! vault's own hashing (`AuditRecord::computed_hash`) and its last hash is
//! the anchor the vault's live log chains from.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::pb;
use crate::store::{hex, AuditRecord, GENESIS_HASH};

use super::client::{audit_client, status_error, CliError, ClientArgs, Failure};

#[derive(clap::Args, Debug)]
pub struct AuditArchiveArgs {
    /// Archive the events older than this: an RFC 3339 time
    /// (2026-09-01T00:00:00Z) or an age (90d, 2160h).
    #[arg(long)]
    pub before: String,
    /// The archive file to create (mode 0600; an existing file is never
    /// overwritten).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct AuditVerifyArchiveArgs {
    /// Archive files, oldest first: each chains on from the one before.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// One line of an archive: an event as the store keeps it (a counted
/// refusal's outcome with its count), hashes in hex.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchivedEvent {
    seq: u64,
    at_ms: i64,
    principal: String,
    action: String,
    customer_id: String,
    fields: Vec<String>,
    purpose: String,
    outcome: String,
    request_id: String,
    prev_hash: String,
    hash: String,
}

fn millis(at: Option<&prost_types::Timestamp>) -> i64 {
    at.map_or(0, |at| {
        at.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(at.nanos / 1_000_000))
    })
}

impl ArchivedEvent {
    /// The event as the store holds it: the API shows a counted refusal's
    /// count and first time apart from its outcome, the store in its text.
    fn from_api(event: &pb::AuditEvent) -> ArchivedEvent {
        let outcome = match &event.first_at {
            Some(first_at) => format!(
                "{};count={};since_ms={}",
                event.outcome,
                event.count,
                millis(Some(first_at))
            ),
            None => event.outcome.clone(),
        };
        ArchivedEvent {
            seq: event.seq,
            at_ms: millis(event.at.as_ref()),
            principal: event.principal.clone(),
            action: event.action.clone(),
            customer_id: event.customer_id.clone(),
            fields: event.fields.clone(),
            purpose: event.purpose.clone(),
            outcome,
            request_id: event.request_id.clone(),
            prev_hash: event.prev_hash.clone(),
            hash: event.hash.clone(),
        }
    }

    fn record(&self) -> Option<AuditRecord> {
        let hash = |text: &str| -> Option<[u8; 32]> {
            let bytes = data_encoding::HEXLOWER.decode(text.as_bytes()).ok()?;
            bytes.try_into().ok()
        };
        Some(AuditRecord {
            seq: self.seq,
            at_ms: self.at_ms,
            principal: self.principal.clone(),
            action: self.action.clone(),
            customer_id: self.customer_id.clone(),
            fields: self.fields.clone(),
            purpose: self.purpose.clone(),
            outcome: self.outcome.clone(),
            request_id: self.request_id.clone(),
            prev_hash: hash(&self.prev_hash)?,
            hash: hash(&self.hash)?,
        })
    }
}

/// Walks a chain of events, one at a time, and says where it breaks.
struct ChainCheck {
    /// The last event checked: its seq and hash.
    last: Option<(u64, [u8; 32])>,
    count: u64,
    first: Option<(u64, [u8; 32])>,
}

impl ChainCheck {
    /// Starts after `anchor` (its seq and hash), or wherever the first event
    /// says when `None` (an archive verified without the ones before it).
    fn after(anchor: Option<(u64, [u8; 32])>) -> ChainCheck {
        ChainCheck {
            last: anchor,
            count: 0,
            first: None,
        }
    }

    fn check(&mut self, event: &ArchivedEvent) -> Result<(), String> {
        let record = event
            .record()
            .ok_or("its prev_hash or hash is not 64 hex characters")?;
        if record.computed_hash() != record.hash {
            return Err("its hash is not the hash of its contents".into());
        }
        match self.last {
            Some((seq, hash)) => {
                if record.seq != seq + 1 {
                    return Err(format!("event {seq} is followed by event {}", record.seq));
                }
                if record.prev_hash != hash {
                    return Err(format!(
                        "its prev_hash is not the hash of event {seq} before it"
                    ));
                }
            }
            None if record.seq == 1 && record.prev_hash != GENESIS_HASH => {
                return Err("the first event's prev_hash is not the genesis hash".into());
            }
            None => {}
        }
        if self.first.is_none() {
            self.first = Some((record.seq, record.prev_hash));
        }
        self.last = Some((record.seq, record.hash));
        self.count += 1;
        Ok(())
    }
}

fn integrity(message: String) -> anyhow::Error {
    CliError::new(Failure::Integrity, "INTEGRITY", message).into()
}

fn usage(message: String) -> anyhow::Error {
    CliError::new(Failure::Usage, "USAGE", message).into()
}

/// `--before`: an RFC 3339 time, or an age before now; in milliseconds.
fn cutoff_ms(before: &str) -> anyhow::Result<i64> {
    if let Ok(at) =
        time::OffsetDateTime::parse(before, &time::format_description::well_known::Rfc3339)
    {
        return Ok((at.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let age = humantime::parse_duration(before).map_err(|_| {
        usage(format!(
            "--before {before:?} is neither an RFC 3339 time nor an age such as 90d"
        ))
    })?;
    let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    Ok(now.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)))
}

/// The archive file, created on the first event: readable by its owner only.
struct ArchiveFile {
    path: PathBuf,
    file: Option<File>,
}

impl ArchiveFile {
    fn write(&mut self, event: &ArchivedEvent) -> anyhow::Result<()> {
        if self.file.is_none() {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&self.path)
                .with_context(|| format!("creating the archive {}", self.path.display()))?;
            self.file = Some(file);
        }
        let mut line = serde_json::to_vec(event)?;
        line.push(b'\n');
        let file = self.file.as_mut().context("the archive is open")?;
        file.write_all(&line)
            .with_context(|| format!("writing the archive {}", self.path.display()))
    }

    /// On stable storage, with its directory entry, before anything is trimmed.
    fn sync(&self) -> anyhow::Result<()> {
        if let Some(file) = &self.file {
            file.sync_all()
                .with_context(|| format!("syncing the archive {}", self.path.display()))?;
            let dir = match self.path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            File::open(dir)
                .and_then(|dir| dir.sync_all())
                .with_context(|| format!("syncing the directory {}", dir.display()))?;
        }
        Ok(())
    }
}

/// The most events one ListAuditEventsPage call returns.
const PAGE: u32 = 1000;

pub async fn archive(args: AuditArchiveArgs) -> anyhow::Result<()> {
    let cutoff = cutoff_ms(&args.before)?;
    let mut client = audit_client(&args.client).await?;
    // Where the held log starts: the first event archived must link to it.
    let start = client
        .verify_audit_log(pb::VerifyAuditLogRequest {
            after_seq: 0,
            max_events: 1,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let anchor_hash = data_encoding::HEXLOWER
        .decode(start.anchor_hash.as_bytes())
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .context("the vault reported an anchor hash that is not 64 hex characters")?;
    let mut chain = ChainCheck::after(Some((start.anchor_seq, anchor_hash)));
    let mut file = ArchiveFile {
        path: args.out.clone(),
        file: None,
    };
    // Each event is written once the next one is known: the newest event is
    // never archived (the vault keeps its head).
    let mut pending: Option<ArchivedEvent> = None;
    let mut request = pb::ListAuditEventsRequest {
        limit: PAGE,
        ..Default::default()
    };
    let reached_newer = 'pages: loop {
        let page = client
            .list_audit_events_page(request.clone())
            .await
            .map_err(status_error)?
            .into_inner();
        for event in &page.events {
            if millis(event.at.as_ref()) >= cutoff {
                break 'pages true;
            }
            let event = ArchivedEvent::from_api(event);
            chain.check(&event).map_err(|problem| {
                integrity(format!(
                    "audit event {} does not chain ({problem}); nothing was trimmed",
                    event.seq
                ))
            })?;
            if let Some(older) = pending.replace(event) {
                file.write(&older)?;
            }
        }
        if page.next_after_seq == 0 {
            break false;
        }
        request.after_seq = page.next_after_seq;
    };
    if reached_newer {
        if let Some(last) = pending.take() {
            file.write(&last)?;
        }
    }
    let archived = chain.count - u64::from(!reached_newer && chain.count > 0);
    if archived == 0 {
        if args.client.json {
            println!("{}", json!({ "events_archived": 0 }));
        } else {
            println!("nothing to archive: no audit event before the cutoff but the newest");
        }
        return Ok(());
    }
    file.sync()?;
    let first_seq = start.anchor_seq + 1;
    let last_seq = first_seq + archived - 1;
    let through_hash = match &file.file {
        Some(_) => last_written_hash(&args.out)?,
        None => anyhow::bail!("the archive was not written"),
    };
    let trimmed = client
        .trim_audit_log(pb::TrimAuditLogRequest {
            through_seq: last_seq,
            through_hash,
        })
        .await
        .map_err(status_error)
        .with_context(|| {
            format!(
                "{} holds events {first_seq} to {last_seq}, but the vault trimmed nothing",
                args.out.display()
            )
        })?
        .into_inner();
    if args.client.json {
        println!(
            "{}",
            json!({
                "file": args.out.display().to_string(),
                "events_archived": archived,
                "first_seq": first_seq,
                "last_seq": last_seq,
                "events_trimmed": trimmed.events_trimmed,
                "anchor_seq": trimmed.anchor_seq,
                "anchor_hash": trimmed.anchor_hash,
            })
        );
    } else {
        println!(
            "archived {archived} audit events ({first_seq} to {last_seq}) to {}; the vault \
             trimmed {}; anchor: event {}, hash {}",
            args.out.display(),
            trimmed.events_trimmed,
            trimmed.anchor_seq,
            trimmed.anchor_hash
        );
    }
    Ok(())
}

/// The hash of the last event in the archive just written, read back from
/// the file: what is trimmed is what the file holds.
fn last_written_hash(path: &Path) -> anyhow::Result<String> {
    let file = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut last = None;
    for line in BufReader::new(file).lines() {
        last = Some(line?);
    }
    let line = last.context("the archive is empty")?;
    let event: ArchivedEvent = serde_json::from_str(&line)?;
    Ok(event.hash)
}

pub fn verify_archive(args: AuditVerifyArchiveArgs) -> anyhow::Result<()> {
    let mut chain = ChainCheck::after(None);
    for path in &args.files {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        for (index, line) in BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            let at = format!("{} line {}", path.display(), index + 1);
            let checked = serde_json::from_str::<ArchivedEvent>(&line)
                .map_err(|_| "it is not an archived audit event".to_owned())
                .and_then(|event| chain.check(&event));
            if let Err(problem) = checked {
                report_broken(&args, &at, &problem);
                let message = format!("the audit archive does not verify: {at}: {problem}");
                return Err(CliError::new(Failure::Integrity, "INTEGRITY", message)
                    .reported()
                    .into());
            }
        }
    }
    let (Some((first_seq, first_prev)), Some((last_seq, last_hash))) = (chain.first, chain.last)
    else {
        return Err(usage("the archive files hold no audit event".into()));
    };
    if args.client.json {
        println!(
            "{}",
            json!({
                "intact": true,
                "events": chain.count,
                "first_seq": first_seq,
                "first_prev_hash": hex(&first_prev),
                "last_seq": last_seq,
                "last_hash": hex(&last_hash),
            })
        );
    } else {
        println!(
            "audit archive intact: {} events ({first_seq} to {last_seq}), last hash {}",
            chain.count,
            hex(&last_hash)
        );
        if first_seq > 1 {
            println!(
                "it starts after event {}, whose hash must be {} (the last hash of the \
                 archive before it)",
                first_seq - 1,
                hex(&first_prev)
            );
        }
    }
    Ok(())
}

fn report_broken(args: &AuditVerifyArchiveArgs, at: &str, problem: &str) {
    if args.client.json {
        println!(
            "{}",
            json!({ "intact": false, "broken_at": at, "problem": problem })
        );
    } else {
        println!("audit archive BROKEN at {at}: {problem}");
    }
}
