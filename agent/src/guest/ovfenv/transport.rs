//! The transports of the deploy-time values: VMware tools' `guestinfo.ovfEnv`, then any iso9660
//! CD-ROM carrying `ovf-env.xml`, then the guest variables `guestinfo.mt.<key>` through VMware
//! tools. Every program runs through the injectable [`Runner`], so tests and the boot test's
//! fakes stand in for `vmtoolsd`, `blkid`, `mount` and `umount`.

use super::{Content, Transport, GUESTINFO_PREFIX, ISO_FILE_NAME, KEYS, PRODUCT_CLASS};
use anyhow::{bail, Context, Result};
use camino::Utf8PathBuf;
use std::collections::BTreeMap;

/// Runs a program and returns whether it succeeded and its standard output. Injected so tests
/// (and the boot test's fakes) can stand in for `vmtoolsd`, `blkid`, `mount` and `umount`.
pub trait Runner {
    fn run(&self, program: &str, args: &[&str]) -> std::io::Result<(bool, String)>;
}

/// The real runner: the programs on the guest's PATH.
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, program: &str, args: &[&str]) -> std::io::Result<(bool, String)> {
        let out = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    }
}

/// Finds the deploy-time values, in this order: the OVF environment from VMware tools
/// (vSphere's default), from a CD-ROM with `ovf-env.xml`, then the guest variables
/// `guestinfo.mt.<key>`. An OVF environment wins because it is what vCenter delivers and it is
/// complete (every property, defaults included); guest variables are the fallback of a
/// standalone ESXi host, which delivers no environment. `None` when none of them carries
/// anything (not deployed with properties, and no variable set).
pub fn read_environment(runner: &dyn Runner) -> Result<Option<(Transport, Content)>> {
    // "No value found" (exit 1) means: not this transport. No vmtoolsd (a spawn error) means
    // no VMware tools at all, so the guest variables are not asked for either; neither are
    // they on another hypervisor, where every vmtoolsd call fails after a timeout.
    let tools = on_vmware(runner)
        && match runner.run("vmtoolsd", &["--cmd", "info-get guestinfo.ovfEnv"]) {
            Ok((true, out)) if !out.trim().is_empty() => {
                return Ok(Some((Transport::GuestInfo, Content::Document(out))));
            }
            Ok(_) => true,
            Err(_) => false,
        };
    if let Ok((true, devices)) = runner.run("blkid", &["-t", "TYPE=iso9660", "-o", "device"]) {
        for device in devices.lines().map(str::trim).filter(|d| !d.is_empty()) {
            if let Some(text) = read_from_cdrom(runner, device)? {
                return Ok(Some((
                    Transport::Iso {
                        device: device.to_string(),
                    },
                    Content::Document(text),
                )));
            }
        }
    }
    if !tools {
        return Ok(None);
    }
    Ok(read_guest_variables(runner)?
        .map(|values| (Transport::GuestVariables, Content::GuestVariables(values))))
}

/// Whether VMware's hypervisor could answer VMware tools: `vmware-checkvm` (open-vm-tools)
/// says no on any other hypervisor, and the CD-ROM is then the only transport. Without the
/// program the answer is not known, and the tools are asked.
fn on_vmware(runner: &dyn Runner) -> bool {
    !matches!(runner.run("vmware-checkvm", &[]), Ok((false, _)))
}

/// The guest variable of a property key: `guestinfo.mt.<key>`.
pub fn guest_variable(key: &str) -> String {
    format!("{GUESTINFO_PREFIX}{PRODUCT_CLASS}.{key}")
}

/// Reads `guestinfo.mt.<key>` for every property through VMware tools. `None` when none is set
/// or vmtoolsd cannot be run (the first spawn tells, so a guest without VMware tools pays one
/// failed spawn, not one per key). A spawn failing after an earlier one worked is an error: the
/// set would be incomplete, and a part of it must not be applied as if it were the whole.
fn read_guest_variables(runner: &dyn Runner) -> Result<Option<BTreeMap<&'static str, String>>> {
    let mut values = BTreeMap::new();
    for (i, key) in KEYS.into_iter().enumerate() {
        let variable = guest_variable(key);
        let query = format!("info-get {variable}");
        match runner.run("vmtoolsd", &["--cmd", &query]) {
            Ok((true, out)) => {
                values.insert(key, without_line_end(out));
            }
            // Exit status 1, "No value found": this variable is not set.
            Ok((false, _)) => {}
            Err(_) if i == 0 => return Ok(None),
            Err(e) => bail!(
                "cannot run vmtoolsd to read the guest variable {variable}: {e}; the guest variables were not applied"
            ),
        }
    }
    Ok((!values.is_empty()).then_some(values))
}

/// The value as set: vmtoolsd ends what it prints with a line break that is not part of it
/// (a passphrase is taken as typed, so only that one line end goes).
fn without_line_end(mut out: String) -> String {
    if out.ends_with('\n') {
        out.pop();
        if out.ends_with('\r') {
            out.pop();
        }
    }
    out
}

/// Mounts one iso9660 device read-only on a fresh directory and reads `ovf-env.xml` (plain
/// ISO 9660 level 1 names it `OVF-ENV.XML;1`, shown upper-case without Rock Ridge).
fn read_from_cdrom(runner: &dyn Runner, device: &str) -> Result<Option<String>> {
    let dir = std::env::temp_dir().join(format!(
        "mt-ovfenv-{}-{}",
        std::process::id(),
        device.replace('/', "_")
    ));
    let dir = Utf8PathBuf::from_path_buf(dir).map_err(|p| anyhow::anyhow!("{p:?} is not UTF-8"))?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {dir}"))?;
    let mounted = matches!(
        runner.run(
            "mount",
            &["-o", "ro", "-t", "iso9660", device, dir.as_str()]
        ),
        Ok((true, _))
    );
    let mut found = None;
    if mounted {
        for name in [ISO_FILE_NAME, "OVF-ENV.XML", "OVF-ENV.XML;1"] {
            if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
                found = Some(text);
                break;
            }
        }
        let _ = runner.run("umount", &[dir.as_str()]);
    }
    let _ = std::fs::remove_dir(&dir);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// VMware tools answering from `variables` (`None`: no vmtoolsd at all), no CD-ROM; every
    /// call recorded. `fail_after` makes spawns fail once that many have worked; `checkvm` is
    /// what `vmware-checkvm` answers (`None`: not installed).
    struct Tools {
        variables: Option<Vec<(String, String)>>,
        fail_after: Option<usize>,
        checkvm: Option<bool>,
        calls: RefCell<Vec<String>>,
    }

    impl Tools {
        fn new(variables: Option<&[(&str, &str)]>) -> Tools {
            Tools {
                variables: variables.map(|v| {
                    v.iter()
                        .map(|(k, v)| (guest_variable(k), v.to_string()))
                        .collect()
                }),
                fail_after: None,
                checkvm: None,
                calls: RefCell::default(),
            }
        }
    }

    impl Runner for Tools {
        fn run(&self, program: &str, args: &[&str]) -> std::io::Result<(bool, String)> {
            let spawned = self.calls.borrow().len();
            self.calls
                .borrow_mut()
                .push(format!("{program} {}", args.join(" ")));
            let enoent = || std::io::Error::new(std::io::ErrorKind::NotFound, program.to_string());
            match (program, &self.variables) {
                ("vmware-checkvm", _) => match self.checkvm {
                    Some(yes) => Ok((yes, String::new())),
                    None => Err(enoent()),
                },
                ("vmtoolsd", Some(_)) if self.fail_after.is_some_and(|n| spawned >= n) => {
                    Err(std::io::Error::other("out of processes"))
                }
                ("vmtoolsd", Some(vars)) => {
                    let name = args[1].strip_prefix("info-get ").unwrap();
                    Ok(match vars.iter().find(|(k, _)| k == name) {
                        Some((_, v)) => (true, format!("{v}\n")),
                        None => (false, String::new()),
                    })
                }
                _ => Err(enoent()),
            }
        }
    }

    #[test]
    fn the_guest_variables_are_named_from_the_contract() {
        let class = mt_contract::deploy::DEPLOY_PRODUCT_CLASS;
        assert_eq!(
            guest_variable(KEYS[0]),
            format!("guestinfo.{class}.{}", KEYS[0])
        );
    }

    #[test]
    fn without_vmtoolsd_one_failed_spawn_ends_the_search() {
        let tools = Tools::new(None);
        assert_eq!(read_environment(&tools).unwrap(), None);
        let vmtoolsd = tools
            .calls
            .borrow()
            .iter()
            .filter(|c| c.starts_with("vmtoolsd"))
            .count();
        assert_eq!(vmtoolsd, 1, "{:?}", tools.calls.borrow());
        // Asked on its own, the first key's failed spawn ends the transport.
        let tools = Tools::new(None);
        assert_eq!(read_guest_variables(&tools).unwrap(), None);
        assert_eq!(tools.calls.borrow().len(), 1);
    }

    #[test]
    fn every_key_is_asked_and_the_values_keep_all_but_the_line_end() {
        let tools = Tools::new(Some(&[
            ("hostname", "mt01"),
            ("agent_passphrase", " spaces kept "),
            ("dns_search", ""),
        ]));
        let (transport, content) = read_environment(&tools).unwrap().unwrap();
        assert_eq!(transport, Transport::GuestVariables);
        let Content::GuestVariables(values) = content else {
            panic!("{content:?}")
        };
        let got: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            got,
            [
                ("agent_passphrase", " spaces kept "),
                ("dns_search", ""),
                ("hostname", "mt01")
            ]
        );
        let asked: Vec<String> = tools
            .calls
            .borrow()
            .iter()
            .filter_map(|c| c.strip_prefix("vmtoolsd --cmd info-get "))
            .map(str::to_string)
            .collect();
        let mut want = vec!["guestinfo.ovfEnv".to_string()];
        want.extend(KEYS.iter().map(|k| guest_variable(k)));
        assert_eq!(asked, want);
    }

    /// On another hypervisor (QEMU, the boot test) VMware tools are installed but nothing
    /// answers them: not one vmtoolsd call; with the hypervisor VMware's, they are asked.
    #[test]
    fn off_vmware_the_tools_are_not_asked() {
        let mut tools = Tools::new(Some(&[("hostname", "mt01")]));
        tools.checkvm = Some(false);
        assert_eq!(read_environment(&tools).unwrap(), None);
        let calls = tools.calls.borrow();
        assert!(
            !calls.iter().any(|c| c.starts_with("vmtoolsd")),
            "{calls:?}"
        );
        assert!(
            calls.iter().any(|c| c.starts_with("blkid")),
            "the CD is still read"
        );
        let mut tools = Tools::new(Some(&[("hostname", "mt01")]));
        tools.checkvm = Some(true);
        let (transport, _) = read_environment(&tools).unwrap().unwrap();
        assert_eq!(transport, Transport::GuestVariables);
    }

    #[test]
    fn no_variable_set_is_no_environment() {
        let tools = Tools::new(Some(&[]));
        assert_eq!(read_environment(&tools).unwrap(), None);
    }

    #[test]
    fn a_spawn_failing_halfway_is_an_error_not_a_partial_set() {
        let mut tools = Tools::new(Some(&[("hostname", "mt01"), ("ntp_server", "ntp1")]));
        // vmware-checkvm, guestinfo.ovfEnv, blkid, then three keys.
        tools.fail_after = Some(6);
        let err = read_environment(&tools).unwrap_err().to_string();
        assert!(
            err.contains(&guest_variable(KEYS[3])) && err.contains("not applied"),
            "{err}"
        );
    }

    #[test]
    fn only_one_line_end_is_taken_off() {
        assert_eq!(without_line_end("a b\n".into()), "a b");
        assert_eq!(without_line_end("a b\r\n".into()), "a b");
        assert_eq!(without_line_end("a b\n\n".into()), "a b\n");
        assert_eq!(without_line_end("a b".into()), "a b");
    }
}
