use clap::Parser;

/// mimalloc instead of the system allocator: sled allocates and copies tree
/// nodes on every write, and with mimalloc the vault serves 1.1-1.7x the
/// requests it served on glibc's malloc, most for writes and batches, at the
/// cost of more resident memory (BENCHMARKS.md, "What changed").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = pii_vault::cli::Cli::parse();
    match pii_vault::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
