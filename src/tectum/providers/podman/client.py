"""The podman command line, as the podman provider calls it.

Every call is an argv list (never a shell line): names, labels, commands and environment values
reach podman as single arguments, so no payload in them is interpreted. Global options come from
the provider's settings (``--root``, ``--runroot``, ``--runtime``, ``--cgroup-manager``,
``--storage-driver``, ``--tmpdir``), so tests and users can keep tectum's images apart from
others.

Every call is recorded in :attr:`Podman.log` (and appended as JSON lines to the file named by
``TECTUM_COMMAND_LOG``) with whether it changed anything, as the host connectors record theirs:
a no-op run must show no mutating call.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from tectum.masking import REDACTOR, redact_value


class PodmanError(Exception):
    """A podman call failed; the message says what failed and, where it can, what to change."""


#: podman's own words for a container runtime that cannot start anything, and the hint
_RUNTIME_TROUBLE = ("OCI runtime", "crun:", "runc:", "cgroup", "setrlimit", "RLIMIT")


def parse_ulimit(name: str, value: Any) -> str:
    """``value`` (``"SOFT:HARD"``, ``"N"`` or an int) as podman's ``--ulimit NAME=SOFT:HARD``
    text. Raises :class:`ValueError` for anything else."""
    text = str(value) if not isinstance(value, bool) else ""
    parts = text.split(":")
    if not name.replace("_", "").isalpha() or not 1 <= len(parts) <= 2 \
            or not all(p == "-1" or p.isdigit() for p in parts):
        raise ValueError(f"ulimit {name}={value!r}: expected SOFT:HARD or N (numbers, -1 for "
                         "unlimited), e.g. nofile=\"1024:20000\"")
    return f"{name}={parts[0]}:{parts[-1]}"


class Podman:
    """One podman installation and storage (``root``/``runroot``), called through its CLI.
    Thread-safe. ``ulimits`` are the defaults given to every container the provider starts
    (``{"nofile": "1024:20000"}``): on machines where podman cannot raise rlimits itself they
    must be set explicitly."""

    def __init__(self, binary: str = "podman", *, root: str | None = None,
                 runroot: str | None = None, runtime: str | None = None,
                 cgroup_manager: str | None = None, storage_driver: str | None = None,
                 tmpdir: str | None = None, ulimits: Mapping[str, Any] | None = None,
                 log_path: str | None = None, timeout: float = 600.0) -> None:
        self.binary = binary
        self.root = root
        self.runroot = runroot
        self.runtime = runtime
        self.cgroup_manager = cgroup_manager
        self.storage_driver = storage_driver
        self.tmpdir = tmpdir
        self.ulimits = {k: parse_ulimit(k, v) for k, v in (ulimits or {}).items()}
        self.timeout = timeout
        #: the project whose git revision images built are labelled with (the provider sets it)
        self.project_root: str | None = None
        #: podman calls made (each one process)
        self.calls = 0
        self.log: list[dict[str, object]] = []
        self._log_path = log_path if log_path is not None else os.environ.get("TECTUM_COMMAND_LOG")
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Podman({self.binary!r}, root={self.root!r})"

    # -- calls ---------------------------------------------------------------------------
    def global_args(self) -> list[str]:
        """The global options every call carries (storage, runtime, cgroup manager)."""
        out: list[str] = []
        for flag, value in (("--root", self.root), ("--runroot", self.runroot),
                            ("--runtime", self.runtime), ("--cgroup-manager", self.cgroup_manager),
                            ("--storage-driver", self.storage_driver),
                            ("--tmpdir", self.tmpdir)):
            if value:
                out += [flag, value]
        return out

    def argv(self, args: Sequence[str]) -> list[str]:
        return [self.binary, *self.global_args(), *args]

    def ulimit_args(self, ulimits: Mapping[str, Any] | None = None) -> list[str]:
        """``--ulimit`` options: the provider's defaults, overridden by ``ulimits``."""
        merged = dict(self.ulimits)
        for name, value in (ulimits or {}).items():
            merged[name] = parse_ulimit(name, value)
        return [f"--ulimit={v}" for _, v in sorted(merged.items())]

    def run(self, args: Sequence[str], *, input: bytes | None = None, check: bool = True,
            mutating: bool = True, timeout: float | None = None,
            what: str | None = None,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run ``podman ARGS`` and return the finished process. With ``check`` a non-zero exit
        raises :class:`PodmanError` naming ``what`` (else the subcommand) and podman's own
        message. A missing binary or a timeout always raises. ``env`` is added to podman's
        environment (values ``--env NAME`` takes from there: never on a command line, never
        on disk)."""
        argv = self.argv(args)
        self._record(list(args), mutating)
        try:
            proc = subprocess.run(argv, input=input, capture_output=True,
                                  env={**os.environ, **env} if env else None,
                                  timeout=timeout or self.timeout,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except FileNotFoundError:
            raise PodmanError(
                f"podman is not installed here (no {self.binary!r} on PATH): install it "
                "(apt-get install podman runc), or set [providers.podman] podman = "
                "\"/path/to/podman\"") from None
        except subprocess.TimeoutExpired:
            raise PodmanError(f"{what or 'podman ' + args[0]} did not finish within "
                              f"{timeout or self.timeout:g} s") from None
        finally:
            with self._lock:
                self.calls += 1
        if check and proc.returncode != 0:
            raise PodmanError(self.failure(proc, what or f"podman {args[0]}"))
        return proc

    def failure(self, proc: subprocess.CompletedProcess[bytes], what: str) -> str:
        """The message of a failed call: podman's last error lines, and for a runtime that
        cannot start containers, the settings to change."""
        text = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()
        lines = [ln for ln in text.splitlines() if ln.strip()]
        detail = "\n".join(lines[-6:]) or f"exit code {proc.returncode}"
        if REDACTOR:
            detail = str(redact_value(detail))
        out = f"{what} failed: {detail}"
        if any(word in text for word in _RUNTIME_TROUBLE):
            out += ("\n(the container runtime could not start it: set [providers.podman] "
                    "runtime = \"runc\" (crun fails on hybrid cgroups), cgroup_manager = "
                    "\"cgroupfs\" without systemd, and explicit ulimits = {nofile = "
                    "\"1024:20000\", nproc = \"4096:4096\"} where rlimits cannot be raised)")
        return out

    def json(self, args: Sequence[str], *, what: str | None = None) -> Any:
        """``podman ARGS`` (read-only) parsed as JSON; an empty output is an empty list."""
        proc = self.run(args, mutating=False, what=what)
        text = proc.stdout.decode("utf-8", "replace").strip()
        if not text:
            return []
        try:
            return json.loads(text)
        except ValueError as exc:
            raise PodmanError(f"{what or 'podman ' + args[0]} printed no JSON: {exc}") from None

    def inspect(self, kind: str, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``podman KIND inspect`` of every name at once (``image``, ``container``,
        ``volume``): the found ones by the name asked. Names that do not exist are left out
        (podman exits 125 for them but still prints the others)."""
        if not names:
            return {}
        proc = self.run([kind, "inspect", "--format", "json", *names], check=False,
                        mutating=False)
        text = proc.stdout.decode("utf-8", "replace").strip()
        try:
            found = json.loads(text) if text else []
        except ValueError:
            found = []
        if proc.returncode != 0 and not _only_unknown(proc.stderr):
            # (not "no such ...": podman itself failed — a runtime it cannot use, storage)
            raise PodmanError(self.failure(proc, f"podman {kind} inspect"))
        if not isinstance(found, list):
            return {}
        out: dict[str, dict[str, Any]] = {}
        for name in names:
            for item in found:
                if _matches(kind, item, name):
                    out[name] = item
                    break
        return out

    # -- recording -----------------------------------------------------------------------
    def _record(self, args: list[str], mutating: bool) -> None:
        shown: object = args
        if REDACTOR:
            shown = redact_value(args)
        entry: dict[str, object] = {"op": "podman", "mutating": mutating, "argv": shown}
        with self._lock:
            self.log.append(entry)

    def close(self) -> None:
        """Flush the command log to ``TECTUM_COMMAND_LOG`` (if set)."""
        with self._lock:
            log, self.log = self.log, []
        if self._log_path and log:
            with open(self._log_path, "a", encoding="utf-8") as fh:
                for entry in log:
                    fh.write(json.dumps(entry) + "\n")


#: what podman says of a name that is not there (anything else on stderr is a failure)
_UNKNOWN_WORDS = ("no such", "not known", "no container with name or id",
                  "failed to find image", "unable to find")


def _only_unknown(stderr: bytes) -> bool:
    """Whether every error line of an inspect only says a name is not there."""
    lines = [ln.strip().lower() for ln in stderr.decode("utf-8", "replace").splitlines()
             if ln.strip()]
    errors = [ln for ln in lines if not ln.startswith("time=")]
    return all(any(w in ln for w in _UNKNOWN_WORDS) for ln in errors)


def _matches(kind: str, item: Any, name: str) -> bool:
    if not isinstance(item, dict):
        return False
    ident = str(item.get("Id") or item.get("ID") or "")
    if kind == "container":
        # a name, or a whole id: never an id prefix (libpod takes "db" for a container whose
        # id starts with db when none is named so)
        return str(item.get("Name", "")).lstrip("/") == name or (bool(ident) and ident == name)
    if ident and (ident == name or ident.startswith(name.removeprefix("sha256:"))):
        return True
    if kind == "volume":
        return item.get("Name") == name
    tags = [str(t) for t in item.get("RepoTags") or []]
    full = name if "/" in name else f"localhost/{name}"
    with_tag = full if ":" in full.rsplit("/", 1)[-1] else f"{full}:latest"
    return name in tags or with_tag in tags
