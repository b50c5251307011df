//! Rendering the CentOS 6.6 kickstart (`ks.cfg`) from the handlebars templates in `kickstart/`.
//!
//! Every value comes from the definition or the el6 package manifest; the templates only hold the
//! kickstart's structure. Values are quoted here, in Rust, for the two lexers that read them
//! (pykickstart's shlex for command lines, `/bin/sh` for `%post`), and handlebars' HTML escaping is
//! off. What cannot be written safely (control characters, over-long lines) is refused, never
//! mangled. The templates are embedded at build time: rendering needs no file at run time.
//!
//! The contract with the image build (which writes the extras CD and watches the serial console)
//! is the set of `pub const`s below; the build reads them from here instead of repeating them.

use crate::definition::{Base, Definition, NetworkMode, RETENTION_MOUNT_POINT};
use crate::packages::PackageManifest;
use anyhow::{bail, Context, Result};
use handlebars::Handlebars;
use serde::Serialize;

/// Longest line (bytes, without the newline) the renderer writes.
///
/// Neither the RHEL 6 loader nor pykickstart has a fixed line buffer: the loader hands the file to
/// pykickstart's `readKickstart` (anaconda `loader/kickstart.c`), which reads whole lines in Python.
/// The `%post` lines, however, are run by `/bin/sh` and may be read by line-oriented text tools,
/// for which POSIX only guarantees `{LINE_MAX}` >= `{_POSIX2_LINE_MAX}` = 2048 bytes including the
/// newline (glibc's `getconf LINE_MAX` is 2048 too). So 2047 is the portable bound.
pub const MAX_LINE_BYTES: usize = 2047;

/// Volume label of the second CD that carries the extra RPMs and the agent.
pub const EXTRAS_VOLUME_LABEL: &str = "MTEXTRAS";
/// Directory on the extras CD holding the RPMs to install (the manifest's external files and any
/// packages the minimal ISO lacks).
pub const EXTRAS_RPM_DIR: &str = "rpms";
/// File name of the static `mt-agent` binary at the root of the extras CD.
pub const EXTRAS_AGENT_FILE: &str = "mt-agent";
/// File name of the agent's configuration (rendered from the definition) on the extras CD.
pub const EXTRAS_AGENT_CONFIG_FILE: &str = "agent.toml";
/// Where the agent is installed in the appliance.
pub const AGENT_INSTALL_PATH: &str = "/usr/sbin/mt-agent";
/// The `--distro` that `mt-agent setup` is called with on this base.
pub const AGENT_DISTRO: &str = "el6";
/// Printed on the console and written to [`POST_OK_FILE`] when `%post` has completed.
pub const POST_OK_MARKER: &str = "MT-KICKSTART-POST-OK";
/// Prefix of the console line `%post` prints when it gives up (the reason follows).
pub const POST_FAILED_MARKER: &str = "MT-KICKSTART-POST-FAILED";
/// The success marker file inside the installed system.
pub const POST_OK_FILE: &str = "/root/ks-post.ok";
/// Directory (inside the installed system) of the `%post` logs.
pub const POST_LOG_DIR: &str = "/root";
/// Where the nochroot `%post` copies the extras CD's content in the target (removed at the end).
const EXTRAS_TARGET_DIR: &str = "/root/mt-extras";

/// Linux names SCSI disks in the order they are found: with exactly two disks the OS disk (unit 0)
/// is `sda` and the retention disk (validated to be another unit) is `sdb`.
pub const OS_DRIVE: &str = "sda";
pub const RETENTION_DRIVE: &str = "sdb";

/// The retention partition asks for the disk less this much: 1 MiB before the partition for the
/// table and alignment, and 1 MiB at the end that Anaconda's optimal alignment may drop; `--grow`
/// then gives it whatever is left.
const RETENTION_RESERVED_MIB: u64 = 2;

const MAIN_TEMPLATE: &str = "ks.cfg";
const TEMPLATES: [(&str, &str); 6] = [
    (MAIN_TEMPLATE, include_str!("../../kickstart/ks.cfg.hbs")),
    ("network", include_str!("../../kickstart/network.hbs")),
    ("storage", include_str!("../../kickstart/storage.hbs")),
    ("packages", include_str!("../../kickstart/packages.hbs")),
    (
        "post_nochroot",
        include_str!("../../kickstart/post_nochroot.hbs"),
    ),
    ("post", include_str!("../../kickstart/post.hbs")),
];

/// Renders `ks.cfg` for the definition with the shipped el6 package manifest.
pub fn render(def: &Definition) -> Result<String> {
    render_with(def, &PackageManifest::shipped(Base::Centos6))
}

/// Renders `ks.cfg` for the definition with a given el6 package manifest.
pub fn render_with(def: &Definition, manifest: &PackageManifest) -> Result<String> {
    if manifest.base != Base::Centos6 {
        bail!(
            "the kickstart installs CentOS 6: {} is a {} manifest, not an el6 one",
            manifest.path,
            manifest.base
        );
    }
    let context = KickstartValues::new(def, manifest)?;
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    for (name, text) in TEMPLATES {
        hb.register_template_string(name, text)
            .with_context(|| format!("kickstart template {name}.hbs"))?;
    }
    let ks = hb
        .render(MAIN_TEMPLATE, &context)
        .context("rendering the kickstart")?;
    check_lines(&ks)?;
    Ok(ks)
}

fn check_lines(ks: &str) -> Result<()> {
    for (i, line) in ks.lines().enumerate() {
        if line.len() > MAX_LINE_BYTES {
            bail!(
                "kickstart line {} is {} bytes, longer than the {MAX_LINE_BYTES} a kickstart line may have; it starts {:?}: shorten the value in the definition",
                i + 1,
                line.len(),
                line.chars().take(60).collect::<String>()
            );
        }
    }
    Ok(())
}

/// Quotes a value for a kickstart command line, which pykickstart splits with Python's
/// `shlex.split(line, comments=True)`: a `#` anywhere outside quotes starts a comment there.
pub fn quote_ks(field: &str, value: &str) -> Result<String> {
    quote(field, value, |c| {
        c.is_ascii_alphanumeric() || "._,:/=+@%$-".contains(c)
    })
}

/// Quotes a value for `/bin/sh` in `%post`.
pub fn quote_sh(field: &str, value: &str) -> Result<String> {
    quote(field, value, crate::shell::sh_plain)
}

/// POSIX single quoting (`shell::quote_word`), which both `sh` and `shlex` read the same way,
/// of a value a kickstart line can carry: no control characters.
fn quote(field: &str, value: &str, bare: impl Fn(char) -> bool) -> Result<String> {
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        bail!("{field}: {value:?} contains the control character {c:?}, which a kickstart line cannot carry");
    }
    Ok(crate::shell::quote_word(value, bare))
}

#[derive(Serialize)]
struct KickstartValues {
    appliance: ApplianceCtx,
    system: SystemCtx,
    agent: AgentCtx,
    network: NetworkCtx,
    drives: DrivesCtx,
    partitions: Vec<PartCtx>,
    retention: PartCtx,
    services: String,
    packages: Vec<String>,
    required_packages: Vec<String>,
    extras: ExtrasCtx,
    ssh_keys: Vec<String>,
    /// The definition's kexec-tools: el6's kdump makes the capture initramfs in %post.
    kdump: bool,
    post: PostCtx,
}

#[derive(Serialize)]
struct ApplianceCtx {
    name: String,
    version: String,
}

#[derive(Serialize)]
struct SystemCtx {
    language: String,
    keyboard: String,
    timezone: String,
    root_password_hash: String,
}

#[derive(Serialize)]
struct AgentCtx {
    port: u16,
    path: &'static str,
    distro: &'static str,
}

#[derive(Serialize)]
struct NetworkCtx {
    device: String,
    onboot: &'static str,
    bootproto: &'static str,
    #[serde(rename = "static")]
    static_ip: Option<StaticCtx>,
    nameservers: String,
    hostname: String,
}

#[derive(Serialize)]
struct StaticCtx {
    ip: String,
    netmask: String,
    gateway: String,
}

#[derive(Serialize)]
struct DrivesCtx {
    os: &'static str,
    all: String,
}

#[derive(Serialize)]
struct PartCtx {
    mount: String,
    fstype: &'static str,
    size_mib: u64,
    grow: bool,
    disk: &'static str,
    label: String,
}

#[derive(Serialize)]
struct ExtrasCtx {
    label: &'static str,
    rpm_dir: &'static str,
    agent_file: &'static str,
    agent_config_file: &'static str,
    target_dir: &'static str,
    files: Vec<String>,
}

#[derive(Serialize)]
struct PostCtx {
    log_dir: &'static str,
    ok_marker: &'static str,
    failed_marker: &'static str,
    ok_file: &'static str,
}

impl KickstartValues {
    fn new(def: &Definition, manifest: &PackageManifest) -> Result<KickstartValues> {
        let n = &def.network;
        let static_ip = match n.mode {
            NetworkMode::Dhcp => None,
            NetworkMode::Static => {
                let s = n.static_ip().context(
                    "network: mode = \"static\" needs address, prefix and gateway (validate the definition first)",
                )?;
                Some(StaticCtx {
                    ip: s.address.to_string(),
                    netmask: s.netmask().to_string(),
                    gateway: s.gateway.to_string(),
                })
            }
        };
        let partitions = def
            .os_disk
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Ok(PartCtx {
                    mount: quote_ks(&format!("os_disk.partitions[{i}].mount"), &p.mount)?,
                    fstype: p.fs.as_str(),
                    size_mib: whole_mib(&format!("os_disk.partitions[{i}].size"), p.size)?,
                    grow: p.grow,
                    disk: OS_DRIVE,
                    label: quote_ks(&format!("os_disk.partitions[{i}].label"), &p.label)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let r = &def.retention_disk;
        if r.mount != RETENTION_MOUNT_POINT {
            bail!(
                "retention_disk.mount: {:?} is not {RETENTION_MOUNT_POINT}",
                r.mount
            );
        }
        let retention_mib = whole_mib("retention_disk.size", r.size)?;
        if retention_mib <= RETENTION_RESERVED_MIB {
            bail!(
                "retention_disk.size: {} leaves no room for a partition",
                r.size
            );
        }
        let retention = PartCtx {
            mount: quote_ks("retention_disk.mount", &r.mount)?,
            fstype: r.fs.as_str(),
            size_mib: retention_mib - RETENTION_RESERVED_MIB,
            grow: true,
            disk: RETENTION_DRIVE,
            label: quote_ks("retention_disk.label", &r.label)?,
        };
        let mut services = vec!["sshd".to_string(), "network".to_string()];
        for s in manifest.services_for(def) {
            if !services.contains(&s) {
                services.push(s);
            }
        }
        let packages = manifest
            .base_packages()
            .iter()
            .cloned()
            .chain(manifest.base_source_packages_for(def))
            .collect();
        let extras_files = manifest
            .external_files_for(def)
            .iter()
            .map(|e| quote_sh("packages", &e.file))
            .collect::<Result<Vec<_>>>()?;
        let ssh_keys = def
            .system
            .ssh_authorized_keys
            .iter()
            .enumerate()
            .map(|(i, k)| quote_sh(&format!("system.ssh_authorized_keys[{i}]"), k))
            .collect::<Result<Vec<_>>>()?;
        Ok(KickstartValues {
            appliance: ApplianceCtx {
                name: one_line("appliance.name", &def.appliance.name)?,
                version: one_line("appliance.version", &def.appliance.version)?,
            },
            system: SystemCtx {
                language: quote_ks("system.language", &def.system.language)?,
                keyboard: quote_ks("system.keyboard", &def.system.keyboard)?,
                timezone: quote_ks("system.timezone", &def.system.timezone)?,
                root_password_hash: quote_ks(
                    "system.root_password_hash",
                    &def.system.root_password_hash,
                )?,
            },
            agent: AgentCtx {
                port: def.agent.port,
                path: AGENT_INSTALL_PATH,
                distro: AGENT_DISTRO,
            },
            network: NetworkCtx {
                device: quote_ks("network.device", &n.device)?,
                onboot: if n.onboot { "yes" } else { "no" },
                bootproto: match n.mode {
                    NetworkMode::Dhcp => "dhcp",
                    NetworkMode::Static => "static",
                },
                static_ip,
                nameservers: n
                    .dns
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                hostname: quote_ks("network.hostname", &n.hostname)?,
            },
            drives: DrivesCtx {
                os: OS_DRIVE,
                all: format!("{OS_DRIVE},{RETENTION_DRIVE}"),
            },
            partitions,
            retention,
            services: services.join(","),
            packages,
            required_packages: manifest.packages_for(def),
            extras: ExtrasCtx {
                label: EXTRAS_VOLUME_LABEL,
                rpm_dir: EXTRAS_RPM_DIR,
                agent_file: EXTRAS_AGENT_FILE,
                agent_config_file: EXTRAS_AGENT_CONFIG_FILE,
                target_dir: EXTRAS_TARGET_DIR,
                files: extras_files,
            },
            ssh_keys,
            kdump: crate::kernel_cmdline::crash_kernel(def).is_some(),
            post: PostCtx {
                log_dir: POST_LOG_DIR,
                ok_marker: POST_OK_MARKER,
                failed_marker: POST_FAILED_MARKER,
                ok_file: POST_OK_FILE,
            },
        })
    }
}

fn whole_mib(field: &str, size: crate::units::ByteSize) -> Result<u64> {
    if size.bytes() == 0 || !size.is_multiple_of(crate::units::MIB) {
        bail!("{field}: {size} is not a non-zero whole number of MiB, which the kickstart's --size needs");
    }
    Ok(size.mib())
}

/// A value that only appears in a comment line: it must not break out of it.
fn one_line(field: &str, value: &str) -> Result<String> {
    if value.chars().any(|c| c.is_control()) {
        bail!("{field}: {value:?} contains a control character");
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_stay_bare_and_others_are_single_quoted() {
        assert_eq!(quote_ks("f", "Europe/Berlin").unwrap(), "Europe/Berlin");
        assert_eq!(quote_ks("f", "$6$salt$hash").unwrap(), "$6$salt$hash");
        assert_eq!(quote_ks("f", "a#b").unwrap(), "'a#b'");
        assert_eq!(quote_ks("f", "a b").unwrap(), "'a b'");
        assert_eq!(quote_sh("f", "$6$x").unwrap(), "'$6$x'");
        assert_eq!(quote_sh("f", "it's").unwrap(), r#"'it'"'"'s'"#);
        assert_eq!(quote_sh("f", "").unwrap(), "''");
    }

    #[test]
    fn control_characters_are_refused_with_the_field_name() {
        let err = quote_ks("network.hostname", "a\nrootpw x").unwrap_err();
        assert!(err.to_string().contains("network.hostname"), "{err}");
        assert!(quote_sh("k", "a\tb").is_err());
    }
}
