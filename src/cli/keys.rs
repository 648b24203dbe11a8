//! Key commands for security teams: rotate the master key (with live progress)
//! or one customer's key, and show key status.

use std::io::IsTerminal;

use serde_json::json;

use crate::pb;

use super::client::{key_admin_client, status_error, when, ClientArgs};

#[derive(clap::Subcommand, Debug)]
pub enum KeysCommand {
    /// Creates a new master key version and re-wraps every customer key under it.
    RotateMaster(RotateMasterArgs),
    /// Gives one customer a new data key and re-encrypts their values.
    RotateCustomer(RotateCustomerArgs),
    /// Shows master key versions, and one customer's key when given.
    Status(StatusArgs),
    /// Moves a running vault's keyring off its root key file, to the root of
    /// trust it was started with (--root-of-trust with --root-key-file); with
    /// --renew-material, rotates the root of trust in use.
    MigrateRootOfTrust(MigrateArgs),
}

#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// Rotate the root of trust in use instead (transit, pkcs11, aws-kms):
    /// seal every master version under new material there and destroy the
    /// material it replaces, so that no copy of the keyring saved before
    /// opens any more.
    #[arg(long)]
    pub renew_material: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct RotateMasterArgs {
    /// Destroy the previous master versions once nothing is wrapped under them
    /// (this is what makes earlier erasures cryptographic).
    #[arg(long)]
    pub retire: bool,
    /// With --retire: go on without asking (needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct RotateCustomerArgs {
    pub customer: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    pub customer: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::RotateMaster(args) => rotate_master(args).await,
        KeysCommand::RotateCustomer(args) => rotate_customer(args).await,
        KeysCommand::Status(args) => status(args).await,
        KeysCommand::MigrateRootOfTrust(args) => migrate_root_of_trust(args).await,
    }
}

async fn migrate_root_of_trust(args: MigrateArgs) -> anyhow::Result<()> {
    let mut stream = key_admin_client(&args.client)
        .await?
        .migrate_root_of_trust(pb::MigrateRootOfTrustRequest {
            renew_material: args.renew_material,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let mut last = None;
    while let Some(step) = stream.message().await.map_err(status_error)? {
        if !args.client.json {
            eprintln!(
                "sealed {}/{} master versions under {}",
                step.sealed, step.total, step.to
            );
        }
        last = Some(step);
    }
    let last = last
        .filter(|step| step.done)
        .ok_or_else(|| anyhow::anyhow!("the migration ended without finishing"))?;
    if args.client.json {
        println!(
            "{}",
            json!({ "to": last.to, "master_versions": last.total, "done": last.done })
        );
    } else if args.renew_material {
        println!(
            "Every master version is sealed under new material in {}, and the material it \
             replaces is destroyed: copies of the keyring saved before no longer open.",
            last.to
        );
    } else {
        println!(
            "The keyring is sealed by {} now, version by version. Restart the vault without \
             --root-key-file, then destroy the root key file and every copy of it.",
            last.to
        );
    }
    Ok(())
}

async fn rotate_master(args: RotateMasterArgs) -> anyhow::Result<()> {
    if args.retire {
        super::client::confirm(
            args.yes,
            "Destroying the previous master key versions (--retire)",
        )?;
    }
    let request = pb::RotateMasterKeyRequest {
        retire_previous: args.retire,
    };
    let mut stream = key_admin_client(&args.client)
        .await?
        .rotate_master_key(request)
        .await
        .map_err(status_error)?
        .into_inner();
    let bar = (!args.client.json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {pos}/{len} customers ({eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    });
    let mut last = None;
    while let Some(progress) = stream.message().await.map_err(status_error)? {
        match &bar {
            Some(bar) => {
                bar.set_message(format!(
                    "re-wrapping under master v{}",
                    progress.new_master_version
                ));
                bar.set_length(progress.total);
                bar.set_position(progress.rewrapped);
            }
            None if args.client.json => println!(
                "{}",
                json!({
                    "new_master_version": progress.new_master_version, "rewrapped": progress.rewrapped,
                    "total": progress.total, "done": progress.done,
                    "retired_versions": progress.retired_versions,
                })
            ),
            None => println!(
                "master v{}: {}/{} customers re-wrapped",
                progress.new_master_version, progress.rewrapped, progress.total
            ),
        }
        last = Some(progress);
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let Some(last) = last.filter(|progress| progress.done) else {
        anyhow::bail!("the rotation ended before it reported completion");
    };
    if !args.client.json {
        println!("master key rotated to v{}", last.new_master_version);
        match last.retired_versions.as_slice() {
            [] => println!("no versions retired"),
            retired => println!("destroyed master versions {retired:?}"),
        }
    }
    Ok(())
}

async fn rotate_customer(args: RotateCustomerArgs) -> anyhow::Result<()> {
    let request = pb::RotateCustomerKeyRequest {
        customer_id: args.customer.clone(),
    };
    let response = key_admin_client(&args.client)
        .await?
        .rotate_customer_key(request)
        .await
        .map_err(status_error)?
        .into_inner();
    if args.client.json {
        println!(
            "{}",
            json!({ "new_key_version": response.new_key_version, "values_reencrypted": response.values_reencrypted })
        );
    } else {
        println!(
            "{}: data key v{} ({} values re-encrypted; the old key is destroyed)",
            args.customer, response.new_key_version, response.values_reencrypted
        );
    }
    Ok(())
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let request = pb::GetKeyStatusRequest {
        customer_id: args.customer.clone().unwrap_or_default(),
    };
    let status = key_admin_client(&args.client)
        .await?
        .get_key_status(request)
        .await
        .map_err(status_error)?
        .into_inner();
    let root = status.root_of_trust.clone().unwrap_or_default();
    if args.client.json {
        println!(
            "{}",
            json!({
                "active_master_version": status.active_master_version,
                "master_versions": status.master_versions, "customers": status.customers,
                "last_master_rotation": when(status.last_master_rotation.as_ref()),
                "customer_key_version": status.customer_key_version,
                "customer_key_created": when(status.customer_key_created.as_ref()),
                "customer_key_encryptions": status.customer_key_encryptions,
                "root_of_trust": {
                    "kind": root.kind, "location": root.location,
                    "guarantee": root.guarantee, "reachable": root.reachable,
                    "awaiting_destruction": root.awaiting_destruction,
                    "superseded_awaiting_destruction": root.superseded_awaiting_destruction,
                    "migration_target": root.migration_target,
                },
            })
        );
        return Ok(());
    }
    println!("active master version  v{}", status.active_master_version);
    println!("live master versions   {:?}", status.master_versions);
    println!("customers              {}", status.customers);
    println!(
        "last master rotation   {}",
        when(status.last_master_rotation.as_ref())
    );
    let reachable = if root.reachable {
        ""
    } else {
        " (OUT OF REACH)"
    };
    println!(
        "root of trust          {} at {}{reachable}",
        root.kind, root.location
    );
    println!("  retiring a version   {}", root.guarantee);
    if !root.awaiting_destruction.is_empty() {
        println!("  awaiting destruction {:?}", root.awaiting_destruction);
    }
    if !root.superseded_awaiting_destruction.is_empty() {
        println!(
            "  replaced material of {:?} awaiting destruction",
            root.superseded_awaiting_destruction
        );
    }
    if !root.migration_target.is_empty() {
        println!(
            "  migration pending    to {}: run `pii-vault keys migrate-root-of-trust`",
            root.migration_target
        );
    }
    if let Some(customer) = args.customer {
        println!(
            "{customer}: data key v{}, created {}, {} encryptions",
            status.customer_key_version,
            when(status.customer_key_created.as_ref()),
            status.customer_key_encryptions
        );
    }
    Ok(())
}
