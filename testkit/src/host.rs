//! The host tools the tests run, each with the Debian package that provides it, in one list
//! (`TEST_TOOLS`) that `cargo xtask test` can install from; and the checks a test calls before
//! it runs one, so that a missing tool fails the test with the package's name instead of
//! passing silently or failing with "No such file or directory".

/// Every external program (or file, or system Python module) the tests run, directly or through
/// the code they exercise (`cargo xtask build-ova`, `boot-test`, first boot, setup), and the
/// Debian package that provides it; at the end, the comparison tools of `cargo xtask bench`.
///
/// A tool is one of: a program name, looked up in `PATH` and in `/usr/sbin` and `/sbin`; an
/// absolute path, which must exist; `import NAME`, a module the system Python
/// (`/usr/bin/python3`) must import.
pub const TEST_TOOLS: &[(&str, &str)] = &[
    // Shell and base system (essential on Debian, listed because the tests run them).
    ("bash", "bash"),
    ("sh", "dash"),
    ("tar", "tar"),
    ("sha256sum", "coreutils"),
    ("git", "git"),
    // Compilers: ring's assembly for the host build, the static musl agent.
    ("gcc", "gcc"),
    ("musl-gcc", "musl-tools"),
    // Disks and file systems: first boot, check-retention, the OS disk build.
    ("sfdisk", "fdisk"),
    ("mke2fs", "e2fsprogs"),
    ("mkfs.ext4", "e2fsprogs"),
    ("e2fsck", "e2fsprogs"),
    ("mkfs.vfat", "dosfstools"),
    ("blkid", "util-linux"),
    ("unshare", "util-linux"),
    ("losetup", "mount"),
    ("mount", "mount"),
    ("umount", "mount"),
    ("systemctl", "systemd"),
    // Setup and first boot in an image root.
    ("patch", "patch"),
    ("ssh-keygen", "openssh-client"),
    // The boot test's SSH login with the deploy-time key.
    ("ssh", "openssh-client"),
    // Independent readers of what the writers produce.
    ("qemu-img", "qemu-utils"),
    ("xmllint", "libxml2-utils"),
    ("vmdkinfo", "libvmdk-utils"),
    ("import pyvmdk", "python3-libvmdk"),
    ("cpio", "cpio"),
    // Python: the pykickstart virtual environment, a local HTTP server.
    ("python3", "python3"),
    ("import ensurepip", "python3-venv"),
    // The CentOS path with test doubles: ISO, kernel download, package fetch.
    ("xorriso", "xorriso"),
    ("apt-get", "apt"),
    ("apt-cache", "apt"),
    ("dpkg-deb", "dpkg"),
    ("curl", "curl"),
    // The slow tests: the Debian build and the boot test.
    ("mmdebstrap", "mmdebstrap"),
    ("grub-mkimage", "grub-pc-bin"),
    ("/usr/lib/grub/i386-pc/boot.img", "grub-pc-bin"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    // The vSphere simulator test: a Go program built in GOPATH mode against Debian's govmomi
    // (its vCenter simulator) and govmomi's one dependency, sources under /usr/share/gocode.
    ("go", "golang-go"),
    (
        "/usr/share/gocode/src/github.com/vmware/govmomi/simulator",
        "golang-github-vmware-govmomi-dev",
    ),
    (
        "/usr/share/gocode/src/github.com/google/uuid",
        "golang-github-google-uuid-dev",
    ),
    // Not run by the tests: what `cargo xtask bench` compares the agent with.
    ("rsync", "rsync"),
    ("fio", "fio"),
];

/// The Debian package of `tool` in `TEST_TOOLS`; panics for a tool not in the list, so that
/// the list cannot fall behind the tests.
#[track_caller]
pub fn package_of(tool: &str) -> &'static str {
    match TEST_TOOLS.iter().find(|(t, _)| *t == tool) {
        Some((_, package)) => package,
        None => {
            panic!("{tool:?} is not in testkit::host::TEST_TOOLS: add it with its Debian package")
        }
    }
}

/// Whether `tool` (in the notation of `TEST_TOOLS`) is present on this host.
pub fn present(tool: &str) -> bool {
    if let Some(module) = tool.strip_prefix("import ") {
        return std::process::Command::new("/usr/bin/python3")
            .args(["-c", &format!("import {module}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    }
    if tool.starts_with('/') {
        return std::path::Path::new(tool).exists();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d| d.join(tool).is_file())
}

/// The Debian packages of every tool in `TEST_TOOLS` that is missing here, sorted, once each.
pub fn missing_packages() -> Vec<&'static str> {
    let mut missing: Vec<&'static str> = TEST_TOOLS
        .iter()
        .filter(|(t, _)| !present(t))
        .map(|(_, p)| *p)
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

/// Fails the calling test unless `tool` is present, naming the Debian package to install.
#[track_caller]
pub fn require_tool(tool: &str) {
    let package = package_of(tool);
    assert!(
        present(tool),
        "this test needs {tool}, which is missing: install the Debian package {package} \
         (apt-get install {package}), or run `cargo xtask test`, which installs every test tool"
    );
}

/// `require_tool` for each of `tools`.
#[track_caller]
pub fn require_tools(tools: &[&str]) {
    for t in tools {
        require_tool(t);
    }
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Fails the calling test unless it runs as root; `why` says what needs it.
#[track_caller]
pub fn require_root(why: &str) {
    assert!(
        is_root(),
        "this test needs root ({why}): run the tests as root, as CI does"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_is_listed_once() {
        let mut tools: Vec<_> = TEST_TOOLS.iter().map(|(t, _)| *t).collect();
        tools.sort();
        let n = tools.len();
        tools.dedup();
        assert_eq!(tools.len(), n, "a tool is listed twice");
    }

    #[test]
    #[should_panic(expected = "not in testkit::host::TEST_TOOLS")]
    fn a_tool_outside_the_list_is_refused() {
        require_tool("no-such-tool-anywhere");
    }

    #[test]
    fn tools_are_found_as_the_list_describes_them() {
        assert!(present("sh"));
        assert!(!present("/no/such/file"));
        assert!(!present("import no_such_module_anywhere"));
    }
}
