//! `pii-vault health`: asks a vault's standard gRPC health service whether it
//! is serving; exits 0 only when it is (for probes and `helm test`). With
//! `--json` the answer is `{"service":..,"status":..}`.

use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::client::{connect, status_error, CliError, ClientArgs, Failure};

/// `health` gives up sooner than other commands: probes have short timeouts.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(clap::Args, Debug)]
pub struct HealthArgs {
    /// The service to ask about; empty means the vault as a whole.
    #[arg(long, default_value = "")]
    pub service: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: HealthArgs) -> anyhow::Result<()> {
    let timeout = args.client.timeout.unwrap_or(HEALTH_TIMEOUT);
    let mut client = args.client.clone();
    client.timeout = Some(timeout);
    let check = async {
        let mut health = HealthClient::new(connect(&client).await?);
        let response = health
            .check(HealthCheckRequest {
                service: args.service.clone(),
            })
            .await
            .map_err(status_error)?;
        Ok::<_, anyhow::Error>(response.into_inner().status())
    };
    let status = tokio::time::timeout(timeout, check).await.map_err(|_| {
        CliError::new(
            Failure::Unavailable,
            "DEADLINE_EXCEEDED",
            "the vault did not answer in time",
        )
    })??;
    if client.json {
        let answer = serde_json::json!({ "service": args.service, "status": status.as_str_name() });
        println!("{answer}");
    } else {
        println!("{}", status.as_str_name());
    }
    if status != ServingStatus::Serving {
        return Err(CliError::new(
            Failure::Unavailable,
            "NOT_SERVING",
            "the vault is not serving",
        )
        .reported()
        .into());
    }
    Ok(())
}
