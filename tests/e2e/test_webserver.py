"""The README's main job for real: examples/webserver applied on this machine (as root).

nginx is installed with apt (kept afterwards if it was there before), the site and page are
written, nginx answers on a free port; a second run changes nothing and runs no mutating
command; hand-made drift (edited file, deleted directory, stopped service) is planned and
repaired. Everything the test made is removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_tectum

pytestmark = [pytest.mark.apt, pytest.mark.system]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "webserver"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _installed(pkg: str) -> bool:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", pkg],
                         capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.startswith("ii")


def _nginx_running() -> bool:
    return subprocess.run(["service", "nginx", "status"], capture_output=True).returncode == 0


def _get(url: str, attempts: int = 30) -> str:
    last: Exception | None = None
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.read().decode()
        except OSError as exc:
            last = exc
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer: {last}")


@pytest.fixture
def webserver(tmp_path: Path) -> Iterator[tuple[Path, list[str], dict[str, str]]]:
    project = tmp_path / "webserver"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".tectum"))
    tag = uuid.uuid4().hex[:8]
    site = f"tectum-test-{tag}"
    root = f"/srv/tectum-test-{tag}"
    port = _free_port()
    args = ["-var", f"port={port}", "-var", f"root={root}", "-var", f"site_name={site}"]
    had_nginx = _installed("nginx")
    was_running = had_nginx and _nginx_running()
    info = {"site": f"/etc/nginx/sites-enabled/{site}", "root": root, "url":
            f"http://127.0.0.1:{port}/"}
    try:
        yield project, args, info
    finally:
        Path(info["site"]).unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)
        if had_nginx and was_running:
            subprocess.run(["service", "nginx", "restart"], capture_output=True)
        elif had_nginx:
            subprocess.run(["service", "nginx", "stop"], capture_output=True)
        else:
            subprocess.run(["service", "nginx", "stop"], capture_output=True)
            subprocess.run(["apt-get", "purge", "-y", "-q", "nginx", "nginx-common"],
                           capture_output=True, env={**os.environ,
                                                     "DEBIAN_FRONTEND": "noninteractive"})


def _mutations(log: Path) -> list[dict[str, object]]:
    if not log.exists():
        return []
    entries = [json.loads(line) for line in log.read_text().splitlines() if line]
    return [e for e in entries if e["mutating"]]


def test_webserver_apply_noop_and_drift(webserver: tuple[Path, list[str], dict[str, str]],
                                        tmp_path: Path) -> None:
    project, args, info = webserver
    first = run_tectum("apply", "--auto-approve", *args, str(project))
    assert first.returncode == 0, first.output
    assert "Apply complete!" in first.stdout
    assert "Traceback" not in first.output
    assert "<h1>Hello from tectum</h1>" in _get(info["url"])
    assert "url = " in first.stdout

    # second run: no changes, no mutating command
    plan = run_tectum("plan", "--detailed-exitcode", *args, str(project))
    assert plan.returncode == 0, plan.output
    assert "No changes." in plan.stdout
    log = tmp_path / "commands.jsonl"
    again = run_tectum("apply", "--auto-approve", *args, str(project),
                       env={"TECTUM_COMMAND_LOG": str(log)})
    assert again.returncode == 0, again.output
    assert _mutations(log) == []
    assert log.exists()  # the reads were recorded: the log works

    # drift: edit the site file, delete the document root, stop nginx
    with open(info["site"], "a") as fh:
        fh.write("# edited by hand\n")
    shutil.rmtree(info["root"])
    subprocess.run(["service", "nginx", "stop"], check=True, capture_output=True)
    drift = run_tectum("plan", "--detailed-exitcode", *args, str(project))
    assert drift.returncode == 2, drift.output
    out = drift.stdout
    assert "Objects changed outside of tectum:" in out
    assert "~ file.site" in out and "-# edited by hand" in out
    assert "+ directory.www" in out and "+ file.index" in out
    assert "~ service.nginx" in out and "running: false → true" in out

    repair = run_tectum("apply", "--auto-approve", *args, str(project))
    assert repair.returncode == 0, repair.output
    assert "<h1>Hello from tectum</h1>" in _get(info["url"])
    final = run_tectum("plan", "--detailed-exitcode", *args, str(project))
    assert final.returncode == 0, final.output


def test_config_change_restarts_service_only_on_real_change(
        webserver: tuple[Path, list[str], dict[str, str]], tmp_path: Path) -> None:
    project, args, info = webserver
    assert run_tectum("apply", "--auto-approve", *args, str(project)).returncode == 0
    pid_before = Path("/run/nginx.pid").read_text().strip()

    # an unrelated change (the page) must not restart nginx
    page = run_tectum("apply", "--auto-approve", *args, "-var", "greeting=Second page",
                      str(project))
    assert page.returncode == 0, page.output
    assert "service.nginx" not in page.stdout
    assert Path("/run/nginx.pid").read_text().strip() == pid_before
    assert "Second page" in _get(info["url"])

    # a change of the site configuration restarts it
    port = _free_port()
    moved = [a if not a.startswith("port=") else f"port={port}" for a in args]
    restart = run_tectum("apply", "--auto-approve", *moved, "-var", "greeting=Second page",
                         str(project))
    assert restart.returncode == 0, restart.output
    assert "restart (file.site changed)" in restart.stdout
    assert "service.nginx: restarted" in restart.stdout
    assert "Second page" in _get(f"http://127.0.0.1:{port}/")
