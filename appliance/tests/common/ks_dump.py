"""Parse a kickstart with pykickstart's RHEL6 handler (the syntax CentOS 6.6's Anaconda reads) and
print what it understood as JSON, so that the Rust tests compare the parsed result, not the text."""
import json
import sys

from pykickstart.constants import KS_SCRIPT_POST
from pykickstart.parser import KickstartParser
from pykickstart.version import RHEL6, makeVersion

handler = makeVersion(RHEL6)
KickstartParser(handler, errorsAreFatal=True).readKickstart(sys.argv[1])

out = {
    "lang": handler.lang.lang,
    "keyboard": handler.keyboard.keyboard,
    "timezone": handler.timezone.timezone,
    "utc": handler.timezone.isUtc,
    "rootpw": {"password": handler.rootpw.password, "iscrypted": handler.rootpw.isCrypted},
    "authconfig": handler.authconfig.authconfig,
    "firewall": {"enabled": handler.firewall.enabled, "ports": handler.firewall.ports,
                 "services": handler.firewall.services},
    "network": [
        {"device": n.device, "bootproto": n.bootProto, "onboot": n.onboot, "ip": n.ip,
         "netmask": n.netmask, "gateway": n.gateway, "nameserver": n.nameserver,
         "hostname": n.hostname, "noipv6": n.noipv6}
        for n in handler.network.network
    ],
    "zerombr": handler.zerombr.zerombr,
    "ignoredisk_only_use": handler.ignoredisk.onlyuse,
    "clearpart": {"drives": handler.clearpart.drives, "type": handler.clearpart.type,
                  "initlabel": handler.clearpart.initAll},
    "bootloader": {"location": handler.bootloader.location,
                   "driveorder": handler.bootloader.driveorder,
                   "append": handler.bootloader.appendLine},
    "partitions": [
        {"mount": p.mountpoint, "size_mib": p.size, "fstype": p.fstype, "grow": p.grow,
         "disk": p.disk, "label": p.label, "primary": p.primOnly}
        for p in handler.partition.partitions
    ],
    "services_enabled": handler.services.enabled,
    "shutdown_action": handler.reboot.action,
    "packages": {"nobase": not handler.packages.addBase,
                 "ignoremissing": handler.packages.handleMissing == 1,
                 "groups": [g.name for g in handler.packages.groupList],
                 "names": handler.packages.packageList},
    "post": [{"chroot": s.inChroot, "log": s.logfile, "script": s.script}
             for s in handler.scripts if s.type == KS_SCRIPT_POST],
    "cdrom": handler.method.method,
    "displaymode": handler.displaymode.displayMode,
    "skipx": handler.skipx.skipx,
}
json.dump(out, sys.stdout, indent=1)
