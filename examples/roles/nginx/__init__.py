"""geerlingguy.nginx, translated to a tectum role (its Debian tasks).

Source: https://github.com/geerlingguy/ansible-role-nginx (MIT), as stored at these commits:

  tasks/main.yml, defaults/main.yml    016415bdaffc46771ab055ab1a59d8566875c298
  tasks/setup-Debian.yml               fc88ba2570344c0a7f090fdb34154c961f6001a3
  tasks/vhosts.yml                     072001bed3d96bcfe96f8f9f069d24916dc76b51
  handlers/main.yml                    d05e5024d74db927cc668ea4d81db3b669eae15a
  vars/Debian.yml                      31557c532a0c9a07575c904c6628a14df0336dfc
  templates/nginx.conf.j2              d209cbe89ac3f19968e7292fa678606bd17ba133
  templates/vhost.j2                   5ed1fcc7dd04b1a074eadfb2e8870d675b9ee9c3

The templates are copied unchanged into ``templates/``. tasks/main.yml (016415bd) reads
``nginx_conf_file_path`` and ``root_group``, which vars/Debian.yml at 31557c53 does not set yet;
VARS_DEBIAN adds them with the values the role's later vars/Debian.yml gives them
(``/etc/nginx/nginx.conf``, ``root``: Debian's own paths).

Task by task (Ansible on the left, this function on the right):

  include_vars "{{ ansible_os_family }}.yml"      ``if facts.os.family == "debian"`` + VARS_DEBIAN
  (variable precedence)                          ``{**DEFAULTS, **host.vars, **VARS_DEBIAN}``:
                                                  inventory over defaults, include_vars over
                                                  inventory (Ansible's order)
  set_fact nginx_user: "{{ __nginx_user }}"       ``v.setdefault("nginx_user", ...)``
    when: nginx_user is not defined
  nginx_worker_processes: "{{ ansible_processor_vcpus | default(ansible_processor_count) }}"
                                                  ``host.facts.cpus`` (the default's quotes kept:
                                                  YAML's ``>-`` keeps them in the value)
  setup-Debian: apt update_cache,                 Package("nginx", cache_valid_time=86400)
    cache_valid_time=86400; apt pkg=nginx
  vhosts: remove default vhost                    Command(rm -f, unless the file is gone),
    when: nginx_remove_default_vhost,             declared only when the variable is true;
    notify: restart nginx                         Service(restart_on=[that command])
  vhosts: nginx_vhost_path state=directory        the package makes /etc/nginx/sites-enabled;
    notify: reload nginx                          the vhost files depend on the package (see
                                                  the comment in nginx())
  vhosts: template per item of nginx_vhosts       a Python ``for`` over nginx_vhosts: File(template=
    (with_items; when: state != absent),          item.template or nginx_vhost_template,
    notify: reload nginx                          vars={..., "item": item})
  vhosts: remove vhost files of state: absent     Command(rm -f, unless the file is gone)
  vhosts: remove legacy vhosts.conf               Command(rm -f, unless the file is gone)
  template nginx_conf_template ->                 File(template=..., owner/group/mode)
    nginx_conf_file_path, notify: reload nginx
  service nginx state/enabled                     Service(running=..., enabled=...,
                                                          reload_on=[...], restart_on=[...])

Handlers: ``reload nginx`` (``when: nginx_service_state == "started"``) -> ``reload_on``, only
when the service is to run; ``restart nginx`` -> ``restart_on``. ``validate nginx configuration``
is notified by no task of these commits (Debian's init script runs ``nginx -t`` before every
restart and reload anyway). Ansible's ``file: state=absent`` has no tectum resource of its
own: tectum deletes what it created when its resource leaves the stack, and a file it did not
create (the package's default site) is removed by a guarded command, as the role does.
"""

from __future__ import annotations

import os
import re
from typing import Any

from tectum.host import Command, File, Package, Service

#: defaults/main.yml (016415bd); nginx_worker_processes is computed from facts in nginx()
DEFAULTS: dict[str, Any] = {
    "nginx_default_release": "",         # Debian/Ubuntu: apt's -t option
    "nginx_yum_repo_enabled": True,      # RHEL only
    "nginx_zypper_repo_enabled": True,   # SUSE only
    "nginx_ppa_use": False,              # Ubuntu only
    "nginx_ppa_version": "stable",
    "nginx_package_name": "nginx",
    "nginx_service_state": "started",
    "nginx_service_enabled": True,
    "nginx_conf_template": "nginx.conf.j2",
    "nginx_vhost_template": "vhost.j2",
    "nginx_worker_connections": "1024",
    "nginx_multi_accept": "off",
    "nginx_error_log": "/var/log/nginx/error.log warn",
    "nginx_access_log": "/var/log/nginx/access.log main buffer=16k flush=2m",
    "nginx_sendfile": "on",
    "nginx_tcp_nopush": "on",
    "nginx_tcp_nodelay": "on",
    "nginx_keepalive_timeout": "75",
    "nginx_keepalive_requests": "600",
    "nginx_server_tokens": "on",
    "nginx_client_max_body_size": "64m",
    "nginx_server_names_hash_bucket_size": "64",
    "nginx_proxy_cache_path": "",
    "nginx_extra_conf_options": "",
    "nginx_extra_http_options": "",
    "nginx_remove_default_vhost": False,
    "nginx_listen_ipv6": True,
    # [{"listen": "80", "server_name": "example.com", "root": "/var/www/example.com",
    #   "index": "index.html index.htm", "state": "absent" | "present", "template": ..., ...}]
    "nginx_vhosts": [],
    # [{"name": "myapp1", "strategy": "ip_hash", "keepalive": 16, "servers": [...]}]
    "nginx_upstreams": [],
    "nginx_log_format": ("'$remote_addr - $remote_user [$time_local] \"$request\" '\n"
                         "'$status $body_bytes_sent \"$http_referer\" '\n"
                         "'\"$http_user_agent\" \"$http_x_forwarded_for\"'"),
}

#: vars/Debian.yml (31557c53), plus nginx_conf_file_path and root_group (see above)
VARS_DEBIAN: dict[str, Any] = {
    "nginx_conf_path": "/etc/nginx/conf.d",
    "nginx_vhost_path": "/etc/nginx/sites-enabled",
    "nginx_default_vhost_path": "/etc/nginx/sites-enabled/default",
    "__nginx_user": "www-data",
    "nginx_conf_file_path": "/etc/nginx/nginx.conf",
    "root_group": "root",
}


def _label(text: str) -> str:
    """A resource name from a server name (``example.com`` -> ``example_com``)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def _template(name: str) -> str:
    """A role template by name (Ansible looks in the role's ``templates/``); a path is kept."""
    return name if os.path.isabs(name) else os.path.join("templates", name)


def _remove(label: str, path: str, **kwargs: Any) -> Command:
    """Ansible's ``file: path=PATH state=absent`` for a file tectum did not create: a command
    that runs only while the file exists."""
    return Command(label, command=["rm", "-f", "--", path], unless=["test", "!", "-e", path],
                   **kwargs)


def nginx(host: Any) -> dict[str, Any]:
    """Install nginx, write its configuration and virtual hosts, keep it running; returns the
    resources. ``host.vars`` override DEFAULTS; VARS_DEBIAN overrides both, as ``include_vars``
    does in Ansible. Only the role's Debian branch is translated:
    another OS family, or ``nginx_default_release`` (apt's ``-t``), is an error."""
    facts = host.facts
    if facts.os.family != "debian":
        raise ValueError(f"nginx role: host {host.name} is os.family {facts.os.family!r}; this "
                         "translation covers the role's Debian tasks only")
    v = {**DEFAULTS, "nginx_worker_processes": f'"{facts.cpus}"', **host.vars, **VARS_DEBIAN}
    v.setdefault("nginx_user", v["__nginx_user"])                # set_fact ... when not defined
    if v["nginx_default_release"]:
        raise ValueError("nginx role: nginx_default_release (apt -t) is not translated; pin "
                         "the package with Package(version=...) instead")

    # setup-Debian.yml
    package = Package("nginx", cache_valid_time=86400)

    # vhosts.yml
    restart_on: list[Any] = []
    reload_on: list[Any] = []
    if v["nginx_remove_default_vhost"]:
        restart_on.append(_remove("remove_default_vhost", v["nginx_default_vhost_path"],
                                  depends_on=[package]))
    # "Ensure nginx_vhost_path exists": on Debian that is /etc/nginx/sites-enabled (from
    # vars/Debian.yml, which inventory variables do not override), made by the package. tectum
    # plans before apt runs, so a Directory for it would find it made during the apply: the
    # directory is left to the package (the task's "reload nginx" could only fire when the
    # package had just made it, and a service the apply starts is not reloaded on top).
    vhost_dir = package
    vhosts: list[Any] = []
    for item in v["nginx_vhosts"]:
        name = item["server_name"].split(" ")[0]
        path = f"{v['nginx_vhost_path']}/{name}.conf"
        vhost: File | Command
        if item.get("state", "present") != "absent":
            vhost = File(f"vhost_{_label(name)}", path=path,
                         template=_template(item.get("template") or v["nginx_vhost_template"]),
                         vars={**v, "item": item}, owner="root", group="root", mode="0644",
                         depends_on=[vhost_dir])
        else:
            vhost = _remove(f"remove_vhost_{_label(name)}", path, depends_on=[vhost_dir])
        vhosts.append(vhost)
        reload_on.append(vhost)
    legacy = f"{v['nginx_vhost_path']}/vhosts.conf"
    reload_on.append(_remove("remove_legacy_vhosts_conf", legacy, depends_on=[vhost_dir]))

    # main.yml
    config = File("nginx_conf", path=v["nginx_conf_file_path"],
                  template=_template(v["nginx_conf_template"]), vars=v,
                  owner="root", group=v["root_group"], mode="0644", depends_on=[package])
    reload_on.append(config)
    running = v["nginx_service_state"] == "started"
    service = Service("nginx", running=running, enabled=bool(v["nginx_service_enabled"]),
                      restart_on=restart_on, reload_on=reload_on if running else [],
                      depends_on=[package])
    return {"package": package, "vhost_path": vhost_dir, "vhosts": vhosts, "config": config,
            "service": service}
