//! The `--ovf-env` mode: the `ovf-env.xml` CD (the OVF iso transport, in the CD-ROM drive the
//! OVF declares) and its test values, the host-side enrolment with the deploy-time passphrase
//! and SSH login with the deploy-time key, and the judging of what the guest reports the
//! environment set (every property it carries).

use super::session::Outcome;
use crate::util;
use anyhow::{Context, Result};
use appliance::definition::DEPLOY_PRODUCT_CLASS;
use camino::{Utf8Path, Utf8PathBuf};
use mt_agent::guest::ovfenv::{DeployConfig, IpConfig};
use xshell::{cmd, Shell};

/// The `--ovf-env` mode: the document, the CD carrying it and what it should set.
pub(super) struct OvfEnvTest {
    pub(super) iso: Utf8PathBuf,
    pub(super) config: DeployConfig,
    /// Passphrase files for the host-side enrolment (mode 600): the right one and a wrong one.
    pub(super) right: Option<Utf8PathBuf>,
    pub(super) wrong: Utf8PathBuf,
    /// The workspace's own `mt-agent`, the sender side.
    pub(super) sender: Utf8PathBuf,
    pub(super) state: Utf8PathBuf,
    /// The private half of the environment's `root_ssh_key`, when the test made the pair (the
    /// test values): root logs in over SSH with it.
    pub(super) identity: Option<Utf8PathBuf>,
}

/// The host tools `--ovf-env` runs besides QEMU: the CD's ISO, and the SSH key and login.
pub(super) const TOOLS: [&str; 3] = ["xorriso", "ssh-keygen", "ssh"];

/// The NTP server of the test values: a name, which timesyncd keeps as configured.
const TEST_NTP_SERVER: &str = "ntp.drill.test";

/// An environment with QEMU user-network values, so the forwarded agent port keeps working, a
/// passphrase with characters XML must escape, an NTP server and `root_ssh_key` for root's login.
pub fn test_environment(root_ssh_key: &str) -> String {
    let props = [
        ("hostname", "mt-ovf.drill.test"),
        ("ip_mode", "static"),
        ("ip_address", "10.0.2.15"),
        ("ip_prefix", "24"),
        ("gateway", "10.0.2.2"),
        ("dns_servers", "10.0.2.3"),
        ("dns_search", "drill.test"),
        ("ntp_server", TEST_NTP_SERVER),
        ("agent_passphrase", "fail&back <drill> \"7\""),
        ("root_ssh_key", root_ssh_key),
    ];
    let properties: Vec<(String, String)> = props
        .iter()
        .map(|(k, v)| (format!("{DEPLOY_PRODUCT_CLASS}.{k}"), v.to_string()))
        .collect();
    appliance::ovf::render_environment(Some("QEMU boot-test"), &properties)
}

pub(super) fn write_private(path: &Utf8Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).with_context(|| format!("cannot write {path}"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod {path}"))
}

/// `xorriso -as mkisofs`: an ISO 9660 image with Rock Ridge and Joliet names.
pub(super) fn make_iso(sh: &Shell, dir: &Utf8Path, iso: &Utf8Path) -> Result<()> {
    cmd!(
        sh,
        "xorriso -as mkisofs -quiet -R -J -V OVF_ENV -o {iso} {dir}"
    )
    .run()
    .with_context(|| format!("cannot build {iso} (Debian package: xorriso)"))
}

/// Builds the workspace's `mt-agent` for the host: the sender that enrols.
pub(super) fn build_sender(sh: &Shell) -> Result<Utf8PathBuf> {
    cmd!(sh, "cargo build -q -p mt-agent")
        .run()
        .context("cannot build the host's mt-agent (the sender side of the enrolment check)")?;
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(Utf8PathBuf::from)
        .unwrap_or_else(|_| util::workspace_root().join("target"));
    Ok(target.join("debug/mt-agent"))
}

/// A fresh ed25519 key pair in `work` for the test values' `root_ssh_key`: (private key file,
/// public key line).
pub(super) fn test_key_pair(sh: &Shell, work: &Utf8Path) -> Result<(Utf8PathBuf, String)> {
    let key = work.join("root-login-key");
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(key.with_extension("pub"));
    cmd!(
        sh,
        "ssh-keygen -q -t ed25519 -N '' -C mt-boot-test -f {key}"
    )
    .run()
    .with_context(|| format!("cannot make the key pair {key} (Debian package: openssh-client)"))?;
    let public = std::fs::read_to_string(format!("{key}.pub"))
        .with_context(|| format!("cannot read {key}.pub"))?;
    Ok((key, public.trim().to_string()))
}

impl OvfEnvTest {
    pub(super) fn prepare(
        sh: &Shell,
        xml: &str,
        origin: &str,
        work: &Utf8Path,
        identity: Option<Utf8PathBuf>,
    ) -> Result<OvfEnvTest> {
        let env = mt_agent::guest::ovfenv::parse(xml)
            .with_context(|| format!("the OVF environment from {origin} is not valid"))?;
        let dir = work.join("ovf-env");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("ovf-env.xml"), xml)?;
        let iso = work.join("ovf-env.iso");
        make_iso(sh, &dir, &iso)?;
        let right = match &env.config.agent_passphrase {
            Some(p) => {
                let f = work.join("passphrase-right");
                write_private(&f, &format!("{p}\n"))?;
                Some(f)
            }
            None => None,
        };
        let wrong = work.join("passphrase-wrong");
        write_private(&wrong, "not-the-deploy-time-passphrase\n")?;
        Ok(OvfEnvTest {
            iso,
            config: env.config,
            right,
            wrong,
            sender: build_sender(sh)?,
            state: work.join("sender-state"),
            identity,
        })
    }

    /// Root logs in over SSH through the forwarded port with the environment's key (only when
    /// the test holds its private half).
    pub(super) fn ssh_login_check(&self, host_port: u16) -> Vec<Outcome> {
        let Some(identity) = &self.identity else {
            return Vec::new();
        };
        let out = std::process::Command::new("ssh")
            .args(["-i", identity.as_str()])
            .args(["-p", &host_port.to_string()])
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=30",
                "-o",
                "LogLevel=ERROR",
                "root@127.0.0.1",
                "echo MTSSH $(id -un)",
            ])
            .stdin(std::process::Stdio::null())
            .output();
        let (ok, detail) = match out {
            Ok(o) => {
                let stdout = String::from_utf8_lossy(&o.stdout).trim().to_string();
                let ok = o.status.success() && stdout == "MTSSH root";
                let detail = if ok {
                    stdout
                } else {
                    format!(
                        "ssh {}: {stdout} {}",
                        o.status,
                        String::from_utf8_lossy(&o.stderr).trim()
                    )
                };
                (ok, detail)
            }
            Err(e) => (false, format!("cannot run ssh: {e}")),
        };
        vec![Outcome {
            what: "root logs in over SSH with the OVF key".into(),
            ok,
            detail,
        }]
    }

    pub(super) fn enrol(&self, host_port: u16, passphrase: &Utf8Path) -> (bool, String) {
        let out = std::process::Command::new(&self.sender)
            .args(["enrol", "--to", &format!("127.0.0.1:{host_port}")])
            .arg("--passphrase-file")
            .arg(passphrase)
            .arg("--state")
            .arg(&self.state)
            .output();
        match out {
            Ok(o) => {
                let text = String::from_utf8_lossy(if o.status.success() {
                    &o.stdout
                } else {
                    &o.stderr
                });
                let line = text.lines().last().unwrap_or("").trim().to_string();
                (o.status.success(), line)
            }
            Err(e) => (false, format!("cannot run {}: {e}", self.sender)),
        }
    }

    /// From the host through the forwarded port: a wrong passphrase is refused, then the
    /// deploy-time one enrols.
    pub(super) fn enrol_checks(&self, host_port: u16) -> Vec<Outcome> {
        let Some(right) = &self.right else {
            return Vec::new();
        };
        let (wrong_ok, wrong_detail) = self.enrol(host_port, &self.wrong);
        let (right_ok, right_detail) = self.enrol(host_port, right);
        vec![
            Outcome {
                what: "enrolment with a wrong passphrase refused".into(),
                ok: !wrong_ok,
                detail: wrong_detail,
            },
            Outcome {
                what: "enrolment with the OVF passphrase accepted".into(),
                ok: right_ok,
                detail: right_detail,
            },
        ]
    }

    pub(super) fn judge(&self, device: &str, report: &[String]) -> Vec<Outcome> {
        let line = |kind: &str| -> String {
            report
                .iter()
                .find_map(|l| l.strip_prefix(kind).map(|r| r.trim().to_string()))
                .unwrap_or_default()
        };
        let mut out = Vec::new();
        let c = &self.config;
        if let Some(IpConfig::Static {
            address,
            prefix,
            gateway,
        }) = &c.ip
        {
            let addr = line("ovf-addr");
            out.push(Outcome {
                what: format!("{device} {address}/{prefix} configured statically"),
                ok: addr.contains(&format!(" {address}/{prefix} "))
                    && !addr.contains("dynamic")
                    && line("ovf-iface") == format!("iface {device} inet static"),
                detail: format!("{addr} | {}", line("ovf-iface")),
            });
            let route = line("ovf-route");
            out.push(Outcome {
                what: format!("default route via {gateway}"),
                ok: route.starts_with(&format!("default via {gateway} dev {device}")),
                detail: route,
            });
            let resolv = line("ovf-resolv");
            let mut want: Vec<String> = Vec::new();
            if let Some(s) = c.dns_search.as_deref().filter(|s| !s.is_empty()) {
                want.push(format!("search {s}"));
            }
            want.extend(c.dns_servers.iter().map(|d| format!("nameserver {d}")));
            let want = want.join(" ");
            out.push(Outcome {
                what: "/etc/resolv.conf from the environment".into(),
                ok: resolv == want,
                detail: resolv,
            });
        }
        if let Some(p) = &c.agent_passphrase {
            use sha2::{Digest, Sha256};
            let want: String = Sha256::digest(format!("{p}\n").as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let mode = line("ovf-passmode");
            let hash = line("ovf-passhash");
            out.push(Outcome {
                what: format!(
                    "{} mode 600 holds the passphrase",
                    mt_contract::guest::PASSPHRASE_PATH
                ),
                ok: mode == "600 root" && hash == want,
                detail: format!("mode {mode}, sha256 {}", &hash[..hash.len().min(16)]),
            });
        }
        if let Some(ntp) = &c.ntp_server {
            let got = line("ovf-ntp");
            out.push(Outcome {
                what: format!("timesyncd runs with the NTP server {ntp}"),
                ok: got.split_whitespace().eq(["active", ntp.as_str()]),
                detail: got,
            });
        }
        if let Some(key) = c.root_ssh_key.as_deref().filter(|k| !k.is_empty()) {
            let got = line("ovf-sshkey");
            out.push(Outcome {
                what: "root's authorized_keys holds the OVF key".into(),
                ok: got == "1",
                detail: format!("{got} line(s) with {}", key_body(key)),
            });
        }
        let source = line("ovf-source");
        out.push(Outcome {
            what: "mt-agent status: from the OVF environment via iso".into(),
            ok: source.starts_with("configuration: OVF environment via iso"),
            detail: source,
        });
        let unit = line("ovf-unit");
        out.push(Outcome {
            what: "mt-agent-ovfenv.service ran".into(),
            ok: unit == "active",
            detail: unit,
        });
        out
    }
}

/// The base64 part of an OpenSSH public key line (what identifies the key; the comment does not).
pub(super) fn key_body(key: &str) -> &str {
    key.split_whitespace().nth(1).unwrap_or(key)
}
