//! Running programs from a test: the workspace's own (`cargo xtask`, binaries next to the test
//! executable) and host tools, with a failure that names the command and shows what it printed.

use camino::Utf8PathBuf;
use std::process::{Command, Output};

/// `cargo xtask` in the workspace root, with the cargo that runs the tests.
pub fn cargo_xtask() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.current_dir(crate::workspace_root()).arg("xtask");
    c
}

/// A binary of the workspace built beside the running test executable
/// (`target/<profile>/<name>`); panics naming the build command when it is not there.
/// Integration tests of the binary's own package use `env!("CARGO_BIN_EXE_<name>")` instead,
/// which Cargo guarantees is built.
pub fn built_binary(name: &str) -> Utf8PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executables live in target/<profile>/deps");
    let path = Utf8PathBuf::from_path_buf(dir.join(name)).expect("a UTF-8 target directory");
    assert!(
        path.is_file(),
        "{path} is not built: run `cargo build -p <its package>` first"
    );
    path
}

/// Runs `cmd` to completion; panics if it cannot be started (naming the command).
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(cmd)))
}

/// Runs `cmd`, which must succeed; returns its standard output. A failure shows the command,
/// its exit status and everything it printed.
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
