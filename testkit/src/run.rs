//! Running programs from a test: `cargo xtask`, the built binaries and host tools, with a
//! failure that names the command and shows what it printed. (The agent's integration tests
//! name their binary through `env!("CARGO_BIN_EXE_mt-agent")`, in the agent's test support.)

use std::process::{Command, Output};

/// `cargo xtask` in the workspace root, with the cargo that runs the tests.
pub fn cargo_xtask() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.current_dir(crate::workspace_root()).arg("xtask");
    c
}

/// Runs `cmd` to completion; panics if it cannot be started (naming the command).
#[track_caller]
pub fn output(cmd: &mut Command) -> Output {
    match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run {}: {e}", describe(cmd)),
    }
}

/// Runs `cmd`, which must succeed; returns its standard output. A failure shows the command,
/// its exit status and everything it printed.
#[track_caller]
pub fn ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}{}",
        describe(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Standard output and standard error together, as a user would see them on a terminal.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The command line, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// `program`, to be run with a fresh tmpfs mounted at `mountpoint` that only it and its
/// children see: a mount point of its own for each test (the agent refuses a retention volume
/// that is not a mount), shared with no other test or run, and gone when the program exits.
/// A new user and mount namespace (`unshare`), so no root is needed; `unshare` and `sh` exec,
/// so the child's pid is the program's and killing the child kills the program.
pub fn with_private_mount(
    mountpoint: &camino::Utf8Path,
    program: impl AsRef<std::ffi::OsStr>,
) -> Command {
    crate::host::require_tools(&["unshare", "mount", "sh"]);
    let mut c = Command::new("unshare");
    c.args(["--user", "--map-root-user", "--mount", "--", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=16m testkit-volume "$0" && exec "$@""#)
        .arg(mountpoint)
        .arg(program);
    c
}

/// Asserts that bash parses `script` (`bash -n`, nothing runs); `what` names it in the failure,
/// which shows bash's complaint and the script.
#[track_caller]
pub fn assert_bash_parses(what: &str, script: &str) {
    crate::require_tool("bash");
    let out = output(Command::new("bash").args(["-n", "-c", script]));
    assert!(
        out.status.success(),
        "{what} is not valid shell: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}
