//! `cargo xtask deploy-spec --out FILE`: the options file `govc import.ova -options=FILE` reads
//! to deploy the appliance OVA with its deploy-time properties set, and the equivalent `ovftool`
//! and `govc` command lines.
//!
//! The properties, their keys and defaults are the contract's (`mt_contract::deploy`) applied to
//! the definition, exactly as the OVF writer declares them; `--set` overrides them. Every value
//! goes through the guest's own validator (`mt_agent::guest::ovfenv::parse`, run on the OVF
//! environment vSphere will deliver), then through the OVF's declaration of each property (its
//! type and qualifiers: what vSphere and ovftool check at import, also for values the guest
//! ignores, such as the static address with `ip_mode` dhcp). The passphrase comes from a file or
//! a prompt without echo, never from the command line and never from a default; the options file
//! is written atomically with mode 600 from its creation (`mt_agent::atomic_file`).
//! `values`: the properties and their checks; `terminal`: the prompt without echo.

mod terminal;
mod values;

use crate::util;
use anyhow::{bail, Context, Result};
use appliance::definition::DeployProperty;
use appliance::ovf::NETWORK_NAME;
use appliance::shell::sh_word;
use camino::{Utf8Path, Utf8PathBuf};
use mt_contract::rules::{self, PassphraseProblem};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use terminal::read_hidden;
use values::{check_values, env_key, property_values};

/// The longest name vSphere gives a VM or template.
const MAX_VM_NAME_CHARS: usize = 80;

/// Write the options file `govc import.ova -options=FILE` reads, and print the ovftool line.
///
/// The file is the JSON `govc import.spec` prints, filled in for this appliance: every
/// deploy-time property the definition's OVF offers (its `mt.*` ProductSection), each with the
/// definition's default unless `--set` overrides it; the agent passphrase; the network mapping;
/// the VM name; thin disks; imported as a template (`--no-template`: as a VM), not powered on.
/// Every value is checked as the appliance checks its OVF environment at first boot, and against
/// the OVF's declaration of the property, before anything is written.
///
/// The passphrase comes from `--passphrase-file` or, on a terminal, is asked for twice without
/// echo; it is never taken from the command line and has no default. The file holds it: it is
/// written with mode 600 (temporary file, fsync, rename). Afterwards the equivalent `govc` and
/// `ovftool` command lines are printed (the passphrase only as a reference to its file).
#[derive(clap::Args)]
pub struct DeploySpec {
    /// The appliance definition whose OVA is deployed (default: appliance/appliance.toml); the
    /// properties its OVF offers and their defaults come from it.
    #[arg(long, value_name = "FILE")]
    definition: Option<Utf8PathBuf>,
    /// Set a deploy-time property: KEY=VALUE, the key with or without the `mt.` class
    /// (`hostname=mt7.dr.example.com`, `mt.ip_mode=static`). Repeatable; properties not set keep
    /// the definition's default. Spaces around the value are dropped. Not for agent_passphrase.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    set: Vec<(String, String)>,
    /// The agent enrolment passphrase: the first line of FILE, which only its owner may read
    /// (chmod 600; the file `mt-agent enrol --passphrase-file` reads). Without it the passphrase
    /// is asked for on the terminal.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<Utf8PathBuf>,
    /// The name of the VM or template in vCenter (default: the definition's appliance.name).
    #[arg(long, value_name = "VM_NAME")]
    name: Option<String>,
    /// The port group the appliance's network ("VM Network" in its OVF) is connected to.
    #[arg(long, value_name = "PORTGROUP", default_value = NETWORK_NAME)]
    network: String,
    /// Import a VM rather than a template (MarkAsTemplate false).
    #[arg(long)]
    no_template: bool,
    /// How the disks are allocated on the datastore.
    #[arg(long, value_enum, value_name = "KIND", default_value_t = DiskProvisioning::Thin)]
    disk_provisioning: DiskProvisioning,
    /// The OVA the printed commands deploy (default: out/<appliance.name>.ova in the workspace,
    /// where build-ova puts it). Only printed: it need not exist yet.
    #[arg(long, value_name = "FILE")]
    ova: Option<Utf8PathBuf>,
    /// Where to write the options file (JSON; mode 600, since it holds the passphrase).
    #[arg(long, value_name = "FILE")]
    out: Utf8PathBuf,
}

/// vSphere's disk provisioning types (`OvfCreateImportSpecParams.diskProvisioning`, ovftool's
/// `--diskMode`), the ones that make sense on a datastore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DiskProvisioning {
    /// Allocated as written.
    #[value(name = "thin")]
    Thin,
    /// Allocated at once, zeroed on first write.
    #[value(name = "thick")]
    Thick,
    /// Allocated and zeroed at once.
    #[value(name = "eagerZeroedThick")]
    EagerZeroedThick,
}

impl DiskProvisioning {
    fn as_str(self) -> &'static str {
        match self {
            DiskProvisioning::Thin => "thin",
            DiskProvisioning::Thick => "thick",
            DiskProvisioning::EagerZeroedThick => "eagerZeroedThick",
        }
    }
}

fn parse_set(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE (e.g. hostname=mt7.dr.example.com)"))?;
    Ok((key.trim().to_string(), value.trim().to_string()))
}

/// govmomi's `importx.Options` (govc 0.24, `govc/importx/options.go`), the fields this deploy
/// sets, in its order. `Deployment` and `Annotation` are left out (`omitempty`): the OVF has no
/// deployment options, and the annotation is the OVF's own.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GovcOptions<'a> {
    disk_provisioning: &'a str,
    #[serde(rename = "IPAllocationPolicy")]
    ip_allocation_policy: &'a str,
    #[serde(rename = "IPProtocol")]
    ip_protocol: &'a str,
    /// `omitempty` in govc: absent when the OVF offers no properties.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    property_mapping: Vec<KeyValue>,
    network_mapping: Vec<NetworkMapping<'a>>,
    mark_as_template: bool,
    power_on: bool,
    inject_ovf_env: bool,
    #[serde(rename = "WaitForIP")]
    wait_for_ip: bool,
    name: &'a str,
}

/// `importx.Property` (a `types.KeyValue`): the key as the OVF environment names it,
/// `<class>.<key>`, as `govc import.spec` writes it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct KeyValue {
    key: String,
    value: String,
}

/// `importx.Network`: the OVF's network name and the port group it is connected to.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkMapping<'a> {
    name: &'a str,
    network: &'a str,
}

/// Where the passphrase came from: what the printed ovftool line can refer to.
enum PassphraseSource {
    File(Utf8PathBuf),
    Prompt,
}

impl DeploySpec {
    pub fn run(self, _sh: &xshell::Shell) -> Result<()> {
        let (def_path, def) = util::load_definition(self.definition.as_deref())?;
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| def.appliance.name.clone());
        check_vm_name(&name)?;
        if self.network.trim().is_empty() {
            bail!("--network: the port group name is empty");
        }
        let nothing_written = || format!("nothing was written to {}", self.out);

        let (values, source) = if def.deploy.properties {
            let mut values = property_values(&def, &self.set).context(nothing_written())?;
            // Everything else is checked before the passphrase is asked for.
            check_values(&values).with_context(|| {
                format!("invalid deploy-time properties; {}", nothing_written())
            })?;
            let (passphrase, source) = self.passphrase().context(nothing_written())?;
            values.insert(DeployProperty::AgentPassphrase, passphrase);
            check_values(&values).with_context(|| {
                format!("invalid deploy-time properties; {}", nothing_written())
            })?;
            (values, Some(source))
        } else {
            if let Some((key, _)) = self.set.first() {
                bail!(
                    "--set {key}: the OVF of {def_path} offers no deploy-time properties \
                     (deploy.properties = false); {}",
                    nothing_written()
                );
            }
            if self.passphrase_file.is_some() {
                bail!(
                    "--passphrase-file: the OVF of {def_path} offers no deploy-time properties \
                     (deploy.properties = false), so no passphrase is set at deployment; {}",
                    nothing_written()
                );
            }
            (BTreeMap::new(), None)
        };

        let options = GovcOptions {
            disk_provisioning: self.disk_provisioning.as_str(),
            ip_allocation_policy: "dhcpPolicy",
            ip_protocol: "IPv4",
            property_mapping: values
                .iter()
                .map(|(p, v)| KeyValue {
                    key: env_key(*p),
                    value: v.clone(),
                })
                .collect(),
            network_mapping: vec![NetworkMapping {
                name: NETWORK_NAME,
                network: &self.network,
            }],
            mark_as_template: !self.no_template,
            power_on: false,
            inject_ovf_env: false,
            wait_for_ip: false,
            name: &name,
        };
        let mut json = serde_json::to_string_pretty(&options)?;
        json.push('\n');
        mt_agent::atomic_file::write_atomic(&self.out, json.as_bytes(), 0o600)
            .with_context(|| format!("cannot write the options file {}", self.out))?;

        let ova = self.ova.clone().unwrap_or_else(|| {
            util::workspace_root()
                .join("out")
                .join(format!("{}.ova", def.appliance.name))
        });
        let what = if self.no_template { "VM" } else { "template" };
        if source.is_some() {
            println!(
                "wrote {} (mode 600: it holds the agent passphrase)",
                self.out
            );
        } else {
            println!("wrote {} (mode 600)", self.out);
        }
        println!(
            "  {what} {name:?}, disks {}, network {NETWORK_NAME:?} on port group {:?}",
            self.disk_provisioning.as_str(),
            self.network
        );
        if values.is_empty() {
            println!(
                "  the OVF of {def_path} offers no deploy-time properties (deploy.properties = \
                 false): the file sets none"
            );
        } else {
            println!(
                "  {} deploy-time properties: the definition's defaults{}",
                values.len(),
                if self.set.is_empty() {
                    String::new()
                } else {
                    format!(" and {} set with --set", self.set.len())
                }
            );
        }
        println!();
        println!(
            "# govc (vCenter from GOVC_URL, GOVC_USERNAME, GOVC_PASSWORD; add -ds=, -pool=, \
             -folder= to choose where):"
        );
        println!("{}", govc_line(&self.out, &name, &ova));
        println!();
        println!("# or ovftool (replace the upper-case names):");
        let lines = ovftool_lines(&OvftoolLine {
            name: &name,
            network: &self.network,
            disk_provisioning: self.disk_provisioning,
            template: !self.no_template,
            values: &values,
            passphrase: source.as_ref(),
            ova: &ova,
        });
        println!("{}", lines.join(" \\\n    "));
        match source {
            Some(PassphraseSource::File(_)) => println!(
                "# ovftool takes the passphrase on its command line (others on this host can \
                 see it in the process list while it runs); govc reads it from {}",
                self.out
            ),
            Some(PassphraseSource::Prompt) => println!(
                "# first set MT_AGENT_PASSPHRASE to the passphrase you typed (read -rs \
                 MT_AGENT_PASSPHRASE): it is written only to {}",
                self.out
            ),
            None => {}
        }
        Ok(())
    }

    /// The passphrase from `--passphrase-file`, or typed on the terminal; never a default.
    fn passphrase(&self) -> Result<(String, PassphraseSource)> {
        if let Some(file) = &self.passphrase_file {
            // The one reader of passphrase files (first line; refused if others may read it).
            let p = mt_agent::replication::net::auth::read_passphrase(file)?;
            if let Err(problem) = rules::check_passphrase(&p) {
                bail!(
                    "the passphrase in {file} {}",
                    describe_passphrase_problem(problem)
                );
            }
            return Ok((p, PassphraseSource::File(file.clone())));
        }
        if !std::io::stdin().is_terminal() {
            bail!(
                "no agent passphrase: give --passphrase-file FILE (one line, chmod 600); standard \
                 input is not a terminal, so it cannot be asked for, and it is never taken from \
                 the command line or defaulted"
            );
        }
        for attempt in 1..=3 {
            let first = read_hidden("Agent enrolment passphrase: ")?;
            if let Err(problem) = rules::check_passphrase(&first) {
                eprintln!("The passphrase {}.", describe_passphrase_problem(problem));
            } else if read_hidden("Again, to confirm: ")? != first {
                eprintln!("The two passphrases differ.");
            } else {
                return Ok((first, PassphraseSource::Prompt));
            }
            if attempt < 3 {
                eprintln!("Try again.");
            }
        }
        bail!("no valid passphrase after 3 attempts")
    }
}

fn describe_passphrase_problem(problem: PassphraseProblem) -> String {
    match problem {
        PassphraseProblem::TooShort => {
            format!("is shorter than {} characters", rules::PASSPHRASE_MIN_CHARS)
        }
        PassphraseProblem::TooLong => {
            format!("is longer than {} bytes", rules::PASSPHRASE_MAX_BYTES)
        }
        PassphraseProblem::LineBreak => "contains a line break or NUL".to_string(),
    }
}

fn check_vm_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        bail!("--name: the VM name is empty");
    }
    if name.chars().count() > MAX_VM_NAME_CHARS {
        bail!("--name: {name:?} is longer than the {MAX_VM_NAME_CHARS} characters vSphere allows");
    }
    Ok(())
}

/// What the printed ovftool command deploys.
struct OvftoolLine<'a> {
    name: &'a str,
    network: &'a str,
    disk_provisioning: DiskProvisioning,
    template: bool,
    values: &'a BTreeMap<DeployProperty, String>,
    passphrase: Option<&'a PassphraseSource>,
    ova: &'a Utf8Path,
}

/// The ovftool command, one option per element (printed joined by ` \` line continuations).
/// Values are quoted for a POSIX shell; the passphrase is never printed, only read from its
/// file when the command runs (or from a variable, when it was typed).
fn ovftool_lines(o: &OvftoolLine) -> Vec<String> {
    let mut first = format!(
        "ovftool --acceptAllEulas --name={} --net:{} --diskMode={} --datastore=DATASTORE",
        sh_word(o.name),
        sh_word(&format!("{NETWORK_NAME}={}", o.network)),
        o.disk_provisioning.as_str()
    );
    if o.template {
        first.push_str(" --importAsTemplate");
    }
    let mut lines = vec![first];
    for (p, v) in o.values {
        let key = env_key(*p);
        lines.push(match (*p, o.passphrase) {
            (DeployProperty::AgentPassphrase, Some(PassphraseSource::File(f))) => {
                format!("--prop:{key}=\"$(head -n 1 {})\"", sh_word(f.as_str()))
            }
            (DeployProperty::AgentPassphrase, _) => {
                format!("--prop:{key}=\"$MT_AGENT_PASSPHRASE\"")
            }
            _ => format!("--prop:{key}={}", sh_word(v)),
        });
    }
    lines.push(format!(
        "{} {}",
        sh_word(o.ova.as_str()),
        sh_word("vi://USER@VCENTER/DATACENTER/host/CLUSTER")
    ));
    lines
}

fn govc_line(out: &Utf8Path, name: &str, ova: &Utf8Path) -> String {
    format!(
        "govc import.ova -options={} -name={} {}",
        sh_word(out.as_str()),
        sh_word(name),
        sh_word(ova.as_str())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_spec_quotes_for_a_posix_shell() {
        assert_eq!(sh_word("mt7.dr.example.com"), "mt7.dr.example.com");
        assert_eq!(sh_word("10.0.0.1,10.0.0.2"), "10.0.0.1,10.0.0.2");
        assert_eq!(sh_word(""), "''");
        assert_eq!(sh_word("VM Network"), "'VM Network'");
        assert_eq!(sh_word("a$b`c\"d\\e"), "'a$b`c\"d\\e'");
        assert_eq!(sh_word("it's"), r#"'it'"'"'s'"#);
        assert_eq!(sh_word("x;rm -rf ~"), "'x;rm -rf ~'");
        // What sh makes of the quoted words is the original text.
        for s in ["it's", "a b", "", "$(id)", "'", "\"'\"", "new\nline"] {
            let out = std::process::Command::new("sh")
                .args(["-c", &format!("printf %s {}", sh_word(s))])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), s);
        }
    }

    #[test]
    fn deploy_spec_options_have_govc_field_names() {
        let options = GovcOptions {
            disk_provisioning: "thin",
            ip_allocation_policy: "dhcpPolicy",
            ip_protocol: "IPv4",
            property_mapping: vec![KeyValue {
                key: "mt.hostname".into(),
                value: "mt".into(),
            }],
            network_mapping: vec![NetworkMapping {
                name: NETWORK_NAME,
                network: "pg",
            }],
            mark_as_template: true,
            power_on: false,
            inject_ovf_env: false,
            wait_for_ip: false,
            name: "mt",
        };
        let json = serde_json::to_value(&options).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort();
        let mut expected = [
            "DiskProvisioning",
            "IPAllocationPolicy",
            "IPProtocol",
            "PropertyMapping",
            "NetworkMapping",
            "MarkAsTemplate",
            "PowerOn",
            "InjectOvfEnv",
            "WaitForIP",
            "Name",
        ];
        expected.sort();
        assert_eq!(keys, expected);
        assert_eq!(json["PropertyMapping"][0]["Key"], "mt.hostname");
        assert_eq!(json["NetworkMapping"][0]["Name"], "VM Network");
        assert_eq!(json["NetworkMapping"][0]["Network"], "pg");
    }
}
