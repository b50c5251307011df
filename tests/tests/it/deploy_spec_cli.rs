//! `cargo xtask deploy-spec` run the way a user runs it: it writes the govc options file with
//! mode 600, every deploy-time property at the definition's default or its `--set` value, the
//! passphrase from its file, the network mapping and the template flag, and prints an ovftool
//! line that names the passphrase file but never the passphrase. Invalid values, unknown keys,
//! a passphrase on the command line and a missing passphrase source are refused with nothing
//! written. The JSON is read back by Python's parser, not by the code that wrote it.

use crate::common;

use appliance::definition::DeployProperty;
use camino::{Utf8Path, Utf8PathBuf};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

const PASSPHRASE: &str = "correct horse battery";

fn xtask(args: &[&str]) -> Output {
    testkit::run::cargo_xtask()
        .arg("deploy-spec")
        .args(args)
        // Not a terminal: the passphrase is never asked for.
        .stdin(Stdio::null())
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("cannot run cargo xtask")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mode(p: &Utf8Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A passphrase file as `mt-agent enrol` wants it: the passphrase on the first line, mode 600.
fn passphrase_file(dir: &Utf8Path) -> Utf8PathBuf {
    let f = dir.join("passphrase");
    std::fs::write(&f, format!("{PASSPHRASE}\nnot part of it\n")).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    f
}

/// The options file as govc's JSON decoder would see it, flattened by Python's `json`:
/// `prop:<Key>` and `net:<Name>` for the mappings (each entry exactly the fields govc has), the
/// other fields as JSON text.
fn read_options(path: &Utf8Path) -> BTreeMap<String, String> {
    testkit::require_tool("python3");
    let script = r#"
import json, sys
d = json.load(open(sys.argv[1]))
for k, v in d.items():
    if k == "PropertyMapping":
        for p in v:
            assert sorted(p) == ["Key", "Value"], p
            print("prop:%s\t%s" % (p["Key"], p["Value"]))
    elif k == "NetworkMapping":
        for n in v:
            assert sorted(n) == ["Name", "Network"], n
            print("net:%s\t%s" % (n["Name"], n["Network"]))
    else:
        print("%s\t%s" % (k, json.dumps(v)))
"#;
    let out = testkit::run::ok(Command::new("python3").args(["-c", script, path.as_str()]));
    let mut fields = BTreeMap::new();
    for line in out.lines() {
        let (k, v) = line.split_once('\t').unwrap();
        assert!(
            fields.insert(k.to_string(), v.to_string()).is_none(),
            "{k} twice in {path}"
        );
    }
    fields
}

#[test]
fn writes_a_private_options_file_with_defaults_overrides_and_the_passphrase() {
    let dir = common::scratch("deploy-spec-ok");
    let pass = passphrase_file(&dir);
    let out = dir.join("nested/spec.json");
    let o = xtask(&[
        "--passphrase-file",
        pass.as_str(),
        "--set",
        "hostname=mt7.dr.example.com",
        "--set",
        "mt.ntp_server=10.1.2.123",
        "--network",
        "DR net",
        "--name",
        "mt7",
        "--out",
        out.as_str(),
    ]);
    assert!(o.status.success(), "{}", testkit::run::text(&o));
    assert_eq!(mode(&out), 0o600, "the options file holds the passphrase");
    assert_eq!(
        testkit::names_in(out.parent().unwrap()),
        ["spec.json"],
        "no temporary file is left behind"
    );

    let f = read_options(&out);
    let def = common::parse(&common::shipped_text()).unwrap();
    for p in DeployProperty::ALL {
        let expected = match p {
            DeployProperty::Hostname => "mt7.dr.example.com".to_string(),
            DeployProperty::NtpServer => "10.1.2.123".to_string(),
            DeployProperty::AgentPassphrase => PASSPHRASE.to_string(),
            _ => p.default_value(&def),
        };
        assert_eq!(
            f.get(&format!("prop:mt.{}", p.key())),
            Some(&expected),
            "{p:?}"
        );
    }
    let props = f.keys().filter(|k| k.starts_with("prop:")).count();
    assert_eq!(props, DeployProperty::ALL.len(), "{f:?}");
    assert_eq!(f["net:VM Network"], "DR net");
    assert_eq!(f["MarkAsTemplate"], "true");
    assert_eq!(f["PowerOn"], "false");
    assert_eq!(f["InjectOvfEnv"], "false");
    assert_eq!(f["WaitForIP"], "false");
    assert_eq!(f["Name"], "\"mt7\"");
    assert_eq!(f["DiskProvisioning"], "\"thin\"");
    assert_eq!(f["IPAllocationPolicy"], "\"dhcpPolicy\"");
    assert_eq!(f["IPProtocol"], "\"IPv4\"");

    let printed = stdout(&o);
    assert!(
        printed.contains("--prop:mt.hostname=mt7.dr.example.com"),
        "{printed}"
    );
    assert!(printed.contains("--net:'VM Network=DR net'"), "{printed}");
    assert!(printed.contains("--importAsTemplate"), "{printed}");
    assert!(
        printed.contains(&format!(
            "--prop:mt.agent_passphrase=\"$(head -n 1 {pass})\""
        )),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("govc import.ova -options={out} -name=mt7 ")),
        "{printed}"
    );
    let all = testkit::run::text(&o);
    assert!(
        !all.contains(PASSPHRASE),
        "the passphrase is printed: {all}"
    );

    // A VM rather than a template.
    let o = xtask(&[
        "--passphrase-file",
        pass.as_str(),
        "--no-template",
        "--out",
        out.as_str(),
    ]);
    assert!(o.status.success(), "{}", testkit::run::text(&o));
    assert_eq!(read_options(&out)["MarkAsTemplate"], "false");
    assert!(!stdout(&o).contains("--importAsTemplate"));
}

#[test]
fn invalid_values_are_refused_naming_the_key_and_nothing_is_written() {
    let dir = common::scratch("deploy-spec-invalid");
    let pass = passphrase_file(&dir);
    let out = dir.join("spec.json");
    let cases = [
        (vec!["ip_address=300.1.1.1"], "mt.ip_address", "IPv4"),
        (vec!["hostname=-bad"], "mt.hostname", "host name"),
        (vec!["ip_prefix=31"], "mt.ip_prefix", "30"),
        (
            vec![
                "ip_mode=static",
                "ip_address=10.1.2.3",
                "ip_prefix=24",
                "gateway=10.9.9.1",
                "dns_servers=10.1.2.53",
            ],
            "mt.gateway",
            "subnet",
        ),
    ];
    for existing in [false, true] {
        if existing {
            std::fs::write(&out, "the previous options\n").unwrap();
            std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o640)).unwrap();
        }
        for (sets, key, rule) in &cases {
            let mut args = vec!["--passphrase-file", pass.as_str(), "--out", out.as_str()];
            for s in sets {
                args.extend(["--set", s]);
            }
            let o = xtask(&args);
            let err = stderr(&o);
            assert!(!o.status.success(), "{sets:?} was accepted");
            assert!(err.contains(key) && err.contains(rule), "{sets:?}: {err}");
            assert!(err.contains("nothing was written"), "{err}");
            if existing {
                assert_eq!(
                    std::fs::read_to_string(&out).unwrap(),
                    "the previous options\n"
                );
                assert_eq!(mode(&out), 0o640);
            } else {
                assert!(!out.exists(), "{sets:?} wrote {out}");
            }
        }
    }
    assert_eq!(testkit::names_in(&dir), ["passphrase", "spec.json"]);
}

#[test]
fn unknown_keys_and_a_passphrase_on_the_command_line_are_refused() {
    let dir = common::scratch("deploy-spec-keys");
    let pass = passphrase_file(&dir);
    let out = dir.join("spec.json");
    let run = |set: &str| {
        xtask(&[
            "--passphrase-file",
            pass.as_str(),
            "--set",
            set,
            "--out",
            out.as_str(),
        ])
    };

    let o = run("colour=blue");
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("colour"), "{err}");
    for p in DeployProperty::ALL {
        assert!(err.contains(p.key()), "{} is not listed: {err}", p.key());
    }

    for set in ["agent_passphrase=hunter22hunter22", "mt.agent_passphrase=x"] {
        let o = run(set);
        let err = stderr(&o);
        assert!(!o.status.success(), "{set} was accepted");
        assert!(
            err.contains("never given on the command line") && err.contains("--passphrase-file"),
            "{err}"
        );
        assert!(
            !err.contains("hunter22"),
            "the refused value is echoed: {err}"
        );
    }
    assert!(!out.exists());
}

#[test]
fn without_a_passphrase_file_and_no_terminal_it_asks_for_the_file() {
    let dir = common::scratch("deploy-spec-nopass");
    let out = dir.join("spec.json");
    let o = xtask(&["--out", out.as_str()]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{}", testkit::run::text(&o));
    assert!(
        err.contains("--passphrase-file") && err.contains("not a terminal"),
        "{err}"
    );
    assert!(!out.exists());

    // A passphrase file others may read is refused as mt-agent refuses it.
    let pass = passphrase_file(&dir);
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = xtask(&["--passphrase-file", pass.as_str(), "--out", out.as_str()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    assert!(!out.exists());

    // Too short for the contract's rule.
    std::fs::write(&pass, "short\n").unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = xtask(&["--passphrase-file", pass.as_str(), "--out", out.as_str()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("shorter than 8"), "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn an_ovf_without_properties_gets_no_property_mapping() {
    let dir = common::scratch("deploy-spec-noprops");
    let def = dir.join("appliance.toml");
    let text = common::edit(
        &common::shipped_text(),
        "properties = true",
        "properties = false",
    );
    std::fs::write(&def, text).unwrap();
    let out = dir.join("spec.json");
    let o = xtask(&["--definition", def.as_str(), "--out", out.as_str()]);
    assert!(o.status.success(), "{}", testkit::run::text(&o));
    assert!(
        stdout(&o).contains("offers no deploy-time properties"),
        "{}",
        stdout(&o)
    );
    assert!(!stdout(&o).contains("--prop:"), "{}", stdout(&o));
    let f = read_options(&out);
    assert!(!f.keys().any(|k| k.starts_with("prop:")), "{f:?}");
    assert_eq!(f["net:VM Network"], "VM Network");

    let o = xtask(&[
        "--definition",
        def.as_str(),
        "--set",
        "hostname=mt7",
        "--out",
        dir.join("other.json").as_str(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no deploy-time properties"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.join("other.json").exists());
}
