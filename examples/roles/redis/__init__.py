"""geerlingguy.redis, translated to a tectum role (its Debian tasks).

Source: https://github.com/geerlingguy/ansible-role-redis (MIT), as stored at these commits:

  tasks/main.yml, vars/Debian.yml      7677f6af2388345897adcef9931b02a6f52d5c94
  tasks/setup-Debian.yml               8e95e3e0b827d2b11a78218e59f36a8349dfab5f
  handlers/main.yml                    0dd0b2c86aed0762b362694a152c75159c851408
  defaults/main.yml                    0f915fb9e1aaa34cbd7769e38c9c6ebfc38c6a8f
  templates/redis.conf.j2              0004ac3d07bf8ac1a1d48d96bbaf6569708dffb1

The template is copied unchanged into ``templates/``.

Task by task (Ansible on the left, this function on the right):

  include_vars "{{ ansible_os_family }}.yml"      ``if facts.os.family == "debian"`` + VARS_DEBIAN
  (variable precedence)                          ``{**DEFAULTS, **host.vars, **VARS_DEBIAN}``:
                                                  inventory over defaults, include_vars over
                                                  inventory (Ansible's order)
  set_fact redis_package: "{{ __redis_package }}" ``v.setdefault("redis_package", ...)``
    when: redis_package is not defined
  file "{{ redis_conf_path | dirname }}"          Directory(path=dirname(...), mode=...)
    state=directory mode=redis_conf_dir_mode
  template redis.conf.j2 -> redis_conf_path       File(template=..., mode=redis_conf_mode)
    mode=redis_conf_mode, notify: restart redis
  setup-Debian: apt "{{ redis_package }}"         Package(depends_on=[config]): as in the role,
                                                  the configuration is written first and the
                                                  package installed after it (apt keeps a
                                                  configuration file already there:
                                                  --force-confold, as Ansible's apt module)
  service redis_daemon started, enabled          Service(running=True, enabled=True,
                                                         restart_on=[config])

Handler ``restart redis`` (service redis_daemon state=restarted) -> ``restart_on=[config]``.
The role's modes are YAML octal integers (``02770``, ``0640``); tectum takes mode strings.
"""

from __future__ import annotations

import posixpath
from typing import Any

from tectum.host import Directory, File, Package, Service

#: defaults/main.yml (0f915fb9)
DEFAULTS: dict[str, Any] = {
    "redis_enablerepo": "epel",          # RHEL only
    "redis_port": 6379,
    "redis_bind_interface": "127.0.0.1",
    "redis_unixsocket": "",
    "redis_timeout": 300,
    "redis_loglevel": "notice",
    "redis_logfile": "/var/log/redis/redis-server.log",
    "redis_databases": 16,
    # Set to an empty list to disable persistence (saving the DB to disk).
    "redis_save": ["900 1", "300 10", "60 10000"],
    "redis_rdbcompression": "yes",
    "redis_dbfilename": "dump.rdb",
    "redis_dbdir": "/var/lib/redis",
    "redis_maxmemory": 0,
    "redis_maxmemory_policy": "noeviction",
    "redis_maxmemory_samples": 5,
    "redis_appendonly": "no",
    "redis_appendfsync": "everysec",
    # Add extra include files for local configuration/overrides.
    "redis_includes": [],
    # Require authentication to Redis with a password.
    "redis_requirepass": "",
    # Disable certain Redis commands for security reasons (FLUSHDB, FLUSHALL, KEYS, ...).
    "redis_disabled_commands": [],
    "redis_extra_config": "",
}

#: vars/Debian.yml (7677f6af); the YAML octal modes as strings
VARS_DEBIAN: dict[str, Any] = {
    "__redis_package": "redis-server",
    "redis_daemon": "redis-server",
    "redis_conf_dir_mode": "02770",
    "redis_conf_path": "/etc/redis/redis.conf",
    "redis_conf_mode": "0640",
}


def redis(host: Any) -> dict[str, Any]:
    """Configure and install Redis, keep it running; returns the resources.

    ``host.vars`` override DEFAULTS (and may set ``redis_package``); VARS_DEBIAN overrides
    both, as ``include_vars`` does in Ansible. Only the role's Debian branch is translated:
    another OS family is an error.
    """
    family = host.facts.os.family
    if family != "debian":
        raise ValueError(f"redis role: host {host.name} is os.family {family!r}; this "
                         "translation covers the role's Debian tasks only")
    v = {**DEFAULTS, **host.vars, **VARS_DEBIAN}
    v.setdefault("redis_package", v["__redis_package"])          # set_fact ... when not defined

    conf_dir = Directory("redis_conf_dir", path=posixpath.dirname(v["redis_conf_path"]),
                         mode=v["redis_conf_dir_mode"])
    config = File("redis_conf", path=v["redis_conf_path"], template="templates/redis.conf.j2",
                  vars=v, mode=v["redis_conf_mode"], depends_on=[conf_dir])
    package = Package(v["redis_package"], depends_on=[config])
    service = Service(v["redis_daemon"], running=True, enabled=True, restart_on=[config],
                      depends_on=[package])
    return {"conf_dir": conf_dir, "config": config, "package": package, "service": service}
