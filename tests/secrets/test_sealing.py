"""Sealing sensitive values at rest (tectum.secrets.seal) and what an apply needs for it —
issue 10 item 6: a sensitive variable in a project without a secrets file needs no key, and a
key that sealing needs but cannot find is reported before the first change.

The CLI tests run ``python -m tectum`` with a private, empty home directory and the key
variables set empty (not set), so no key of the machine's user is found by accident.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest
import yaml

from tectum.diagnostics import DiagnosticError
from tectum.masking import REDACTOR
from tectum.secrets import SecretsFile
from tectum.secrets.seal import STATE_KEY, Sealer, has_sealed
from tests.conftest import Result, run_tectum

TOKEN = "vartoken-4f1d9c2b7a6e5d3c"

STACK = """
from tectum import output, var
from tectum.host import File
from tectum.random import Password

token = var("token", str, sensitive=True)
File("f", path="{out}/token.txt", content=f"token={{token}}\\n", mode="0600")
gen = Password("gen", length=20)
File("g", path="{out}/gen.txt", content=f"{{gen.result}}\\n", mode="0600")
output("token", token)
"""


def no_keys(home: Path) -> dict[str, str]:
    """An environment in which tectum finds no key of the user's (an empty home; the key
    variables empty, which is "not set")."""
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "TECTUM_AGE_KEY": "", "TECTUM_AGE_KEY_FILE": "", "TECTUM_WORKSPACE": ""}


def make_project(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    root, out, home = tmp_path / "proj", tmp_path / "out", tmp_path / "home"
    for d in (root, out, home):
        d.mkdir()
    (root / "stack.py").write_text(textwrap.dedent(STACK.format(out=out)))
    return root, out, {**no_keys(home), "TECTUM_VAR_token": TOKEN}


def run(root: Path, env: dict[str, str], *args: str) -> Result:
    return run_tectum(*args, cwd=root, env=env)


def state_dump(root: Path) -> str:
    db = sqlite3.connect(root / ".tectum" / "state.db")
    try:
        return "\n".join(db.iterdump())
    finally:
        db.close()


def keygen(path: Path) -> str:
    """A new age key file at ``path``; returns its public key."""
    subprocess.run([sys.executable, "-m", "tectum", "secrets", "keygen", "-o", str(path)],
                   check=True, capture_output=True)
    return next(line.split(": ", 1)[1] for line in path.read_text().splitlines()
                if line.startswith("# public key: "))


# ------------------------------------------------------------------------- through the CLI

def test_sensitive_variable_without_secrets_file_or_key_applies(tmp_path: Path) -> None:
    """Issue 10 item 6: no secrets file, no key anywhere — apply succeeds, the values are
    sealed to the project's state key (made 0600 on first use), and later runs read them."""
    root, out, env = make_project(tmp_path)
    assert run(root, env, "validate").returncode == 0
    plan = run(root, env, "plan")
    assert plan.returncode == 0, plan.output
    applied = run(root, env, "apply", "--auto-approve")
    assert applied.returncode == 0, applied.output
    assert "No private key" not in applied.output
    assert (out / "token.txt").read_text() == f"token={TOKEN}\n"
    generated = (out / "gen.txt").read_text().strip()
    assert len(generated) == 20

    key = root / ".tectum" / STATE_KEY
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    dump = state_dump(root)
    assert "tectum-sealed" in dump
    assert TOKEN not in dump and generated not in dump
    assert TOKEN not in applied.output and generated not in applied.output

    again = run(root, env, "plan", "--detailed-exitcode")
    assert again.returncode == 0, again.output
    shown = run(root, env, "output", "token", "--reveal", "--raw")
    assert shown.returncode == 0 and shown.stdout.strip() == TOKEN, shown.output
    assert (out / "gen.txt").read_text().strip() == generated  # kept, not regenerated


def test_sealing_to_a_secrets_file_without_a_key_fails_before_any_change(tmp_path: Path
                                                                         ) -> None:
    """The workspace has a secrets file (made by someone else's key) and this user holds no
    key: values would be sealed to recipients that nobody here can check (the file's MAC needs
    a recipient's key) nor read back. Apply refuses before it changes anything."""
    root, out, env = make_project(tmp_path)
    other = tmp_path / "other.key"
    init = run_tectum("secrets", "init", str(root), env=keygen_env(other, env))
    assert init.returncode == 0, init.output
    assert (root / "secrets" / "default.yaml").is_file()

    applied = run(root, env, "apply", "--auto-approve")
    assert applied.returncode == 1, applied.output
    assert "No key to seal sensitive values" in applied.stderr, applied.output
    assert "Traceback" not in applied.output and TOKEN not in applied.output
    assert not (out / "token.txt").exists(), "apply changed the world before it failed"
    assert not (out / "gen.txt").exists()
    # with the key, the same apply goes through
    ok = run(root, {**env, "TECTUM_AGE_KEY_FILE": str(other)}, "apply", "--auto-approve")
    assert ok.returncode == 0, ok.output
    assert (out / "token.txt").read_text() == f"token={TOKEN}\n"


def keygen_env(key: Path, env: dict[str, str]) -> dict[str, str]:
    keygen(key)
    return {**env, "TECTUM_AGE_KEY_FILE": str(key)}


def test_a_damaged_state_key_fails_before_any_change(tmp_path: Path) -> None:
    root, out, env = make_project(tmp_path)
    (root / ".tectum").mkdir()
    (root / ".tectum" / STATE_KEY).write_text("# cut short\nAGE-SECRET-KEY-1QQQ\n")
    applied = run(root, env, "apply", "--auto-approve")
    assert applied.returncode == 1, applied.output
    assert "Invalid state key" in applied.stderr, applied.output
    assert not (out / "token.txt").exists(), "apply changed the world before it failed"


# ------------------------------------------------------------------------------ in-process

@pytest.fixture
def keyless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project directory, with no key of the user's to be found; the redactor cleared."""
    for name, value in no_keys(tmp_path / "home").items():
        monkeypatch.setenv(name, value)
    root = tmp_path / "proj"
    root.mkdir()
    REDACTOR.clear()
    yield root
    REDACTOR.clear()


def test_state_key_round_trip_and_check_ready_writes_nothing(keyless: Path) -> None:
    sealer = Sealer(str(keyless), "default")
    sealer.check_ready()
    assert not (keyless / ".tectum").exists(), "check_ready wrote something"
    REDACTOR.add("s3cr3t-value-1234")
    doc = {"a": ["x s3cr3t-value-1234 y", 1], "b": "plain"}
    sealed = sealer.seal(doc)
    assert has_sealed(sealed) and sealed["b"] == "plain"
    assert "s3cr3t" not in repr(sealed)
    key = keyless / ".tectum" / STATE_KEY
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((keyless / ".tectum").stat().st_mode) == 0o700
    # another process (a fresh sealer) opens it with the state key alone
    assert Sealer(str(keyless), "default").unseal(sealed) == {
        "a": ["x s3cr3t-value-1234 y", 1], "b": "plain"}
    Sealer(str(keyless), "default").check_ready()


def test_check_ready_refuses_a_damaged_state_key(keyless: Path) -> None:
    (keyless / ".tectum").mkdir()
    (keyless / ".tectum" / STATE_KEY).write_text("not a key\n")
    with pytest.raises(DiagnosticError) as err:
        Sealer(str(keyless), "default").check_ready()
    assert "Invalid state key" in str(err.value)


def test_check_ready_with_a_secrets_file_needs_a_recipient_key(
        keyless: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine.key"
    stranger = tmp_path / "stranger.key"
    me = keygen(mine)
    keygen(stranger)
    path = keyless / "secrets" / "default.yaml"
    path.parent.mkdir()
    SecretsFile.create(str(path), [me]).save()

    with pytest.raises(DiagnosticError) as err:  # no key at all
        Sealer(str(keyless), "default").check_ready()
    assert str(err.value) == "No key to seal sensitive values"

    monkeypatch.setenv("TECTUM_AGE_KEY_FILE", str(stranger))  # a key, not a recipient
    with pytest.raises(DiagnosticError):
        Sealer(str(keyless), "default").check_ready()

    monkeypatch.setenv("TECTUM_AGE_KEY_FILE", str(mine))
    sealer = Sealer(str(keyless), "default")
    sealer.check_ready()
    assert not (keyless / ".tectum").exists()  # a secrets file: no state key is made
    REDACTOR.add("s3cr3t-value-1234")
    sealed = sealer.seal_value("s3cr3t-value-1234")
    identity = pyrage.x25519.Identity.from_str(
        next(ln for ln in mine.read_text().splitlines() if ln.startswith("AGE-SECRET-KEY")))
    assert pyrage.decrypt(base64.b64decode(sealed["tectum-sealed"]), [identity]) \
        == b"s3cr3t-value-1234"


def test_a_recipient_added_by_hand_receives_nothing(
        keyless: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sealing checks the recipients list (the MAC) first: a key added to the file by hand
    would otherwise be sent every sensitive value of the state."""
    mine = tmp_path / "mine.key"
    me = keygen(mine)
    intruder = keygen(tmp_path / "intruder.key")
    path = keyless / "secrets" / "default.yaml"
    path.parent.mkdir()
    SecretsFile.create(str(path), [me]).save()
    doc = yaml.safe_load(path.read_text())
    doc["tectum"]["recipients"].append(intruder)
    path.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("TECTUM_AGE_KEY_FILE", str(mine))
    with pytest.raises(DiagnosticError):
        Sealer(str(keyless), "default").check_ready()
    REDACTOR.add("s3cr3t-value-1234")
    with pytest.raises(DiagnosticError):
        Sealer(str(keyless), "default").seal({"x": "s3cr3t-value-1234"})


def test_state_sealed_before_a_secrets_file_stays_readable(
        keyless: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Values sealed to the state key are still opened after a secrets file is made (new
    values then go to its recipients)."""
    REDACTOR.add("s3cr3t-value-1234")
    old = Sealer(str(keyless), "default").seal({"x": "s3cr3t-value-1234"})
    mine = tmp_path / "mine.key"
    path = keyless / "secrets" / "default.yaml"
    path.parent.mkdir()
    SecretsFile.create(str(path), [keygen(mine)]).save()
    monkeypatch.setenv("TECTUM_AGE_KEY_FILE", str(mine))
    sealer = Sealer(str(keyless), "default")
    assert sealer.unseal(old) == {"x": "s3cr3t-value-1234"}
    new = sealer.seal({"x": "s3cr3t-value-1234"})
    os.remove(keyless / ".tectum" / STATE_KEY)
    assert Sealer(str(keyless), "default").unseal(new) == {"x": "s3cr3t-value-1234"}
    with pytest.raises(DiagnosticError) as err:
        Sealer(str(keyless), "default").unseal(old)
    assert "Cannot decrypt a sensitive value" in str(err.value)
