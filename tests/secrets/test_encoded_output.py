"""A secret that reaches output encoded as part of a longer value (issue 10 item 17): an HTTP
Basic ``Authorization`` line rendered with the templates' ``b64encode`` filter, and a failing
command that prints base64 and hex of ``"user:" + secret``. Through the real CLI, on this
machine: the file gets the encoded value; every output shows it masked.
"""

from __future__ import annotations

import base64
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tectum.masking import MASK
from tectum.providers.host.templates import TemplateError, b64decode, b64encode, render
from tests.conftest import Result, run_tectum
from tests.secrets import find_canary

TEMPLATE = """\
user=app
auth2={{ ("user:" ~ pw) | b64encode }}
auth1={{ ("ops:" ~ pw) | b64encode }}
auth0={{ ("admin:" ~ pw) | b64encode }}
"""

STACK = """
from tectum import secret
from tectum.host import Command, Directory, File

out = Directory("out", path="{out}")
File("conf", path=f"{{out.path}}/auth.conf", template="auth.conf.j2",
     vars={{"pw": secret("pw")}}, mode="0600")
"""

FAILING = """
Command("enc", command='for p in user: ops: admin:; do printf "b64 %s\\\\n" '
        '"$(printf %s "$p$PW" | base64 -w0)"; printf "hex %s\\\\n" '
        '"$(printf %s "$p$PW" | od -An -tx1 | tr -d " \\\\n")"; done; exit 1',
        environment={{"PW": secret("pw")}}, depends_on=[out])
"""


def stable_forms(secret: str) -> list[str]:
    """The encoded characters that only the secret determines, in ``base64(PREFIX + secret)``
    for the three prefixes the template uses (one per alignment)."""
    raw = secret.encode()
    out = []
    for prefix in (b"user:", b"ops:", b"admin:"):
        k = len(prefix)
        text = base64.b64encode(prefix + raw).decode()
        out.append(text[-(-8 * k // 6):8 * (k + len(raw)) // 6])
    return out


class Proj:
    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "proj"
        self.out = tmp_path / "out"
        self.root.mkdir()
        key = tmp_path / "key.txt"
        subprocess.run([sys.executable, "-m", "tectum", "secrets", "keygen", "-o", str(key)],
                       check=True, capture_output=True)
        self.env = {"TECTUM_AGE_KEY_FILE": str(key), "TECTUM_AGE_KEY": "",
                    "HOME": str(tmp_path), "TECTUM_WORKSPACE": ""}
        self.secret = f"canary-{secrets.token_hex(10)}"
        (self.root / "auth.conf.j2").write_text(TEMPLATE)
        (self.root / "stack.py").write_text(STACK.format(out=self.out))
        assert self.run("secrets", "init").returncode == 0
        assert self.run("secrets", "set", "pw", input=self.secret).returncode == 0

    def run(self, *args: str, input: str | None = None) -> Result:
        return run_tectum(*args, cwd=self.root, env=self.env, input=input)

    def assert_masked(self, result: Result, what: str) -> None:
        leaked = [f for f in stable_forms(self.secret) if f in result.output]
        leaked += [f.decode() for f in find_canary(result.output, self.secret)]
        assert not leaked, f"{what} shows the secret encoded: {leaked}"


@pytest.fixture
def proj(tmp_path: Path) -> Proj:
    return Proj(tmp_path)


def test_basic_auth_rendered_with_b64encode_is_masked_in_every_output(proj: Proj) -> None:
    applied = proj.run("apply", "--auto-approve")
    assert applied.returncode == 0, applied.output
    conf = (proj.out / "auth.conf").read_text()
    for prefix, line in (("user:", "auth2"), ("ops:", "auth1"), ("admin:", "auth0")):
        encoded = base64.b64encode(f"{prefix}{proj.secret}".encode()).decode()
        assert f"{line}={encoded}\n" in conf
    assert all(form in conf for form in stable_forms(proj.secret))

    # a hand edit: the plan shows the diff, whose context lines hold the encoded secret
    (proj.out / "auth.conf").write_text(conf + "hand-edit\n")
    for args in (("plan",), ("plan", "--json"), ("drift",), ("drift", "--json")):
        r = proj.run(*args)
        assert r.returncode == 0, r.output
        proj.assert_masked(r, " ".join(args))
    plan = proj.run("plan")
    lines = {m[0]: ln for ln in plan.stdout.splitlines()
             if (m := re.search(r"auth[012]=", ln))}
    assert {"auth1=", "auth0="} <= lines.keys(), plan.stdout  # the diff's context
    for line in lines.values():
        assert MASK in line, line
    repaired = proj.run("apply", "--auto-approve")
    assert repaired.returncode == 0
    proj.assert_masked(repaired, "apply")
    assert (proj.out / "auth.conf").read_text() == conf


def test_a_command_printing_encoded_secrets_is_masked(proj: Proj) -> None:
    (proj.root / "stack.py").write_text(STACK.format(out=proj.out) + FAILING.format())
    failed = proj.run("apply", "--auto-approve")
    assert failed.returncode == 1, failed.output
    printed = [ln for ln in failed.output.splitlines()
               if ("b64 " in ln or "hex " in ln) and "printf" not in ln]
    assert len(printed) >= 6, failed.output  # the command's output is shown ...
    for line in printed:
        assert MASK in line, line  # ... with each encoded secret masked
    proj.assert_masked(failed, "a failed apply")


# --------------------------------------------------------------------------- the filters

def test_filters(tmp_path: Path) -> None:
    assert b64encode("user:pässword") == base64.b64encode("user:pässword".encode()).decode()
    assert b64decode(b64encode("user:pässword")) == "user:pässword"
    with pytest.raises(ValueError, match="not base64"):
        b64decode("not base64!")
    t = tmp_path / "t.j2"
    t.write_text("{{ x | b64encode }}|{{ 'aGk=' | b64decode }}")
    assert render(str(t), {"x": "user:pw"}) == f"{b64encode('user:pw')}|hi"


def test_b64encode_of_a_value_known_only_after_apply_is_refused(tmp_path: Path) -> None:
    """Encoding a reference token would write the token's encoding: refused at plan time.
    A secret is unknown only in ``validate``: the content then stays unknown."""
    t = tmp_path / "t.j2"
    t.write_text("line one\nauth={{ ('u:' ~ x) | b64encode }}\n")
    with pytest.raises(TemplateError, match=r"t\.j2:2: .*known only after apply"):
        render(str(t), {"x": "${tectum:random_password.gen#result}"})
    secret_token = "${tectum:secret#pw}"
    assert render(str(t), {"x": secret_token}) == f"line one\nauth=u:{secret_token}\n"


def test_validate_passes_with_b64encode_of_a_secret(proj: Proj) -> None:
    r = proj.run("validate")
    assert r.returncode == 0, r.output
