//! House conventions, checked mechanically over the files git tracks, so that reviews talk about
//! design: every Rust file opens with a `//!` comment, no unfinished-code macros, no file names
//! a path of the machine it was written on, the workspace is formatted as `cargo fmt` leaves it,
//! and clippy finds nothing (`-D warnings`, every target).
//!
//! Paths inside the appliance are fine (`/root/.ssh/authorized_keys`, `/root/ks-post.log` are the
//! guest's); what is refused is the build host's: the work tree, a user's home directory, and
//! root's tool directories (cargo, rustup, pyenv, caches). See `host_path` for the exact rule.

use std::process::Command;

struct Tracked {
    path: String,
    text: String,
}

/// Every tracked or new, not ignored, text file (binary files, with a NUL byte, are skipped).
fn tracked_files() -> Vec<Tracked> {
    testkit::require_tool("git");
    let root = testkit::workspace_root();
    let out = Command::new("git")
        .current_dir(&root)
        // Tracked files and new ones not yet added (but not ignored ones such as target/).
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .expect("git must be installed to run the tidy test");
    assert!(
        out.status.success(),
        "git ls-files failed in {root}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<Tracked> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let path = String::from_utf8(p.to_vec()).expect("file names are UTF-8");
            // A file deleted in the work tree but not yet in the index is not checked.
            let bytes = std::fs::read(root.join(&path)).ok()?;
            if bytes.contains(&0) {
                return None;
            }
            Some(Tracked {
                path,
                text: String::from_utf8_lossy(&bytes).into_owned(),
            })
        })
        .collect();
    assert!(
        files.iter().any(|f| f.path == "Cargo.toml"),
        "git ls-files did not list this test: is {root} the work tree?"
    );
    files
}

#[test]
fn every_rust_file_starts_with_a_module_comment() {
    let missing: Vec<String> = tracked_files()
        .into_iter()
        .filter(|f| f.path.ends_with(".rs") && !f.text.starts_with("//!"))
        .map(|f| f.path)
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not start with a `//!` comment saying what the module is for: {missing:?}"
    );
}

#[test]
fn no_unfinished_code_macros() {
    // Spelled in pieces so that this file does not match itself.
    let needles = [concat!("todo", "!("), concat!("unimplemented", "!(")];
    let mut found = Vec::new();
    for f in tracked_files()
        .into_iter()
        .filter(|f| f.path.ends_with(".rs"))
    {
        for (i, line) in f.text.lines().enumerate() {
            if needles.iter().any(|n| line.contains(n)) {
                found.push(format!("{}:{}: {}", f.path, i + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "unfinished code:\n{}", found.join("\n"));
}

/// Where `line` names a path of the build host, the offending part.
fn host_path(line: &str) -> Option<String> {
    let work = concat!("/wo", "rk/");
    if let Some(at) = line.find(work) {
        return Some(line[at..].chars().take(40).collect());
    }
    let root = concat!("/ro", "ot/.");
    for (at, _) in line.match_indices(root) {
        let rest = &line[at + root.len()..];
        if !rest.starts_with("ssh") {
            return Some(line[at..].chars().take(40).collect());
        }
    }
    let home = concat!("/ho", "me/");
    for (at, _) in line.match_indices(home) {
        let rest = &line[at + home.len()..];
        let user: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "_.-".contains(*c))
            .collect();
        if user.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            return Some(line[at..].chars().take(40).collect());
        }
    }
    None
}

#[test]
fn the_host_path_check_tells_host_from_guest() {
    for host in [
        concat!("/wo", "rk/wt/x"),
        concat!("shebang #!/ro", "ot/.pyenv/versions/3.11/bin/python3"),
        concat!("see /ho", "me/alice/notes"),
    ] {
        assert!(host_path(host).is_some(), "{host}");
    }
    for guest in [
        "/root/.ssh/authorized_keys",
        "%post --log=/root/ks-post.log",
        "part /home --fstype=ext4",
        "mount at /home/ on the appliance",
    ] {
        assert_eq!(host_path(guest), None, "{guest}");
    }
}

#[test]
fn no_file_names_a_path_of_the_build_machine() {
    let mut found = Vec::new();
    for f in tracked_files() {
        for (i, line) in f.text.lines().enumerate() {
            if let Some(p) = host_path(line) {
                found.push(format!("{}:{}: {p}", f.path, i + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "files name paths of the machine they were written on (use paths relative to the workspace):\n{}",
        found.join("\n")
    );
}
/// Runs a cargo subcommand over the whole workspace and fails with its output.
fn cargo_passes(args: &[&str], what: &str, fix: &str) {
    let root = testkit::workspace_root();
    let out = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "{what} (`cargo {}`); {fix}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_workspace_is_formatted() {
    cargo_passes(
        &["fmt", "--all", "--", "--check"],
        "files are not formatted as rustfmt would",
        "run `cargo fmt --all` (rustfmt: `rustup component add rustfmt`)",
    );
}

#[test]
fn clippy_has_no_warnings() {
    cargo_passes(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ],
        "clippy has findings",
        "fix them (clippy: `rustup component add clippy`)",
    );
}

/// The longest a source file outside the tests may grow before it should be split by its jobs.
const MAX_SOURCE_LINES: usize = 850;

#[test]
fn no_source_file_outside_the_tests_is_too_long_to_read() {
    let long: Vec<String> = tracked_files()
        .into_iter()
        .filter(|f| f.path.ends_with(".rs"))
        .filter(|f| !f.path.contains("/tests/") && !f.path.ends_with("/tests.rs"))
        .filter(|f| f.text.lines().count() > MAX_SOURCE_LINES)
        .map(|f| format!("{} ({} lines)", f.path, f.text.lines().count()))
        .collect();
    assert!(
        long.is_empty(),
        "split these files by their jobs (at most {MAX_SOURCE_LINES} lines each): {long:?}"
    );
}
