use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    game_sim::cli::run(game_sim::cli::Cli::parse()).await
}
