"""``tectum serve``: the status page and Prometheus metrics of the run reports.

The agents (:mod:`tectum.agent`) store a report per run in the run store beside the state
(:mod:`tectum.runs`); this module shows them over HTTP — starlette for the application, uvicorn
for the server, jinja2 (autoescaping on) for the page, ``prometheus_client`` for the metrics:

``GET /``                 the status page (HTML, no JavaScript): the last run per host and
                          workspace, the unreported hosts, recent failures with their (masked)
                          messages, the plans waiting for ``tectum approve``, and the history
                          (the last 50 runs)
``GET /runs.json``        the same as JSON (the shape of ``tectum runs list --json``, plus
                          ``latest`` and ``pending_approvals``); ``?workspace=``, ``?host=``,
                          ``?status=``, ``?limit=`` (1..1000, default 50) filter ``runs``
``GET /runs/{id}.json``   one report (``id``: the run's id or the start of it); 404 when none
``GET /metrics``          Prometheus text format (:class:`RunStoreCollector`)
``GET /healthz``          ``ok``: the process answers (no token needed, nothing read)

The store is opened for each request and closed after it: the agents write to it from other
processes (SQLite in WAL mode, or PostgreSQL), so every answer is what the store holds now.

**Access.** By default the server listens on 127.0.0.1 only, and answers only requests whose
``Host`` is a loopback name (:class:`LoopbackHostOnly`, against DNS rebinding). Bound to any
other address it requires a token (Prometheus' and Grafana's bearer-token convention): the
value of the environment variable ``--token-env`` names (``TECTUM_SERVE_TOKEN``), at least
:data:`MIN_TOKEN_LENGTH` characters; without one it refuses to start. When a token is set
(on any address) every route but ``/healthz`` answers 401 unless the request carries it as
``Authorization: Bearer TOKEN``, as ``?token=TOKEN`` (for a browser; the answer then sets an
HttpOnly, SameSite=Strict cookie so that the page's links work without it) or as that cookie.
Tokens are compared with :func:`hmac.compare_digest`; the token is registered with the
redactor, so the access log shows ``?token=(sensitive value)``.

**Secrets.** Report errors were masked by the agent that wrote them (it knows its secrets);
everything shown here passes again through :data:`tectum.masking.REDACTOR` (whatever this
process knows).
"""

from __future__ import annotations

import datetime
import hmac
import ipaddress
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tectum.diagnostics import Diagnostic, DiagnosticError
from tectum.runs import RunReport, RunStore, unreported

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Receive, Scope, Send

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8088
#: the environment variable that holds the token, unless ``--token-env`` names another
TOKEN_ENV = "TECTUM_SERVE_TOKEN"
#: a shorter token is refused (16 characters of a random token are ~95 bits and more)
MIN_TOKEN_LENGTH = 16
#: runs in the page's history and in ``/runs.json`` by default
HISTORY = 50
#: failures listed on the page
FAILURES = 20
#: the cookie a valid ``?token=`` sets
COOKIE = "tectum_serve_token"
#: the page reloads itself every this many seconds (``<meta http-equiv="refresh">``)
REFRESH = 60

#: opens the run store (called once per request; the result is closed after it)
StoreOpener = Callable[[], RunStore]


# --- binding and access ---------------------------------------------------------------------

def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) reaches this machine only. Any other
    name counts as reachable from elsewhere (it may resolve to a public address)."""
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_token(host: str, token: str | None, token_env: str) -> str | None:
    """The token to require (None: none), after checking the binding: bound to a non-loopback
    ``host`` a token is required. Raises :class:`DiagnosticError` when it is missing or shorter
    than :data:`MIN_TOKEN_LENGTH` (the message names the variable, never the value)."""
    token = token or None
    if token is None:
        if is_loopback(host):
            return None
        raise DiagnosticError(Diagnostic.error(
            "A token is required",
            f"--host {host} makes the status page reachable from other machines, so every "
            f"request must carry a token, and ${token_env} is not set. Set it to a long random "
            f"value (e.g. `export {token_env}=$(openssl rand -hex 32)`; --token-env names "
            "another variable), or serve on 127.0.0.1 (the default)."))
    if len(token) < MIN_TOKEN_LENGTH:
        raise DiagnosticError(Diagnostic.error(
            "The token is too short",
            f"${token_env} has {len(token)} characters; a token needs at least "
            f"{MIN_TOKEN_LENGTH} (e.g. `openssl rand -hex 32`)."))
    return token


class TokenAuth:
    """ASGI middleware: every HTTP request but ``GET /healthz`` must carry ``token`` (see the
    module docstring for where); 401 (``WWW-Authenticate: Bearer``) otherwise."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode("utf-8")

    def _matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode("utf-8"), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from starlette.requests import Request
        from starlette.responses import PlainTextResponse

        if scope["type"] != "http" or scope["path"] == "/healthz":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        from_query = request.query_params.get("token")
        if ((scheme.lower() == "bearer" and self._matches(credentials.strip()))
                or self._matches(request.cookies.get(COOKIE))):
            await self.app(scope, receive, send)
        elif self._matches(from_query):
            await self.app(scope, receive, _with_cookie(send, from_query or ""))
        else:
            response = PlainTextResponse(
                "401 Unauthorized: this server needs its token, as the header "
                "`Authorization: Bearer TOKEN` (or ?token=TOKEN in a browser).\n",
                status_code=401, headers={"WWW-Authenticate": 'Bearer realm="tectum"'})
            await response(scope, receive, send)


class LoopbackHostOnly:
    """ASGI middleware for a server without a token (so on a loopback address): a request
    whose ``Host`` header names anything but a loopback address or ``localhost`` gets 400 —
    a web page that rebinds its own DNS name to 127.0.0.1 cannot read the status (DNS
    rebinding; Jupyter's and Docker's defence). ``/healthz`` is answered regardless."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from starlette.datastructures import Headers
        from starlette.responses import PlainTextResponse

        if scope["type"] == "http" and scope["path"] != "/healthz":
            host = Headers(scope=scope).get("host", "")
            name = host[1:].split("]", 1)[0] if host.startswith("[") else host.split(":")[0]
            if host and not is_loopback(name):
                response = PlainTextResponse(
                    "400 Bad Request: this server answers to 127.0.0.1 and localhost only "
                    "(serve with --host and a token to be reached by another name).\n",
                    status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _with_cookie(send: Send, token: str) -> Send:
    """``send`` that adds the token cookie to the response's headers."""
    from http.cookies import SimpleCookie

    cookie: SimpleCookie = SimpleCookie()
    cookie[COOKIE] = token
    morsel = cookie[COOKIE]
    morsel["httponly"] = True
    morsel["samesite"] = "Strict"
    morsel["path"] = "/"
    value = morsel.OutputString().encode("latin-1")

    async def sending(message: Any) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []),
                                              (b"set-cookie", value)]}
        await send(message)

    return sending


# --- what the page and the JSON show --------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    """What the store holds now, masked. ``now`` is epoch seconds."""

    now: float
    where: str
    #: the newest report of each (workspace, host), newest first
    latest: list[RunReport]
    #: the last reports of the agents that have not reported for twice their interval
    unreported: list[RunReport]
    #: the newest failed runs (at most :data:`FAILURES`)
    failures: list[RunReport]
    #: pending runs with a saved plan (``plan_digest``), waiting for ``tectum approve``
    approvals: list[RunReport]
    #: the newest runs (at most ``history``)
    history: list[RunReport]


def snapshot(store: RunStore, history: int = HISTORY, now: float | None = None) -> Snapshot:
    """Read what the page shows from ``store``. Raises :class:`DiagnosticError` when the store
    cannot be read."""
    now = time.time() if now is None else now
    latest = [masked_all(r) for r in store.latest()]
    return Snapshot(
        now=now, where=store.where, latest=latest, unreported=unreported(latest, now),
        failures=[masked_all(r) for r in store.recent(status="failed", limit=FAILURES)],
        approvals=pending_approvals(store),
        history=[masked_all(r) for r in store.recent(limit=history)])


def pending_approvals(store: RunStore, among: int = 1000) -> list[RunReport]:
    """Each agent's pending approval, newest first: its last run, when that run is pending
    with a saved plan (a ``plan_digest``: what ``tectum approve RUN_ID`` applies) and no
    approval of the same plan already waits for the agent (an ``approved`` run not yet
    applied, among the newest ``among``). An agent whose last run is anything else waits for
    nothing: its plan was applied or superseded, or its last cycle failed — ``tectum
    approve`` refuses such a run too."""
    waiting = [r for r in store.latest() if r.status == "pending" and r.plan_digest]
    if not waiting:
        return []
    approved = {(r.workspace, r.host, r.plan_digest)
                for r in store.recent(status="approved", limit=among) if r.applied_in is None}
    return [masked_all(r) for r in waiting
            if (r.workspace, r.host, r.plan_digest) not in approved]


def masked_all(report: RunReport) -> RunReport:
    """``report`` with every secret this process knows masked in every text it holds (host
    and workspace names, commit, drift addresses and errors too: a report may have been
    written by a process that did not know the secret)."""
    from tectum.masking import REDACTOR, redact_value

    if not REDACTOR:
        return report
    data = redact_value(report.to_json())
    assert isinstance(data, dict)
    return RunReport.from_json(data)


def _unreported_json(r: RunReport) -> dict[str, Any]:
    # the shape of `tectum runs list --json`
    return {"workspace": r.workspace, "host": r.host, "last_run": r.id,
            "finished_at": r.finished_at, "interval": r.interval}


def _report_json(r: RunReport) -> dict[str, Any]:
    return masked_all(r).to_json()


# --- metrics --------------------------------------------------------------------------------

def count_runs(store: RunStore) -> dict[tuple[str, str, str], int]:
    """The number of reports in ``store`` per (workspace, host, status) (one ``GROUP BY``)."""
    return store.counts()


class RunStoreCollector:
    """A ``prometheus_client`` collector that reads the run store on every scrape (nothing is
    kept between scrapes; the agents write from other processes).

    ``tectum_runs{workspace,host,status}`` is a **gauge**: it is a count of the reports
    in the store, read from it (not a counter this process increments), and it can fall — an
    approved plan moves its run from ``pending`` to ``approved``, and a store can be pruned —
    which a counter must never do (Prometheus' rule for counts exported from another system).
    Use ``delta()`` or ``deriv()`` on it, not ``rate()``. The ``last run`` gauges
    (``tectum_run_duration_seconds``, ``tectum_drifted_resources``,
    ``tectum_last_run_timestamp_seconds`` — its end, epoch seconds — and
    ``tectum_last_run_status``, 1 for the status that run had) are per (workspace, host).
    ``tectum_run_store_up`` is 0 when the store cannot be read (then nothing else is given,
    rather than a failed scrape that hides why)."""

    def __init__(self, open_store: StoreOpener) -> None:
        self.open_store = open_store

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        from tectum.masking import REDACTOR

        up = GaugeMetricFamily("tectum_run_store_up",
                               "1 when the run store could be read at this scrape, else 0")
        try:
            store = self.open_store()
            try:
                counts = count_runs(store)
                latest = [masked_all(r) for r in store.latest()]
                approvals = pending_approvals(store)
            finally:
                store.close()
        except DiagnosticError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        agent = ["workspace", "host"]
        runs = GaugeMetricFamily(
            "tectum_runs", "Run reports in the store, by workspace, host and status "
            "(a count read from the store: it falls when a pending run is approved)",
            labels=[*agent, "status"])
        for (workspace, host, state), n in sorted(counts.items()):
            runs.add_metric([REDACTOR.redact(workspace), REDACTOR.redact(host), state], n)
        yield runs
        duration = GaugeMetricFamily("tectum_run_duration_seconds",
                                     "Duration of the last run, seconds", labels=agent)
        drifted = GaugeMetricFamily(
            "tectum_drifted_resources",
            "Resources found changed outside tectum by the last run", labels=agent)
        stamp = GaugeMetricFamily("tectum_last_run_timestamp_seconds",
                                  "When the last run ended, epoch seconds", labels=agent)
        status = GaugeMetricFamily("tectum_last_run_status",
                                   "1 for the status of the last run",
                                   labels=[*agent, "status"])
        for r in latest:
            duration.add_metric([r.workspace, r.host], r.duration)
            drifted.add_metric([r.workspace, r.host], r.drifted)
            stamp.add_metric([r.workspace, r.host], r.finished_at)
            status.add_metric([r.workspace, r.host, r.status], 1)
        yield from (duration, drifted, stamp, status)
        yield GaugeMetricFamily(
            "tectum_unreported_hosts",
            "Agents that have not reported for twice their interval",
            value=len(unreported(latest)))
        yield GaugeMetricFamily("tectum_pending_approvals",
                                "Pending runs whose saved plan waits for `tectum approve`",
                                value=len(approvals))


# --- the page -------------------------------------------------------------------------------

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{{ refresh }}">
<title>tectum — {{ title }}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
h2 { font-size: 1.1em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; }
th, td { text-align: left; padding: 0.25em 0.7em 0.25em 0; vertical-align: top; }
th { font-weight: 600; color: #555; }
code, .mono { font-family: ui-monospace, monospace; font-size: 0.95em; }
.muted { color: #777; }
.status { font-weight: 600; }
.failed, .refused { color: #b00020; }
.drift-found, .pending, .late { color: #a05a00; }
.changed, .drift-corrected, .approved { color: #1b6e20; }
pre { white-space: pre-wrap; margin: 0.2em 0; }
.when, .status, .nowrap { white-space: nowrap; }
.digest { word-break: break-all; min-width: 18em; max-width: 26em; }
</style>
</head>
<body>
<h1>tectum — {{ title }}</h1>
<p class="muted">Run reports in {{ where }}, read {{ when(now) }}.
 {{ latest|length }} agent{{ "" if latest|length == 1 else "s" }},
 {{ unreported_|length }} unreported, {{ approvals|length }} pending
 approval{{ "" if approvals|length == 1 else "s" }}.
 <a href="runs.json">runs.json</a> · <a href="metrics">metrics</a></p>

<h2 id="hosts">Last run per host</h2>
{% if latest %}
<table>
<tr><th>Host</th><th>Workspace</th><th>Status</th><th>Mode</th><th>Commit</th><th>When</th>
<th>Duration</th><th>Changes</th><th>Corrective</th><th>Drifted</th><th>Pending</th></tr>
{% for r in latest %}
<tr>
<td>{{ r.host }}{% if r.id in late %} <span class="late">(unreported)</span>{% endif %}</td>
<td>{{ r.workspace }}</td>
<td class="status {{ r.status }}">{{ r.status }}</td>
<td>{{ r.mode }}</td>
<td class="mono">{{ (r.commit or "-")[:12] }}</td>
<td class="when">{{ when(r.finished_at) }}</td>
<td>{{ "%.1f"|format(r.duration) }} s</td>
<td>{{ r.changes }}</td><td>{{ r.corrective }}</td>
<td>{{ r.drifted }}</td><td>{{ r.pending }}</td>
</tr>
{% if r.drift %}
<tr><td></td><td colspan="10" class="muted">drifted:
{% for a in r.drift %}<code>{{ a }}</code>{{ ", " if not loop.last }}{% endfor %}</td></tr>
{% endif %}
{% endfor %}
</table>
{% else %}
<p>No runs reported yet.</p>
{% endif %}

<h2 id="unreported">Unreported hosts</h2>
{% if unreported_ %}
<table>
<tr><th>Host</th><th>Workspace</th><th>Last report</th><th>Interval</th><th>Last run</th></tr>
{% for r in unreported_ %}
<tr class="late"><td>{{ r.host }}</td><td>{{ r.workspace }}</td>
<td class="when">{{ when(r.finished_at) }}</td>
<td>{{ "%.0f"|format(r.interval) }} s</td><td class="mono">{{ r.id[:12] }}</td></tr>
{% endfor %}
</table>
{% else %}
<p>None: every agent reported within twice its interval.</p>
{% endif %}

<h2 id="approvals">Pending approvals</h2>
{% if approvals %}
<table>
<tr><th>Run</th><th>Host</th><th>Workspace</th><th>Commit</th><th>Since</th><th>Changes</th>
<th>Plan</th><th>To apply</th></tr>
{% for r in approvals %}
<tr><td class="mono"><a href="runs/{{ r.id }}.json">{{ r.id[:12] }}</a></td>
<td>{{ r.host }}</td><td>{{ r.workspace }}</td>
<td class="mono">{{ (r.commit or "-")[:12] }}</td><td class="when">{{ when(r.started_at) }}</td>
<td class="nowrap">{{ r.pending }} change{{ "" if r.pending == 1 else "s" }}</td>
<td class="mono digest">{{ r.plan_digest }}{% if r.plan_path %}<br>
<span class="muted">{{ r.plan_path }}</span>{% endif %}</td>
<td class="nowrap"><code>tectum approve {{ r.id }}</code></td></tr>
{% endfor %}
</table>
<p class="muted"><code>tectum approve RUN_ID</code> applies exactly the saved plan with that
digest, and nothing else.</p>
{% else %}
<p>None.</p>
{% endif %}

<h2 id="failures">Failures</h2>
{% if failures %}
<table>
<tr><th>Run</th><th>Host</th><th>Workspace</th><th>Commit</th><th>When</th><th>Messages</th></tr>
{% for r in failures %}
<tr><td class="mono"><a href="runs/{{ r.id }}.json">{{ r.id[:12] }}</a></td><td>{{ r.host }}</td>
<td>{{ r.workspace }}</td><td class="mono">{{ (r.commit or "-")[:12] }}</td>
<td class="when">{{ when(r.started_at) }}</td>
<td class="failed">
{% for e in r.errors %}<pre>{{ e }}</pre>{% else %}(no message){% endfor %}</td></tr>
{% endfor %}
</table>
{% else %}
<p>No failed runs.</p>
{% endif %}

<h2 id="history">History (last {{ history|length }} runs)</h2>
{% if history %}
<table>
<tr><th>Run</th><th>Started</th><th>Host</th><th>Workspace</th><th>Mode</th><th>Status</th>
<th>Commit</th><th>Duration</th><th>Changes</th><th>Drifted</th><th>Pending</th></tr>
{% for r in history %}
<tr><td class="mono"><a href="runs/{{ r.id }}.json">{{ r.id[:12] }}</a></td>
<td class="when">{{ when(r.started_at) }}</td><td>{{ r.host }}</td><td>{{ r.workspace }}</td>
<td>{{ r.mode }}</td><td class="status {{ r.status }}">{{ r.status }}</td>
<td class="mono">{{ (r.commit or "-")[:12] }}</td><td>{{ "%.1f"|format(r.duration) }} s</td>
<td>{{ r.changes }} ({{ r.corrective }} corrective)</td><td>{{ r.drifted }}</td>
<td>{{ r.pending }}</td></tr>
{% endfor %}
</table>
{% else %}
<p>No runs.</p>
{% endif %}
</body>
</html>
"""


def _when(epoch: float, now: float) -> str:
    stamp = datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
    ago = now - epoch
    if ago < -1:
        rel = "in the future"
    elif ago < 90:
        rel = f"{max(ago, 0):.0f} s ago"
    elif ago < 5400:
        rel = f"{ago / 60:.0f} min ago"
    elif ago < 2 * 86400:
        rel = f"{ago / 3600:.0f} h ago"
    else:
        rel = f"{ago / 86400:.0f} days ago"
    return f"{stamp} UTC ({rel})"


def render_page(snap: Snapshot, title: str) -> str:
    """The status page (HTML) of ``snap``; every value is escaped (jinja2 autoescape)."""
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(_PAGE)
    return template.render(
        title=title, where=snap.where, now=snap.now, refresh=REFRESH,
        when=lambda epoch: _when(epoch, snap.now), latest=snap.latest,
        late={r.id for r in snap.unreported}, unreported_=snap.unreported,
        approvals=snap.approvals, failures=snap.failures, history=snap.history)


# --- the application ------------------------------------------------------------------------

_HEADERS = {
    # the page has no script and loads nothing: forbid both, and framing
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def create_app(open_store: StoreOpener, *, token: str | None = None, title: str = "runs",
               history: int = HISTORY) -> Starlette:
    """The ASGI application (see the module docstring for its routes). ``open_store`` is
    called per request; ``token``: required on every route but ``/healthz`` (None: no
    check, and then only requests to a loopback ``Host`` are answered: see
    :class:`LoopbackHostOnly`). A store that cannot be read gives 503 with its diagnostic
    (``/metrics`` gives ``tectum_run_store_up 0`` instead)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse
    from starlette.routing import Route

    from tectum.masking import REDACTOR

    registry = CollectorRegistry()
    registry.register(RunStoreCollector(open_store))

    def unavailable(exc: DiagnosticError, as_json: bool) -> Response:
        text = REDACTOR.redact("; ".join(
            f"{d.summary}: {d.detail}" if d.detail else d.summary for d in exc.diagnostics))
        if as_json:
            return JSONResponse({"error": text}, status_code=503, headers=_HEADERS)
        return PlainTextResponse(f"503 The run reports cannot be read: {text}\n",
                                 status_code=503, headers=_HEADERS)

    def with_store(read: Callable[[RunStore], Response], as_json: bool) -> Response:
        try:
            store = open_store()
            try:
                return read(store)
            finally:
                store.close()
        except DiagnosticError as exc:
            return unavailable(exc, as_json)

    # sync endpoints: starlette runs them in its thread pool (the stores block)
    def page(request: Request) -> Response:
        def read(store: RunStore) -> Response:
            html = render_page(snapshot(store, history), title)
            return HTMLResponse(REDACTOR.redact(html), headers=_HEADERS)

        return with_store(read, as_json=False)

    def runs_json(request: Request) -> Response:
        query = request.query_params
        try:
            limit = int(query.get("limit", str(history)))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            return JSONResponse({"error": "limit must be a whole number from 1 to 1000"},
                                status_code=400, headers=_HEADERS)

        def read(store: RunStore) -> Response:
            runs = store.recent(workspace=query.get("workspace"), host=query.get("host"),
                                status=query.get("status"), limit=limit)
            latest = [masked_all(r) for r in store.latest()]
            return JSONResponse({
                "runs": [_report_json(masked_all(r)) for r in runs],
                "unreported": [_unreported_json(r) for r in unreported(latest)],
                "latest": [_report_json(r) for r in latest],
                "pending_approvals": [_report_json(r) for r in pending_approvals(store)],
            }, headers=_HEADERS)

        return with_store(read, as_json=True)

    def run_json(request: Request) -> Response:
        run_id = str(request.path_params["run_id"])

        def read(store: RunStore) -> Response:
            try:
                found = store.get(run_id) if run_id else None
            except DiagnosticError as exc:  # an ambiguous prefix
                detail = "; ".join(d.detail for d in exc.diagnostics)
                return JSONResponse({"error": detail}, status_code=400, headers=_HEADERS)
            if found is None:
                return JSONResponse({"error": f"no run's id starts with {run_id!r}"},
                                    status_code=404, headers=_HEADERS)
            return JSONResponse(_report_json(masked_all(found)), headers=_HEADERS)

        return with_store(read, as_json=True)

    def metrics(request: Request) -> Response:
        return PlainTextResponse(REDACTOR.redact(generate_latest(registry).decode("utf-8")),
                                 media_type=CONTENT_TYPE_LATEST,
                                 headers={"Cache-Control": "no-store"})

    def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    middleware = ([Middleware(TokenAuth, token=token)] if token
                  else [Middleware(LoopbackHostOnly)])
    return Starlette(routes=[
        Route("/", page), Route("/runs.json", runs_json),
        Route("/runs/{run_id}.json", run_json), Route("/metrics", metrics),
        Route("/healthz", healthz),
    ], middleware=middleware)


# --- the server -----------------------------------------------------------------------------

def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port`` and listening (port 0: a free one). Raises
    :class:`DiagnosticError` when the address cannot be had (in use, not this machine's)."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise DiagnosticError(Diagnostic.error(
            "Cannot listen", f"--host {host}: {exc.strerror or exc}. Give an address or name "
            "of this machine, e.g. 127.0.0.1.")) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise DiagnosticError(Diagnostic.error(
            "Cannot listen", f"{host}:{port}: {exc.strerror or exc}. Choose another --port, "
            "or stop what uses it.")) from None
    sock.set_inheritable(True)
    return sock


class _Redacting(logging.Filter):
    """Masks every secret (the token in ``?token=`` too) in the server's log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        from tectum.masking import REDACTOR

        record.msg = REDACTOR.redact(record.getMessage())
        record.args = ()
        return True


def _logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    handler.addFilter(_Redacting())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = [handler] if name != "uvicorn.error" else []
        logger.propagate = name == "uvicorn.error"
        logger.setLevel(logging.INFO)


def serve_forever(app: Starlette, sock: socket.socket,
                  ready: Callable[[], None] | None = None) -> None:
    """Serve ``app`` on ``sock`` with uvicorn until SIGINT or SIGTERM (requests under way
    finish first), then return. ``ready`` is called once a signal would stop the server
    cleanly (to say where it listens). Log lines go to stderr, masked."""
    import uvicorn

    _logging()
    config = uvicorn.Config(app, log_config=None, server_header=False, proxy_headers=False,
                            timeout_graceful_shutdown=10, lifespan="off")
    server = uvicorn.Server(config)
    # uvicorn catches SIGINT/SIGTERM while it runs and, once stopped, raises the signal again
    # under the handler that was there before: that handler is this one, so a stop by signal
    # is a clean exit (0), as `tectum agent`'s is; before uvicorn takes over it stops it too
    stop = signal.signal(signal.SIGTERM, lambda sig, frame: _stop(server))
    interrupt = signal.signal(signal.SIGINT, lambda sig, frame: _stop(server))
    try:
        if ready is not None:
            ready()
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, interrupt)


def _stop(server: Any) -> None:
    server.should_exit = True


def url_of(sock: socket.socket) -> str:
    """``http://HOST:PORT/`` of a listening socket."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"

