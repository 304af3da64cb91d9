"""The status page as a browser renders it: headless chromium (Debian's ``chromium``, installed
by ``.ci/run``) loads ``tectum serve``'s page and dumps the DOM it built. A new commit followed
by an agent with ``--require-approval`` appears as a pending approval; after ``tectum
approve`` and the agent's next cycle it is gone and the host's last run is the apply."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import run_tectum
from tests.runs.test_agent import Repo, last_status
from tests.serve.test_serve import section, start


def rendered(url: str, profile: Path) -> str:
    """The DOM of ``url`` after chromium loaded it (``--dump-dom``)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed (apt-get install chromium; .ci/run does)"
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--disable-extensions", "--disable-background-networking",
         f"--user-data-dir={profile}", "--virtual-time-budget=3000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and "<html" in proc.stdout, proc.stderr[-3000:]
    return proc.stdout


def test_a_pending_approval_shows_in_the_page_a_browser_renders(tmp_path: Path) -> None:
    repo = Repo(tmp_path)
    gated = ("--mode", "apply", "--require-approval", "--once")
    first = repo.agent(*gated)
    assert last_status(first) == "pending", first.output
    run_id = repo.runs()[0]["id"]
    server = start(repo.workdir / "repo")
    try:
        page = rendered(server.url, tmp_path / "chromium")
        approvals = section(page, "approvals")
        assert f"tectum approve {run_id}" in approvals, approvals
        assert "host-a" in approvals

        approved = run_tectum("approve", run_id, "--project", str(repo.workdir / "repo"))
        assert approved.returncode == 0, approved.output
        applied = repo.agent(*gated)
        assert last_status(applied) == "changed", applied.output
        page = rendered(server.url, tmp_path / "chromium")
        assert f"tectum approve {run_id}" not in section(page, "approvals")
        hosts = section(page, "hosts")
        assert "host-a" in hosts and "changed" in hosts
    finally:
        assert server.stop() == 0
