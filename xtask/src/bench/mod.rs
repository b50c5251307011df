//! `cargo xtask bench <what>`: measurements side by side with the tool a user would otherwise
//! use, printed as ratios. Never part of `cargo test` (no timing is ever asserted).

mod agent;

/// Measure one part of the project against its baseline.
#[derive(clap::Subcommand)]
pub enum Bench {
    /// mt-agent apply throughput and write amplification vs plain writes and fio.
    Agent(agent::AgentBench),
}

impl Bench {
    pub fn run(self, sh: &xshell::Shell) -> anyhow::Result<()> {
        match self {
            Bench::Agent(b) => b.run(sh),
        }
    }
}
