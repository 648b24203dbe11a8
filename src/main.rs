use clap::Parser;

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
