"""geerlingguy.memcached, translated to a tectum role (its Debian tasks).

Source: https://github.com/geerlingguy/ansible-role-memcached (MIT), as stored at these commits:

  tasks/main.yml, tasks/setup-Debian.yml,
  defaults/main.yml                           5c0ee220d9a39035dd3ab0123c0facfca81e7f8e
  handlers/main.yml                           7b085d4f4cdcae0b56c12385679ec3eb7555f215
  vars/Debian.yml                             892165285c2d703be91146013017df4bf9a2a982
  templates/memcached-Debian.conf.j2,
  README.md                                   00a82ae4356e2005f3a4e62f01c758a82cf486b1

The template is copied unchanged into ``templates/``. ``memcached_user`` and
``memcached_threads`` are the defaults README.md lists (defaults/main.yml at 5c0ee220 leaves
``memcached_user`` to ``vars/``, and the template reads ``memcached_threads``).

Task by task (Ansible on the left, this function on the right):

  include_vars "{{ ansible_os_family }}.yml"      ``if facts.os.family == "debian"`` + VARS_DEBIAN
  (variable precedence)                          ``{**DEFAULTS, **host.vars, **VARS_DEBIAN}``:
                                                  inventory over defaults, include_vars over
                                                  inventory (Ansible's order)
  set_fact memcached_user when not defined       the default in DEFAULTS (README's value)
  setup-Debian: apt update_cache,                Package(cache_valid_time=86400)
    cache_valid_time=86400
  setup-Debian: apt memcached, register:          Package("memcached") — see the handler below
    memcached_install
  template memcached-Debian.conf.j2 -> config    File(template=..., owner/group/mode)
    notify: restart memcached
  service memcached started, enabled             Service(running=True, enabled=True,
                                                         restart_on=[config])

The handler ``restart memcached`` runs ``when: not memcached_install.changed``: do not restart a
daemon the package has just installed. tectum's restart_on already never restarts a service that
the same apply started, so the ``register``/``when`` pair needs no code here. (On a host where apt
starts the daemon itself — systemd, no ``policy-rc.d`` — tectum does restart it after writing the
configuration, so the daemon runs with the role's configuration from the first run; the Ansible
role leaves it on the package's configuration until the next change.)
"""

from __future__ import annotations

from typing import Any

from tectum.host import File, Package, Service

#: defaults/main.yml (5c0ee220) plus the two defaults README.md (00a82ae4) documents
DEFAULTS: dict[str, Any] = {
    "memcached_enablerepo": "",          # RHEL only
    "memcached_user": "memcache",
    "memcached_port": 11211,
    "memcached_listen_ip": "127.0.0.1",
    "memcached_threads": 4,
    "memcached_memory_limit": 64,
    "memcached_connections": 1024,
    "memcached_log_file": "/var/log/memcached.log",
    "memcached_log_verbosity": "",
    "memcached_max_item_size": "1m",
}

#: vars/Debian.yml (892165285)
VARS_DEBIAN: dict[str, Any] = {
    "memcached_config_file": "/etc/memcached.conf",
}


def memcached(host: Any) -> dict[str, Any]:
    """Install memcached, write its configuration, keep it running; returns the resources.

    ``host.vars`` override DEFAULTS, and VARS_DEBIAN overrides both, as in Ansible (inventory
    variables beat role defaults; ``include_vars`` beats inventory variables).
    Only the role's Debian branch is translated: another OS family is an error.
    """
    family = host.facts.os.family
    if family != "debian":
        raise ValueError(f"memcached role: host {host.name} is os.family {family!r}; this "
                         "translation covers the role's Debian tasks only")
    v = {**DEFAULTS, **host.vars, **VARS_DEBIAN}

    package = Package("memcached", cache_valid_time=86400)
    config = File("memcached_conf", path=v["memcached_config_file"],
                  template="templates/memcached-Debian.conf.j2", vars=v,
                  owner="root", group="root", mode="0644", depends_on=[package])
    service = Service("memcached", running=True, enabled=True, restart_on=[config],
                      depends_on=[package])
    return {"package": package, "config": config, "service": service}
