"""Secrets canary of the etcd provider: a DSN holding a password — from a sensitive variable,
from a generated password (``random_password``), and one that only etcd holds, read with a
sensitive ``DataKey`` and rendered into a file — goes through plan (text and JSON), apply,
show, drift after a change by hand, refresh, state pull and destroy. No form of any password
(plain, base64, hex, URL-encoded: ``tests.secrets.canary_forms``) is in any output or under
the project's ``.tectum`` (state, journal); the rendered file and etcd hold them, as asked."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result, ok
from tests.harness.etcd import EtcdSpace
from tests.secrets import find_canary

STACK = '''
from tectum import output, var
from tectum.etcd import DataKey, Key, KeyPrefix
from tectum.host import File
from tectum.random import Password

P = "PREFIX"
pw = var("db_password", str, sensitive=True)
gen = Password("gen", length=24, special=False)
Key("dsn", key=P + "app/dsn", value=f"postgres://app:{pw}@db.internal:5432/app")
Key("gen_dsn", key=P + "app/gen_dsn", value=f"postgres://gen:{gen.result}@db/app")
KeyPrefix("cfg", prefix=P + "cfg/", values={"dsn": f"postgres://cfg:{pw}@db/cfg",
                                            "port": "5432"})
ext = DataKey("ext", key=P + "ext/dsn", sensitive=True)
File("conf", path="OUT", template="app.conf.j2", vars={"dsn": ext.value})
output("ext_dsn", ext.value, sensitive=True)
'''


def test_no_password_leaks(tectum: Callable[..., Result], make_project: Callable[..., Path],
                           etcd: EtcdSpace, tmp_path: Path) -> None:
    var_pw = f"canary-{secrets.token_hex(12)}"
    etcd_pw = f"canary-{secrets.token_hex(12)}"
    env = {"TECTUM_VAR_db_password": var_pw}
    etcd.server.put(etcd.key("ext/dsn"), f"postgres://ro:{etcd_pw}@db.internal/app")
    conf = tmp_path / "app.conf"
    root = make_project(STACK.replace("PREFIX", etcd.prefix).replace("OUT", str(conf)),
                        {"tectum.toml": etcd.server.toml(), "app.conf.j2": "dsn={{ dsn }}\n"})
    outputs: list[str] = []

    def run(*args: str) -> Result:
        result = ok(tectum(*args, cwd=root, env=env))
        outputs.append(result.output)
        return result

    run("plan")
    run("plan", "-json")
    run("apply", "-auto-approve")
    gen_pw = etcd.keys()[etcd.key("app/gen_dsn")].split(":")[2].split("@")[0]
    assert etcd.keys()[etcd.key("app/dsn")] == f"postgres://app:{var_pw}@db.internal:5432/app"
    assert conf.read_text() == f"dsn=postgres://ro:{etcd_pw}@db.internal/app\n"
    run("plan")
    run("show")
    run("show", "-json")
    # changed by hand: the DSN now holds another password, and the one only etcd had changes
    hand_pw = f"canary-{secrets.token_hex(12)}"
    etcd.server.put(etcd.key("app/dsn"), f"postgres://app:{hand_pw}@db.internal:5432/app")
    # under the sensitive prefix too: another password in its DSN, and a key it does not name
    prefix_pw = f"canary-{secrets.token_hex(12)}"
    etcd.server.put(etcd.key("cfg/dsn"), f"postgres://cfg:{prefix_pw}@db/cfg")
    etcd.server.put(etcd.key("cfg/rogue"), f"postgres://x:{prefix_pw}@db/x")
    new_etcd_pw = f"canary-{secrets.token_hex(12)}"
    etcd.server.put(etcd.key("ext/dsn"), f"postgres://ro:{new_etcd_pw}@db.internal/app")
    drift = run("drift").output
    assert "etcd_key.dsn" in drift and "etcd_key_prefix.cfg" in drift
    run("plan", "-json")
    plan = run("plan").output
    assert "etcd_key.dsn" in plan and "etcd_data_key.ext" in plan
    run("refresh")  # (what was read goes to state: masked there too)
    run("state", "pull", str(root))
    run("apply", "-auto-approve")
    assert conf.read_text() == f"dsn=postgres://ro:{new_etcd_pw}@db.internal/app\n"
    run("refresh")
    run("state", "pull", str(root))
    run("output", "-dir", str(root))
    assert "No changes" in run("plan").output
    run("destroy", "-auto-approve")

    stored = b"".join(p.read_bytes() for p in (root / ".tectum").rglob("*") if p.is_file())
    assert stored
    for name, value in (("variable", var_pw), ("generated", gen_pw), ("etcd only", etcd_pw),
                        ("etcd only, changed", new_etcd_pw),
                        ("written by hand under the prefix", prefix_pw)):
        for i, text in enumerate(outputs):
            assert not find_canary(text, value), f"the {name} password in output {i}: {text}"
        assert not find_canary(stored, value), f"the {name} password under .tectum"
    # the value written by hand was only ever read as drift of a sensitive key: masked too
    for i, text in enumerate(outputs):
        assert not find_canary(text, hand_pw), f"the hand-written password in output {i}"
