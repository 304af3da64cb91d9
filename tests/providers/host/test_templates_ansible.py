"""Templates render byte-for-byte as Ansible's ``template`` module renders them (issue 12,
item 4).

The reference is ansible-core itself (a test dependency only; tectum never imports it): its
``Templar`` is driven as ``ansible.builtin.template``'s action drives it (``trim_blocks=True``,
``lstrip_blocks=False``, ``newline_sequence="\\n"``, ``escape_backslashes=False``, the result
written with ``to_bytes``); one test checks that harness against ``ansible localhost -m
template`` itself. The templates are those of public roles vendored under
``data/ansible_roles/`` (see its README for the repositories and commits), each rendered over
several sets of variables, plus a table of filters and tests.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tectum.providers.host.files import FileType
from tectum.providers.host.templates import DEFAULT_MANAGED, TemplateError, render, render_text
from tectum.providers.host.templates_filters import deferred
from tests.conftest import run_tectum

ROLES = Path(__file__).parent / "data" / "ansible_roles"

AnsibleRender = Callable[..., bytes]


@pytest.fixture(scope="module")
def ansible() -> Iterator[AnsibleRender]:
    """Render template text with ansible-core's Templar exactly as the ``template`` action
    does (ansible-core is imported once per module: the import is slow)."""
    pytest.importorskip("ansible", reason="ansible-core is a dev dependency: pip install "
                                          "'.[dev]'")
    from ansible.module_utils.common.text.converters import (  # type: ignore[import-untyped]
        to_bytes,
    )
    from ansible.parsing.dataloader import DataLoader  # type: ignore[import-untyped]
    from ansible.template import Templar, trust_as_template  # type: ignore[import-untyped]

    loader = DataLoader()

    def render_ansible(text: str, variables: dict[str, Any], searchpath: Path = ROLES) -> bytes:
        variables = dict(variables)
        # the action adds ansible_managed (DEFAULT_MANAGED_STR) unless the variables have it
        variables.setdefault("ansible_managed", "Ansible managed")
        templar = Templar(loader=loader, variables=variables)
        data_templar = templar.copy_with_new_env(searchpath=[str(searchpath)],
                                                 available_variables=variables)
        result = data_templar.template(
            trust_as_template(text), escape_backslashes=False,
            overrides={"trim_blocks": True, "lstrip_blocks": False, "newline_sequence": "\n"})
        if result is None:
            result = ""
        out: bytes = to_bytes(result, encoding="utf-8", errors="surrogate_or_strict")
        return out

    yield render_ansible


def load_vars(role: str, *files: str) -> dict[str, Any]:
    """The role's own variables: its defaults, then the vars files named."""
    out: dict[str, Any] = {}
    for rel in ("defaults/main.yml", *files):
        out.update(yaml.safe_load((ROLES / role / rel).read_text(encoding="utf-8")) or {})
    return out


def both(ansible: AnsibleRender, template: Path, variables: dict[str, Any]
         ) -> tuple[bytes, bytes]:
    """(Ansible's bytes, tectum's bytes) for ``template`` with ``variables``."""
    # as Ansible's loader reads it: bytes decoded, line ends kept
    theirs = ansible(template.read_bytes().decode("utf-8"), copy.deepcopy(variables),
                     template.parent)
    ours = render(str(template), copy.deepcopy(variables)).encode("utf-8")
    return theirs, ours


def assert_same(ansible: AnsibleRender, template: Path, variables: dict[str, Any]) -> bytes:
    theirs, ours = both(ansible, template, variables)
    assert ours == theirs, f"{template.name}: tectum and Ansible differ"
    return ours


# -- the roles' variable sets ---------------------------------------------------------------

MANAGED = "Ansible managed: do not edit"


def nginx_sets() -> list[dict[str, Any]]:
    base = load_vars("nginx", "vars/Debian.yml") | {
        "nginx_user": "www-data", "nginx_pidfile": "/run/nginx.pid",
        "nginx_mime_file_path": "/etc/nginx/mime.types", "nginx_worker_processes": "2"}
    full = base | {
        "nginx_extra_conf_options": "env VARIABLE;\ninclude /etc/nginx/main.d/*.conf;\n",
        "nginx_extra_http_options": "proxy_buffering    off;\nproxy_set_header   X-Real-IP "
                                    "$remote_addr;\n",
        "nginx_proxy_cache_path": "/var/cache/nginx keys_zone=one:10m",
        "nginx_upstreams": [
            {"name": "app", "strategy": "ip_hash", "keepalive": 16,
             "servers": ["srv1.example.com", "srv2.example.com weight=3"]},
            {"name": "api", "servers": ["10.0.0.1:8080"]}],
        "nginx_vhost_path": "/etc/nginx/conf.d", "nginx_worker_processes": 8}
    bare = {k: v for k, v in base.items()
            if k not in ("nginx_extra_conf_options", "nginx_extra_http_options",
                         "nginx_proxy_cache_path")}
    return [base, full, bare]


def vhost_sets() -> list[dict[str, Any]]:
    return [
        {"item": {"server_name": "example.com www.example.com", "root": "/var/www/example"}},
        {"item": {"listen": "443 ssl http2", "server_name": "example.com",
                  "server_name_redirect": "www.example.com", "root": "/srv/www",
                  "index": "index.php", "error_page": "404 /404.html",
                  "access_log": "/var/log/nginx/ex.log", "error_log": "/var/log/nginx/ex.err",
                  "return": "301 https://example.com$request_uri",
                  "extra_parameters": "location / {\n    try_files $uri =404;\n}\n"}},
        {"item": {}},
    ]


def redis_sets() -> list[dict[str, Any]]:
    base = load_vars("redis") | {"redis_daemon": "redis-server", "ansible_managed": MANAGED}
    full = base | {
        "redis_unixsocket": "/run/redis/redis.sock", "redis_maxmemory": "256mb",
        "redis_maxmemory_policy": "allkeys-lru", "redis_includes": ["/etc/redis/local.conf"],
        "redis_requirepass": "s3cr3t", "redis_disabled_commands": ["FLUSHALL", "CONFIG"],
        "redis_extra_config": "lua-time-limit 5000\nslowlog-max-len 128\n\n", "redis_save": []}
    return [base, full, base | {"redis_save": ["60 1"], "redis_extra_config": "x"}]


def memcached_sets() -> list[dict[str, Any]]:
    base = load_vars("memcached") | {"memcached_threads": 4, "memcached_max_item_size": "1m",
                                     "ansible_managed": MANAGED}
    return [base, base | {"memcached_log_verbosity": "-vv", "memcached_listen_ip": "0.0.0.0",
                          "memcached_memory_limit": 1024, "ansible_managed": "line one\nline 2"}]


def ntp_sets() -> list[dict[str, Any]]:
    base = load_vars("ntp") | {
        "ntp_servers": [f"{i}.pool.ntp.org iburst" for i in range(4)],
        "ntp_driftfile": "/var/lib/ntp/ntp.drift", "ansible_managed": MANAGED}
    return [
        base,
        base | {"ntp_tinker_panic": True, "ntp_logfile": "/var/log/ntp.log",
                "ntp_servers": ["0.de.pool.ntp.org iburst"], "ntp_restrict": []},
        # "yes" is not `sameas true`; a managed text of two lines is commented line by line
        base | {"ntp_tinker_panic": "yes", "ansible_managed": "Managed centrally\nby ops"},
    ]


def haproxy_sets() -> list[dict[str, Any]]:
    base = load_vars("haproxy") | {"haproxy_version": "2.6.12", "ansible_os_family": "Debian"}
    return [
        base,
        base | {"haproxy_version": "1.4", "ansible_os_family": "RedHat", "haproxy_socket": "",
                "haproxy_chroot": "", "haproxy_global_vars": ["maxconn 4096", "nbproc 2"],
                "haproxy_backend_servers": [{"name": "app1", "address": "192.168.0.1:80"},
                                            {"name": "app2", "address": "192.168.0.2:80"}]},
        base | {"haproxy_version": "1.5.18", "haproxy_backend_httpchk": ""},
    ]


def ssh_sets() -> list[dict[str, Any]]:
    base = load_vars("ssh_hardening") | {
        "sshd_version": "9.2", "ansible_role_name": "devsec.hardening.ssh_hardening",
        "ssh_pam_support": True, "ssh_kerberos_support": False,
        "ansible_facts": {"os_family": "Debian"}, "ssh_pubkey_authentication": True,
        "ansible_managed": MANAGED}
    rules = ["AllowTcpForwarding yes", "X11Forwarding yes\nPermitTTY no"]
    return [
        base,
        base | {"sshd_version": "7.4", "sshd_custom_options": ["Include /etc/ssh/x.conf"],
                "ssh_ciphers": ["aes256-gcm@openssh.com", "aes256-ctr"],
                "ssh_macs": ["hmac-sha2-512"], "ssh_kex": ["curve25519-sha256"],
                "ssh_host_key_files": ["/etc/ssh/ssh_host_ed25519_key"],
                "ssh_host_certificates": ["/etc/ssh/cert.pub"],
                "ssh_server_match_user": [{"user": "backup", "rules": rules}],
                "ssh_server_match_group": [{"group": "ops", "rules": rules}],
                "ssh_gateway_ports": "clientspecified", "ssh_allow_tcp_forwarding": "local",
                "sftp_enabled": False, "ssh_kerberos_support": True,
                "ssh_server_accept_env_vars": "LANG LC_*"},
        base | {"sshd_version": "5.3", "ansible_facts": {"os_family": "OpenBSD"},
                "ssh_host_key_algorithms": ["ssh-ed25519", "rsa-sha2-512"],
                "ssh_deny_users": "guest", "ssh_allow_users": "alice bob",
                "ssh_deny_groups": "nogroup", "ssh_allow_groups": "wheel",
                "ssh_authorized_keys_file": ".ssh/authorized_keys",
                "ssh_trusted_user_ca_keys_file": "/etc/ssh/ca.pub",
                "ssh_authorized_principals_file": "/etc/ssh/principals/%u",
                "ssh_gateway_ports": True, "ssh_banner": True, "ssh_allow_tcp_forwarding": True,
                "ssh_server_match_address": [{"address": "10.0.0.0/8", "rules": rules}],
                "ssh_server_match_local_port": [{"port": 2222, "rules": rules}],
                "sftp_chroot": False, "ssh_use_pam": "no"},
    ]


CASES: list[tuple[str, Callable[[], list[dict[str, Any]]]]] = [
    ("nginx/templates/nginx.conf.j2", nginx_sets),
    ("nginx/templates/vhost.j2", vhost_sets),
    ("redis/templates/redis.conf.j2", redis_sets),
    ("memcached/templates/memcached-Debian.conf.j2", memcached_sets),
    ("ntp/templates/ntp.conf.j2", ntp_sets),
    ("ntp/templates/chrony.conf.j2", ntp_sets),
    ("haproxy/templates/haproxy.cfg.j2", haproxy_sets),
    ("ssh_hardening/templates/opensshd.conf.j2", ssh_sets),
]


@pytest.mark.parametrize(("template", "sets"), CASES, ids=[c[0].split("/")[-1] for c in CASES])
def test_role_template_renders_as_ansible(ansible: AnsibleRender, template: str,
                                          sets: Callable[[], list[dict[str, Any]]]) -> None:
    outputs = [assert_same(ansible, ROLES / template, variables) for variables in sets()]
    # the variable sets lead through different branches: each output differs from the others
    assert len(set(outputs)) == len(outputs)
    assert all(out.strip() for out in outputs)


def test_ssh_hardening_header_line_and_branches(ansible: AnsibleRender) -> None:
    """The ``#jinja2: trim_blocks:True, lstrip_blocks:True`` first line is applied and not
    output; the version test picks the branches Ansible picks (spot checks of the text)."""
    template = ROLES / "ssh_hardening/templates/opensshd.conf.j2"
    new, old, oldest = (render(str(template), v) for v in ssh_sets())
    assert not new.startswith("#jinja2") and new.startswith(f"#\n# {MANAGED}\n#\n")
    assert "Protocol 2" not in new and "Protocol 2" in oldest
    assert "#\n# HostKeyAlgorithms\n#\n" in new  # no algorithms given: the comment filter
    assert "HostKeyAlgorithms" not in oldest  # OpenSSH 5.3 predates HostKeyAlgorithms
    assert "Ciphers aes256-gcm@openssh.com,aes256-ctr\n" in old
    assert "Match User backup\n    AllowTcpForwarding yes\n    X11Forwarding yes\n" \
        "    PermitTTY no\n" in old  # lstrip_blocks removed the indent of the for tags
    assert "GSSAPIAuthentication" in new and "GSSAPIAuthentication" not in oldest


def test_harness_matches_the_template_module(ansible: AnsibleRender, tmp_path: Path) -> None:
    """The Templar harness above renders as ``ansible localhost -m template`` does: the real
    module writes the same bytes (for the template with a header line and ``comment``)."""
    exe = shutil.which("ansible")
    if exe is None:
        pytest.skip("the ansible command is not installed")
    template = ROLES / "ssh_hardening/templates/opensshd.conf.j2"
    variables = ssh_sets()[1]
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps(variables), encoding="utf-8")
    dest = tmp_path / "sshd_config"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update({"ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_HOME": str(tmp_path),
                "ANSIBLE_NOCOLOR": "1", "ANSIBLE_PYTHON_INTERPRETER": sys.executable})
    proc = subprocess.run(
        [exe, "localhost", "-c", "local", "-i", "localhost,", "-m", "template",
         "-a", f"src={template} dest={dest}", "-e", f"@{extra}"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = dest.read_bytes()
    assert written == ansible(template.read_text(encoding="utf-8"), variables)
    assert written == render(str(template), variables).encode()


# -- filters and tests ----------------------------------------------------------------------

FILTER_CASES: list[tuple[str, dict[str, Any]]] = [
    # Ansible's output rules
    ("{{ x }}\n", {"x": 42}), ("{{ x }}\n", {"x": [1, "a", None]}), ("{{ x }}", {"x": None}),
    ("a{{ x }}b\n", {"x": None}), ("{{ x }}\n\n\n", {"x": "s"}), ("a\r\nb\n", {}),
    ("{{ 1 }}a\r\nb\n", {}), ("-{{ x }}\n", {"x": {"a": "b", "c": (True, None, 1.5)}}),
    ("{{ x }}-{{ y }}", {"x": None, "y": False}), ("", {}), ("\n\n", {}),
    ("{{ '' }}\n\n", {}), ("{{ 42 }}\n", {}), ("{# c #}1.50\n", {}),
    ("{% set y %}{{ 1 }}{{ 2 }}{% endset %}{{ y }}|{{ y | length }}\n", {}),
    ("{% macro m(a) %}[{{ a }}]{% endmacro %}{{ m(1) }}\n", {}),
    ("{{ [1, 2] | map('string') }} {{ [1, 2] | select('odd') }}\n", {}),
    ("{% if True %}\nyes\n{% endif %}\n", {}), ("  {% if x %}\n  x\n  {% endif %}\n", {"x": 1}),
    ("#jinja2: trim_blocks:False\n{% if True %}\nyes\n{% endif %}\n", {}),
    ("#jinja2: lstrip_blocks: True, keep_trailing_newline: True\n  {% if 1 %}\ny\n  {% endif %}"
     "\n\n", {}),
    ("#jinja2: variable_start_string: '[%', variable_end_string: '%]'\n[% x %] {{ x }}\n",
     {"x": 1}),
    ("{{ a.b is defined }} {{ a.b.c | default('z') }} {{ a is undefined }}\n", {}),
    ("{{ 'a' if x }}|{{ 'b' if not x }}\n", {"x": False}),
    ("{% for i in xs %}{{ loop.index }}{{ ',' if not loop.last }}{% endfor %}\n",
     {"xs": [1, 2, 3]}),
    ("{% raw %}{{ x }}{% endraw %}\n{%- if True -%}\n  a  \n{%- endif -%}\n", {}),
    ("{% set ns = namespace(c=0) %}{% for i in [1, 2] %}{% set ns.c = ns.c + i %}{% endfor %}"
     "{{ ns.c }}\n", {}),
    ("{{ 'a' ~ none }} {{ [1, none, 'a'] | join(',') }} {{ '5' | int + 1 }} {{ 3.0 }} "
     "{{ 1e20 }} {{ 10**20 }} {{ x.items() | list }} {{ x.get('b', 2) }}\n", {"x": {"a": 1}}),
    ("{{ x | dictsort }} {{ x | tojson }} {{ [{'k': 1}, {'k': 2}, {'k': 1}] | groupby('k') }}\n",
     {"x": {"b": 1, "a": "<i>"}}),
    ("{{ x }}|{{ y }}\n", {"x": b"bytes", "y": {"k": b"v"}}),
    # serialisation
    ("{{ x | to_json }}\n", {"x": {"a": "é", "b": [1, None, True, 1.5]}}),
    ("{{ x | to_nice_json }}\n", {"x": {"b": [1, 2], "a": "é", "c": {}}}),
    ("{{ x | to_nice_json(indent=2) }}\n", {"x": [{"z": 1, "a": [1]}]}),
    ("{{ x | to_yaml }}", {"x": {"b": [1, 2], "a": "é", "t": "multi\nline"}}),
    ("{{ x | to_nice_yaml }}", {"x": {"b": [1, 2], "a": "é", "c": {"d": None}, "e": []}}),
    ("{{ x | to_nice_yaml(indent=2) }}", {"x": [{"a": 1}, "s", "long " * 30]}),
    ("{{ '{\"a\": [1, 2]}' | from_json }} {{ 'a: [1, 2]' | from_yaml }}\n", {}),
    # booleans and choices
    ("{% for v in xs %}{{ v | bool }} {% endfor %}\n",
     {"xs": ["yes", "No", "on", "OFF", "true", "0", 1, 0, True, False, "1"]}),
    ("{{ x | ternary('a', 'b') }} {{ none | ternary('a', 'b', 'n') }} {{ 1 | ternary(1, 2) }}\n",
     {"x": 0}),
    ("{{ x | default('d') }} {{ y | d('e', true) }} {{ y | default('f') }}|\n", {"y": ""}),
    ("{{ x | mandatory }}\n", {"x": "here"}),
    # text
    ("{{ x | regex_replace('^(a)', '\\\\1\\\\1') }} {{ x | regex_replace('B', 'x', "
     "ignorecase=True) }}\n", {"x": "abc"}),
    ("{{ x | regex_search('(b)(c)', '\\\\2', '\\\\1') }} {{ x | regex_search('b.') }} "
     "{{ x | regex_search('zz') }}\n", {"x": "abc"}),
    ("{{ x | regex_findall('[a-c]') }} {{ 'a.b*c' | regex_escape }} "
     "{{ 'a.b' | regex_escape('posix_basic') }}\n", {"x": "xabcx"}),
    ("{{ x | quote }} {{ none | quote }} {{ 'plain' | quote }}\n", {"x": "it's $HOME"}),
    ("{{ 'a' | comment }}\n{{ 'a\nb' | comment('c') }}\n{{ 'a\nb' | comment('xml') }}\n"
     "{{ 'a\n\nb' | comment('cblock') }}\n{{ 'x' | comment('erlang', prefix_count=2) }}\n"
     "{{ 'x' | comment(decoration='; ') }}\n", {}),
    ("{{ 'YWJj' | b64decode }} {{ 'abc é' | b64encode }} {{ '???' | b64encode(urlsafe=True) }}\n",
     {}),
    ("{{ 'x' | hash('sha256') }} {{ 'x' | hash }} {{ 'x' | checksum }} {{ 'x' | md5 }} "
     "{{ 'x' | sha1 }} {{ 'host1' | to_uuid }}\n", {}),
    ("{{ 'a,b,,c' | split(',') }} {{ 'a b' | split }} {{ [1, 2] | join('-') }}\n", {}),
    ("{{ '/a/b.c' | basename }} {{ '/a/b.c' | dirname }} {{ '/a/b.c' | splitext }} "
     "{{ '/a/./b/../c' | normpath }} {{ ['/etc', 'x', 'y.conf'] | path_join }} "
     "{{ ['/a/b/c', '/a/b/d'] | commonpath }}\n", {}),
    ("{{ 'Hello' | indent(2) }}|{{ 'a\nb' | indent(4, True) }}|{{ 'a\nb' | indent(4, False) }}"
     "\n", {}),
    # lists and dicts
    ("{{ [1, 2, 2, 3] | unique }} {{ ['A', 'a', 'b'] | unique }}\n", {}),
    ("{{ [1, [2, [3, None]]] | flatten }} {{ [1, [2, [3]]] | flatten(1) }} "
     "{{ [None, 'null', [1]] | flatten(skip_nulls=False) }}\n", {}),
    ("{{ a | combine(b) }} {{ a | combine(b, recursive=True) }} "
     "{{ [a, b, {'n': 1}] | combine }}\n",
     {"a": {"x": {"y": 1, "z": [1]}, "k": 1}, "b": {"x": {"y": 2, "z": [2]}}}),
    ("{% for m in ['replace', 'keep', 'append', 'prepend', 'append_rp', 'prepend_rp'] %}"
     "{{ a | combine(b, list_merge=m) }}\n{% endfor %}",
     {"a": {"l": [1, 2, 3]}, "b": {"l": [3, 4]}}),
    ("{{ a | dict2items }} {{ a | dict2items | items2dict }} "
     "{{ a | dict2items(key_name='k', value_name='v') }}\n", {"a": {"k": 1, "j": [2]}}),
    ("{{ users | subelements('groups') }}\n",
     {"users": [{"name": "a", "groups": ["x", "y"]}, {"name": "b", "groups": []}]}),
    ("{{ ['a', 'b'] | map('extract', {'a': 1, 'b': 2}) | list }} {{ x | type_debug }}\n",
     {"x": {"a": 1}}),
    ("{{ 100 | log(10) }} {{ 2 | pow(10) }} {{ 81 | root }} {{ 27 | root(3) }}\n", {}),
    # tests
    ("{{ 'abc' is match('b') }} {{ 'abc' is search('b') }} {{ 'abc' is regex('^a') }} "
     "{{ 'ABC' is match('a', ignorecase=True) }}\n", {}),
    ("{{ '1.10' is version('1.9', '>') }} {{ '1.2.3' is version('1.2', 'lt', strict=True) }} "
     "{{ '7.9p1' is version('7.6', '<') }} {{ '2.0' is version('2.0', operator='eq') }} "
     "{{ '1.0rc1' is version('1.0', '<', version_type='pep440') }} "
     "{{ '1.2a1' is version('1.2', '<', version_type='strict') }}\n", {}),
    ("{{ [1] is subset([1, 2]) }} {{ [1, 2] is superset([1]) }} {{ [1, 2] is contains(1) }} "
     "{{ 'yes' is truthy(convert_bool=True) }} {{ 'no' is falsy(convert_bool=True) }} "
     "{{ 0 is falsy }} {{ [] is truthy }} {{ '/x' is abs }} {{ 'x' is abs }} "
     "{{ [true, false] is any }} {{ [true, false] is all }}\n", {}),
    ("{{ x is sameas true }} {{ x is defined }} {{ y is defined }} {{ 3 is divisibleby 3 }}\n",
     {"x": True}),
]


@pytest.mark.parametrize(("text", "variables"), FILTER_CASES,
                         ids=[f"case{i}" for i in range(len(FILTER_CASES))])
def test_filters_and_tests_render_as_ansible(ansible: AnsibleRender, tmp_path: Path, text: str,
                                             variables: dict[str, Any]) -> None:
    template = tmp_path / "t.j2"
    template.write_bytes(text.encode())
    theirs, ours = both(ansible, template, variables)
    assert ours == theirs


def test_set_filters_keep_first_appearance_order(ansible: AnsibleRender) -> None:
    """``union``, ``intersect``, ``difference``, ``symmetric_difference``: the same items as
    Ansible's, in first-appearance order (Ansible's order is a Python set's, which changes
    from run to run for strings: tectum must not report that as drift)."""
    variables = {"a": ["c", "a", "b", "a"], "b": ["b", "d", "c"]}
    for name in ("union", "intersect", "difference", "symmetric_difference"):
        text = "{{ a | " + name + "(b) | to_json }}"
        theirs = json.loads(ansible(text, dict(variables)))
        ours = json.loads(render_text(text, dict(variables), "/t.j2"))
        assert sorted(ours) == sorted(theirs), name
        assert len(ours) == len(set(ours))
        expected = {"union": ["c", "a", "b", "d"], "intersect": ["c", "b"],
                    "difference": ["a"], "symmetric_difference": ["a", "d"]}[name]
        assert ours == expected


# -- ansible_managed / tectum_managed ---------------------------------------------------------

def test_managed_text_default_and_overrides(tmp_path: Path) -> None:
    template = tmp_path / "t.j2"
    template.write_text("# {{ tectum_managed }}\n# {{ ansible_managed }}\n{{ template_path }}\n")
    assert render(str(template), {}) == \
        f"# {DEFAULT_MANAGED}\n# {DEFAULT_MANAGED}\n{template}\n"
    # either name sets both (a translated role keeps using ansible_managed)
    assert render(str(template), {"ansible_managed": "ops"}, name="t.j2") == \
        "# ops\n# ops\nt.j2\n"
    assert render(str(template), {"tectum_managed": "tm"}) .startswith("# tm\n# tm\n")
    assert render(str(template), {"tectum_managed": "a", "ansible_managed": "b"}) \
        .startswith("# a\n# b\n")


def test_vendored_role_renders_unchanged_with_the_default_managed_text(
        ansible: AnsibleRender) -> None:
    """Without ``ansible_managed`` in vars, Ansible writes "Ansible managed" and tectum its own
    text; everything else is the same bytes."""
    template = ROLES / "redis/templates/redis.conf.j2"
    variables = redis_sets()[0]
    del variables["ansible_managed"]
    theirs = ansible(template.read_text(), dict(variables)).decode()
    ours = render(str(template), dict(variables))
    assert theirs.startswith("# Ansible managed\n")
    assert ours == theirs.replace("Ansible managed", DEFAULT_MANAGED, 1)


# -- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "variables", "expected"), [
    ("a\nport={{ port | mandatory }}\n", {}, ":2: mandatory variable 'port' is not defined. "
                                             "Pass it in the resource's vars={...}"),
    ("a\n{{ x | mandatory('set x to the port') }}\n", {}, ":2: set x to the port"),
    ("a\nb\n{{ host }}\n", {}, ":3: 'host' is undefined. Pass it in the resource's vars={...}"),
    ("{% if x %}\n{% endif %}\n", {}, ":1: 'x' is undefined"),
    ("#jinja2: trim_blocks: False\n\n{{ q }}\n", {}, ":3: 'q' is undefined"),
    ("a\n{{ d.missing }}\n", {"d": {}}, ":2: 'dict object' has no attribute 'missing'. Check "
                                        "the name"),
    ("{{ template_run_date }}\n", {}, ":1: 'template_run_date' is undefined. tectum does not "
                                     "provide Ansible's template_run_date"),
    ("{{ lookup('env', 'HOME') }}\n", {}, ":1: 'lookup' is undefined. tectum does not provide "
                                         "Ansible's lookup()"),
    ("a\n{{ 'x' | hash('nope') }}\n", {}, ":2: hash: unsupported hash type nope"),
    ("{{ 'x' is version('1', 'bad') }}\n", {}, ":1: version: invalid operator 'bad'"),
    ("{{ '1.a' is version('1.0', '<') }}\n", {}, ":1: version comparison failed"),
    ("{{ 'x' | comment('nope') }}\n", {}, ":1: comment: invalid style 'nope'"),
    ("{{ 'x' | no_such_filter }}\n", {}, ":1: template syntax error: No filter named "
                                         "'no_such_filter'"),
    ("{{ 'x' | fileglob }}\n", {}, "No filter named 'fileglob'"),
    ("#jinja2: trim_blocks\n{{ 1 }}\n", {}, ":1: #jinja2: setting 'trim_blocks' has no ':'"),
    ("#jinja2: colour: True\n{{ 1 }}\n", {}, ":1: unknown #jinja2: setting 'colour'"),
    ("line one\n{% if x %}\nhello\n", {}, ":2: template syntax error: Unexpected end of "
                                          "template"),
    ("{% include 'missing.j2' %}\n", {}, ":1: included template missing.j2 does not exist"),
])
def test_errors_name_the_template_line_and_variable(tmp_path: Path, text: str,
                                                    variables: dict[str, Any],
                                                    expected: str) -> None:
    template = tmp_path / "bad.j2"
    template.write_text(text)
    with pytest.raises(TemplateError) as caught:
        render(str(template), variables)
    message = str(caught.value)
    assert message.startswith(str(template)), message
    assert expected in message, message
    assert "Traceback" not in message


def test_ansible_fails_where_tectum_fails(ansible: AnsibleRender) -> None:
    """Undefined and mandatory variables are errors in Ansible too (not empty text)."""
    from ansible.errors import AnsibleError  # type: ignore[import-untyped]

    for text in ("{{ port | mandatory }}\n", "{{ host }}\n", "{% if x %}{% endif %}\n"):
        with pytest.raises(AnsibleError):
            ansible(text, {})
        with pytest.raises(TemplateError):
            render_text(text, {}, "/t.j2")


def test_include_finds_templates_next_to_the_template(ansible: AnsibleRender,
                                                     tmp_path: Path) -> None:
    """An included template loses its final newline and ``trim_blocks`` removes the one after
    the tag, as in Ansible."""
    (tmp_path / "part.j2").write_text("part {{ x }}\n{{ y }}\n")
    (tmp_path / "main.j2").write_text("{% include 'part.j2' %}\nend\n")
    assert assert_same(ansible, tmp_path / "main.j2", {"x": 1, "y": 2}) == b"part 1\n2end\n"
    with pytest.raises(TemplateError, match=r"\(in .*part\.j2:2\): 'y' is undefined"):
        render(str(tmp_path / "main.j2"), {"x": 1})


# -- values known later -----------------------------------------------------------------------

LATER = "${tectum:file.other#content_sha256}"
SECRET = "${tectum:secret#db_password}"


@pytest.mark.parametrize("expr", [
    "x | hash('sha256')", "x | b64encode", "x | regex_replace('a', 'b')", "x | quote",
    "x | basename", "x | comment", "[x] | to_json", "{'k': x} | to_nice_yaml", "x | to_uuid",
])
def test_transforming_a_value_known_only_after_apply_is_an_error(expr: str) -> None:
    with pytest.raises(TemplateError, match=r"/t\.j2:1: .* known only after apply .*"
                                            r"file\.other"):
        render_text("{{ " + expr + " }}\n", {"x": f"a/{LATER}"}, "/t.j2")


def test_secret_unknown_in_validate_stays_a_token() -> None:
    """In ``tectum validate`` a secret is a token: encoding it keeps the token (the content
    stays unknown) instead of encoding the token's text."""
    out = render_text("{{ x | b64encode }}|{{ x | quote }}|{{ x | hash('sha256') }}|"
                      "{{ x | regex_replace('a', 'b') }}\n", {"x": SECRET}, "/t.j2")
    assert out == "|".join([SECRET] * 4) + "\n"
    assert deferred({"a": [SECRET]}, "to_json") is True
    assert deferred({"a": ["plain"]}, "to_json") is False


# -- through the resource and the CLI ---------------------------------------------------------

def test_file_prepare_gives_the_ansible_bytes(ansible: AnsibleRender) -> None:
    variables = haproxy_sets()[1]
    out = FileType().prepare({"path": "/etc/haproxy/haproxy.cfg",
                              "template": "haproxy/templates/haproxy.cfg.j2",
                              "vars": copy.deepcopy(variables)}, str(ROLES))
    template = ROLES / "haproxy/templates/haproxy.cfg.j2"
    assert out["content"].encode() == ansible(template.read_text(), variables)


def test_apply_writes_the_ansible_bytes(ansible: AnsibleRender, tmp_path: Path) -> None:
    """A stack using a vendored role template unchanged: ``tectum apply`` writes exactly the
    bytes ``ansible.builtin.template`` writes, and the next plan has no changes."""
    root = tmp_path / "proj"
    (root / "templates").mkdir(parents=True)
    shutil.copy(ROLES / "ntp/templates/ntp.conf.j2", root / "templates" / "ntp.conf.j2")
    variables = ntp_sets()[1]
    out = tmp_path / "out"
    (root / "stack.py").write_text(
        "from tectum.host import Directory, File\n"
        f"d = Directory('out', path={str(out)!r})\n"
        "File('ntp', path=f'{d.path}/ntp.conf', template='templates/ntp.conf.j2', "
        f"vars={variables!r})\n")
    applied = run_tectum("apply", "--auto-approve", cwd=root)
    assert applied.returncode == 0, applied.output
    expected = ansible((root / "templates" / "ntp.conf.j2").read_text(), variables)
    assert (out / "ntp.conf").read_bytes() == expected
    planned = run_tectum("plan", "--detailed-exitcode", cwd=root)
    assert planned.returncode == 0, planned.output
    destroyed = run_tectum("destroy", "--auto-approve", cwd=root)
    assert destroyed.returncode == 0, destroyed.output
    assert not out.exists()
