//! The appliance OVA imported into VMware's vCenter simulator the way govc imports it. For each
//! base and vSphere compatibility target a definition variant is packed by `cargo xtask ova`
//! (from sparse blank raw disks), `cargo xtask deploy-spec` writes govc's options file, and
//! `tests/vcsim` (a Go program built here against Debian's govmomi) imports the OVA into vcsim
//! and checks the VM against what the definition says: the SCSI controller and NIC models, the
//! NIC's mapped network, the disks at their units with their capacities, the CD-ROM of the
//! `iso` transport, `disk.EnableUUID`, the transports, the vApp property values, the guest id,
//! the hardware version and the template flag. Which of those vcsim 0.24 itself proves and which
//! rest on the vCenter behaviour the program adds to it, its header comment says; every check
//! line it prints is marked `[vcsim]` or `[ext: …]`.

use appliance::definition::{
    Base, DeployProperty, NicKind, ScsiController, VsphereCompat, DEPLOY_PRODUCT_CLASS,
};
use appliance::ovf::{DiskRole, DISK_ENABLE_UUID, OVF_ENV_TRANSPORTS};
use appliance::units::MIB;
use appliance::Definition;
use camino::{Utf8Path, Utf8PathBuf};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Instant;

/// Debian's govmomi sources in GOPATH layout (golang-github-vmware-govmomi-dev).
const GOPATH: &str = "/usr/share/gocode";
const GOVMOMI_SIMULATOR: &str = "/usr/share/gocode/src/github.com/vmware/govmomi/simulator";
const GOOGLE_UUID: &str = "/usr/share/gocode/src/github.com/google/uuid";

/// A network of vcsim's VPX inventory (its distributed port group) other than the OVF's own
/// network name, so that the NIC on it shows that the options' NetworkMapping was honoured.
const MAPPED_NETWORK: &str = "DC0_DVPG0";

/// One definition variant: the shipped definition with these values.
struct Variant {
    base: Base,
    compat: VsphereCompat,
    /// LSI Logic SAS, e1000 and the retention disk at SCSI unit 3, instead of the shipped
    /// paravirtual, vmxnet3 and unit 1: the other device mappings and an address vcsim's own
    /// unit assignment would not give.
    other_devices: bool,
}

impl Variant {
    fn label(&self) -> String {
        format!(
            "{}-{}{}",
            self.base,
            self.compat.as_str(),
            if self.other_devices { "-sas-e1000" } else { "" }
        )
    }
}

#[test]
#[ignore = "slow: builds a Go program against Debian's govmomi and imports 10 OVAs into its vCenter simulator; run by cargo xtask test"]
fn the_ova_imports_into_the_vcenter_simulator_as_the_definition_declares() {
    testkit::require_tools(&["go", GOVMOMI_SIMULATOR, GOOGLE_UUID]);
    let started = Instant::now();
    let program = build_import_check();
    let built = started.elapsed();
    let dir = testkit::scratch("vcsim-import");

    let mut variants = Vec::new();
    for base in [Base::Debian12, Base::Centos6] {
        for compat in VsphereCompat::ALL {
            let other_devices = variants.len() % 2 == 1;
            variants.push(Variant {
                base,
                compat,
                other_devices,
            });
        }
    }
    let mut failures = Vec::new();
    for (n, v) in variants.iter().enumerate() {
        let run = dir.join(v.label());
        std::fs::create_dir_all(&run).unwrap();
        let (out, ok) = import_one(&program, &run, v, n);
        println!("=== {} ===\n{out}", v.label());
        if !ok {
            failures.push(format!("=== {} ===\n{out}", v.label()));
        }
    }
    println!(
        "{} imports in {:.1}s (the Go program built in {:.1}s)",
        variants.len(),
        started.elapsed().as_secs_f64(),
        built.as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {} imports into vcsim failed a check:\n{}",
        failures.len(),
        variants.len(),
        failures.join("\n")
    );
}

/// Builds `tests/vcsim` into the target directory, in GOPATH mode against Debian's packages
/// only (no module proxy), with its build cache under the target directory too (so that it
/// needs no home directory and works as root on a fresh machine), and vets it.
fn build_import_check() -> Utf8PathBuf {
    let out = testkit::target_dir().join("vcsim");
    std::fs::create_dir_all(&out).unwrap();
    let program = out.join("import_check");
    let go = |args: &[&str]| {
        let mut c = Command::new("go");
        c.current_dir(testkit::workspace_root().join("tests/vcsim"))
            .args(args)
            .env("GO111MODULE", "off")
            .env("GOPATH", GOPATH)
            .env("GOCACHE", out.join("go-cache"))
            .env("GOFLAGS", "")
            .env("GOENV", "off")
            .env("GOPROXY", "off")
            .env("CGO_ENABLED", "0");
        testkit::run::ok(&mut c);
    };
    go(&["build", "-o", program.as_str(), "."]);
    go(&["vet", "."]);
    program
}

/// The shipped definition's text with `key = …` (a line of its own, once in the file) set to
/// `value` (TOML).
fn set_value(text: &str, key: &str, value: &str) -> String {
    let mut found = 0;
    let mut out = String::new();
    for line in text.lines() {
        let is_key = line
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        if is_key {
            found += 1;
            out.push_str(&format!("{key} = {value}"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    assert_eq!(
        found, 1,
        "the shipped definition has {found} lines `{key} = …`, this test expects one"
    );
    out
}

/// Writes the variant's definition into `dir` and loads it (validated, as the verbs load it).
fn write_definition(dir: &Utf8Path, v: &Variant) -> (Utf8PathBuf, Definition) {
    let shipped = testkit::workspace_root().join(appliance::definition::DEFAULT_DEFINITION);
    let mut text = std::fs::read_to_string(&shipped).unwrap();
    let quoted = |s: &str| format!("{s:?}");
    text = set_value(&text, "base", &quoted(v.base.as_str()));
    text = set_value(&text, "vsphere_compat", &quoted(v.compat.as_str()));
    if v.other_devices {
        text = set_value(&text, "scsi_controller", &quoted("lsilogic-sas"));
        text = set_value(&text, "nic", &quoted("e1000"));
        text = set_value(&text, "scsi_unit", "3");
    }
    let path = dir.join("appliance.toml");
    std::fs::write(&path, text).unwrap();
    let def = Definition::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(def.appliance.base, v.base);
    assert_eq!(def.appliance.vsphere_compat, v.compat);
    if v.other_devices {
        assert_eq!(def.hardware.scsi_controller, ScsiController::LsilogicSas);
        assert_eq!(def.hardware.nic, NicKind::E1000);
        assert_eq!(def.retention_disk.scsi_unit, 3);
    }
    (path, def)
}

fn xtask(args: &[&str]) -> String {
    testkit::run::ok(
        testkit::run::cargo_xtask()
            .args(args)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    )
}

/// Packs, writes the options and imports one variant; the Go program's output (and the
/// command that ran it) and whether every check passed.
fn import_one(program: &Utf8Path, dir: &Utf8Path, v: &Variant, n: usize) -> (String, bool) {
    let (def_path, def) = write_definition(dir, v);
    let started = Instant::now();

    // Sparse blank disks of the definition's sizes: the VMDK writer skips the holes.
    let mut disks = Vec::new();
    for role in DiskRole::ALL {
        let raw = dir.join(format!("{role}.raw"));
        let f = std::fs::File::create(&raw).unwrap();
        f.set_len(role.capacity(&def)).unwrap();
        disks.push(format!("{role}={raw}"));
    }
    let ova = dir.join(format!("{}.ova", def.appliance.name));
    xtask(&[
        "ova",
        "--definition",
        def_path.as_str(),
        "--disk",
        &disks[0],
        "--disk",
        &disks[1],
        "--out",
        ova.as_str(),
        "--build-id",
        "vcsim-test",
    ]);
    for role in DiskRole::ALL {
        std::fs::remove_file(dir.join(format!("{role}.raw"))).unwrap();
    }
    let packed = started.elapsed();

    // Deploy-time values unlike the definition's defaults, each set with --set.
    let net = 20 + n;
    let set = [
        (
            DeployProperty::Hostname,
            format!("mt-{}.dr.example.com", v.label().replace('.', "-")),
        ),
        (DeployProperty::IpMode, "static".to_string()),
        (DeployProperty::IpAddress, format!("10.{net}.0.5")),
        (DeployProperty::IpPrefix, "23".to_string()),
        (DeployProperty::Gateway, format!("10.{net}.0.1")),
        (DeployProperty::DnsServers, format!("10.{net}.0.53")),
        (DeployProperty::NtpServer, "ntp.example.com".to_string()),
    ];
    let passphrase = format!("vcsim passphrase {n}");
    let passphrase_file = dir.join("passphrase");
    std::fs::write(&passphrase_file, &passphrase).unwrap();
    // deploy-spec refuses a passphrase file others may read.
    std::fs::set_permissions(&passphrase_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let options = dir.join("options.json");
    let name = format!("mt-{}", v.label());
    let mut args: Vec<String> = [
        "deploy-spec",
        "--definition",
        def_path.as_str(),
        "--passphrase-file",
        passphrase_file.as_str(),
        "--name",
        &name,
        "--network",
        MAPPED_NETWORK,
        "--out",
        options.as_str(),
    ]
    .map(String::from)
    .to_vec();
    for (p, value) in &set {
        args.push("--set".into());
        args.push(format!("{}={value}", p.key()));
    }
    xtask(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let specified = started.elapsed();

    // What the definition says the imported VM is.
    let full_id = |p: DeployProperty| format!("{DEPLOY_PRODUCT_CLASS}.{}", p.key());
    let mut check = Command::new(program);
    check
        .current_dir(dir)
        // vcsim's datastore directories, removed when it ends.
        .env("TMPDIR", dir)
        .arg("-ova")
        .arg(&ova)
        .arg("-options")
        .arg(&options)
        .args([
            "-guest-id",
            def.appliance.vsphere_compat.guest_os(def.appliance.base).0,
        ])
        .args(["-hardware-version", &def.hardware_version().to_string()])
        .args(["-cpus", &def.hardware.vcpus.to_string()])
        .args([
            "-memory-mib",
            &(def.hardware.memory.bytes() / MIB).to_string(),
        ])
        .args(["-scsi", def.hardware.scsi_controller.ovf_subtype()])
        .args(["-nic", def.hardware.nic.ovf_subtype()])
        .args(["-extra-config", &format!("{DISK_ENABLE_UUID}=TRUE")]);
    for role in DiskRole::ALL {
        check.args([
            "-disk",
            &format!("{}={}", role.scsi_unit(&def), role.capacity(&def)),
        ]);
    }
    if appliance::ovf::offers_ovf_environment(&def) {
        check.args(["-transports", OVF_ENV_TRANSPORTS, "-cdrom"]);
    }
    for (p, value) in &set {
        check.args(["-property", &format!("{}={value}", full_id(*p))]);
    }
    check.args([
        "-property",
        &format!("{}={passphrase}", full_id(DeployProperty::AgentPassphrase)),
    ]);
    let out = testkit::run::output(&mut check);
    let text = format!(
        "$ {}\n{}(cargo xtask ova {:.1}s, cargo xtask deploy-spec {:.1}s, import and checks {:.1}s)\n",
        testkit::run::describe(&check),
        testkit::run::text(&out),
        packed.as_secs_f64(),
        (specified - packed).as_secs_f64(),
        (started.elapsed() - specified).as_secs_f64()
    );
    (text, out.status.success())
}
