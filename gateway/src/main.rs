#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: gateway::Config = service_config::load()?;
    let _logs = telemetry::init_logging(&config.log);
    gateway::Application::build(config)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}
