"""Connectors: how host resources reach a host.

A connector offers a few batched fact primitives (:meth:`Connector.stat_paths` reads many paths in
one pass) and a small set of mutations (atomic file write, mkdir, chmod/chown, remove, symlink,
run a command). Host resource types use only these, so the same resource code works on the local
machine (:class:`LocalConnector`, in-process file I/O and ``subprocess`` without a shell) and over
SSH. Like pyinfra's connectors, they sit behind one interface; unlike pyinfra there is no global
"current host": the connector is passed explicitly.

Every command and every mutation is recorded in :attr:`LocalConnector.log` (and appended as JSON
lines to the file named by ``TECTUM_COMMAND_LOG`` when set), so tests can assert that a no-op run
mutates nothing.
"""

from __future__ import annotations

import errno
import grp
import hashlib
import json
import os
import pwd
import shlex
import shutil
import stat
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

from tectum.masking import REDACTOR, redact_value
from tectum.process import pid_alive


class CommandResult(NamedTuple):
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def error_text(self, limit: int = 600) -> str:
        out = (self.stderr or self.stdout).decode("utf-8", "replace").strip()
        return out[-limit:] if len(out) > limit else out


class PathFact(NamedTuple):
    """What is at a path (``lstat``; links are not followed).

    ``kind`` is ``file``, ``directory``, ``symlink`` or ``other``; ``mode`` is four octal digits
    (``"0644"``); ``owner``/``group`` are names (the id as digits when it has none), ``uid``/``gid``
    the numeric ids; ``sha256``/``content`` are filled for regular files when content was asked
    for.
    """

    kind: str
    mode: str
    owner: str
    group: str
    size: int
    sha256: str | None = None
    content: bytes | None = None
    target: str | None = None
    uid: int | None = None
    gid: int | None = None


class FactRequest(NamedTuple):
    """Facts a resource type's :meth:`~tectum.providers.base.ResourceType.read` will ask for, so
    a connector can fetch every fact of a host in one round trip (:meth:`Connector.prefetch`):
    ``paths`` to stat, ``content`` paths whose regular files' bytes are read too, and read-only
    ``commands`` (argv tuples run without input, environment or working directory)."""

    paths: tuple[str, ...] = ()
    content: tuple[str, ...] = ()
    commands: tuple[tuple[str, ...], ...] = ()


def merge_facts(requests: Sequence[FactRequest]) -> FactRequest:
    """One request for all of ``requests`` (duplicates dropped, order kept)."""
    return FactRequest(
        tuple(dict.fromkeys(p for r in requests for p in r.paths)),
        tuple(dict.fromkeys(p for r in requests for p in r.content)),
        tuple(dict.fromkeys(c for r in requests for c in r.commands)))


class Connector(Protocol):
    host: str

    def prefetch(self, request: FactRequest) -> None:
        """Fetch ``request``'s facts now, in as few round trips as the transport allows; later
        reads asking exactly for them are answered from memory until :meth:`forget_facts`."""
        ...

    def forget_facts(self) -> None: ...

    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        mutating: bool = True,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
    ) -> CommandResult: ...

    def stat_paths(
        self, paths: Sequence[str], *, content: bool = False
    ) -> list[PathFact | None]: ...

    def write_file(
        self, path: str, data: bytes, *, mode: str | None, owner: str | None, group: str | None,
        validate: str | None = None,
    ) -> None:
        """Replace ``path`` atomically with ``data``: a temporary file in the same directory,
        given its mode and ownership, then renamed over ``path``. ``mode`` None keeps the
        mode of the regular file replaced (else 0644); ``owner``/``group`` None keep the
        replaced file's owner/group (else the writer's). ``validate`` (Ansible's
        ``validate``, see :func:`validate_words`) runs on the staged file before the rename;
        when it exits non-zero the staged file is removed, ``path`` is left as it was and
        :class:`ValidationFailed` is raised. Raises :class:`ConnectorError` otherwise."""
        ...

    def set_attrs(
        self, path: str, *, mode: str | None, owner: str | None, group: str | None
    ) -> None: ...

    def make_dir(
        self, path: str, *, mode: str | None, owner: str | None, group: str | None
    ) -> None:
        """Create the directory ``path`` with its missing parents (as ``mkdir -p``: 0755
        less the umask, owned by the user commands run as); ``mode``/``owner``/``group`` apply
        to ``path`` only. Raises :class:`ConnectorError` when something is there already."""
        ...

    def make_symlink(self, path: str, target: str) -> None: ...

    def remove(self, path: str, *, recursive: bool = False) -> None:
        """Remove ``path`` (a directory only when ``recursive`` or empty); nothing there is
        no error. Entries another process removes meanwhile are no error either; the removal
        is checked afterwards, and :class:`ConnectorError` is raised when ``path`` is still
        there."""
        ...

    def exists(self, path: str) -> bool: ...

    def sweep_temp(self, paths: Sequence[str]) -> list[str]: ...


class ConnectorError(Exception):
    """A mutation could not be carried out; the message says what and where."""


class ValidationFailed(ConnectorError):
    """A file's ``validate`` command refused the staged file; the target was left as it was."""


#: lines of a failed validate command's output kept in the error (its last ones)
VALIDATE_LINES = 12
#: seconds a validate command may run on the local machine (over SSH the connector's
#: ``command_timeout`` bounds the whole write); then it is killed and the write refused
VALIDATE_TIMEOUT = 600.0


def validate_words(command: str) -> list[list[str]]:
    """Split a ``validate`` command (as Ansible's ``validate: nginx -t -c %s``) into words
    with :func:`shlex.split` (no shell: pipes, ``;`` and ``$VAR`` are not interpreted; write
    ``sh -c '...' sh %s`` for a shell), each word given as the literal pieces between its
    ``%s`` placeholders (where the staged file's path goes, whole, as part of that one word);
    ``%%`` is a literal ``%``. Raises ``ValueError`` for a command that cannot be split, is
    empty, or has no ``%s``. Unlike Ansible, the path is put in after the split, so a path
    with spaces or quotes stays one argument."""
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise ValueError(f"cannot be split into words ({exc}: unbalanced quotes?)") from None
    if not words:
        raise ValueError("must not be empty")
    out: list[list[str]] = []
    placeholders = 0
    for word in words:
        pieces = [""]
        i = 0
        while i < len(word):
            if word.startswith("%%", i):
                pieces[-1] += "%"
                i += 2
            elif word.startswith("%s", i):
                pieces.append("")
                placeholders += 1
                i += 2
            else:
                pieces[-1] += word[i]
                i += 1
        out.append(pieces)
    if not placeholders:
        raise ValueError("must contain %s, where the path of the staged file goes (e.g. "
                         "\"nginx -t -c %s\")")
    return out


def validate_argv(command: str, staged: str) -> list[str]:
    """The argv of ``command`` (see :func:`validate_words`) run on the file ``staged``."""
    return [staged.join(pieces) for pieces in validate_words(command)]


def validation_error(path: str, command: str, returncode: int, output: bytes) -> ValidationFailed:
    """The error of a ``validate`` command that refused the staged file for ``path``: the
    exit code and the last :data:`VALIDATE_LINES` lines of its output."""
    lines = [line.rstrip() for line in output.decode("utf-8", "replace").splitlines()
             if line.strip()]
    what = "exit code 127: command not found" if returncode == 127 and not lines \
        else f"exit code {returncode}"
    text = f"cannot write {path}: the validate command `{command}` refused the new " \
        f"content ({what}); {path} was not changed"
    if lines:
        shown = lines[-VALIDATE_LINES:]
        more = f"(last {len(shown)} of {len(lines)} lines)" if len(lines) > len(shown) else ""
        text += ". Its output" + (f" {more}" if more else "") + ":\n" + \
            "\n".join("  " + line[-300:] for line in shown)
    return ValidationFailed(text)


def secret_script(argv: Sequence[str], host: str) -> str | None:
    """For a command that carries a secret (:mod:`tectum.masking`): the shell script to run
    from a private file instead of the command line — the text of ``sh -c TEXT``. None when
    ``argv`` holds no secret. Raises :class:`ConnectorError` for a secret in any other
    argument: the process list of ``host`` would show it."""
    if not REDACTOR or not any(REDACTOR.holds_secret(a) for a in argv):
        return None
    if len(argv) == 3 and argv[0] in ("/bin/sh", "sh") and argv[1] == "-c" \
            and not REDACTOR.holds_secret(argv[0] + argv[1]):
        return argv[2]
    raise ConnectorError(
        f"a secret is in an argument of the command {argv[0]!r} on {host}: every user of the "
        "host could read it in the process list. Pass it in environment={...}, or write the "
        "command as a string (run by sh from a private file)")


class _Names:
    """uid/gid ↔ name, cached for one run."""

    def __init__(self) -> None:
        self._users: dict[int, str] = {}
        self._groups: dict[int, str] = {}

    def user(self, uid: int) -> str:
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self._users[uid] = name
        return name

    def group(self, gid: int) -> str:
        name = self._groups.get(gid)
        if name is None:
            try:
                name = grp.getgrgid(gid).gr_name
            except KeyError:
                name = str(gid)
            self._groups[gid] = name
        return name


def _uid(owner: str) -> int:
    if owner.isdigit():
        return int(owner)
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise ConnectorError(f"user {owner!r} does not exist on this host") from None


def _gid(group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConnectorError(f"group {group!r} does not exist on this host") from None


class LocalConnector:
    """The local machine, reached in-process. Thread-safe."""

    host = "local"

    def __init__(self, log_path: str | None = None) -> None:
        self.log: list[dict[str, object]] = []
        self._lock = threading.Lock()
        self._names = _Names()
        self._log_path = log_path if log_path is not None else os.environ.get("TECTUM_COMMAND_LOG")

    # -- recording -----------------------------------------------------------------------
    def _record(self, op: str, mutating: bool, **fields: object) -> None:
        if REDACTOR:
            fields = {k: redact_value(v) for k, v in fields.items()}
        entry: dict[str, object] = {"op": op, "mutating": mutating, "host": self.host,
                                    **fields}
        with self._lock:
            self.log.append(entry)

    def prefetch(self, request: FactRequest) -> None:
        """Nothing to gain locally: every read is already in-process or one local command."""

    def forget_facts(self) -> None:
        """No fact cache locally."""

    def close(self) -> None:
        """Flush the command log to ``TECTUM_COMMAND_LOG`` (if set)."""
        if self._log_path and self.log:
            with open(self._log_path, "a", encoding="utf-8") as fh:
                for entry in self.log:
                    fh.write(json.dumps(entry) + "\n")
        self.log = []

    # -- commands ------------------------------------------------------------------------
    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        mutating: bool = True,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        argv = tuple(argv)
        self._record("run", mutating, argv=list(argv))
        return self._execute(argv, input=input, env=env, cwd=cwd, timeout=timeout)

    def _execute(self, argv: tuple[str, ...], *, input: bytes | None = None,
                 env: Mapping[str, str] | None = None, cwd: str | None = None,
                 timeout: float | None = None) -> CommandResult:
        """:meth:`run` without the log entry (a step of a logged mutation)."""
        import subprocess

        # tectum's own settings (TECTUM_VAR_*, TECTUM_AGE_KEY...) and anything holding a secret
        # stay out of the commands it runs
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith("TECTUM_") and not REDACTOR.holds_secret(v)}
        full_env.update({"LC_ALL": "C", "LANG": "C"})
        if env:
            full_env.update(env)
        script = secret_script(argv, self.host)
        fd = -1
        run_argv = argv
        if script is not None:
            # the script text holds a secret: sh reads it from a private file that is already
            # deleted (an open descriptor), never from its command line
            import tempfile

            private = tempfile.mkdtemp(prefix="tectum-")
            path = os.path.join(private, "script")
            try:
                with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
                    fh.write(script.encode("utf-8", "surrogateescape"))
                fd = os.open(path, os.O_RDONLY)
            finally:
                shutil.rmtree(private, ignore_errors=True)
            run_argv = ("/bin/sh", f"/dev/fd/{fd}")
        try:
            proc = subprocess.run(
                run_argv,
                input=input,
                capture_output=True,
                env=full_env,
                cwd=cwd,
                timeout=timeout,
                stdin=None if input is not None else subprocess.DEVNULL,
                check=False,
                pass_fds=(fd,) if fd >= 0 else (),
            )
        except FileNotFoundError:
            return CommandResult(argv, 127, b"", f"{argv[0]}: command not found".encode())
        except subprocess.TimeoutExpired:
            return CommandResult(argv, 124, b"", f"timed out after {timeout} s".encode())
        finally:
            if fd >= 0:
                os.close(fd)
        return CommandResult(argv, proc.returncode, proc.stdout, proc.stderr)

    # -- facts ---------------------------------------------------------------------------
    def stat_paths(self, paths: Sequence[str], *, content: bool = False) -> list[PathFact | None]:
        out: list[PathFact | None] = []
        names = self._names
        for path in paths:
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                out.append(None)
                continue
            fmt = stat.S_IFMT(st.st_mode)
            mode = format(stat.S_IMODE(st.st_mode), "04o")
            fact = PathFact("other", mode, names.user(st.st_uid), names.group(st.st_gid),
                            st.st_size, uid=st.st_uid, gid=st.st_gid)
            if fmt == stat.S_IFREG:
                data = sha = None
                if content:
                    with open(path, "rb") as fh:
                        data = fh.read()
                    sha = hashlib.sha256(data).hexdigest()
                fact = fact._replace(kind="file", sha256=sha, content=data)
            elif fmt == stat.S_IFDIR:
                fact = fact._replace(kind="directory")
            elif fmt == stat.S_IFLNK:
                fact = fact._replace(kind="symlink", target=os.readlink(path))
            out.append(fact)
        return out

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def sweep_temp(self, paths: Sequence[str]) -> list[str]:
        """Remove the temporary files that atomic writes of ``paths`` left behind when their
        process was killed (``.NAME.tectum-PID-…`` / ``NAME.tectum-PID-…`` whose PID no longer
        runs). Returns what was removed. One directory listing per directory."""
        wanted: dict[str, set[str]] = {}
        for path in paths:
            wanted.setdefault(os.path.dirname(path) or ".", set()).add(os.path.basename(path))
        removed: list[str] = []
        for directory, names in wanted.items():
            try:
                entries = os.listdir(directory)
            except OSError:
                continue
            for entry in entries:
                # the last ".tectum-": a file may be named tectum-something itself
                stem, sep, rest = entry.rpartition(".tectum-")
                if not sep or stem.removeprefix(".") not in names:
                    continue
                pid = rest.split("-", 1)[0]
                if pid.isdigit() and not pid_alive(int(pid)):
                    full = os.path.join(directory, entry)
                    self._record("remove", True, path=full, recursive=False)
                    try:
                        os.unlink(full)
                        removed.append(full)
                    except OSError:
                        pass
        return removed

    # -- mutations -----------------------------------------------------------------------
    def write_file(
        self, path: str, data: bytes, *, mode: str | None, owner: str | None, group: str | None,
        validate: str | None = None,
    ) -> None:
        """See :meth:`Connector.write_file`. The temporary file is ``.NAME.tectum-PID-TID``
        beside ``path``; ``validate`` runs as :meth:`run` runs commands."""
        self._record("write", True, path=path, bytes=len(data))
        directory = os.path.dirname(path) or "."
        tmp = os.path.join(directory, f".{os.path.basename(path)}.tectum-{os.getpid()}-"
                           f"{threading.get_ident()}")
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except (FileNotFoundError, NotADirectoryError):
                raise ConnectorError(
                    f"cannot write {path}: directory {directory} does not exist") from None
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                uid = _uid(owner) if owner else -1
                gid = _gid(group) if group else -1
                # what the configuration leaves alone is kept from the regular file replaced:
                # its mode (else the usual 0644), its owner and its group (else the writer's)
                try:
                    cur: os.stat_result | None = os.lstat(path)
                except (FileNotFoundError, NotADirectoryError):
                    cur = None
                if cur is not None and not stat.S_ISREG(cur.st_mode):
                    cur = None
                if cur is not None:
                    uid = cur.st_uid if uid == -1 else uid
                    gid = cur.st_gid if gid == -1 else gid
                file_mode = int(mode, 8) if mode is not None else \
                    stat.S_IMODE(cur.st_mode) if cur is not None else 0o644
                if (uid, gid) != (-1, -1):
                    os.fchown(fd, uid, gid)  # before the mode: chown clears set-id bits
                os.fchmod(fd, file_mode)
            finally:
                os.close(fd)
            if validate is not None:  # a step of this write: no log entry of its own
                result = self._execute(tuple(validate_argv(validate, tmp)),
                                       timeout=VALIDATE_TIMEOUT)
                if not result.ok:
                    raise validation_error(path, validate, result.returncode,
                                           result.stdout + result.stderr)
            os.replace(tmp, path)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise ConnectorError(f"cannot write {path}: {exc.strerror or exc}") from None
        except ConnectorError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def set_attrs(
        self, path: str, *, mode: str | None, owner: str | None, group: str | None
    ) -> None:
        self._record("set_attrs", True, path=path, mode=mode, owner=owner, group=group)
        try:
            if owner is not None or group is not None:
                os.chown(path, _uid(owner) if owner else -1, _gid(group) if group else -1,
                         follow_symlinks=False)
            if mode is not None:
                os.chmod(path, int(mode, 8))
        except OSError as exc:
            raise ConnectorError(f"cannot set attributes of {path}: {exc.strerror}") from None

    def make_dir(
        self, path: str, *, mode: str | None, owner: str | None, group: str | None
    ) -> None:
        self._record("mkdir", True, path=path)
        try:
            parent = os.path.dirname(path)
            if not os.path.isdir(parent) and not os.path.lexists(path):
                try:  # the missing parents, as mkdir -p makes them (0755, less the umask)
                    os.makedirs(parent, 0o755, exist_ok=True)
                except OSError as exc:
                    why = "one of them is there and is not a directory" if exc.errno in (
                        errno.EEXIST, errno.ENOTDIR) else exc.strerror
                    raise ConnectorError(
                        f"cannot create directory {path}: cannot create its parent directories "
                        f"({why})") from None
            os.mkdir(path, int(mode, 8) if mode else 0o755)
            if mode:
                os.chmod(path, int(mode, 8))  # not subject to umask
            if owner is not None or group is not None:
                os.chown(path, _uid(owner) if owner else -1, _gid(group) if group else -1)
        except FileExistsError:
            raise ConnectorError(f"cannot create directory {path}: something is there") from None
        except FileNotFoundError:
            raise ConnectorError(
                f"cannot create directory {path}: its parent does not exist"
            ) from None
        except OSError as exc:
            raise ConnectorError(f"cannot create directory {path}: {exc.strerror}") from None

    def make_symlink(self, path: str, target: str) -> None:
        self._record("symlink", True, path=path, target=target)
        tmp = f"{path}.tectum-{os.getpid()}-{threading.get_ident()}"
        try:
            os.symlink(target, tmp)
            os.replace(tmp, path)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise ConnectorError(f"cannot create symlink {path}: {exc.strerror}") from None

    def remove(self, path: str, *, recursive: bool = False) -> None:
        """See :meth:`Connector.remove`. A recursive delete goes on past entries that vanish
        under it (as ``rm -rf``: another worker may be deleting the files of the directory at
        the same time) and past other errors, then checks that ``path`` is gone."""
        self._record("remove", True, path=path, recursive=recursive)
        errors: list[OSError] = []

        def note(_func: object, _path: str, exc: BaseException) -> None:
            if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
                errors.append(exc)

        try:
            if os.path.isdir(path) and not os.path.islink(path):
                if recursive:
                    if sys.version_info >= (3, 12):
                        shutil.rmtree(path, onexc=note)
                    else:
                        shutil.rmtree(path, onerror=lambda f, p, info: note(f, p, info[1]))
                else:
                    os.rmdir(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ConnectorError(f"cannot remove {path}: {exc.strerror}") from None
        if os.path.lexists(path):
            why = errors[0].strerror if errors else "was something added to it meanwhile?"
            raise ConnectorError(f"cannot remove {path}: it is still there after the delete "
                                 f"({why})")
