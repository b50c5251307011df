//! The product's main path, end to end, the way a user runs it: `cargo xtask build-ova` with the
//! default definition builds an OVA, and `cargo xtask boot-test` boots that OVA in QEMU with the
//! hardware its OVF declares and checks the appliance from inside (mounts, tools, disk IDs, the
//! agent, the firewall and the loaded capture kernel, the blank retention disk formatted by first
//! boot and mounted by UUID), reaches the agent and SSH through the firewall, with `--crash`
//! makes kdump-tools rebuild the capture initramfs as after a kernel upgrade and crashes the
//! kernel (kdump saves the dump and reboots; the volume is adopted, not formatted again) and
//! powers off cleanly. (`build-ova`'s own boot test reboots cleanly instead, to stay short.) The same OVA is then deployed the way vSphere hands over OVF
//! properties: `boot-test --ovf-env-test` attaches an `ovf-env.xml` CD (the iso transport) and
//! checks the host name, static address, resolver and the agent's passphrase took effect, and
//! that only that passphrase enrols a sender. One build serves both boots (CI time). Needs
//! root, network access to Debian's archive and minutes of CPU.

use camino::Utf8PathBuf;
use xshell::{cmd, Shell};

#[test]
#[ignore = "slow: builds a Debian 12 OVA with mmdebstrap (root, network) and boots it in QEMU; run by cargo xtask test"]
fn the_default_definition_builds_an_ova_that_boots_passes_the_guest_checks_and_applies_ovf_properties(
) {
    let _qemu = testkit::qemu_exclusive();
    let root = testkit::workspace_root();
    let sh = Shell::new().unwrap();
    sh.change_dir(&root);
    let out = root.join("build/e2e-out");
    let _ = std::fs::remove_dir_all(&out);

    // build-ova boots the OVA once itself; here the boot is the separate verb a user runs.
    cmd!(sh, "cargo xtask build-ova --no-boot-test --out {out}")
        .run()
        .expect("build-ova failed");

    let def =
        appliance::Definition::load(&root.join(appliance::definition::DEFAULT_DEFINITION)).unwrap();
    let ova: Utf8PathBuf = out.join(format!("{}.ova", def.appliance.name));
    assert!(
        ova.is_file(),
        "build-ova reported success but wrote no {ova}"
    );
    let digest_before = sha256_of(&ova);

    cmd!(sh, "cargo xtask boot-test {ova} --crash")
        .run()
        .expect("boot-test --crash failed");

    assert_eq!(sha256_of(&ova), digest_before, "boot-test modified the OVA");
    let log = root.join(format!(
        "build/boot-test-{}/console.log",
        def.appliance.name
    ));
    let console = std::fs::read_to_string(&log).expect("boot-test keeps the console log");
    assert!(
        console.contains("mt-agent: ready"),
        "{log} lacks the readiness line"
    );
    assert_formatted_once_then_adopted(&console, &log);

    // Deploy time: the OVF environment on a CD, applied before the network comes up.
    let work = root.join("build/e2e-boot-test-ovf-env");
    cmd!(
        sh,
        "cargo xtask boot-test {ova} --ovf-env-test --work {work}"
    )
    .run()
    .expect("boot-test --ovf-env-test failed");
    assert_eq!(sha256_of(&ova), digest_before, "boot-test modified the OVA");
    let console = std::fs::read_to_string(work.join("console.log")).unwrap();
    assert!(
        console.contains("OVF environment from iso (CD-ROM"),
        "the console of the OVF boot does not show the environment being applied"
    );
    assert_formatted_once_then_adopted(&console, &work.join("console.log"));
}

/// Over both boots of one deployment, first boot's console lines: the blank retention disk
/// formatted once, then the same file system (same UUID) adopted after the restart.
fn assert_formatted_once_then_adopted(console: &str, log: &camino::Utf8Path) {
    let uuid_of = |l: &str| l.split("(UUID=").nth(1)?.get(..36).map(str::to_string);
    let formatted: Vec<String> = console
        .lines()
        .filter(|l| l.contains("mt-agent firstboot: formatted the retention disk"))
        .filter_map(uuid_of)
        .collect();
    let adopted: Vec<String> = console
        .lines()
        .filter(|l| l.contains("adopted, not formatted"))
        .filter_map(uuid_of)
        .collect();
    assert_eq!(formatted.len(), 1, "{log}: formatted {formatted:?}");
    assert_eq!(adopted, formatted, "{log}: adopted after the reboot");
}

fn sha256_of(path: &camino::Utf8Path) -> String {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
