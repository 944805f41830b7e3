#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: game_sim::Config = service_config::load()?;
    telemetry::init_logging(&config.log);
    game_sim::Application::build(config)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}
