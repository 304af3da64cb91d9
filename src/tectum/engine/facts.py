"""The facts a session gives its stack (``host.facts``, ``tectum.facts()``), and where they come
from, cheapest first:

1. **remembered** from the last run in ``.tectum/facts.json`` (this machine's cache, as
   Ansible's ``fact_caching = jsonfile``; facts are not state and not secret). The plan then
   reads each host's facts again in its one read round trip and, when they differ from the
   remembered ones, evaluates the stack again with the new facts and plans once more — so a
   no-op run costs no extra round trip;
2. **gathered** when the stack asks for facts of a host it has no record of: every such host
   at once (up to ``forks``), one round trip each, then the stack is evaluated again.

A host that cannot be reached gets unknown facts (its resources are left out of the plan,
which says why). Hosts outside ``--limit`` are never contacted for facts: theirs are remembered
or unknown.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tectum.config.inventory import LOCAL, Inventory
from tectum.diagnostics import Diagnostic, Diagnostics
from tectum.engine.targets import Targets

#: the cache file's format version
_FORMAT = 1


class FactsBook:
    """The facts of one session: :meth:`facts` is the stack's
    :class:`~tectum.config.facts.FactsSource`. ``path`` is the cache file; ``inventory`` says
    which address a host name has (a cached entry for another address is not used)."""

    def __init__(self, path: str, inventory: Inventory) -> None:
        self.path = path
        self.inventory = inventory
        self._lock = threading.Lock()
        self._cached = self._load()
        #: facts read in this session (gathered, or with a plan's reads); {} = unreachable
        self._fresh: dict[str | None, dict[str, Any]] = {}
        #: the facts the last evaluation was given, per host
        self.used: dict[str | None, dict[str, Any]] = {}
        #: hosts found down while gathering facts: host -> (kind, reason)
        self.down: dict[str, tuple[str, str]] = {}

    # -- the stack's source ----------------------------------------------------------------
    def facts(self, host: str | None) -> dict[str, Any] | None:
        with self._lock:
            found = self._fresh.get(host)
            if found is None:
                entry = self._cached.get(self._key(host))
                if entry is not None and entry.get("address") == self._address(host):
                    found = entry.get("facts")
            if isinstance(found, dict):
                self.used[host] = found
                return found
            return None

    def read(self, host: str | None) -> dict[str, Any] | None:
        """The facts read from ``host`` in this session ({}: unreachable), else None."""
        with self._lock:
            return self._fresh.get(host)

    def fresh(self, host: str | None) -> bool:
        """Whether ``host``'s facts were read in this session (or found unreachable)."""
        with self._lock:
            return host in self._fresh

    def record(self, host: str | None, facts: dict[str, Any]) -> bool:
        """Keep ``facts`` read from ``host`` now ({}: unreachable). True when the last
        evaluation was given other facts for it (it must be evaluated again)."""
        with self._lock:
            self._fresh[host] = facts
            return host in self.used and self.used[host] != facts

    def begin_evaluation(self) -> None:
        with self._lock:
            self.used = {}

    # -- the cache file --------------------------------------------------------------------
    def _key(self, host: str | None) -> str:
        return LOCAL if host is None else host

    def _address(self, host: str | None) -> str:
        entry = self.inventory.hosts.get(host) if host is not None else None
        if entry is None or entry.connection.connector == "local":
            return LOCAL
        return f"{entry.connection.address}:{entry.connection.port}"

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except (OSError, ValueError):
            return {}  # no cache, or a damaged one: facts are gathered again
        hosts = doc.get("hosts") if isinstance(doc, dict) else None
        if not isinstance(hosts, dict) or doc.get("format") != _FORMAT:
            return {}
        return {k: v for k, v in hosts.items() if isinstance(v, dict)}

    def save(self) -> None:
        """Write the facts read in this session into the cache (atomically; a failure to
        write is ignored: the cache only saves round trips)."""
        with self._lock:
            fresh = {self._key(h): {"address": self._address(h), "facts": f}
                     for h, f in self._fresh.items() if f}
            if not fresh:
                return
            hosts = {**self._cached, **fresh}
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".facts-", dir=directory)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"format": _FORMAT, "hosts": hosts}, fh, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError:
            return


def gather(book: FactsBook, targets: Targets, hosts: Iterable[str | None], forks: int,
           in_limit: Callable[[str | None], bool]) -> Diagnostics:
    """Read the facts of ``hosts`` now, up to ``forks`` at once (one round trip each) and
    record them in ``book``; a host outside the limit (this machine is always read), or one
    that cannot be read, is recorded as unknown. Returns warnings for hosts whose facts
    failed for another reason than being unreachable (an unreachable host is reported by
    the plan)."""
    diags = Diagnostics()
    provider = targets.facts_provider()
    todo = list(dict.fromkeys(hosts))
    if provider is None:
        for host in todo:
            book.record(host, {})
        return diags

    def one(host: str | None) -> None:
        if host is not None and not in_limit(host):  # (this machine: always at hand)
            book.record(host, {})
            return
        try:
            book.record(host, provider.gather_facts(host))
        except Exception as exc:  # noqa: BLE001 - the host's facts stay unknown
            book.record(host, {})
            made = provider.made(host)
            down = provider.down(made) if made is not None else None
            if down is not None:
                book.down[host or LOCAL] = down
            else:
                diags.append(Diagnostic.warning(
                    "Cannot read facts",
                    f"The facts of {host or 'this machine'} could not be read: {exc}. Its "
                    "facts are unknown: a role that decides on them was left out there.",
                    address=f'host["{host}"]' if host else None))

    workers = max(1, min(forks, len(todo)))
    if workers == 1:
        for host in todo:
            one(host)
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="tectum-facts") as pool:
            list(pool.map(one, todo))
    return diags
