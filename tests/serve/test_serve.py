"""``tectum serve`` end to end: the real CLI serving a real run store (SQLite, and the real
PostgreSQL state database) with uvicorn on a free 127.0.0.1 port, asked over real HTTP
(urllib); the metrics parsed with ``prometheus_client``'s parser."""

from __future__ import annotations

import json
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tectum.masking import MASK, REDACTOR
from tectum.runs import RunReport, SQLiteRunStore
from tests.conftest import run_tectum, tectum_env

EVIL = '<script>alert("owned")</script>'


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


def get(url: str, headers: dict[str, str] | None = None) -> Response:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=15) as answer:
            return Response(answer.status, {k.lower(): v for k, v in answer.headers.items()},
                            answer.read().decode())
    except urllib.error.HTTPError as exc:
        return Response(exc.code, {k.lower(): v for k, v in exc.headers.items()},
                        exc.read().decode())


def project(root: Path, state: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "tectum.toml").write_text(f'[project]\nname = "serve-{secrets.token_hex(3)}"\n'
                                      + state)
    (root / "stack.py").write_text("")
    return root


def report(host: str, status: str, ago: float, **kw: Any) -> RunReport:
    """A report that started ``ago`` seconds before now (now: when it is made — a module is
    imported at collection, long before its tests run in a whole suite)."""
    return RunReport(workspace="default", host=host, mode="remediate", status=status,
                     started_at=time.time() - ago, duration=2.5, interval=60.0, **kw)


@dataclass
class Server:
    """A running ``tectum serve`` (stopped with SIGTERM by :meth:`stop`)."""

    proc: subprocess.Popen[str]
    url: str
    log: Path
    banner: str
    stopped: bool = field(default=False)

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return get(self.url + path.lstrip("/"), headers)

    def stop(self) -> int:
        if not self.stopped:
            self.stopped = True
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start(directory: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    """``tectum serve DIRECTORY --port 0 ARGS``, once it says where it listens."""
    log = directory.parent / f"serve-{secrets.token_hex(4)}.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tectum", "serve", str(directory), "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True,
            env=tectum_env(env))
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()  # (a reader thread: select() misses buffered lines)
    def read() -> None:
        for line in proc.stdout or ():
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                if proc.poll() is not None and lines.empty():
                    break
                continue
            seen.append(line)
            if " on http://" in line:
                url = line.split(" on ", 1)[1].split()[0]
                return Server(proc, url, log, "".join(seen))
        raise AssertionError(f"tectum serve did not start: {''.join(seen)}{log.read_text()}")
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def section(page: str, name: str) -> str:
    """The part of the status page under the heading whose id is ``name``."""
    part = page.split(f'<h2 id="{name}">', 1)[1]
    return part.split("<h2 ", 1)[0]


# --- one server over a filled SQLite store ---------------------------------------------------

@dataclass
class Filled:
    root: Path
    store: SQLiteRunStore
    reports: list[RunReport]
    server: Server


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    root = project(tmp_path_factory.mktemp("serve") / "proj")
    store = SQLiteRunStore(str(root / ".tectum" / "runs.db"))
    reports = [
        report("web-1", "changed", 600, commit="1" * 40, changes=3),
        report("web-1", "drift-corrected", 30, commit="1" * 40, changes=2, corrective=2,
               drifted=2, drift=("file.motd", "file.hosts")),
        report("web-2", "failed", 20, commit="2" * 40,
               errors=("apply of file.motd failed: Permission denied",)),
        report("db-1", "unchanged", 4000),  # interval 60 s: unreported
        report("db-2", "pending", 10, commit="3" * 40, pending=4,
               plan_digest="sha256:" + "ab" * 32, plan_path="/var/lib/tectum/plan-db-2"),
        report("cache-1", "pending", 15, pending=1),  # a commit waiting, no plan: no approval
        report(EVIL, "drift-found", 5, drifted=1, drift=(EVIL,), errors=(EVIL,)),
    ]
    for r in reports:
        store.put(r)
    server = start(root)
    try:
        yield Filled(root, store, reports, server)
    finally:
        server.stop()
        store.close()


def test_page_shows_the_last_run_of_each_host(filled: Filled) -> None:
    answer = filled.server.get("/")
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/html")
    assert "script-src" not in answer.headers["content-security-policy"]
    hosts = section(answer.body, "hosts")
    for host in ("web-1", "web-2", "db-1", "db-2", "cache-1"):
        assert f"<td>{host}" in hosts
    # web-1's last run, not its first
    row = hosts.split("<td>web-1", 1)[1].split("</tr>", 1)[0]
    assert "drift-corrected" in row and "1" * 12 in row and "changed<" not in row
    assert "<code>file.motd</code>, <code>file.hosts</code>" in hosts
    # the failure with its message
    failures = section(answer.body, "failures")
    assert "web-2" in failures and "apply of file.motd failed: Permission denied" in failures
    assert "web-1" not in failures
    history = section(answer.body, "history")
    assert history.count("<tr><td class=\"mono\"><a href=\"runs/") == len(filled.reports)


def test_unreported_hosts_and_pending_approvals_are_listed(filled: Filled) -> None:
    page = filled.server.get("/").body
    late = section(page, "unreported")
    assert "<td>db-1</td>" in late and "60 s" in late
    assert "web-1" not in late and "db-2" not in late
    assert "db-1 <span class=\"late\">(unreported)</span>" in section(page, "hosts")

    approvals = section(page, "approvals")
    waiting = next(r for r in filled.reports if r.host == "db-2")
    assert f"<code>tectum approve {waiting.id}</code>" in approvals
    assert "4 changes" in approvals and "abababababababab" in approvals
    assert "/var/lib/tectum/plan-db-2" in approvals
    assert "cache-1" not in approvals  # pending, but no saved plan to approve


def test_html_is_escaped(filled: Filled) -> None:
    page = filled.server.get("/").body
    assert EVIL not in page and "<script" not in page
    assert "&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;" in page


def test_json_routes(filled: Filled) -> None:
    data = filled.server.get("/runs.json").json()
    assert [r["id"] for r in data["runs"]] == [
        r.id for r in sorted(filled.reports, key=lambda r: r.started_at, reverse=True)]
    assert [u["host"] for u in data["unreported"]] == ["db-1"]
    assert [p["host"] for p in data["pending_approvals"]] == ["db-2"]
    assert {r["host"] for r in data["latest"]} == {r.host for r in filled.reports}
    only = filled.server.get("/runs.json?host=web-1&limit=1").json()["runs"]
    assert len(only) == 1 and only[0]["status"] == "drift-corrected"
    assert filled.server.get("/runs.json?limit=0").status == 400

    failed = next(r for r in filled.reports if r.status == "failed")
    one = filled.server.get(f"/runs/{failed.id[:10]}.json")
    assert one.status == 200 and one.json() == failed.to_json()
    assert filled.server.get("/runs/ffffffffffff0000.json").status == 404


def test_metrics_match_the_store(filled: Filled) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    answer = filled.server.get("/metrics")
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(answer.body)}
    counts = Counter((r.workspace, r.host, r.status) for r in filled.reports)
    runs = {(s.labels["workspace"], s.labels["host"], s.labels["status"]): s.value
            for s in families["tectum_runs"].samples}
    assert runs == counts
    assert families["tectum_runs"].type == "gauge"
    last = {}
    for r in sorted(filled.reports, key=lambda r: r.started_at):
        last[r.host] = r

    def by_host(name: str) -> dict[str, float]:
        return {s.labels["host"]: s.value for s in families[name].samples}

    assert by_host("tectum_run_duration_seconds") == {h: r.duration for h, r in last.items()}
    assert by_host("tectum_drifted_resources") == {h: r.drifted for h, r in last.items()}
    stamps = by_host("tectum_last_run_timestamp_seconds")
    assert stamps == pytest.approx({h: r.finished_at for h, r in last.items()})
    assert families["tectum_unreported_hosts"].samples[0].value == 1
    assert families["tectum_pending_approvals"].samples[0].value == 1
    assert families["tectum_run_store_up"].samples[0].value == 1
    assert {(s.labels["host"], s.labels["status"])
            for s in families["tectum_last_run_status"].samples} == {
        (h, r.status) for h, r in last.items()}


def test_each_request_reads_the_store_as_it_is_now(filled: Filled) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    host = f"new-{secrets.token_hex(3)}"
    fresh = report(host, "changed", 1, changes=1)
    filled.store.put(fresh)  # as an agent in another process does
    try:
        assert f"<td>{host}" in section(filled.server.get("/").body, "hosts")
        samples = [s for f in text_string_to_metric_families(filled.server.get("/metrics").body)
                   if f.name == "tectum_runs" for s in f.samples
                   if s.labels["host"] == host]
        assert [(s.labels["status"], s.value) for s in samples] == [("changed", 1)]
    finally:
        with filled.store._errors() as db:
            db.execute("DELETE FROM runs WHERE id = ?", (fresh.id,))


def test_healthz(filled: Filled) -> None:
    answer = filled.server.get("/healthz")
    assert (answer.status, answer.body) == (200, "ok\n")


def test_without_a_token_only_a_loopback_host_name_is_answered(filled: Filled) -> None:
    # a page whose DNS name was rebound to 127.0.0.1 must not read the status
    port = filled.server.url.rsplit(":", 1)[1].rstrip("/")
    for path in ("/", "/runs.json", "/metrics"):
        rebound = filled.server.get(path, {"Host": f"attacker.example:{port}"})
        assert rebound.status == 400 and "web-1" not in rebound.body, path
    assert filled.server.get("/healthz", {"Host": "attacker.example"}).status == 200
    assert filled.server.get("/runs.json", {"Host": f"localhost:{port}"}).status == 200


# --- secrets --------------------------------------------------------------------------------

@pytest.fixture
def in_process(tmp_path: Path) -> Iterator[tuple[SQLiteRunStore, str]]:
    """The app on a real uvicorn server in a thread of this process (its REDACTOR is this
    process's), on a free 127.0.0.1 port."""
    import uvicorn

    from tectum.serve import create_app, listen, url_of

    store = SQLiteRunStore(str(tmp_path / ".tectum" / "runs.db"))
    sock = listen("127.0.0.1", 0)
    app = create_app(lambda: SQLiteRunStore(store.path), title="in-process")
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started
        yield store, url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        store.close()


def test_a_secret_never_appears(in_process: tuple[SQLiteRunStore, str]) -> None:
    store, url = in_process
    secret = f"pw-{secrets.token_hex(12)}"
    REDACTOR.add(secret)  # as secret("DB_PASSWORD") registers it
    # a report written unmasked (an agent that did not know the secret)
    leaky = report(f"db-{secret}", "failed", 3, errors=(f"psql: password {secret!r} refused",
                                                         f"token {secret.encode().hex()}"))
    store.put(leaky)
    for path in ("", "runs.json", f"runs/{leaky.id}.json", "metrics"):
        body = get(url + path).body
        assert secret not in body and secret.encode().hex() not in body, path
        assert MASK in body or "(sensitive value)" in json.dumps(body), path
    page = get(url).body
    assert f"psql: password &#39;{MASK}&#39; refused" in page


# --- access ---------------------------------------------------------------------------------

def test_a_token_is_required_on_every_route_but_healthz(tmp_path: Path) -> None:
    root = project(tmp_path / "proj")
    token = secrets.token_urlsafe(24)
    server = start(root, env={"TECTUM_SERVE_TOKEN": token})
    try:
        assert "needs the token from $TECTUM_SERVE_TOKEN" in server.banner
        for path in ("/", "/runs.json", "/runs/abc.json", "/metrics"):
            assert server.get(path).status == 401, path
            wrong = server.get(path, {"Authorization": f"Bearer {token[:-1]}x"})
            assert wrong.status == 401, path
            assert wrong.headers["www-authenticate"].startswith("Bearer")
            assert token not in wrong.body
            assert server.get(path, {"Authorization": f"Basic {token}"}).status == 401
            right = server.get(path, {"Authorization": f"Bearer {token}"})
            assert right.status == (404 if path.startswith("/runs/") else 200), path
        assert server.get("/healthz").status == 200
        assert server.get(f"/metrics?token={token}x").status == 401
        # a browser: ?token= once, then the cookie it sets
        browser = server.get(f"/?token={token}")
        assert browser.status == 200 and "<h1>tectum" in browser.body
        cookie = browser.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert server.get("/runs.json", {"Cookie": cookie.split(";")[0]}).status == 200
        assert server.get("/runs.json", {"Cookie": "tectum_serve_token=nope"}).status == 401
    finally:
        assert server.stop() == 0
    log = server.log.read_text()
    assert '"GET /?token=(sensitive value) HTTP/1.1" 200' in log, log
    assert token not in log and token not in server.banner


def test_bound_beyond_loopback_without_a_token_it_refuses(tmp_path: Path) -> None:
    root = project(tmp_path / "proj")
    refused = run_tectum("serve", str(root), "--host", "0.0.0.0", "--port", "0", timeout=60)
    assert refused.returncode == 1, refused.output
    assert "A token is required" in refused.output and "TECTUM_SERVE_TOKEN" in refused.output
    assert "Traceback" not in refused.output and "Serving" not in refused.output

    short = run_tectum("serve", str(root), "--host", "0.0.0.0", "--port", "0",
                       "--token-env", "MY_TOKEN", env={"MY_TOKEN": "hunter2hunter2"},
                       timeout=60)
    assert short.returncode == 1 and "$MY_TOKEN has 14 characters" in short.output
    assert "hunter2hunter2" not in short.output and "Serving" not in short.output


def test_the_cli_defaults_are_the_library_s() -> None:
    from tectum import serve
    from tectum.cli import serve_cmd

    assert (serve_cmd.DEFAULT_HOST, serve_cmd.DEFAULT_PORT, serve_cmd.TOKEN_ENV,
            serve_cmd.HISTORY) == (serve.DEFAULT_HOST, serve.DEFAULT_PORT, serve.TOKEN_ENV,
                                   serve.HISTORY)


def test_bad_input_gives_a_diagnostic(tmp_path: Path) -> None:
    root = project(tmp_path / "proj")
    server = start(root)
    try:
        port = server.url.rsplit(":", 1)[1].rstrip("/")
        taken = run_tectum("serve", str(root), "--port", port, timeout=60)
        assert taken.returncode == 1 and "Cannot listen" in taken.output, taken.output
        assert f"127.0.0.1:{port}" in taken.output and "Traceback" not in taken.output
    finally:
        assert server.stop() == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    none = run_tectum("serve", str(empty), "--port", "0", timeout=60)
    assert none.returncode == 1 and "No stack found" in none.output
    assert "Traceback" not in none.output
    bad = run_tectum("serve", str(root), "--port", "70000", timeout=60)
    assert bad.returncode == 2 and "not a port number" in bad.output


# --- PostgreSQL -----------------------------------------------------------------------------

def test_a_postgresql_store_and_one_that_is_down(tmp_path: Path, pg_dsn: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from tectum.runs import PostgresRunStore

    root = project(tmp_path / "proj", '\n[state]\nbackend = "postgres"\n')
    store = PostgresRunStore(pg_dsn)
    reports = [report("pg-a", "changed", 50), report("pg-a", "unchanged", 20),
               report("pg-b", "failed", 10, errors=("it broke",))]
    try:
        for r in reports:
            store.put(r)
    finally:
        store.close()
    server = start(root, env={"TECTUM_PG_CONN_STR": pg_dsn})
    try:
        families = {f.name: f for f in
                    text_string_to_metric_families(server.get("/metrics").body)}
        assert {(s.labels["host"], s.labels["status"]): s.value
                for s in families["tectum_runs"].samples} == {
            ("pg-a", "changed"): 1, ("pg-a", "unchanged"): 1, ("pg-b", "failed"): 1}
        assert "it broke" in section(server.get("/").body, "failures")
    finally:
        assert server.stop() == 0

    # the database down: the server still starts, says so, and answers 503 / up 0
    down = start(root, env={"TECTUM_PG_CONN_STR": "host=127.0.0.1 port=1 dbname=x user=x "
                                                  "password=s3cret-pg-pass connect_timeout=2"})
    try:
        assert "not readable now" in down.banner
        page = down.get("/")
        assert page.status == 503 and "Cannot reach the run reports" in page.body
        assert down.get("/runs.json").status == 503
        metrics = down.get("/metrics")
        assert metrics.status == 200 and "tectum_run_store_up 0.0" in metrics.body
    finally:
        assert down.stop() == 0
    assert "s3cret-pg-pass" not in down.log.read_text() + down.banner


# --- a real agent's reports -----------------------------------------------------------------

def test_a_real_agent_run_is_shown(tmp_path: Path) -> None:
    from tests.runs.test_agent import Repo

    repo = Repo(tmp_path)
    first = repo.agent("--mode", "apply", "--once")
    assert first.returncode == 0, first.output
    commit = repo.git("rev-parse", "HEAD")
    server = start(repo.workdir / "repo")
    try:
        page = server.get("/").body
        row = section(page, "hosts").split("<td>host-a", 1)[1].split("</tr>", 1)[0]
        assert "status changed" in row and commit[:12] in row and ">apply<" in row
        runs = server.get("/runs.json").json()["runs"]
        assert [(r["host"], r["status"], r["commit"]) for r in runs] == [
            ("host-a", "changed", commit)]
    finally:
        assert server.stop() == 0



def test_a_pending_approval_is_listed_only_while_its_agent_waits(tmp_path: Path) -> None:
    """Only an agent's last run, pending with a plan, waits for approval: not once a later run
    applied the plan (every cycle of a waiting agent reports a new pending run with the same
    plan: approving one of them approves the plan), nor while an approval of that plan waits
    for the agent's next cycle, nor after a failed cycle (``tectum approve`` refuses it)."""
    from tectum.serve import pending_approvals

    store = SQLiteRunStore(str(tmp_path / "runs.db"))
    try:
        def waiting() -> list[str]:
            return [r.id for r in pending_approvals(store)]

        def pending(host: str, ago: float, digest: str) -> RunReport:
            run = report(host, "pending", ago, plan_digest=digest, pending=1)
            store.put(run)
            return run

        first = pending("web-1", 30, "a" * 64)
        second = pending("web-1", 20, "a" * 64)  # (the next cycle: the same plan waits)
        assert waiting() == [second.id]
        store.put(first.with_(status="approved", approved_by="ops"))
        assert waiting() == []  # approved: the agent applies it in its next cycle
        applied = report("web-1", "changed", 10, changes=1)
        store.put(applied)
        store.put(first.with_(status="approved", approved_by="ops", applied_in=applied.id))
        assert waiting() == []
        third = pending("web-1", 5, "b" * 64)  # a new commit waits
        assert waiting() == [third.id]
        store.put(report("web-1", "failed", 1, errors=("fetch failed",)))
        assert waiting() == []
    finally:
        store.close()
