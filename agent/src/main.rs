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
    /// Check the retention volume, listen on the configured port and announce readiness.
    Serve {
        #[arg(long, default_value = mt_agent::config::DEFAULT_CONFIG_PATH)]
        config: camino::Utf8PathBuf,
    },
    /// Install the agent into a root file system at image build time (service, configuration,
    /// template sealing). Safe to run again: only differences are written.
    Setup {
        /// The root of the image's file system tree.
        #[arg(long)]
        root: camino::Utf8PathBuf,
        #[arg(long, value_enum)]
        distro: mt_agent::setup::Distro,
        /// The agent.toml to install (rendered from the appliance definition).
        #[arg(long)]
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
        Command::Serve { config } => mt_agent::serve::run(&config)?,
        Command::Setup {
            root,
            distro,
            config,
        } => mt_agent::setup::run(&root, distro, &config)?,
    }
    Ok(())
}
