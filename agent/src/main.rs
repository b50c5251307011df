//! The `mt-agent` binary: parses the command line and runs the verb (`cli`), then turns an error
//! into its message and exit status. No logic lives here or in `cli`: the work is `mt_agent`'s.

mod cli;

use clap::Parser;

fn main() {
    // Printing into a closed pipe (`mt-agent status | head`) ends quietly, as other tools do.
    // SAFETY: restoring the default action of one signal before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    if let Err(e) = cli::Cli::parse().run() {
        eprintln!("mt-agent: error: {e:#}");
        std::process::exit(cli::exit_status(&e));
    }
}
