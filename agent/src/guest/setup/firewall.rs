//! Firewall rules opening only SSH and the agent's port (plus loopback, ICMP and replies):
//! `iptables-save` format for el6's iptables service, an nftables ruleset on Debian.

pub use mt_contract::guest::{FIREWALL_SERVICE as DEBIAN_SERVICE, SSH_PORT};
/// Debian's ruleset, loaded by `nftables.service` before the network comes up.
pub const DEBIAN_RULESET: &str = "/etc/nftables.conf";

pub fn iptables(agent_port: u16) -> String {
    format!(
        "# The master target's firewall (mt-agent setup): only SSH and the agent's port are open.\n\
         *filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT\n\
         -A INPUT -p icmp -j ACCEPT\n\
         -A INPUT -i lo -j ACCEPT\n\
         -A INPUT -m state --state NEW -m tcp -p tcp --dport {SSH_PORT} -j ACCEPT\n\
         -A INPUT -m state --state NEW -m tcp -p tcp --dport {agent_port} -j ACCEPT\n\
         -A INPUT -j REJECT --reject-with icmp-host-prohibited\n\
         -A FORWARD -j REJECT --reject-with icmp-host-prohibited\n\
         COMMIT\n"
    )
}

pub fn ip6tables(agent_port: u16) -> String {
    format!(
        "# The master target's IPv6 firewall (mt-agent setup): only SSH and the agent's port are open.\n\
         *filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT\n\
         -A INPUT -p ipv6-icmp -j ACCEPT\n\
         -A INPUT -i lo -j ACCEPT\n\
         -A INPUT -m state --state NEW -m tcp -p tcp --dport {SSH_PORT} -j ACCEPT\n\
         -A INPUT -m state --state NEW -m tcp -p tcp --dport {agent_port} -j ACCEPT\n\
         -A INPUT -j REJECT --reject-with icmp6-adm-prohibited\n\
         -A FORWARD -j REJECT --reject-with icmp6-adm-prohibited\n\
         COMMIT\n"
    )
}

/// The DHCP client's port and the server's (RFC 2131): a server's offer and acknowledgement
/// answer a broadcast, so connection tracking does not see them as replies.
pub const DHCP_CLIENT_PORT: u16 = 68;
pub const DHCP_SERVER_PORT: u16 = 67;

/// Debian's `/etc/nftables.conf`: input dropped unless it is a reply, loopback, ICMP (errors,
/// path MTU, IPv6 neighbour discovery), a DHCP server answering this client, SSH or the agent.
/// Protocols are named with nft's own names (`icmpv6`): the image has no `/etc/protocols`, so
/// a name only that file knows (`ipv6-icmp`) makes `nft -f` refuse the whole ruleset.
/// The DHCP rule is there whatever the definition's network mode: the deploy-time `ip_mode`
/// property can turn a static template into a DHCP client. (ISC dhclient happens to read its
/// answers from a packet socket, ahead of the firewall; the rules do not rely on that.)
pub fn nftables(agent_port: u16) -> String {
    format!(
        "#!/usr/sbin/nft -f\n\
         # The master target's firewall (mt-agent setup): only SSH and the agent's port are open.\n\
         flush ruleset\n\n\
         table inet filter {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy drop;\n\
         \t\tct state established,related accept\n\
         \t\tct state invalid drop\n\
         \t\tiif \"lo\" accept\n\
         \t\tmeta l4proto {{ icmp, icmpv6 }} accept\n\
         \t\tudp sport {DHCP_SERVER_PORT} udp dport {DHCP_CLIENT_PORT} accept\n\
         \t\ttcp dport {{ {SSH_PORT}, {agent_port} }} accept\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy drop;\n\
         \t}}\n\
         \tchain output {{\n\
         \t\ttype filter hook output priority filter; policy accept;\n\
         \t}}\n\
         }}\n"
    )
}
