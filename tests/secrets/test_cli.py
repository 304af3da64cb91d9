"""`tectum secrets ...` on the command line, in a subprocess, with real keys and files.

Runs through the real `tectum` command once `secrets` is hooked into tectum.cli.main, and
through `python -m tectum.cli.secrets_cmd` (the same parser and code) until then. HOME, TMPDIR
and the key variables are private to each test.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import stat
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pyrage
import pytest
import yaml

from tests.conftest import Result
from tests.secrets import assert_no_canary, assert_no_canary_in_tree

Run = Callable[..., Result]


@cache
def _hooked() -> bool:
    from tectum.cli.main import build_parser

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return "secrets" in action.choices
    return False


def _command() -> list[str]:
    if _hooked():
        return [sys.executable, "-m", "tectum", "secrets"]
    return [sys.executable, "-m", "tectum.cli.secrets_cmd"]


class Env:
    """A private HOME, TMPDIR and project for one test; `run(...)` runs `tectum secrets`."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path
        self.home = tmp_path / "home"
        self.tmp = tmp_path / "tmp"
        self.project = tmp_path / "proj"
        for d in (self.home, self.tmp, self.project):
            d.mkdir()
        self.outputs: list[str] = []

    def environ(self, extra: dict[str, str] | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("TECTUM_") and k not in ("VISUAL", "EDITOR",
                                                             "XDG_CONFIG_HOME")}
        env.update(HOME=str(self.home), TMPDIR=str(self.tmp), NO_COLOR="1")
        env.update(extra or {})
        return env

    def run(self, *args: str, input: str | bytes | None = None,
            env: dict[str, str] | None = None, reveal: bool = False) -> Result:
        """``reveal``: the output is an explicit reveal (`get`), kept out of the leak scan."""
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.run(
            [*_command(), *args], cwd=self.project, input=data, capture_output=True,
            env=self.environ(env), timeout=120,
            stdin=None if data is not None else subprocess.DEVNULL)
        result = Result(proc.returncode, proc.stdout.decode("utf-8", "surrogateescape"),
                        proc.stderr.decode("utf-8", "surrogateescape"))
        assert "Traceback" not in result.output, result.output
        if not reveal:
            self.outputs.append(result.output)
        else:
            self.outputs.append(result.stderr)
        return result

    @property
    def file(self) -> Path:
        return self.project / "secrets" / "default.yaml"

    def keygen(self, name: str = "") -> tuple[Path, str]:
        """A new age key file; (path, public key)."""
        path = self.root / f"key{name}.txt"
        r = self.run("keygen", "-o", str(path))
        assert r.returncode == 0, r.output
        return path, r.stdout.split("Public key: ")[1].split()[0]


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


@pytest.fixture
def canary() -> str:
    return f"tectum-canary-{uuid.uuid4().hex} p@ss/w+rd=&"


def ok(r: Result) -> Result:
    assert r.returncode == 0, r.output
    return r


def refused(r: Result, *expected: str) -> Result:
    assert r.returncode == 1, r.output
    assert r.stderr.lstrip().startswith("Error: "), r.stderr
    for text in expected:
        assert text in r.stderr, r.stderr
    return r


def test_round_trip(env: Env, canary: str) -> None:
    r = ok(env.run("keygen"))
    key = env.home / ".config" / "tectum" / "age" / "keys.txt"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    public = r.stdout.split("Public key: ")[1].split()[0]
    assert public.startswith("age1")

    r = ok(env.run("init"))
    assert "Created secrets/default.yaml" in r.stdout and public in r.stdout
    ok(env.run("set", "DB_PASSWORD", input=canary + "\n"))
    ok(env.run("set", "db.user", input="app"))
    assert ok(env.run("get", "DB_PASSWORD", reveal=True)).stdout == canary, \
        "exactly the value: one final newline from stdin dropped, none added on a pipe"
    assert ok(env.run("list")).stdout.split() == ["DB_PASSWORD", "db.user"]
    assert ok(env.run("recipients", "list")).stdout.split() == [public]
    ok(env.run("rm", "db.user"))
    assert ok(env.run("list")).stdout.split() == ["DB_PASSWORD"]
    refused(env.run("get", "db.user"), "has no secret 'db.user'")
    refused(env.run("init"), "exists already")
    refused(env.run("keygen"), "exists already; nothing was overwritten")

    assert_no_canary_in_tree(env.root, canary)
    for out in env.outputs:
        assert_no_canary(out, canary, "the output of a command that is not `get`")


def test_set_never_takes_the_value_from_the_command_line(env: Env, canary: str) -> None:
    env.keygen()
    key_env = {"TECTUM_AGE_KEY_FILE": str(env.root / "key.txt")}
    ok(env.run("init", env=key_env))
    before = env.file.read_bytes()
    for args in (["set", "TOKEN", canary], ["set", "TOKEN", ".", canary],
                 ["set", "TOKEN", canary.split()[0]]):
        r = refused(env.run(*args, input="", env=key_env), "never on the command line")
        assert_no_canary(r.output, canary, "the error")
        assert_no_canary(r.output, canary.split()[0], "the error")
    assert env.file.read_bytes() == before
    refused(env.run("set", "TOKEN", input="", env=key_env), "is empty")
    refused(env.run("set", "TOKEN", input=b"\xff\xfe", env=key_env), "not UTF-8")
    refused(env.run("set", "1TOKEN", input="x", env=key_env), "not valid")
    assert env.file.read_bytes() == before

    value_file = env.root / "value.pem"
    value_file.write_text(f"-----BEGIN-----\n{canary}\n-----END-----\n")
    ok(env.run("set", "PEM", "--from-file", str(value_file), env=key_env))
    assert ok(env.run("get", "PEM", env=key_env, reveal=True)).stdout == value_file.read_text()
    ok(env.run("set", "TOKEN", env=key_env, input=canary + "\r\n"))
    assert ok(env.run("get", "TOKEN", env=key_env, reveal=True)).stdout == canary
    assert_no_canary_in_tree(env.project, canary)


def test_environment_selection(env: Env) -> None:
    env.keygen()
    key_env = {"TECTUM_AGE_KEY_FILE": str(env.root / "key.txt")}
    ok(env.run("init", "--env", "prod", env=key_env))
    assert (env.project / "secrets" / "prod.yaml").is_file()
    ok(env.run("set", "--env", "prod", "A", input="p", env=key_env))
    ok(env.run("init", env={**key_env, "TECTUM_WORKSPACE": "staging"}))
    ok(env.run("set", "A", input="s", env={**key_env, "TECTUM_WORKSPACE": "staging"}))
    (env.project / ".tectum").mkdir()
    (env.project / ".tectum" / "workspace").write_text("prod\n")
    assert ok(env.run("get", "A", env=key_env, reveal=True)).stdout == "p"
    assert ok(env.run("get", "A", env={**key_env, "TECTUM_WORKSPACE": "staging"},
                      reveal=True)).stdout == "s"
    assert ok(env.run("get", "A", "--env", "staging", env=key_env, reveal=True)).stdout == "s"
    refused(env.run("list", "--env", "dev", env=key_env), "secrets/dev.yaml does not exist")
    refused(env.run("list", "--env", "../x", env=key_env), "not a valid environment name")
    # DIR given explicitly, from elsewhere
    r = subprocess.run([*_command(), "get", "A", "--env", "prod", str(env.project)],
                       cwd=env.root, capture_output=True, text=True,
                       env=env.environ(key_env), stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and r.stdout == "p", r.stderr
    refused(env.run("list", str(env.root / "nope"), env=key_env), "is not a directory")


def _tamper(path: Path, how: str) -> None:
    doc = yaml.safe_load(path.read_text())
    s = doc["secrets"]
    if how == "edited value":
        s["A"] = s["A"][:-8] + ("AAAAAAA=" if not s["A"].endswith("AAAAAAA=") else "BBBBBBB=")
    elif how == "moved value":
        s["A"], s["B"] = s["B"], s["A"]
    elif how == "removed value":
        del s["B"]
    elif how == "removed MAC":
        del doc["tectum"]["mac"]
    elif how == "altered recipients":
        doc["tectum"]["recipients"].append(str(pyrage.x25519.Identity.generate().to_public()))
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=1 << 30))


@pytest.mark.parametrize("how, message", [
    ("edited value", "the MAC does not match"),
    ("moved value", "the MAC does not match"),
    ("removed value", "the MAC does not match"),
    ("removed MAC", "the MAC is missing"),
    ("altered recipients", "the MAC does not match"),
])
def test_tampered_file_is_refused_by_every_command(env: Env, canary: str, how: str,
                                                   message: str) -> None:
    env.keygen()
    key_env = {"TECTUM_AGE_KEY_FILE": str(env.root / "key.txt")}
    ok(env.run("init", env=key_env))
    ok(env.run("set", "A", input=canary, env=key_env))
    ok(env.run("set", "B", input=canary + "b", env=key_env))
    _tamper(env.file, how)
    tampered = env.file.read_bytes()
    for args in (["get", "A"], ["list"], ["set", "C"], ["rm", "A"], ["rotate"],
                 ["recipients", "list"], ["recipients", "add", env.keygen("2")[1]],
                 ["edit"]):
        r = refused(env.run(*args, input="value", env={**key_env, "EDITOR": "false"}),
                    "secrets/default.yaml", message, "Restore it from version control")
        assert_no_canary(r.output, canary, "the error")
        assert env.file.read_bytes() == tampered, args
    assert_no_canary_in_tree(env.root, canary)


def test_wrong_key_truncated_and_garbage_files(env: Env, canary: str) -> None:
    key, _ = env.keygen()
    other, other_public = env.keygen("2")
    ok(env.run("init", env={"TECTUM_AGE_KEY_FILE": str(key)}))
    ok(env.run("set", "A", input=canary, env={"TECTUM_AGE_KEY_FILE": str(key)}))
    good = env.file.read_bytes()

    r = refused(env.run("get", "A", env={"TECTUM_AGE_KEY_FILE": str(other)}),
                f"None of your identities (from TECTUM_AGE_KEY_FILE={other})",
                other_public, "tectum secrets recipients add YOUR_PUBLIC_KEY")
    assert_no_canary(r.output, canary, "the error")
    refused(env.run("list", env={"HOME": str(env.root / "empty")}), "No private key found")

    for what, data in (("truncated", good[: len(good) // 2]),
                       ("truncated before the MAC", good[: good.index(b"mac:")]),
                       ("garbage", os.urandom(300)), ("not YAML", b"{{{: [\n")):
        env.file.write_bytes(data)
        r = refused(env.run("get", "A", env={"TECTUM_AGE_KEY_FILE": str(key)}),
                    "secrets/default.yaml")
        assert_no_canary(r.output, canary, f"the error for {what}")
        assert env.file.read_bytes() == data


def test_recipients_add_and_rm_rotates(env: Env, canary: str) -> None:
    alice, _ = env.keygen("a")
    bob, bob_public = env.keygen("b")
    as_alice = {"TECTUM_AGE_KEY_FILE": str(alice)}
    as_bob = {"TECTUM_AGE_KEY_FILE": str(bob)}
    ok(env.run("init", env=as_alice))
    ok(env.run("set", "A", input=canary, env=as_alice))
    refused(env.run("get", "A", env=as_bob), "is a recipient of")
    ok(env.run("recipients", "add", bob_public, env=as_alice))
    refused(env.run("recipients", "add", bob_public, env=as_alice), "already")
    assert ok(env.run("get", "A", env=as_bob, reveal=True)).stdout == canary
    old = yaml.safe_load(env.file.read_text())
    bob_identity = pyrage.x25519.Identity.from_str(
        [ln for ln in bob.read_text().splitlines() if ln.startswith("AGE-")][0])
    old_data = pyrage.decrypt(base64.b64decode(old["tectum"]["data_key"]),
                              [bob_identity])

    r = ok(env.run("recipients", "rm", bob_public, env=as_alice))
    assert "rotated its data key" in r.stdout
    refused(env.run("get", "A", env=as_bob), "is a recipient of")
    new = yaml.safe_load(env.file.read_text())
    assert new["secrets"]["A"] != old["secrets"]["A"]
    data = pyrage.x25519.Identity.from_str(old_data.decode())
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(base64.b64decode(new["secrets"]["A"]), [data])
    assert ok(env.run("get", "A", env=as_alice, reveal=True)).stdout == canary
    refused(env.run("recipients", "rm", bob_public, env=as_alice), "is not a recipient")
    r = refused(env.run("recipients", "rm", new["tectum"]["recipients"][0], env=as_alice),
                "only recipient")
    r = refused(env.run("recipients", "add", "ssh-ed25519", env=as_alice), "quote all of it")
    private = [ln for ln in alice.read_text().splitlines() if ln.startswith("AGE-")][0]
    r = refused(env.run("recipients", "add", private, env=as_alice), "is a private key")
    assert private not in r.output

    before = env.file.read_bytes()
    ok(env.run("rotate", env=as_alice))
    assert env.file.read_bytes() != before
    assert ok(env.run("get", "A", env=as_alice, reveal=True)).stdout == canary
    assert_no_canary_in_tree(env.root, canary)


def test_ssh_ed25519_key(env: Env, canary: str) -> None:
    ssh = env.home / ".ssh"
    ssh.mkdir(mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "me@laptop", "-f",
                    str(ssh / "id_ed25519")], check=True)
    pub = (ssh / "id_ed25519.pub").read_text().split()
    r = ok(env.run("init"))  # the default recipient: derived from ~/.ssh/id_ed25519
    assert f"{pub[0]} {pub[1]}" in r.stdout
    ok(env.run("set", "A", input=canary))
    assert ok(env.run("get", "A", reveal=True)).stdout == canary
    # an SSH recipient given as a .pub file, and an age identity next to it
    key, _ = env.keygen()
    ok(env.run("init", "--env", "prod", "--recipient", str(ssh / "id_ed25519.pub"),
               env={"TECTUM_AGE_KEY_FILE": str(key)}))
    assert ok(env.run("recipients", "list", "--env", "prod")).stdout.strip() == " ".join(pub)
    assert_no_canary_in_tree(env.root, canary)


def _editor(env: Env, body: str) -> dict[str, str]:
    """EDITOR: a script that logs the file's path and modes, then runs ``body`` on ``text``."""
    script = env.root / "editor.py"
    log = env.root / "editor.log"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, stat, sys
        path = sys.argv[1]
        with open({str(log)!r}, "w") as fh:
            json.dump({{"path": path,
                       "mode": stat.S_IMODE(os.stat(path).st_mode),
                       "dir_mode": stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode)}}, fh)
        text = open(path).read()
        """) + textwrap.dedent(body))
    script.chmod(0o755)
    return {"EDITOR": str(script), "TECTUM_AGE_KEY_FILE": str(env.root / "key.txt")}


def _editor_log(env: Env) -> dict[str, Any]:
    log: dict[str, Any] = json.loads((env.root / "editor.log").read_text())
    return log


def test_edit(env: Env, canary: str) -> None:
    env.keygen()
    key_env = {"TECTUM_AGE_KEY_FILE": str(env.root / "key.txt")}
    ok(env.run("init", env=key_env))
    ok(env.run("set", "KEEP", input="same", env=key_env))
    ok(env.run("set", "CHANGE", input="old", env=key_env))
    ok(env.run("set", "DROP", input=canary, env=key_env))
    keep = yaml.safe_load(env.file.read_text())["secrets"]["KEEP"]

    editor = _editor(env, f"""
        assert "DROP: {canary}" in text or "DROP: '{canary}'" in text, text
        lines = [ln for ln in text.splitlines() if not ln.startswith(("DROP", "CHANGE"))]
        lines += ["CHANGE: new", "ADDED: |", "  line 1", "  line 2"]
        open(path, "w").write("\\n".join(lines) + "\\n")
        """)
    r = ok(env.run("edit", env=editor))
    assert "1 added, 1 changed, 1 removed" in r.stdout
    log = _editor_log(env)
    assert log["mode"] == 0o600 and log["dir_mode"] == 0o700
    assert log["path"].startswith(str(env.tmp)), "a fresh private directory in TMPDIR"
    assert not os.path.exists(os.path.dirname(log["path"])), "the directory is removed"
    assert ok(env.run("list", env=key_env)).stdout.split() == ["ADDED", "CHANGE", "KEEP"]
    assert ok(env.run("get", "ADDED", env=key_env, reveal=True)).stdout == "line 1\nline 2\n"
    assert ok(env.run("get", "CHANGE", env=key_env, reveal=True)).stdout == "new"
    assert yaml.safe_load(env.file.read_text())["secrets"]["KEEP"] == keep

    # no change: the file is not rewritten
    ok(env.run("set", "SECRET", input=canary, env=key_env))
    before = env.file.read_bytes()
    r = ok(env.run("edit", env=_editor(env, "pass\n")))
    assert "No changes" in r.stdout
    assert env.file.read_bytes() == before
    assert os.listdir(env.tmp) == []
    assert_no_canary_in_tree(env.root, canary)
    for out in env.outputs:
        assert_no_canary(out, canary, "the output")


@pytest.mark.parametrize("body, message", [
    ("sys.exit(3)\n", "The editor exited with status 3"),
    ("open(path, 'w').write(text + 'BROKEN: \"' + text)\n", "line"),
    ("open(path, 'w').write(text.replace('SECRET:', '1SECRET:'))\n", "a secret name must be"),
    ("os.unlink(path)\n", "removed the file"),
    ("open(path, 'w').write(text); raise SystemExit(1)\n", "status 1"),
    ("import signal, time; os.kill(os.getppid(), signal.SIGTERM); time.sleep(30)\n",
     "Interrupted: nothing was changed"),
    ("import signal, time; os.kill(os.getppid(), signal.SIGHUP); time.sleep(30)\n",
     "Interrupted: nothing was changed"),
])
def test_edit_failures_change_nothing_and_remove_the_plaintext(env: Env, canary: str,
                                                               body: str, message: str) -> None:
    env.keygen()
    key_env = {"TECTUM_AGE_KEY_FILE": str(env.root / "key.txt")}
    ok(env.run("init", env=key_env))
    ok(env.run("set", "SECRET", input=canary, env=key_env))
    before = env.file.read_bytes()
    r = env.run("edit", env=_editor(env, body))
    if "Interrupted" in message:  # killed while the plaintext is on disk
        assert r.returncode == 130 and message in r.stderr, r.output
    else:
        refused(r, message)
    assert_no_canary(r.output, canary, "the error")
    assert env.file.read_bytes() == before
    assert os.listdir(env.tmp) == [], "the plaintext directory is removed, even on error"
    refused(env.run("edit", env={**key_env, "EDITOR": "/nonexistent/editor"}),
            "Cannot run the editor")
    assert os.listdir(env.tmp) == []
    assert_no_canary_in_tree(env.root, canary)


def test_canary_through_every_command(env: Env, canary: str) -> None:
    """The canary goes through every command; then no file under the test's root (project,
    HOME, TMPDIR) and no output but the explicit `get` holds it in any form."""
    alice, _ = env.keygen("a")
    _, bob_public = env.keygen("b")
    as_alice = {"TECTUM_AGE_KEY_FILE": str(alice)}
    ok(env.run("init", "--env", "prod", env=as_alice))
    ok(env.run("set", "--env", "prod", "TOKEN", input=canary, env=as_alice))
    value = env.root / "v.txt"
    value.write_text(canary)
    ok(env.run("set", "--env", "prod", "COPY", "--from-file", str(value), env=as_alice))
    value.unlink()
    ok(env.run("list", "--env", "prod", env=as_alice))
    ok(env.run("recipients", "add", bob_public, "--env", "prod", env=as_alice))
    ok(env.run("rotate", "--env", "prod", env=as_alice))
    ok(env.run("recipients", "rm", bob_public, "--env", "prod", env=as_alice))
    editor = _editor(env, "open(path, 'w').write(text + 'NEW: x\\n')\n")
    ok(env.run("edit", "--env", "prod", env={**editor, **as_alice}))
    assert ok(env.run("get", "--env", "prod", "TOKEN", env=as_alice, reveal=True)).stdout \
        == canary
    refused(env.run("set", "--env", "prod", "X", canary, env=as_alice))
    assert assert_no_canary_in_tree(env.root, canary) >= 4
    for out in env.outputs:
        assert_no_canary(out, canary, "the output of a command")
