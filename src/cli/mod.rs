//! The command line: `serve`, `keygen`, and client commands for people.

mod audit;
mod audit_archive;
pub mod client;
mod data;
mod health;
mod keygen;
mod keys;
mod notices;
mod privacy;
mod reload;
mod root_of_trust;
mod serve;

use clap::{Parser, Subcommand};

pub use serve::ServeArgs;

#[derive(Parser, Debug)]
#[command(
    name = "pii-vault",
    version,
    about = "A vault for personal data: encrypted per customer, tokenized, consent-aware, erasable."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Runs the vault server.
    Serve(Box<ServeArgs>),
    /// Asks a vault whether it is serving (exit code 0 when it is).
    Health(health::HealthArgs),
    /// Writes a new random root key to a file (mode 0600).
    Keygen {
        /// Where to write the key; refuses to overwrite an existing file.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Stores fields of a customer: `put CUSTOMER name:kind=value ...`.
    Put(data::PutArgs),
    /// Reads fields of a customer: `get CUSTOMER [FIELD ...]`.
    Get(data::GetArgs),
    /// Stores standalone values and prints a token for each: `tokenize CUSTOMER kind=value ...`.
    Tokenize(data::TokenizeArgs),
    /// Resolves tokens to values: `detokenize TOKEN ...`.
    Detokenize(data::DetokenizeArgs),
    /// Erases a customer (crypto-shredding) and prints the receipt.
    DeleteCustomer(privacy::DeleteCustomerArgs),
    /// Shows the state of an erasure by its receipt id.
    DeletionStatus(privacy::DeletionStatusArgs),
    /// Lists the purposes the vault knows, with their legal basis.
    Purposes(privacy::PurposesArgs),
    /// Records or lists a customer's consents.
    #[command(subcommand)]
    Consent(privacy::ConsentCommand),
    /// Exports everything held about a customer (JSON, or a plain-English report).
    Export(privacy::ExportArgs),
    /// Lists, verifies or archives the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Publishes and lists privacy-policy versions.
    #[command(subcommand)]
    Policy(notices::PolicyCommand),
    /// Lists or acknowledges a customer's policy-change notices.
    #[command(subcommand)]
    Notices(notices::NoticesCommand),
    /// Rotates keys and shows their status.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
}

/// Whether the command line asked for `--json` (a global flag, so it is on
/// the innermost subcommand's matches).
pub fn wants_json(matches: &clap::ArgMatches) -> bool {
    let mut innermost = matches;
    while let Some((_, sub)) = innermost.subcommand() {
        innermost = sub;
    }
    matches!(innermost.try_get_one::<bool>("json"), Ok(Some(true)))
}

/// Prints how a command failed and returns its exit code (docs/cli.md): the message on stderr always; with `--json` also
/// `{"error":{"code":..,"message":..}}` on stdout, unless the command already
/// printed its result there.
pub fn report(error: &anyhow::Error, json: bool) -> u8 {
    let classified = client::classify(error);
    eprintln!("error: {error:#}");
    if json && !classified.reported {
        let mut document = serde_json::json!({
            "code": classified.code,
            "message": format!("{error:#}"),
        });
        if let Some(reason) = classified.reason {
            document["reason"] = reason.into();
        }
        println!("{}", serde_json::json!({ "error": document }));
    }
    classified.failure.exit_code()
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Keygen { out } => keygen::run(&out),
        Command::Health(args) => health::run(args).await,
        Command::Put(args) => data::put(args).await,
        Command::Get(args) => data::get(args).await,
        Command::Tokenize(args) => data::tokenize(args).await,
        Command::Detokenize(args) => data::detokenize(args).await,
        Command::DeleteCustomer(args) => privacy::delete_customer(args).await,
        Command::DeletionStatus(args) => privacy::deletion_status(args).await,
        Command::Purposes(args) => privacy::purposes(args).await,
        Command::Consent(command) => privacy::consent(command).await,
        Command::Export(args) => privacy::export(args).await,
        Command::Audit(command) => audit::run(command).await,
        Command::Keys(command) => keys::run(command).await,
        Command::Policy(command) => notices::policy(command).await,
        Command::Notices(command) => notices::notices(command).await,
    }
}
