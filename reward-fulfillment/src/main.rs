#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: reward_fulfillment::Config = service_config::load()?;
    let _logs = telemetry::init_logging(&config.log);
    reward_fulfillment::Application::build(config)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}
