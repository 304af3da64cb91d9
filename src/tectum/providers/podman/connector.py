"""A connector into a running container: the host
:class:`~tectum.providers.host.connector.Connector` contract over ``podman exec``.

:class:`PodmanConnector` runs exactly the scripts :class:`~tectum.providers.host.ssh.SSHConnector`
runs on a remote host — the same batched ``stat``/``tar`` reads (every fact of a role in one
round trip), the same atomic writes, the same error texts — but each one is a ``podman exec -i
CONTAINER sh -c SCRIPT sh ARG...`` process on this machine instead of an SSH channel (Ansible's
``containers.podman.podman`` connection plugin, pyinfra's ``@podman`` connector). Arguments are
argv items all the way: no shell on this machine sees them, and in the container ``sh`` gets the
script as a constant and every value as a positional parameter.

A container that is not there or not running is *down* for the run (``unreachable``): the
engine leaves its resources out and keeps their state, as for an unreachable SSH host.
"""

from __future__ import annotations

import subprocess
import time
from typing import TYPE_CHECKING

from tectum.providers.host.connector import ConnectorError
from tectum.providers.host.ssh import HostUnreachable, SSHConnector, _Exec

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tectum.providers.podman.client import Podman

#: what ``podman exec`` says when the container cannot run a command (gone, stopped)
_NOT_RUNNING = (b"no such container", b"container state improper", b"is not running",
                b"can only create exec sessions on running containers")
#: the exit codes of a ``podman exec`` that ran nothing: 125 (podman's own error: no such
#: container), 126/127 (the command cannot be run), and 255, which podman 4.3 returns for a
#: stopped container ("can only create exec sessions on running containers")
_PODMAN_FAILED = (125, 126, 127, 255)


class PodmanConnector(SSHConnector):
    """The container named ``container`` of ``podman``, as host ``host`` (see the module
    docstring). Thread-safe; ``round_trips`` counts ``podman exec`` processes."""

    def __init__(self, host: str, container: str, podman: Podman, *,
                 command_timeout: float = 600.0, log_path: str | None = None,
                 fail_fast: bool = False, ident: str | None = None) -> None:
        super().__init__(host, container, command_timeout=command_timeout, log_path=log_path,
                         fail_fast=fail_fast)
        self.container = container
        self.podman = podman
        #: the full id of the container, once resolved by its exact name (or given: the
        #: caller just started it)
        self._ident: str | None = ident

    def __repr__(self) -> str:
        return f"PodmanConnector({self.host!r}, {self.container!r})"

    def _where(self) -> str:
        return f"container {self.container}"

    def connect(self) -> None:
        """Check that the container runs (else raise :class:`HostUnreachable`)."""
        self._exec("true", [])

    def close(self) -> None:
        """Flush the command log (there is no connection to close)."""
        super().close()

    def _exec(self, script: str, args: Sequence[str], stdin: bytes = b"",
              timeout: float | None = None) -> _Exec:
        if self.down is not None:
            # down when last asked; a container the same run started or made anew since runs
            if self._resolve() is None:
                kind, message = self.down
                raise HostUnreachable(message) if kind == "unreachable" \
                    else ConnectorError(message)
            self.down = None
        ident = self._ident or self._resolve()
        started = time.monotonic()
        if ident is None:
            self._not_running(started, ["no running container of that name"])
        assert ident is not None
        proc = self._run_in(ident, script, args, stdin, timeout)
        if proc is None:
            return _Exec(124, b"", b"", True)
        if proc.returncode in _PODMAN_FAILED and any(
                word in proc.stderr.lower() for word in _NOT_RUNNING):
            again = self._resolve()
            if again is not None and again != ident:
                proc = self._run_in(again, script, args, stdin, timeout)  # (made anew)
                if proc is None:
                    return _Exec(124, b"", b"", True)
            elif again is None:
                reason = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
                self._not_running(started, reason)
        return _Exec(proc.returncode, proc.stdout, proc.stderr, False)

    def _run_in(self, ident: str, script: str, args: Sequence[str], stdin: bytes,
                timeout: float | None) -> subprocess.CompletedProcess[bytes] | None:
        """``podman exec`` of the script in the container with the full id ``ident`` (never
        by name: podman would take a name that matches nothing as another container's id
        prefix). None when it timed out."""
        limit = timeout if timeout is not None else self.command_timeout
        argv = self.podman.argv(["exec", "-i", "--user", "root", ident,
                                 "sh", "-c", script, "sh", *args])
        self.round_trips += 1
        try:
            return subprocess.run(argv, input=stdin, capture_output=True, timeout=limit)
        except subprocess.TimeoutExpired:
            return None
        except FileNotFoundError:
            raise ConnectorError(f"podman is not installed here (no {self.podman.binary!r} "
                                 "on PATH): install it, or set [providers.podman] podman"
                                 ) from None

    def _resolve(self) -> str | None:
        """The full id of the running container named exactly :attr:`container` (one
        ``podman container inspect``), remembered; None when there is none or it is not
        running."""
        try:
            found = self.podman.inspect("container", [self.container]).get(self.container)
        except Exception:  # noqa: BLE001 - podman failing here: not reachable
            found = None
        running = found is not None and bool((found.get("State") or {}).get("Running"))
        self._ident = str(found.get("Id")) if running and found is not None else None
        return self._ident

    def _not_running(self, started: float, reason: Sequence[str]) -> None:
        message = (f"cannot reach container {self.container} (host {self.host}): it is "
                   f"not running ({'; '.join(reason) or 'podman exec failed'}; after "
                   f"{time.monotonic() - started:.1f} s)")
        if self.fail_fast:
            self.down = ("unreachable", message)
        raise HostUnreachable(message)
