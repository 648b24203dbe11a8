//! Privacy-policy versions and the notices customers see about them.

use serde_json::json;

use crate::pb;

use super::client::{privacy_client, status_error, when, ClientArgs};

#[derive(clap::Subcommand, Debug)]
pub enum PolicyCommand {
    /// Publishes a new privacy-policy version with a plain-English summary.
    Publish(PublishArgs),
    /// Lists published versions, oldest first.
    List(PolicyListArgs),
}

#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    #[arg(long)]
    pub version: String,
    /// What changed and why, in plain English.
    #[arg(long)]
    pub summary: String,
    /// Purposes whose use or description changed.
    #[arg(long = "changed", num_args = 1..)]
    pub changed: Vec<String>,
    /// Consents to the changed purposes given under earlier versions stop counting.
    #[arg(long)]
    pub requires_reconsent: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct PolicyListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum NoticesCommand {
    /// The policy changes a customer has not acknowledged yet.
    List(NoticesListArgs),
    /// Records that a customer saw a version (and every earlier one).
    Ack(NoticesAckArgs),
}

#[derive(clap::Args, Debug)]
pub struct NoticesListArgs {
    pub customer: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct NoticesAckArgs {
    pub customer: String,
    pub version: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn policy(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Publish(args) => publish(args).await,
        PolicyCommand::List(args) => list_versions(args).await,
    }
}

pub async fn notices(command: NoticesCommand) -> anyhow::Result<()> {
    match command {
        NoticesCommand::List(args) => list_notices(args).await,
        NoticesCommand::Ack(args) => acknowledge(args).await,
    }
}

async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let request = pb::PublishPolicyRequest {
        version: args.version,
        summary: args.summary,
        changed_purposes: args.changed,
        requires_reconsent: args.requires_reconsent,
    };
    let published = privacy_client(&args.client)
        .await?
        .publish_policy(request)
        .await
        .map_err(status_error)?
        .into_inner();
    print_versions(&[published], args.client.json);
    Ok(())
}

async fn list_versions(args: PolicyListArgs) -> anyhow::Result<()> {
    let response = privacy_client(&args.client)
        .await?
        .list_policy_versions(pb::ListPolicyVersionsRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    print_versions(&response.versions, args.client.json);
    Ok(())
}

fn print_versions(versions: &[pb::PolicyVersion], as_json: bool) {
    if as_json {
        let versions: Vec<_> = versions
            .iter()
            .map(|v| {
                json!({
                    "version": v.version, "summary": v.summary,
                    "changed_purposes": v.changed_purposes,
                    "requires_reconsent": v.requires_reconsent,
                    "published_at": when(v.published_at.as_ref()),
                })
            })
            .collect();
        println!("{}", json!({ "versions": versions }));
        return;
    }
    for version in versions {
        let reconsent = if version.requires_reconsent {
            ", re-consent required"
        } else {
            ""
        };
        println!(
            "{} (published {}; changes: {}{reconsent})",
            version.version,
            when(version.published_at.as_ref()),
            version.changed_purposes.join(", ")
        );
        println!("  {}", version.summary);
    }
}

async fn list_notices(args: NoticesListArgs) -> anyhow::Result<()> {
    let response = privacy_client(&args.client)
        .await?
        .list_notices(pb::ListNoticesRequest {
            customer_id: args.customer,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if args.client.json {
        let notices: Vec<_> = response
            .notices
            .iter()
            .map(|n| {
                json!({
                    "policy_version": n.policy_version, "summary": n.summary,
                    "purposes_needing_consent": n.purposes_needing_consent,
                    "published_at": when(n.published_at.as_ref()),
                })
            })
            .collect();
        println!("{}", json!({ "notices": notices }));
        return Ok(());
    }
    if response.notices.is_empty() {
        println!("no pending notices");
    }
    for notice in response.notices {
        println!("{}: {}", notice.policy_version, notice.summary);
        if !notice.purposes_needing_consent.is_empty() {
            println!(
                "  consent to renew: {}",
                notice.purposes_needing_consent.join(", ")
            );
        }
    }
    Ok(())
}

async fn acknowledge(args: NoticesAckArgs) -> anyhow::Result<()> {
    privacy_client(&args.client)
        .await?
        .acknowledge_notice(pb::AcknowledgeNoticeRequest {
            customer_id: args.customer.clone(),
            policy_version: args.version.clone(),
        })
        .await
        .map_err(status_error)?;
    println!(
        "{} acknowledged policy version {}",
        args.customer, args.version
    );
    Ok(())
}
