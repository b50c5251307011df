//! The `mt-agent` command line: parses arguments and calls the library. No logic lives here.

use clap::{Parser, Subcommand};

/// The master target's replication agent.
#[derive(Parser)]
#[command(name = "mt-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the configuration the agent would run with.
    ShowConfig {
        #[arg(long, default_value = mt_agent::config::DEFAULT_CONFIG_PATH)]
        config: camino::Utf8PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::ShowConfig { config } => {
            let cfg = mt_agent::config::AgentConfig::load(&config)?;
            println!("{}", toml::to_string_pretty(&cfg)?);
        }
    }
    Ok(())
}
