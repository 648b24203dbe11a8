use clap::{CommandFactory, FromArgMatches};

/// mimalloc instead of the system allocator: sled allocates and copies tree
/// nodes on every write, and with mimalloc the vault serves 1.1-1.7x the
/// requests it served on glibc's malloc, most for writes and batches, at the
/// cost of more resident memory (BENCHMARKS.md, "What changed").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let matches = pii_vault::cli::Cli::command().get_matches();
    let json = pii_vault::cli::wants_json(&matches);
    let cli = pii_vault::cli::Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    match pii_vault::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => std::process::ExitCode::from(pii_vault::cli::report(&error, json)),
    }
}
