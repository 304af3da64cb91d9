"""Secrets in the engine, on the local machine through the real CLI: ``secret()`` and sensitive
variables are tainted through f-strings, templates, commands and outputs; every output masks
them; state and plan files hold them only encrypted; ``output --reveal`` is the one way out."""

from __future__ import annotations

import base64
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Result, run_tectum


def forms(value: str) -> list[str]:
    raw = value.encode()
    return [value, base64.b64encode(raw).decode().rstrip("="), raw.hex(), raw.hex().upper()]


def leaks(text: str, canary: str) -> list[str]:
    return [f for f in forms(canary) if f in text]


class Project:
    def __init__(self, root: Path, key: Path) -> None:
        self.root = root
        self.env = {"TECTUM_AGE_KEY_FILE": str(key)}

    def run(self, *args: str, input: str | None = None, env: dict[str, str] | None = None
            ) -> Result:
        return run_tectum(*args, input=input, env={**self.env, **(env or {})})

    def state_dump(self) -> str:
        db = sqlite3.connect(self.root / ".tectum" / "state.db")
        try:
            return "\n".join(db.iterdump())
        finally:
            db.close()


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    root = tmp_path / "proj"
    root.mkdir()
    key = tmp_path / "key.txt"
    subprocess.run([sys.executable, "-m", "tectum", "secrets", "keygen", "-o", str(key)],
                   check=True, capture_output=True)
    proj = Project(root, key)
    (root / "stack.py").write_text("")
    assert proj.run("secrets", "init", str(root)).returncode == 0
    yield proj


STACK = """
from tectum import output, secret, var
from tectum.host import Command, Directory, File
from tectum.random import Password

token = var("token", str, sensitive=True)
out = Directory("out", path="{out}")
File("conf", path=f"{{out.path}}/site.conf", template="site.conf.j2",
     vars={{"pw": secret("db_password")}}, mode="0600")
gen = Password("gen", length=20)
File("gen", path=f"{{out.path}}/gen.txt", content=f"{{gen.result}}\\n", mode="0600")
Command("cmd", command=f"printf %s '{{secret('db_password')}}' > {{out.path}}/cmd.txt",
        creates=f"{{out.path}}/cmd.txt", depends_on=[out])
Command("env", command="printf %s \\"$TOK\\" > {out}/env.txt", environment={{"TOK": token}},
        creates="{out}/env.txt", depends_on=[out])
output("dsn", f"postgres://app:{{secret('db_password')}}@db/app")
output("plain", "visible")
"""


def setup(project: Project, tmp_path: Path, canary: str, token: str) -> Path:
    out = tmp_path / "out"
    (project.root / "stack.py").write_text(STACK.format(out=out))
    (project.root / "site.conf.j2").write_text("user=app\npassword={{ pw }}\n")
    r = project.run("secrets", "set", "db_password", str(project.root), input=canary)
    assert r.returncode == 0, r.output
    project.env["TECTUM_VAR_token"] = token
    return out


def test_secrets_flow_where_they_should_and_nowhere_else(project: Project, tmp_path: Path
                                                         ) -> None:
    canary = f"canary-{secrets.token_hex(8)}"
    token = f"vartoken-{secrets.token_hex(8)}"
    out = setup(project, tmp_path, canary, token)
    root = str(project.root)
    seen: list[str] = []

    plan = project.run("plan", root, "-out", str(tmp_path / "plan.bin"))
    assert plan.returncode == 0, plan.output
    seen.append(plan.output)
    assert "(sensitive value)" in plan.stdout
    as_json = project.run("plan", root, "--json")
    seen.append(as_json.output)
    apply = project.run("apply", "--auto-approve", root)
    assert apply.returncode == 0, apply.output
    seen.append(apply.output)
    assert "dsn = (sensitive value)" in apply.stdout and 'plain = "visible"' in apply.stdout

    # the secrets arrived where they were meant to
    assert (out / "site.conf").read_text() == f"user=app\npassword={canary}\n"
    assert (out / "cmd.txt").read_text() == canary
    assert (out / "env.txt").read_text() == token
    generated = (out / "gen.txt").read_text().strip()
    assert len(generated) == 20

    for args in (("show", root), ("show", "--json", root), ("output", "--dir", root),
                 ("output", "dsn", "--dir", root), ("output", "--json", "--dir", root),
                 ("state", "list", root), ("state", "show", "command.cmd", root),
                 ("drift", "--json", root), ("plan", root, "--json"),
                 ("show", str(tmp_path / "plan.bin"))):
        r = project.run(*args)
        assert r.returncode == 0, (args, r.output)
        seen.append(r.output)
    for text in seen:
        for value in (canary, token, generated):
            assert leaks(text, value) == [], text
    stored = project.state_dump() + (tmp_path / "plan.bin").read_text(errors="replace")
    for value in (canary, token, generated):
        assert leaks(stored, value) == []
    assert "tectum-sealed" in stored

    reveal = project.run("output", "dsn", "--reveal", "--dir", root)
    assert reveal.returncode == 0
    assert reveal.stdout.strip() == f'"postgres://app:{canary}@db/app"'
    assert "Revealing sensitive output 'dsn'" in reveal.stderr

    # a second run changes nothing: the generated password is kept (encrypted) in state
    again = project.run("plan", root, "--detailed-exitcode")
    assert again.returncode == 0, again.output
    assert (out / "gen.txt").read_text().strip() == generated

    # without the key, state cannot be read, and the error says what to do
    nokey = run_tectum("plan", root, env={"TECTUM_AGE_KEY_FILE": str(tmp_path / "nokey"),
                                          "TECTUM_VAR_token": token, "HOME": str(tmp_path)})
    assert nokey.returncode == 1 and "Traceback" not in nokey.output
    assert "key" in nokey.stderr.lower()
    assert leaks(nokey.output, canary) == []


def test_a_failing_command_shows_no_secret(project: Project, tmp_path: Path) -> None:
    canary = f"canary-{secrets.token_hex(8)}"
    (project.root / "stack.py").write_text(
        "from tectum import secret\nfrom tectum.host import Command\n"
        "Command('bad', command=f\"echo '{secret('db_password')}' >&2; exit 3\")\n")
    project.run("secrets", "set", "db_password", str(project.root), input=canary)
    r = project.run("apply", "--auto-approve", str(project.root))
    assert r.returncode == 1
    assert "command.bad" in r.stderr and "(sensitive value)" in r.stderr
    assert leaks(r.output, canary) == []
    assert leaks(project.state_dump(), canary) == []


def test_encrypted_plan_for_ci(project: Project, tmp_path: Path) -> None:
    canary = f"canary-{secrets.token_hex(8)}"
    token = f"vartoken-{secrets.token_hex(8)}"
    setup(project, tmp_path, canary, token)
    other = tmp_path / "ci.key"
    subprocess.run([sys.executable, "-m", "tectum", "secrets", "keygen", "-o", str(other)],
                   check=True, capture_output=True)
    recipient = next(line.split(": ")[1] for line in other.read_text().splitlines()
                     if line.startswith("# public key: "))
    planfile = tmp_path / "ci.plan"
    r = project.run("plan", str(project.root), "-out", str(planfile), "--encrypt-to", recipient)
    assert r.returncode == 0, r.output
    data = planfile.read_bytes()
    assert data.startswith(b"age-encryption.org/v1") and canary.encode() not in data
    # our own key does not open it; the CI key does
    mine = project.run("show", str(planfile))
    assert mine.returncode == 1 and "Cannot decrypt plan file" in mine.stderr
    ci = project.run("show", str(planfile), env={"TECTUM_AGE_KEY_FILE": str(other)})
    assert ci.returncode == 0, ci.output
    assert "command.cmd" in ci.stdout and leaks(ci.output, canary) == []
    # cut short in transit: damaged, not "wrong key", even for the key it was made for
    cut = tmp_path / "cut.plan"
    cut.write_bytes(data[:-20])
    damaged = project.run("show", str(cut), env={"TECTUM_AGE_KEY_FILE": str(other)})
    assert damaged.returncode == 1 and "Invalid plan file" in damaged.stderr, damaged.output
    assert "Traceback" not in damaged.output
    bad = project.run("plan", str(project.root), "--encrypt-to", recipient)
    assert bad.returncode == 1 and "--encrypt-to needs -out" in bad.stderr


@pytest.mark.parametrize("stack, message", [
    ("from tectum import secret\nfrom tectum.host import File\n"
     "File('f', path='/tmp/x', content=secret('nope'))\n",
     "secret 'nope' is not in the secrets file"),
    ("from tectum import secret\nfrom tectum.host import Command\n"
     "Command('c', command=['echo', secret('db_password')])\n",
     "Secret in a command argument"),
    ("from tectum import secret\nsecret('bad name!')\n", "Invalid secret name"),
])
def test_secret_mistakes_are_diagnostics(project: Project, stack: str, message: str) -> None:
    project.run("secrets", "set", "db_password", str(project.root), input="s3cr3t-value")
    (project.root / "stack.py").write_text(stack)
    r = project.run("plan", str(project.root))
    assert r.returncode == 1 and message in r.stderr, r.output
    assert "stack.py:" in r.stderr and "Traceback" not in r.output


def test_no_secrets_file(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "stack.py").write_text("from tectum import secret\nfrom tectum.host import File\n"
                                   "File('f', path='/tmp/x', content=secret('pw'))\n")
    r = run_tectum("plan", str(root))
    assert r.returncode == 1 and "has no secrets file" in r.stderr
    assert "tectum secrets init" in r.stderr and "Traceback" not in r.output
