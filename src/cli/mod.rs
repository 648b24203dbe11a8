//! The command line: `serve`, `keygen`, and client commands for people.

mod client;
mod keygen;
mod serve;

use clap::{Parser, Subcommand};

pub use client::ClientArgs;
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
    Serve(ServeArgs),
    /// Writes a new random root key to a file (mode 0600).
    Keygen {
        /// Where to write the key; refuses to overwrite an existing file.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Stores fields of a customer: `put CUSTOMER name:kind=value ...`.
    Put(client::PutArgs),
    /// Reads fields of a customer: `get CUSTOMER [FIELD ...]`.
    Get(client::GetArgs),
    /// Stores standalone values and prints a token for each: `tokenize CUSTOMER kind=value ...`.
    Tokenize(client::TokenizeArgs),
    /// Resolves tokens to values: `detokenize TOKEN ...`.
    Detokenize(client::DetokenizeArgs),
    /// Erases a customer (crypto-shredding) and prints the receipt.
    DeleteCustomer(client::DeleteCustomerArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Keygen { out } => keygen::run(&out),
        Command::Put(args) => client::put(args).await,
        Command::Get(args) => client::get(args).await,
        Command::Tokenize(args) => client::tokenize(args).await,
        Command::Detokenize(args) => client::detokenize(args).await,
        Command::DeleteCustomer(args) => client::delete_customer(args).await,
    }
}
