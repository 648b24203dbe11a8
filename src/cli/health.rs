//! `pii-vault health`: asks a vault's standard gRPC health service whether it
//! is serving; exits 0 only when it is (for probes and `helm test`).

use std::time::Duration;

use anyhow::Context;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::client::{connect, ClientArgs};

#[derive(clap::Args, Debug)]
pub struct HealthArgs {
    /// The service to ask about; empty means the vault as a whole.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Give up after this long (probes have short timeouts).
    #[arg(long, default_value = "1500ms", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: HealthArgs) -> anyhow::Result<()> {
    let check = async {
        let mut health = HealthClient::new(connect(&args.client).await?);
        let response = health
            .check(HealthCheckRequest {
                service: args.service.clone(),
            })
            .await
            .map_err(|status| anyhow::anyhow!("{:?}: {}", status.code(), status.message()))?;
        Ok::<_, anyhow::Error>(response.into_inner().status())
    };
    let status = tokio::time::timeout(args.timeout, check)
        .await
        .context("the vault did not answer in time")??;
    println!("{}", status.as_str_name());
    if status != ServingStatus::Serving {
        anyhow::bail!("the vault is not serving");
    }
    Ok(())
}
