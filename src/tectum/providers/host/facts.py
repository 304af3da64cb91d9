"""Facts about a host: what a role may branch on (``host.facts``, ``tectum.facts()``).

One read-only shell command (:data:`FACTS_ARGV`) prints every fact source in sections; it runs
in the host's one prefetch round trip with the reads (DESIGN decision 3), or alone when a stack
needs facts it has not seen before. It needs only a POSIX ``sh`` and files under ``/proc`` and
``/etc``; ``ip`` (iproute2) and ``getent`` are used when present. :func:`parse_facts` turns its
output into the documented shape (``docs/facts.md``):

``os``            ``id``, ``version`` (``VERSION_ID``), ``codename``, ``family``, ``name``
                  (``PRETTY_NAME``) — from ``/etc/os-release`` (os-release(5))
``kernel``        ``name`` and ``release`` (``uname -s``, ``uname -r``)
``architecture``  ``uname -m`` (``x86_64``, ``aarch64``)
``cpus``          online CPUs (``nproc``), an int
``memory_mb``     ``MemTotal`` of ``/proc/meminfo`` in MiB, an int
``hostname``      the short host name; ``fqdn`` from ``/etc/hosts`` (no DNS query: a slow
                  resolver never slows a read), else the host name; ``domain``
``interfaces``    ``{name: {"mac": ..., "addresses": [{"address", "prefix", "family"}]}}``
``addresses``     ``{"ipv4": [...], "ipv6": [...]}``: every global address, loopback left out
``init``          ``systemd`` when it is PID 1 (``/run/systemd/system``), else ``sysvinit``
``package_manager``  ``apt``, ``dnf``, ``yum``, ``apk``, ``zypper`` or ``pacman`` (the first
                  found), else None

Only facts that stay the same from run to run are gathered (no uptime, no free memory): a
plan made with the facts of the previous run is checked against the facts read with it, and
made again only when they differ.
"""

from __future__ import annotations

import json
from typing import Any

#: section markers of the facts command's output
_MARK = "@@tectum-facts:"

_SCRIPT = f"""
m() {{ printf '\\n{_MARK}%s\\n' "$1"; }}
m os-release; cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null
m uname; uname -s; uname -r; uname -m
m nproc; nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null
m meminfo; grep -m1 '^MemTotal:' /proc/meminfo 2>/dev/null
m hostname; cat /proc/sys/kernel/hostname 2>/dev/null || uname -n
m hosts; h=$(cat /proc/sys/kernel/hostname 2>/dev/null || uname -n)
if command -v getent >/dev/null 2>&1; then getent -s files hosts "$h" 2>/dev/null
else grep -w -- "$h" /etc/hosts 2>/dev/null | head -n1; fi
m ip; ip -j addr show 2>/dev/null
m init; if [ -d /run/systemd/system ]; then echo systemd; else echo sysvinit; fi
m pkg; for p in apt-get dnf yum apk zypper pacman; do
  if command -v "$p" >/dev/null 2>&1; then echo "$p"; break; fi; done
m end
"""

#: the argv of the facts command (read-only; run through the connector's prefetch)
FACTS_ARGV: tuple[str, ...] = ("sh", "-c", _SCRIPT)

#: os-release ``ID``/``ID_LIKE`` values -> family (Ansible's ``ansible_os_family``, lower case)
_FAMILIES = {
    "debian": "debian", "ubuntu": "debian",
    "rhel": "redhat", "fedora": "redhat", "centos": "redhat", "rocky": "redhat",
    "almalinux": "redhat",
    "alpine": "alpine", "arch": "arch", "suse": "suse", "opensuse": "suse",
}


def _sections(output: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith(_MARK):
            current = found.setdefault(line[len(_MARK):].strip(), [])
            continue
        if current is not None and line.strip():
            current.append(line.rstrip("\n"))
    return found


def _os_release(lines: list[str]) -> dict[str, str]:
    import shlex

    out: dict[str, str] = {}
    for line in lines:
        if "=" not in line or line.lstrip().startswith("#"):
            continue
        key, _, raw = line.partition("=")
        try:
            words = shlex.split(raw)
        except ValueError:
            words = [raw.strip("'\"")]
        out[key.strip()] = words[0] if words else ""
    return out


def _int(lines: list[str], default: int = 0) -> int:
    try:
        return int(lines[0].split()[0])
    except (IndexError, ValueError):
        return default


def parse_facts(output: str) -> dict[str, Any]:
    """The facts in :data:`FACTS_ARGV`'s ``output`` (see the module docstring for the shape).
    Raises ValueError when the output is not the command's (it lacks its end marker)."""
    sec = _sections(output)
    if "end" not in sec:
        raise ValueError("the facts command's output is incomplete")
    rel = _os_release(sec.get("os-release", []))
    os_id = rel.get("ID", "").lower()
    like = [os_id, *rel.get("ID_LIKE", "").lower().split()]
    family = next((_FAMILIES[x] for x in like if x in _FAMILIES), os_id or None)
    uname = sec.get("uname", [])
    hostname = (sec.get("hostname") or [""])[0].strip()
    fqdn = hostname
    for line in sec.get("hosts", []):
        names = line.split()[1:]
        if hostname in names or any(n.split(".")[0] == hostname for n in names):
            fqdn = next((n for n in names if "." in n and n.split(".")[0] == hostname),
                        fqdn)
            break
    interfaces, addresses = _interfaces(" ".join(sec.get("ip", [])))
    manager = next(iter(sec.get("pkg", [])), None)
    return {
        "os": {"id": os_id or None, "version": rel.get("VERSION_ID") or None,
               "codename": rel.get("VERSION_CODENAME") or None, "family": family,
               "name": rel.get("PRETTY_NAME") or rel.get("NAME") or None},
        "kernel": {"name": uname[0] if uname else None,
                   "release": uname[1] if len(uname) > 1 else None},
        "architecture": uname[2] if len(uname) > 2 else None,
        "cpus": _int(sec.get("nproc", []), 1),
        "memory_mb": _int([w for line in sec.get("meminfo", [])[:1]
                           for w in line.split()[1:2]]) // 1024,
        "hostname": hostname or None,
        "fqdn": fqdn or None,
        "domain": fqdn.partition(".")[2] or None,
        "interfaces": interfaces,
        "addresses": addresses,
        "init": (sec.get("init") or ["sysvinit"])[0],
        "package_manager": {"apt-get": "apt"}.get(manager or "", manager),
    }


def _interfaces(text: str) -> tuple[dict[str, Any], dict[str, list[str]]]:
    interfaces: dict[str, Any] = {}
    addresses: dict[str, list[str]] = {"ipv4": [], "ipv6": []}
    try:
        links = json.loads(text) if text.strip() else []
    except json.JSONDecodeError:
        links = []
    for link in links if isinstance(links, list) else []:
        name = link.get("ifname")
        if not isinstance(name, str):
            continue
        addrs = []
        for info in link.get("addr_info", []):
            fam = {"inet": "ipv4", "inet6": "ipv6"}.get(info.get("family", ""))
            local = info.get("local")
            if fam is None or not isinstance(local, str) or info.get("temporary"):
                continue  # (an IPv6 privacy address changes by itself: not a fact to keep)
            addrs.append({"address": local, "prefix": info.get("prefixlen"), "family": fam})
            if info.get("scope") == "global":
                addresses[fam].append(local)
        interfaces[name] = {"mac": link.get("address"), "addresses": addrs}
    return interfaces, addresses
