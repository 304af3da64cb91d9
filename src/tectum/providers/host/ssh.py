"""The SSH connector: one host reached over one reused SSH connection (asyncssh).

:class:`SSHConnector` implements the same :class:`~tectum.providers.host.connector.Connector`
contract as :class:`~tectum.providers.host.connector.LocalConnector` — the same facts, the same
log entries, the same error texts — so every host resource type works unchanged on a remote host.

How it works:

* **One connection per host**, opened on first use and reused for every call (one SSH channel per
  call, at most :data:`MAX_SESSIONS` at a time, below OpenSSH's ``MaxSessions``). asyncssh runs on
  one event loop in a private daemon thread shared by all connectors; the public methods are
  synchronous and thread-safe. A connection that dropped is opened again by the next call.
* **A slow host is not an unreachable host.** Liveness comes from SSH keepalives (asyncssh's
  ``keepalive_interval`` / ``keepalive_count_max``, OpenSSH's ``ServerAliveInterval`` /
  ``ServerAliveCountMax``): after ``keepalive_interval`` seconds without a byte from the host a
  keepalive is sent, and the connection is given up only when ``keepalive_count_max + 1`` of
  them in a row go unanswered (or the TCP connection drops). A host that answers them is alive
  however slow its commands are: opening a channel waits as long as the command's own timeout
  allows (sshd refusing one for want of a free session slot is retried with backoff), and never
  closes the connection under the commands in flight on it. ``connect_timeout`` bounds one
  connection attempt (TCP, SSH handshake and login), not a command. An attempt that reached the
  host but did not finish in time (a loaded or paused sshd), or was cut during the handshake, is
  retried ``connect_retries`` times with exponential backoff (1 s, 2 s, 4 s ..., at most 10 s,
  jittered; pyinfra's ``connect_retries``, OpenSSH's ``ConnectionAttempts``); an attempt that
  got no TCP answer at all in ``connect_timeout``, was refused or has no route is final — a live
  host's kernel answers a TCP connection at once, however loaded it is. Such a host raises
  :class:`HostUnreachable`; every call waiting for the same attempt gets its failure rather
  than trying again.
* **Host keys are verified** against ``known_hosts`` (``~/.ssh/known_hosts`` by default). An
  unknown key is refused (:class:`HostKeyUnknown`) unless ``trust_unknown`` (trust on first use,
  for this connector's lifetime only: nothing is written); a key that differs from the recorded
  one is always refused (:class:`HostKeyChanged`).
* **No shell interpretation of data.** Every remote call is ``sh -c SCRIPT sh ARG...`` where the
  script is a constant of this module and every argument (paths, contents' metadata, argv) is a
  positional parameter quoted with :func:`shlex.quote`; file contents and path lists travel on
  stdin. The one text a script evaluates is a file's ``validate`` command, built from words
  quoted with :func:`shlex.quote` and the staged path as a variable: nothing else expands.
  The target needs a POSIX ``sh``, GNU coreutils, findutils (``xargs``) and GNU tar
  (>= 1.29) — a Debian ``minbase`` has all of them.
* **One round trip per operation**: :meth:`SSHConnector.stat_paths` reads all paths with one
  remote script (one ``stat`` over ``xargs -0`` for the metadata, one ``tar`` stream for the
  contents), every mutation is one script. :attr:`SSHConnector.round_trips` counts them.
* **become** wraps every call in ``sudo -S -p '' --``. The password is written on stdin before
  anything else, followed by a random marker line; a preamble run by sudo skips the password line
  if sudo did not read it (NOPASSWD, or already root) and announces the marker on stderr, so the
  command's own stdin starts exactly after the marker. The password is never part of a command
  line, of :attr:`SSHConnector.log` or of an error message.
* **Atomic writes survive a dying client**: the host checks that the temporary file has every
  byte before it renames it, so a client killed mid-transfer leaves the old file (and the host
  removes the temporary one). Temporary names carry the PID of the writing shell on the host,
  so :meth:`SSHConnector.sweep_temp` can tell an orphan from a write in progress.
* :meth:`SSHConnector.run` uses coreutils ``timeout`` on the host (TERM, KILL 5 s later, to the
  command's whole process group); with ``timeout=None`` the connector's ``command_timeout``
  applies. The user's login shell must be POSIX-compatible (sh, dash, bash, zsh, ksh): it reads
  the quoted command line.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import os
import random
import re
import secrets
import shlex
import stat
import tarfile
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import asyncssh

from tectum.masking import REDACTOR, redact_value
from tectum.providers.host.connector import (
    CommandResult,
    ConnectorError,
    FactRequest,
    PathFact,
    secret_script,
    validate_words,
    validation_error,
)

__all__ = [
    "AuthenticationFailed",
    "BecomeFailed",
    "HostKeyChanged",
    "HostKeyError",
    "HostKeyUnknown",
    "HostUnreachable",
    "SSHConnector",
]

#: SSH channels open at once on one connection (OpenSSH's ``MaxSessions`` defaults to 10, and
#: sshd frees a slot a little after the channel closed; a refused open is retried).
MAX_SESSIONS = 6
#: grace (s) between TERM and KILL when a command's ``timeout`` expires on the host
_KILL_AFTER = 5
#: bytes of arguments one write_files call puts on a command line (Linux's ARG_MAX is 2 MiB
#: at least, one argument at most 128 KiB); a larger batch is split
_ARGS_BUDGET = 256 * 1024
#: extra seconds the client waits beyond a command's timeout before it gives up on the channel
_BACKSTOP = 15.0
#: backoff between connection attempts: the first delay and the cap (s); each delay is jittered
#: down to half, so hosts that failed together do not retry together
_RETRY_FIRST, _RETRY_CAP = 1.0, 10.0
#: longest pause (s) between two tries to open a channel that sshd refused for lack of a slot
_SESSION_RETRY_CAP = 1.0

_T = TypeVar("_T")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FAIL = re.compile(rb"^tectum-fail:([a-z]+)$", re.MULTILINE)


# -- errors ---------------------------------------------------------------------------------

class HostUnreachable(ConnectorError):
    """The host did not answer (refused, no route, timed out) or the connection was lost."""


class AuthenticationFailed(ConnectorError):
    """The host refused to let us log in."""


class BecomeFailed(ConnectorError):
    """``sudo`` refused (wrong or missing password, user not allowed)."""


class HostKeyError(ConnectorError):
    """The host's key could not be verified; nothing was sent to it."""

    def __init__(self, message: str, *, host: str, address: str, fingerprint: str) -> None:
        super().__init__(message)
        self.host = host
        self.address = address
        self.fingerprint = fingerprint


class HostKeyUnknown(HostKeyError):
    """``known_hosts`` has no key for the host (and ``trust_unknown`` is off)."""


class HostKeyChanged(HostKeyError):
    """The host presented a key other than the one recorded: refused, always."""


# -- the shared event loop ------------------------------------------------------------------

class _SharedLoop:
    """One asyncio loop in a daemon thread, shared by every connector that uses it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._users = 0

    def acquire(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="tectum-ssh",
                                          daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            self._users += 1
            return self._loop

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0 or self._loop is None or self._thread is None:
                return
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread


_LOOP = _SharedLoop()


# -- remote scripts -------------------------------------------------------------------------
# Each runs as ``sh -c SCRIPT sh ARG...``; on a handled failure it prints ``tectum-fail:KIND``
# on stdout and exits 99, with the failing tool's message on stderr.

_PRELUDE = """\
LC_ALL=C; export LC_ALL
fail() { printf 'tectum-fail:%s\\n' "$1"; exit 99; }
"""

# owner $o / group $g (may be empty) -> chown spec $spec; digits are ids (chown's "+N")
_IDS = """\
spec=
case $o in
  '') ;;
  *[!0-9]*) id -u -- "$o" >/dev/null 2>&1 || fail nouser; spec=$o ;;
  *) spec=+$o ;;
esac
case $g in
  '') ;;
  *[!0-9]*) getent group -- "$g" >/dev/null 2>&1 || fail nogroup; spec=$spec:$g ;;
  *) spec=$spec:+$g ;;
esac
"""

# the same inside a function that reports a failure in $k and returns
_IDS_K = """\
  case $o in
    '') ;;
    *[!0-9]*) id -u -- "$o" >/dev/null 2>&1 || { k=nouser; return; }; spec=$o ;;
    *) spec=+$o ;;
  esac
  case $g in
    '') ;;
    *[!0-9]*) getent group -- "$g" >/dev/null 2>&1 || { k=nogroup; return; }
              spec=$spec:$g ;;
    *) spec=$spec:+$g ;;
  esac
"""

_RUN = """\
if [ -n "$1" ]; then cd -- "$1" || exit 127; fi
t=$2
shift 2
exec timeout -k {kill} "$t" env -- LC_ALL=C LANG=C "$@"
""".replace("{kill}", str(_KILL_AFTER))

# a command with a secret: $1 cwd, $2 timeout, $3 the length of the script that comes first on
# stdin; the script is read into a private file, opened, deleted, and run by sh from the open
# descriptor (the rest of stdin is the command's input)
_RUN_PRIVATE = """\
if [ -n "$1" ]; then cd -- "$1" || exit 127; fi
t=$2 n=$3
d=$(umask 077 && mktemp -d) || exit 125
dd bs=1 count="$n" of="$d/s" 2>/dev/null || { rm -rf -- "$d"; exit 125; }
exec 3< "$d/s"
rm -rf -- "$d"
exec timeout -k {kill} "$t" env -- LC_ALL=C LANG=C sh /dev/fd/3
""".replace("{kill}", str(_KILL_AFTER))

_STAT_FORMAT = "%n\\0%f\\0%u\\0%g\\0%U\\0%G\\0%s\\0%N\\0"
_STAT_FIELDS = 8

_STAT = """\
LC_ALL=C QUOTING_STYLE=literal; export LC_ALL QUOTING_STYLE
xargs -0 -r stat --printf "$1" --
rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 123 ] || exit "$rc"
exit 0
"""

_STAT_CONTENT = """\
LC_ALL=C QUOTING_STYLE=literal; export LC_ALL QUOTING_STYLE
umask 077
t=$(mktemp -d) || exit 96
trap 'rm -rf -- "$t"' EXIT
cat > "$t/p" || exit 96
xargs -0 -r stat --printf "$1" -- < "$t/p" > "$t/s"
rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 123 ] || exit "$rc"
base64 -w0 < "$t/s" || exit 96
echo
tar -c -f - -P --no-recursion --hard-dereference --null --no-unquote --verbatim-files-from \
    -T "$t/p"
exit 0
"""

# $9: the validate command as sh words, the staged file's path as "$t" (empty: none); it is
# run with its output on stderr, and a refusal prints "tectum-validate:RC" before failing
_WRITE = _PRELUDE + """\
p=$1 d=$2 b=$3 r=$4 n=$5 m=$6 o=$7 g=$8 v=$9
t=$d/.$b.tectum-$$-$r
[ -d "$d" ] || fail nodir
""" + _IDS + """\
if [ -d "$p" ] && [ ! -h "$p" ]; then fail isdir; fi
bad() { rm -f -- "$t"; fail "$1"; }
(umask 077; set -C; exec cat > "$t") || bad write
# stdin ends early when the client dies mid-transfer: never commit a truncated file
[ "$(wc -c < "$t")" = "$n" ] || bad short
# what is not managed is kept from the file replaced: mode, owner, group
if [ -e "$p" ] && [ ! -h "$p" ]; then
  if [ -z "$m" ]; then m=0$(stat -c %a -- "$p") || bad write; fi
  if [ -z "$o" ] || [ -z "$g" ]; then
    ids=$(stat -c '%u %g' -- "$p") || bad write
    if [ -z "$o" ]; then spec=+${ids% *}$spec; fi
    if [ -z "$g" ]; then spec=$spec:+${ids#* }; fi
  fi
elif [ -z "$m" ]; then
  m=00644
fi
if [ -n "$spec" ]; then chown -- "$spec" "$t" || bad write; fi
chmod -- "$m" "$t" || bad write
if [ -n "$v" ]; then
  (eval "exec $v") < /dev/null 1>&2
  rc=$?
  if [ "$rc" -ne 0 ]; then printf 'tectum-validate:%s\\n' "$rc"; bad validate; fi
fi
mv -fT -- "$t" "$p" || bad write
"""

# many files in one round trip: a tar stream on stdin holds each file as
# "DIR/.tectum-PID-R/NAME" (R: one token per batch; PID becomes this shell's), with its mode
# (0644 when none is given). Args: the stat format, R, then per file, grouped by directory:
# path dir name mode owner group. Each directory's files are staged in a private directory next
# to their targets and renamed into place together (one mv per directory, rename(2) per file:
# atomic); only files with an owner, a group, a kept mode or a target owned by someone else
# (whose owner and group are kept) cost processes of their own.
# Prints "tectum-fail:I:KIND" for a file that failed, "tectum-ok:I" for each file no longer
# staged (a failure line wins), then "tectum-stat" and the stat of the written paths.
_WRITE_MANY = """\
LC_ALL=C QUOTING_STYLE=literal; export LC_ALL QUOTING_STYLE
f=$1 r=$2
shift 2
pre() {
  i=0
  while [ "$#" -ge 6 ]; do
    [ -d "$2" ] || { printf 'tectum-fail:%s:nodir\\n' "$i"; bad=1; }
    if [ -d "$1" ] && [ ! -h "$1" ]; then printf 'tectum-fail:%s:isdir\\n' "$i"; bad=1; fi
    shift 6
    i=$((i + 1))
  done
}
stages() {
  last=
  while [ "$#" -ge 6 ]; do
    if [ "$2" != "$last" ]; then printf '%s/.tectum-%s-%s\\0' "$2" "$$" "$r"; last=$2; fi
    shift 6
  done
}
bad=
pre "$@"
[ -z "$bad" ] || exit 98
w=$(umask 077 && mktemp) || exit 96
# staging goes whatever happens: a client that went away (SIGPIPE ignored: writes just fail)
cleanup() { stages "$@" | xargs -0 -r rm -rf --; rm -f -- "$w"; }
trap '' PIPE
trap 'cleanup "$@"' EXIT
trap 'exit 1' HUP INT TERM
umask 077
tar -x -P -p --no-same-owner -f - --transform "s|/\\.tectum-PID-$r/|/.tectum-$$-$r/|" >&2 || {
  printf 'tectum-fail:tar\\n'; exit 97; }
# one file's owner, group and mode: what is not managed is kept from the file it replaces
# (its owner and group cost no process when they are already the staged file's: ours);
# sets k to the failure kind
one() {
  p=$1 t=$2 m=$3 o=$4 g=$5 k= spec= c=
""" + _IDS_K + """\
  if [ -e "$p" ] && [ ! -h "$p" ]; then
    if [ -z "$o$g" ]; then
      if ! { [ -O "$p" ] && [ -G "$p" ] && [ -G "$t" ]; }; then
        chown --reference="$p" -- "$t" || { k=write; return; }
        c=1
      fi
    elif [ -z "$o" ] || [ -z "$g" ]; then
      ids=$(stat -c '%u %g' -- "$p") || { k=write; return; }
      if [ -z "$o" ]; then spec=+${ids% *}$spec; fi
      if [ -z "$g" ]; then spec=$spec:+${ids#* }; fi
    fi
    if [ -z "$m" ]; then
      if [ -n "$spec" ]; then chown -- "$spec" "$t" || { k=write; return; }; fi
      chmod --reference="$p" -- "$t" || k=write
      return
    fi
  fi
  if [ -n "$spec" ]; then chown -- "$spec" "$t" || { k=write; return; }; c=1; fi
  # chown clears set-id bits: the mode goes on again
  if [ -n "$c" ] && [ -n "$m" ]; then chmod -- "$m" "$t" || k=write; fi
}
attrs() {
  i=0
  while [ "$#" -ge 6 ]; do
    one "$1" "$2/.tectum-$$-$r/$3" "$4" "$5" "$6"
    if [ -n "$k" ]; then
      rm -f -- "$2/.tectum-$$-$r/$3"
      printf 'tectum-fail:%s:%s\\n' "$i" "$k"
    fi
    shift 6
    i=$((i + 1))
  done
}
moves() {
  last=
  while [ "$#" -ge 6 ]; do
    if [ "$2" != "$last" ]; then
      find "$2/.tectum-$$-$r" -mindepth 1 -maxdepth 1 -exec mv -f -t "$2" -- {} +
      last=$2
    fi
    shift 6
  done
}
status() {
  i=0
  while [ "$#" -ge 6 ]; do
    t=$2/.tectum-$$-$r/$3
    if [ -e "$t" ] || [ -h "$t" ]; then printf 'tectum-fail:%s:write\\n' "$i"
    else printf 'tectum-ok:%s\\n' "$i"; printf '%s\\0' "$1" >> "$w"; fi
    shift 6
    i=$((i + 1))
  done
}
attrs "$@"
moves "$@" >&2
status "$@"
echo tectum-stat
xargs -0 -r stat --printf "$f" -- < "$w"
exit 0
"""

_SET_ATTRS = _PRELUDE + """\
p=$1 m=$2 o=$3 g=$4
""" + _IDS + """\
if [ -n "$spec" ]; then chown -h -- "$spec" "$p" || fail attrs; fi
if [ -n "$m" ]; then chmod -- "$m" "$p" || fail attrs; fi
"""

_MKDIR = _PRELUDE + """\
p=$1 m=$2 o=$3 g=$4
""" + _IDS + """\
if [ -e "$p" ] || [ -h "$p" ]; then fail exists; fi
d=${p%/*}
if [ -n "$d" ] && [ ! -d "$d" ]; then
  (umask "$(printf %o "$(( $(umask) | 022 ))")"; mkdir -p -- "$d") || fail parents
fi
if [ -n "$m" ]; then
  (umask 077; mkdir -- "$p") || fail mkdir
  chmod -- "$m" "$p" || fail mkdir
else
  (umask "$(printf %o "$(( $(umask) | 022 ))")"; mkdir -- "$p") || fail mkdir
fi
if [ -n "$spec" ]; then chown -- "$spec" "$p" || fail mkdir; fi
"""

# many directories in one round trip, in the order given (the caller puts parents first), each
# with its missing parents (as _MKDIR: umask 022 or stricter, the running user's). Args:
# the stat format, then per directory: path mode owner group. Prints per directory "tectum-ok:I" or
# "tectum-fail:I:KIND:MESSAGE" (MESSAGE: the tool's stderr on one line), then "tectum-stat" and
# the stat of the directories made.
_MKDIR_MANY = """\
LC_ALL=C QUOTING_STYLE=literal; export LC_ALL QUOTING_STYLE
f=$1
shift
w=$(umask 077 && mktemp) || exit 96
e=$(umask 077 && mktemp) || { rm -f -- "$w"; exit 96; }
trap 'rm -f -- "$w" "$e"' EXIT
umask "$(printf %o "$(( $(umask) | 022 ))")"
one() {
  p=$1 m=$2 o=$3 g=$4 k= spec=
""" + _IDS_K + """\
  if [ -e "$p" ] || [ -h "$p" ]; then k=exists; return; fi
  d=${p%/*}
  if [ -n "$d" ] && [ ! -d "$d" ]; then mkdir -p -- "$d" || { k=parents; return; }; fi
  if [ -n "$m" ]; then
    mkdir -m "$m" -- "$p" || { k=mkdir; return; }
  else
    mkdir -- "$p" || { k=mkdir; return; }
  fi
  if [ -n "$spec" ]; then chown -- "$spec" "$p" || k=mkdir; fi
}
i=0
while [ "$#" -ge 4 ]; do
  one "$1" "$2" "$3" "$4" 2> "$e"
  if [ -z "$k" ]; then
    printf 'tectum-ok:%s\\n' "$i"; printf '%s\\0' "$1" >> "$w"
  else
    printf 'tectum-fail:%s:%s:' "$i" "$k"; tr '\\n' ' ' < "$e"; echo
  fi
  shift 4
  i=$((i + 1))
done
echo tectum-stat
xargs -0 -r stat --printf "$f" -- < "$w"
exit 0
"""

_SYMLINK = _PRELUDE + """\
p=$1 r=$2 target=$3
t=$p.tectum-$$-$r
if [ -d "$p" ] && [ ! -h "$p" ]; then fail isdir; fi
ln -s -- "$target" "$t" || fail symlink
mv -fT -- "$t" "$p" || { rm -f -- "$t"; fail symlink; }
"""

# remove $1 (recursively when $2 is 1); a failure whose path is gone anyway (another process
# removed it meanwhile) is no failure; what is still there after the delete fails ("remains")
_REMOVE = _PRELUDE + """\
p=$1 r=$2
gone() { ! [ -e "$p" ] && ! [ -h "$p" ]; }
if [ -d "$p" ] && [ ! -h "$p" ]; then
  if [ "$r" = 1 ]; then
    # rm -f skips entries that vanish under it; a second pass takes what the first missed
    rm -rf -- "$p" || rm -rf -- "$p" || gone || fail remains
  else
    rmdir -- "$p" || gone || fail remove
  fi
elif [ -e "$p" ] || [ -h "$p" ]; then
  rm -f -- "$p" || gone || fail remove
else
  rm -- "$p" || fail absent
fi
gone || { printf 'tectum: still there after the delete\\n' >&2; fail remains; }
exit 0
"""

# temporary files of atomic writes (.NAME.tectum-PID-* / NAME.tectum-PID-*, and the staging
# directories .tectum-PID-* of write_files) whose writer, a shell on the host, is gone; args:
# DIR NAME pairs (NAME empty: the staging directories in DIR); prints each removed path
# NUL-terminated, a directory with a "/" after it
_SWEEP = """\
LC_ALL=C; export LC_ALL
while [ "$#" -ge 2 ]; do
  d=$1 b=$2
  shift 2
  for f in "$d"/."$b".tectum-* "$d"/"$b".tectum-*; do
    [ -e "$f" ] || [ -h "$f" ] || continue
    rest=${f##*.tectum-}
    pid=${rest%%-*}
    case $pid in ''|*[!0-9]*) continue ;; esac
    [ -d "/proc/$pid" ] && continue
    if [ -d "$f" ] && [ ! -h "$f" ]; then
      [ -z "$b" ] || continue
      rm -rf -- "$f" && printf '%s/\\0' "$f"
    else
      rm -f -- "$f" && printf '%s\\0' "$f"
    fi
  done
done
exit 0
"""

# the start of the one-round-trip fact script (prefetch): $1 the stat format, $2 how many of the
# NUL-separated paths on stdin (the first ones) have their contents read; then one line per
# command is appended. Every part is emitted as "RC OUTLEN ERRLEN\n" + stdout + stderr.
_GATHER = """\
LC_ALL=C QUOTING_STYLE=literal; export LC_ALL QUOTING_STYLE
umask 077
t=$(mktemp -d) || exit 96
trap 'rm -rf -- "$t"' EXIT
cat > "$t/p" || exit 96
emit() { printf '%s %s %s\\n' "$1" "$(wc -c < "$t/o")" "$(wc -c < "$t/e")"; cat -- "$t/o" "$t/e"; }
xargs -0 -r stat --printf "$1" -- < "$t/p" > "$t/o" 2> "$t/e"; emit $?
head -z -n "$2" "$t/p" > "$t/c" || exit 96
if [ "$2" -gt 0 ]; then
  tar -c -f - -P --no-recursion --hard-dereference --null --no-unquote --verbatim-files-from \\
      -T "$t/c" > "$t/o" 2> "$t/e"; emit $?
else
  : > "$t/o"; : > "$t/e"; emit 0
fi"""


def _command_result(argv: tuple[str, ...], result: _Exec, limit: float, started: float
                    ) -> CommandResult:
    """What a command run under coreutils ``timeout`` gave; exit 124/137 after ``limit``
    seconds (or no answer in time) is a timeout."""
    timed_out = result.timed_out or (
        result.returncode in (124, 128 + 9) and time.monotonic() - started >= limit)
    if timed_out:
        return CommandResult(argv, 124, b"", f"timed out after {limit} s".encode())
    return CommandResult(argv, result.returncode, result.stdout, result.stderr)


def _problems(stderr: bytes) -> list[bytes]:
    """stderr lines of stat/tar that are errors (not a missing path, see :data:`_BENIGN`)."""
    return [line for line in stderr.splitlines()
            if line.strip() and not line.rstrip().endswith(_BENIGN)]


def _split_parts(data: bytes, count: int) -> list[tuple[int, bytes, bytes]]:
    """``count`` parts of ``RC OUTLEN ERRLEN\\n`` + stdout + stderr (the fact script's output);
    raises :class:`ConnectorError` when the output is cut short or malformed."""
    out: list[tuple[int, bytes, bytes]] = []
    at = 0
    for _ in range(count):
        end = data.find(b"\n", at)
        try:
            rc, n_out, n_err = (int(x) for x in data[at:end].split())
        except ValueError:
            raise ConnectorError("the fact script's output is malformed (cut short?)") from None
        body = data[end + 1:end + 1 + n_out + n_err]
        if end < 0 or len(body) != n_out + n_err:
            raise ConnectorError("the fact script's output is cut short")
        out.append((rc, body[:n_out], body[n_out:]))
        at = end + 1 + n_out + n_err
    return out


_EXISTS = """\
if [ -e "$1" ] || [ -h "$1" ]; then exit 0; fi
exit 1
"""

# stderr lines of stat/tar that only say a path is missing (or was in flux), not an error
_BENIGN = (
    b": No such file or directory",
    b": Not a directory",
    b"Exiting with failure status due to previous errors",
    b": socket ignored",
    b": file changed as we read it",
    b": File removed before we read it",
)


class _Exec(NamedTuple):
    returncode: int
    stdout: bytes
    stderr: bytes
    timed_out: bool


def _strerror(stderr: bytes) -> str:
    """The reason at the end of a coreutils/sh message (``mv: cannot ...: Permission denied``)."""
    lines = [line for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return "failed"
    return lines[-1].rsplit(": ", 1)[-1].strip()


def _octal(mode: str | None) -> str:
    """``"644"``/``"0644"`` → ``"00644"``: five digits, so GNU chmod sets (and clears) the
    set-id bits of directories exactly as ``os.chmod`` does."""
    if mode is None or mode == "":
        return ""
    return "0" + format(int(mode, 8), "04o")


_VALIDATE_RC = re.compile(rb"^tectum-validate:([0-9]+)$", re.MULTILINE)


def _validate_line(command: str) -> str:
    """The ``validate`` command as the text ``_WRITE`` evals: every literal piece
    single-quoted (:func:`shlex.quote`), the staged file's path put in as ``"$t"`` — so the
    shell splits nothing and expands nothing but that one variable."""
    return " ".join('"$t"'.join(shlex.quote(piece) for piece in pieces)
                    for pieces in validate_words(command))


def _no_nul(value: str, what: str) -> str:
    if "\x00" in value:
        raise ValueError(f"embedded null byte in {what}")
    return value


class _Client(asyncssh.SSHClient):
    """Judges the host key (asyncssh asks when it is not among the recorded ones) and records
    whether the TCP connection was made (``reached``) and why it was lost."""

    def __init__(self, judge: Callable[[str, int, asyncssh.SSHKey], HostKeyError | None]
                 ) -> None:
        self._judge = judge
        self.problem: HostKeyError | None = None
        self.reached = False
        self.lost = False
        self.lost_reason: str | None = None

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        # asyncssh makes the client when the TCP connection is up, before the SSH handshake
        self.reached = True

    def validate_host_public_key(self, host: str, addr: str, port: int,
                                 key: asyncssh.SSHKey) -> bool:
        self.problem = self._judge(addr, port, key)
        return self.problem is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if exc is not None:
            self.lost_reason = str(getattr(exc, "reason", None) or exc)


class _Transient(Exception):
    """A connection attempt that reached the host but did not finish: worth another try."""


class SSHConnector:
    """A host reached over SSH; see the module docstring. Thread-safe.

    Timing (seconds; the inventory's connection settings of the same names):
    ``connect_timeout`` bounds one connection attempt (TCP, handshake, login);
    ``connect_retries`` more attempts follow one that reached the host but did not finish;
    ``command_timeout`` bounds a command (and opening its channel) unless the call gives its
    own; the connection is given up after about ``(keepalive_count_max + 1) *
    keepalive_interval`` seconds without an answer to SSH keepalives. Raises
    :class:`ValueError` for a non-positive ``keepalive_interval`` or a negative count."""

    def __init__(
        self,
        host: str,
        address: str,
        *,
        port: int = 22,
        user: str = "root",
        key_path: str | os.PathLike[str] | None = None,
        known_hosts: str | os.PathLike[str] | None = None,
        trust_unknown: bool = False,
        become: bool = False,
        become_password: str | None = None,
        connect_timeout: float = 10.0,
        command_timeout: float = 600.0,
        keepalive_interval: float = 10.0,
        keepalive_count_max: int = 3,
        connect_retries: int = 3,
        log_path: str | None = None,
        fail_fast: bool = False,
    ) -> None:
        if not 0 < keepalive_interval < float("inf"):
            raise ValueError("keepalive_interval must be positive and finite (seconds)")
        if keepalive_count_max < 0 or connect_retries < 0:
            raise ValueError("keepalive_count_max and connect_retries must not be negative")
        if become_password is not None and ("\n" in become_password or "\r" in become_password
                                            or "\x00" in become_password):
            raise ValueError("become_password must not contain a newline or NUL byte")
        self.host = host
        self.address = address
        self.port = port
        self.user = user
        self.key_path = os.fspath(key_path) if key_path is not None else None
        self.known_hosts = (os.fspath(known_hosts) if known_hosts is not None
                            else str(Path("~", ".ssh", "known_hosts").expanduser()))
        self.trust_unknown = trust_unknown
        self.become = become
        self._become_password = become_password
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        #: seconds without a byte from the host before a keepalive is sent
        self.keepalive_interval = keepalive_interval
        #: keepalives that may go unanswered in a row; one more and the connection is lost
        self.keepalive_count_max = keepalive_count_max
        #: further connection attempts after one that reached the host but did not finish
        self.connect_retries = connect_retries
        self.log: list[dict[str, object]] = []
        #: remote commands run (one SSH channel each); connecting is not counted
        self.round_trips = 0
        #: channel opens refused by sshd for lack of a free session slot, and retried
        self.session_retries = 0
        #: connections opened (1, unless one dropped and was opened again)
        self.connects = 0
        #: connection attempts that reached the host, did not finish, and were tried again
        self.connect_attempts_retried = 0
        self._connect_failures = 0
        self._connect_error: ConnectorError | None = None
        #: SHA256 fingerprint of the host key of the current/last connection
        self.host_key_fingerprint: str | None = None
        #: set when an unknown key was trusted on first use (``trust_unknown``)
        self.trusted_unknown_key: str | None = None
        self._log_path = log_path if log_path is not None else os.environ.get("TECTUM_COMMAND_LOG")
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: asyncssh.SSHClientConnection | None = None
        self._client: _Client | None = None
        self._connecting: asyncio.Lock | None = None
        self._sessions: asyncio.Semaphore | None = None
        self._tofu_key: asyncssh.SSHKey | None = None
        self._accepted_unknown: asyncssh.SSHKey | None = None
        self._marker = f"tectum-become-{secrets.token_hex(12)}"
        #: with ``fail_fast``, the first unreachable / refused connection is final: later calls
        #: raise at once (one run does not wait for a dead host once per resource)
        self.fail_fast = fail_fast
        #: why the host is out of this run (``fail_fast``): ``(kind, message)``, kind
        #: ``unreachable`` or ``refused`` (host key, authentication)
        self.down: tuple[str, str] | None = None
        self._fact_paths: dict[str, PathFact | None] = {}
        self._fact_content: set[str] = set()
        self._fact_runs: dict[tuple[str, ...], CommandResult] = {}

    def __repr__(self) -> str:
        return (f"SSHConnector({self.host!r}, {self.address!r}, port={self.port}, "
                f"user={self.user!r}, become={self.become})")

    def __enter__(self) -> SSHConnector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- recording -----------------------------------------------------------------------
    def _record(self, op: str, mutating: bool, **fields: object) -> None:
        if REDACTOR:
            fields = {k: redact_value(v) for k, v in fields.items()}
        entry: dict[str, object] = {"op": op, "mutating": mutating, "host": self.host,
                                    **fields}
        with self._lock:
            self.log.append(entry)

    def close(self) -> None:
        """Close the connection and flush the command log to ``TECTUM_COMMAND_LOG`` (if set).
        The connector stays usable: a later call connects again."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            try:
                fut = asyncio.run_coroutine_threadsafe(self._aclose(), loop)
                with contextlib.suppress(Exception):
                    fut.result(timeout=10)
            finally:
                _LOOP.release()
        if self._log_path and self.log:
            with open(self._log_path, "a", encoding="utf-8") as fh:
                for entry in self.log:
                    fh.write(json.dumps(entry) + "\n")
        self.log = []

    async def _aclose(self) -> None:
        conn, self._conn = self._conn, None
        self._client = None
        self._connecting = None
        self._sessions = None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 5)

    # -- the loop and the connection -------------------------------------------------------
    def _call(self, make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        if _LOOP.in_loop_thread():
            raise RuntimeError("SSHConnector methods are synchronous; do not call them from "
                               "the connector's event loop")
        with self._lock:
            if self._loop is None:
                self._loop = _LOOP.acquire()
            loop = self._loop
        fut = asyncio.run_coroutine_threadsafe(make(), loop)
        try:
            return fut.result()
        except BaseException:
            fut.cancel()
            raise

    def connect(self) -> None:
        """Open the connection now (else the first call opens it); raises like any call."""
        self._call(self._connection)

    def _where(self) -> str:
        return f"{self.host} ({self.address}:{self.port})"

    def _judge_key(self, addr: str, port: int, key: asyncssh.SSHKey) -> HostKeyError | None:
        """None to accept ``key`` (not among the recorded keys), else the error to raise."""
        fingerprint = key.get_fingerprint("sha256")
        alg = key.get_algorithm()
        if self._tofu_key is not None:
            if key == self._tofu_key:
                return None
            recorded = [self._tofu_key]
            source = "the key trusted on first use earlier in this run"
        else:
            recorded = self._recorded_keys(addr, port)
            source = self.known_hosts
        if recorded:
            prints = ", ".join(f"{k.get_algorithm()} {k.get_fingerprint('sha256')}"
                               for k in recorded)
            return HostKeyChanged(
                f"the host key of {self._where()} has CHANGED: it presented {alg} key "
                f"{fingerprint}, but {source} records {prints} for it. Someone may be "
                f"intercepting the connection (man in the middle), or the host was "
                f"reinstalled. Refusing to connect. If the change is expected, check the new "
                f"fingerprint with the host's administrator, then replace the old entry "
                f"(ssh-keygen -R {self.address} -f {self.known_hosts}) with the new key.",
                host=self.host, address=self.address, fingerprint=fingerprint)
        if self.trust_unknown:
            self._accepted_unknown = key  # remembered once the host proved it holds the key
            return None
        return HostKeyUnknown(
            f"the host key of {self._where()} is unknown: it presented {alg} key "
            f"{fingerprint}, and {self.known_hosts} has no key for {self.address}. Check that "
            f"fingerprint with the host's administrator (on the host: ssh-keygen -lf "
            f"/etc/ssh/ssh_host_*_key.pub), then add the key to {self.known_hosts} (e.g. "
            f"ssh-keyscan -p {self.port} {self.address} >> {self.known_hosts}), or set "
            f"trust_unknown to trust it on first use.",
            host=self.host, address=self.address, fingerprint=fingerprint)

    def _known(self) -> asyncssh.SSHKnownHosts:
        try:
            text = Path(self.known_hosts).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            raise ConnectorError(f"cannot read known_hosts {self.known_hosts}: "
                                 f"{exc.strerror or exc}") from None
        try:
            return asyncssh.import_known_hosts(text)
        except (ValueError, asyncssh.KeyImportError) as exc:
            raise ConnectorError(f"cannot parse known_hosts {self.known_hosts}: {exc}") from None

    def _recorded_keys(self, addr: str, port: int) -> list[asyncssh.SSHKey]:
        """The keys ``known_hosts`` records for the host, each once: asyncssh matches the
        host name and the address separately, so a line naming the address (the usual case,
        where the two are the same) comes back twice."""
        known = self._known()
        found = asyncssh.match_known_hosts(known, self.address, addr,
                                           None if port == 22 else port)
        unique: dict[bytes, asyncssh.SSHKey] = {}
        for key in found[0]:
            unique.setdefault(key.public_data, key)
        return list(unique.values())

    async def _connection(self) -> asyncssh.SSHClientConnection:
        conn, client = self._conn, self._client
        if conn is not None and client is not None and not client.lost:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
            self._sessions = asyncio.Semaphore(MAX_SESSIONS)
        failures = self._connect_failures
        async with self._connecting:
            conn, client = self._conn, self._client
            if conn is not None and client is not None and not client.lost:
                return conn
            if failures != self._connect_failures and self._connect_error is not None:
                # the attempts made while this call waited failed: the same answer, at once
                raise self._connect_error
            if conn is not None:
                conn.close()
            self._conn = self._client = None
            try:
                conn, client = await self._open()
            except ConnectorError as exc:
                self._connect_failures += 1
                self._connect_error = exc
                raise
            self._conn, self._client = conn, client
            return conn

    async def _open(self) -> tuple[asyncssh.SSHClientConnection, _Client]:
        """Connect, retrying an attempt that reached the host but did not finish (see the
        module docstring) ``connect_retries`` times with jittered exponential backoff."""
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                return await self._attempt()
            except _Transient as exc:
                if attempt >= self.connect_retries:
                    tries = (f" ({attempt + 1} attempts over "
                             f"{time.monotonic() - started:.0f} s)" if attempt else "")
                    raise HostUnreachable(f"{exc}{tries}") from None
                delay = min(_RETRY_FIRST * 2 ** attempt, _RETRY_CAP)
                attempt += 1
                self.connect_attempts_retried += 1
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _attempt(self) -> tuple[asyncssh.SSHClientConnection, _Client]:
        """One connection attempt, bounded by ``connect_timeout``; raises :class:`_Transient`
        when it reached the host but did not finish."""
        known = self._known()
        self._accepted_unknown = None
        # prefer the algorithms of the recorded keys (as OpenSSH does), then any other, so a
        # host that lost its recorded key type still reaches the check (-> HostKeyChanged)
        recorded = list(asyncssh.match_known_hosts(known, self.address, self.address,
                                                   None if self.port == 22 else self.port)[0])
        if self._tofu_key is not None:
            recorded.append(self._tofu_key)
        algs: list[str] = []
        for key in recorded:
            for alg in key.sig_algorithms:
                if alg.decode() not in algs:
                    algs.append(alg.decode())
        for alg in asyncssh.public_key.get_default_public_key_algs():
            if alg.decode() not in algs:
                algs.append(alg.decode())
        client = _Client(self._judge_key)
        options: dict[str, Any] = {
            "port": self.port,
            "username": self.user,
            "known_hosts": known,
            "server_host_key_algs": algs,
            "client_factory": lambda: client,
            "config": None,
            "password_auth": False,
            "kbdint_auth": False,
            "gss_auth": False,
            "host_based_auth": False,
            "x509_trusted_certs": None,
            "keepalive_interval": self.keepalive_interval,
            "keepalive_count_max": self.keepalive_count_max,
        }
        if self.key_path is not None:
            options["client_keys"] = [self.key_path]
            options["agent_path"] = None
        where = self._where()
        try:
            conn = await asyncio.wait_for(asyncssh.connect(self.address, **options),
                                          self.connect_timeout)
        except asyncssh.HostKeyNotVerifiable as exc:
            if client.problem is not None:
                raise client.problem from None
            raise HostKeyError(f"the host key of {where} was refused: {exc.reason}",
                               host=self.host, address=self.address, fingerprint="") from None
        except TimeoutError:
            if client.reached:  # TCP answered: sshd is there, only slow (loaded, paused)
                raise _Transient(f"cannot reach {where}: it accepted the TCP connection but "
                                 f"did not complete the SSH handshake and login within "
                                 f"{self.connect_timeout:g} s") from None
            raise HostUnreachable(f"cannot reach {where}: no answer within "
                                  f"{self.connect_timeout:g} s") from None
        except asyncssh.PermissionDenied as exc:
            keys = self.key_path or "the default keys and agent"
            raise AuthenticationFailed(f"cannot log in to {where} as {self.user} with "
                                       f"{keys}: {exc.reason}") from None
        except asyncssh.ConnectionLost as exc:  # cut during the handshake (sshd's MaxStartups)
            raise _Transient(f"cannot reach {where}: {exc.reason}") from None
        except asyncssh.ProtocolError as exc:
            raise HostUnreachable(f"cannot reach {where}: {exc.reason}") from None
        except asyncssh.Error as exc:
            raise ConnectorError(f"cannot connect to {where}: {exc.reason}") from None
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as exc:
            raise _Transient(f"cannot reach {where}: {os.strerror(exc.errno or 0)}") from None
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
            raise HostUnreachable(f"cannot reach {where}: {reason}") from None
        self.connects += 1
        if self._accepted_unknown is not None:
            self._tofu_key, self._accepted_unknown = self._accepted_unknown, None
            self.trusted_unknown_key = self._tofu_key.get_fingerprint("sha256")
        server_key = conn.get_server_host_key()
        self.host_key_fingerprint = (server_key.get_fingerprint("sha256")
                                     if server_key is not None else None)
        return conn, client

    # -- one remote call -----------------------------------------------------------------
    def _command_line(self, script: str, args: Sequence[str]) -> bytes:
        if self.become:
            preamble = (
                f"IFS= read -r _l || exit 125\n"
                f"[ \"$_l\" = {self._marker} ] || {{ IFS= read -r _l && "
                f"[ \"$_l\" = {self._marker} ]; }} || exit 125\n"
                f"unset _l\nprintf '%s\\n' {self._marker} >&2\n"
            )
            sudo = ["sudo", "-n"] if self._become_password is None else ["sudo", "-S", "-p", ""]
            argv = [*sudo, "--", "sh", "-c", preamble + script, "sh", *args]
        else:
            argv = ["sh", "-c", script, "sh", *args]
        line = " ".join(shlex.quote(_no_nul(a, "an argument")) for a in argv)
        return line.encode("utf-8", "surrogateescape")

    def _exec(self, script: str, args: Sequence[str], stdin: bytes = b"",
              timeout: float | None = None) -> _Exec:
        """Run SCRIPT on the host (one round trip); become is applied here."""
        if self.down is not None:
            kind, message = self.down
            raise HostUnreachable(message) if kind == "unreachable" else ConnectorError(message)
        command = self._command_line(script, args)
        if self.become:
            head = b"" if self._become_password is None else \
                self._become_password.encode() + b"\n"
            stdin = head + self._marker.encode() + b"\n" + stdin
        limit = timeout if timeout is not None else self.command_timeout
        try:
            result = self._call(lambda: self._aexec(command, stdin, limit))
        except HostUnreachable as exc:
            if self.fail_fast:
                self.down = ("unreachable", str(exc))
            raise
        except (HostKeyError, AuthenticationFailed) as exc:
            if self.fail_fast:
                self.down = ("refused", str(exc))
            raise
        if self.become and not result.timed_out:
            mark = self._marker.encode() + b"\n"
            at = result.stderr.find(mark)
            if at < 0:
                detail = result.stderr.decode("utf-8", "replace").strip()
                detail = detail.replace(self._become_password or "\x00", "***")[-400:]
                raise BecomeFailed(f"cannot become root with sudo on {self._where()} as "
                                   f"{self.user}: {detail or f'exit code {result.returncode}'}")
            result = result._replace(stderr=result.stderr[at + len(mark):])
        return result

    async def _aexec(self, command: bytes, stdin: bytes, timeout: float) -> _Exec:
        """Run COMMAND in a channel of its own; ``timeout`` bounds opening the channel and,
        from then on, the command's output (a timeout is an :class:`_Exec` with
        ``timed_out``). A lost connection raises :class:`HostUnreachable`."""
        conn = await self._connection()
        assert self._sessions is not None
        async with self._sessions:
            proc = await self._open_session(conn, command, timeout)
            if proc is None:
                return _Exec(124, b"", b"", True)
            self.round_trips += 1
            feeder = asyncio.ensure_future(self._feed(proc, stdin))
            try:
                out, err = await asyncio.wait_for(
                    asyncio.gather(proc.stdout.read(), proc.stderr.read()), timeout)
                await asyncio.wait_for(proc.wait_closed(), max(timeout, 10.0))
            except TimeoutError:
                with contextlib.suppress(Exception):
                    proc.kill()
                proc.close()
                return _Exec(124, b"", b"", True)
            except (asyncssh.Error, OSError) as exc:
                proc.close()
                raise HostUnreachable(self._lost(getattr(exc, "reason", None) or str(exc))
                                      ) from None
            finally:
                feeder.cancel()
            code = proc.returncode
            if code is None:
                raise HostUnreachable(self._lost(None, "before the command finished"))
            return _Exec(code, out, err, False)

    def _lost(self, reason: str | None, when: str = "") -> str:
        """The message of a lost connection: why, when the connection said why."""
        client = self._client
        why = (client.lost_reason if client is not None else None) or reason
        if why and "keepalive" in why:
            silent = (self.keepalive_count_max + 1) * self.keepalive_interval
            why = (f"it stopped answering: no reply to SSH keepalives for about {silent:g} s "
                   f"(keepalive_interval {self.keepalive_interval:g} s, keepalive_count_max "
                   f"{self.keepalive_count_max})")
        text = f"lost the connection to {self._where()}"
        if when:
            text += f" {when}"
        return f"{text}: {why}" if why else text

    async def _open_session(self, conn: asyncssh.SSHClientConnection, command: bytes,
                            window: float) -> asyncssh.SSHClientProcess[bytes] | None:
        """Open a channel running COMMAND within ``window`` seconds (None when that passed:
        the caller reports a timeout). However long the host takes to answer, the connection
        is left alone — the keepalives judge whether the host is alive, and the commands in
        flight on the connection go on. sshd frees a session slot a moment after the channel
        closed, so "no more sessions" (open failed: nothing ran) is retried with backoff."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window
        attempt = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                proc: asyncssh.SSHClientProcess[bytes] = await asyncio.wait_for(
                    conn.create_process(command, encoding=None), remaining)
                return proc
            except TimeoutError:
                if conn.is_closed() or (self._client is not None and self._client.lost):
                    raise HostUnreachable(self._lost(None)) from None
                return None
            except asyncssh.ChannelOpenError as exc:
                if conn.is_closed() or (self._client is not None and self._client.lost):
                    raise HostUnreachable(self._lost(exc.reason)) from None
                if exc.code != asyncssh.OPEN_CONNECT_FAILED:
                    raise ConnectorError(f"cannot open an SSH session on {self._where()}: "
                                         f"{exc.reason}") from None
                self.session_retries += 1
                await asyncio.sleep(min(0.005 * 2 ** attempt, _SESSION_RETRY_CAP))
                attempt += 1
            except (asyncssh.Error, OSError) as exc:
                raise HostUnreachable(self._lost(getattr(exc, "reason", None) or str(exc))
                                      ) from None

    @staticmethod
    async def _feed(proc: asyncssh.SSHClientProcess[bytes], data: bytes) -> None:
        try:
            if data:
                proc.stdin.write(data)
                await proc.stdin.drain()
            proc.stdin.write_eof()
        except (OSError, asyncssh.Error):
            pass  # the remote side stopped reading (it failed early); its exit says why

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
        if not argv:
            raise ValueError("argv must not be empty")
        for item in argv:
            _no_nul(item, "argv")
        assignments = []
        for key, value in (env or {}).items():
            if not _ENV_NAME.fullmatch(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            assignments.append(f"{key}={_no_nul(value, f'the value of {key}')}")
        self._record("run", mutating, argv=list(argv))
        script = secret_script(argv, self._where())
        if script is not None or (env and any(REDACTOR.holds_secret(v) for v in env.values())):
            return self._run_private(argv, script, env or {}, input, cwd, timeout)
        if not mutating and input is None and not env and cwd is None:
            cached = self._fact_runs.get(argv)
            if cached is not None:
                return cached
        limit = timeout if timeout is not None else self.command_timeout
        started = time.monotonic()
        # env(1) would take a program named "a=b" for one more assignment; sh's exec does not
        command = ("sh", "-c", 'exec "$@"', "sh", *argv) if "=" in argv[0] else argv
        result = self._exec(_RUN, [cwd or "", f"{max(limit, 0.001):.3f}", *assignments,
                                   *command],
                            input or b"", timeout=limit + _KILL_AFTER + _BACKSTOP)
        return _command_result(argv, result, limit, started)

    def _run_private(self, argv: tuple[str, ...], script: str | None,
                     env: Mapping[str, str], input: bytes | None, cwd: str | None,
                     timeout: float | None) -> CommandResult:
        """Run a command that carries a secret (in its script text or its environment): the
        script — ``export NAME='value'`` lines, then the command — travels on stdin ahead of
        the command's own input and is run by ``sh`` from a file in a fresh private directory
        that is deleted before the command starts (an open descriptor); no command line on the
        host holds the secret."""
        lines = []
        for key, value in env.items():
            if not _ENV_NAME.fullmatch(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            lines.append(f"export {key}={shlex.quote(_no_nul(value, f'the value of {key}'))}")
        lines.append(script if script is not None
                     else "exec " + " ".join(shlex.quote(_no_nul(a, "argv")) for a in argv))
        header = ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
        limit = timeout if timeout is not None else self.command_timeout
        started = time.monotonic()
        result = self._exec(_RUN_PRIVATE, [cwd or "", f"{max(limit, 0.001):.3f}",
                                           str(len(header))],
                            header + (input or b""), timeout=limit + _KILL_AFTER + _BACKSTOP)
        return _command_result(argv, result, limit, started)

    # -- facts ---------------------------------------------------------------------------
    def stat_paths(self, paths: Sequence[str], *, content: bool = False) -> list[PathFact | None]:
        """Facts for every path, as :meth:`LocalConnector.stat_paths` reports them, in one round
        trip. Regular files' contents (and SHA-256) when ``content``."""
        paths = list(paths)
        if not paths:
            return []
        if all(p in self._fact_paths for p in paths) and (not content or all(
                p in self._fact_content or (f := self._fact_paths[p]) is None
                or f.kind != "file" for p in paths)):
            return [self._fact_paths[p] for p in paths]
        data = b"".join(_no_nul(p, "a path").encode("utf-8", "surrogateescape") + b"\0"
                        for p in paths)
        result = self._exec(_STAT_CONTENT if content else _STAT, [_STAT_FORMAT], data)
        if result.timed_out:
            raise ConnectorError(f"reading {len(paths)} paths on {self._where()} timed out")
        problems = _problems(result.stderr)
        if result.returncode != 0 or problems:
            detail = (problems or result.stderr.splitlines() or [b"no output"])[-1]
            raise ConnectorError(f"cannot read paths on {self._where()}: "
                                 f"{detail.decode('utf-8', 'replace')} "
                                 f"(exit code {result.returncode})")
        if content:
            head, _, archive = result.stdout.partition(b"\n")
            listing = base64.b64decode(head)
        else:
            listing, archive = result.stdout, b""
        records = self._parse_stat(listing)
        contents = self._parse_tar(archive) if content else {}
        out: list[PathFact | None] = []
        for path in paths:
            fact = records.get(path)
            if fact is not None and fact.kind == "file" and content:
                data_ = contents.get(path)
                if data_ is not None:
                    fact = fact._replace(sha256=hashlib.sha256(data_).hexdigest(), content=data_)
            out.append(fact)
        return out

    def _parse_stat(self, listing: bytes) -> dict[str, PathFact]:
        fields = listing.split(b"\0")
        if (len(fields) - 1) % _STAT_FIELDS or fields[-1]:
            raise ConnectorError(f"cannot read paths on {self._where()}: unexpected output "
                                 f"from stat")
        records: dict[str, PathFact] = {}
        for i in range(0, len(fields) - 1, _STAT_FIELDS):
            name_b, raw, uid, gid, uname, gname, size, quoted = fields[i:i + _STAT_FIELDS]
            name = name_b.decode("utf-8", "surrogateescape")
            st_mode = int(raw, 16)
            mode = format(stat.S_IMODE(st_mode), "04o")
            owner = (uid if uname == b"UNKNOWN" else uname).decode("utf-8", "surrogateescape")
            group = (gid if gname == b"UNKNOWN" else gname).decode("utf-8", "surrogateescape")
            if stat.S_ISREG(st_mode):
                kind = "file"
            elif stat.S_ISDIR(st_mode):
                kind = "directory"
            elif stat.S_ISLNK(st_mode):
                kind = "symlink"
            else:
                kind = "other"
            target = None
            if kind == "symlink":
                prefix = name_b + b" -> "
                if not quoted.startswith(prefix):
                    raise ConnectorError(f"cannot read the symlink {name} on {self._where()}")
                target = quoted[len(prefix):].decode("utf-8", "surrogateescape")
            records[name] = PathFact(kind, mode, owner, group, int(size), target=target,
                                     uid=int(uid), gid=int(gid))
        return records

    @staticmethod
    def _parse_tar(archive: bytes) -> dict[str, bytes]:
        contents: dict[str, bytes] = {}
        if not archive:
            return contents
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:", encoding="utf-8",
                          errors="surrogateescape") as tar:
            for member in tar:
                if member.isreg():
                    fh = tar.extractfile(member)
                    if fh is not None:
                        contents[member.name] = fh.read()
        return contents

    # -- all facts at once -------------------------------------------------------------------
    def prefetch(self, request: FactRequest) -> None:
        """Fetch every fact of ``request`` in **one round trip**: one remote script stats all
        paths, streams the content paths' bytes as one tar archive and runs each read-only
        command (under the same ``timeout``/``env`` wrapper as :meth:`run`), reporting each
        part length-prefixed. :meth:`stat_paths`, :meth:`exists` and :meth:`run` (non-mutating,
        no input/env/cwd) answer from what came back until :meth:`forget_facts`. Raises like
        :meth:`stat_paths`."""
        content = list(dict.fromkeys(request.content))
        paths = content + [p for p in dict.fromkeys(request.paths) if p not in set(content)]
        commands = [c for c in dict.fromkeys(request.commands) if c and "=" not in c[0]]
        if not paths and not commands:
            return
        lines = [_GATHER]
        limit = f"{max(self.command_timeout, 0.001):.3f}"
        for argv in commands:
            words = " ".join(shlex.quote(_no_nul(a, "argv")) for a in argv)
            lines.append(f"(exec timeout -k {_KILL_AFTER} {limit} env -- LC_ALL=C LANG=C "
                         f"{words}) </dev/null >\"$t/o\" 2>\"$t/e\"; emit $?")
        lines.append("exit 0")
        data = b"".join(_no_nul(p, "a path").encode("utf-8", "surrogateescape") + b"\0"
                        for p in paths)
        self._record("facts", False, paths=len(paths), commands=len(commands))
        result = self._exec("\n".join(lines), [_STAT_FORMAT, str(len(content))], data,
                            timeout=self.command_timeout + _KILL_AFTER + _BACKSTOP)
        if result.timed_out or result.returncode != 0:
            raise ConnectorError(f"cannot read facts on {self._where()}: "
                                 f"{_strerror(result.stderr) or 'timed out'} "
                                 f"(exit code {result.returncode})")
        parts = _split_parts(result.stdout, 2 + len(commands))
        for rc, _out, err in parts[:2]:
            problems = _problems(err)
            if problems or rc not in (0, 123, 2):
                detail = (problems or [b"exit code %d" % rc])[-1]
                raise ConnectorError(f"cannot read paths on {self._where()}: "
                                     f"{detail.decode('utf-8', 'replace')}")
        records = self._parse_stat(parts[0][1])
        contents = self._parse_tar(parts[1][1]) if content else {}
        for path in paths:
            fact = records.get(path)
            if fact is not None and fact.kind == "file" and path in contents:
                data_ = contents[path]
                fact = fact._replace(sha256=hashlib.sha256(data_).hexdigest(), content=data_)
            self._fact_paths[path] = fact
        self._fact_content.update(content)
        for argv, (rc, out, err) in zip(commands, parts[2:], strict=True):
            self._fact_runs[argv] = CommandResult(argv, rc, out, err)

    def forget_facts(self) -> None:
        """Drop prefetched facts: later reads go to the host again."""
        self._fact_paths = {}
        self._fact_content = set()
        self._fact_runs = {}

    def exists(self, path: str) -> bool:
        if path in self._fact_paths:
            return self._fact_paths[path] is not None
        result = self._exec(_EXISTS, [path])
        if result.returncode in (0, 1):
            return result.returncode == 0
        raise ConnectorError(f"cannot check {path} on {self._where()}: "
                             f"{_strerror(result.stderr)}")

    def sweep_temp(self, paths: Sequence[str]) -> list[str]:
        """Remove the temporary files that atomic writes of ``paths`` left behind when their
        writer was killed: ``.NAME.tectum-PID-…`` / ``NAME.tectum-PID-…`` and the staging
        directories ``.tectum-PID-…`` of :meth:`write_files` beside them, where PID is the
        writing shell *on the host* and no longer runs there. Returns what was removed (each
        also logged as a ``remove``). One round trip for all paths."""
        pairs: dict[tuple[str, str], None] = {}
        for path in paths:
            directory = os.path.dirname(path) or "."
            pairs[(directory, "")] = None  # write_files' staging directories
            pairs[(directory, os.path.basename(path))] = None
        if not pairs:
            return []
        result = self._exec(_SWEEP, [item for pair in pairs for item in pair])
        if result.returncode != 0:
            raise ConnectorError(f"cannot sweep temporary files on {self._where()}: "
                                 f"{_strerror(result.stderr)}")
        removed: list[str] = []
        for item in result.stdout.split(b"\0"):
            if item:
                path = item.decode("utf-8", "surrogateescape")
                removed.append(path.rstrip("/"))
                self._record("remove", True, path=removed[-1], recursive=path.endswith("/"))
        return removed

    # -- mutations -----------------------------------------------------------------------
    def _mutate(self, script: str, args: Sequence[str], stdin: bytes = b""
                ) -> tuple[str, bytes] | None:
        """Run a mutation script: None when it succeeded, else the failure kind and the
        failing tool's message (stderr)."""
        failed = self._mutate_out(script, args, stdin)
        return None if failed is None else failed[:2]

    def _mutate_out(self, script: str, args: Sequence[str], stdin: bytes = b""
                    ) -> tuple[str, bytes, bytes] | None:
        """:meth:`_mutate`, with the script's stdout after the failure kind and stderr."""
        result = self._exec(script, args, stdin)
        if result.timed_out:
            raise ConnectorError(f"{self._where()}: the operation timed out after "
                                 f"{self.command_timeout:g} s")
        if result.returncode == 0:
            return None
        match = _FAIL.search(result.stdout)
        if result.returncode == 99 and match:
            return match.group(1).decode(), result.stderr, result.stdout
        detail = result.stderr.decode("utf-8", "replace").strip()[-400:]
        raise ConnectorError(f"{self._where()}: a remote step failed with exit code "
                             f"{result.returncode}: {detail}")

    def _ids_error(self, kind: str, owner: str | None, group: str | None) -> None:
        if kind == "nouser":
            raise ConnectorError(f"user {owner!r} does not exist on this host")
        if kind == "nogroup":
            raise ConnectorError(f"group {group!r} does not exist on this host")

    def write_file(
        self, path: str, data: bytes, *, mode: str | None, owner: str | None, group: str | None,
        validate: str | None = None,
    ) -> None:
        """Atomic: a temporary file in the same directory (``cat`` from stdin, chown, chmod,
        the ``validate`` command), then ``mv -fT`` over PATH; one round trip. What is None is
        kept from the file replaced: its mode (else 0644), its owner and its group (else the
        writer's) — but a symlink is not a file replaced: its 0777 and owner are not copied.
        ``validate`` (see :meth:`Connector.write_file`) runs on the host under ``sh``'s
        ``exec``, every word single-quoted and the staged path put in as a variable, so
        nothing in the command or the path is interpreted by a shell; a refusal raises
        :class:`~tectum.providers.host.connector.ValidationFailed`."""
        self._record("write", True, path=path, bytes=len(data))
        directory = os.path.dirname(path) or "."
        failed = self._mutate_out(_WRITE, [path, directory, os.path.basename(path),
                                           secrets.token_hex(6), str(len(data)), _octal(mode),
                                           owner or "", group or "",
                                           _validate_line(validate) if validate else ""], data)
        if failed is None:
            return
        kind, stderr, stdout = failed
        if kind == "validate" and validate is not None:
            code = _VALIDATE_RC.search(stdout)
            raise validation_error(path, validate, int(code.group(1)) if code else 1, stderr)
        self._ids_error(kind, owner, group)
        if kind == "nodir":
            raise ConnectorError(f"cannot write {path}: directory {directory} does not exist")
        if kind == "isdir":
            raise ConnectorError(f"cannot write {path}: Is a directory")
        if kind == "short":
            raise ConnectorError(f"cannot write {path}: the transfer to {self._where()} was "
                                 f"cut short; the file was left as it was")
        raise ConnectorError(f"cannot write {path}: {_strerror(stderr)}")

    def write_files(self, items: Sequence[tuple[str, bytes, str | None, str | None, str | None]]
                    ) -> list[PathFact | Exception]:
        """Write many files (``(path, data, mode, owner, group)`` each) in **one round trip**,
        each atomically (staged in a private directory ``.tectum-PID-R`` next to it, then
        renamed over it), with :meth:`write_file`'s rules for a missing mode, owner or group;
        return each file's facts as written (no second round trip), or the
        :class:`ConnectorError` that stopped it. The data travel as one tar stream; a target
        whose directory is missing or that is a directory makes the whole batch fall back to
        one :meth:`write_file` per item, for the same errors. Batches whose paths would make
        the command line long (over :data:`_ARGS_BUDGET` bytes) are split."""
        items = list(items)
        if not items:
            return []
        # the command line carries 6 arguments per file: keep each call well under ARG_MAX
        size = 0
        for i, (path, _data, _mode, owner, group) in enumerate(items):
            size += sum(len(x.encode("utf-8", "surrogateescape"))
                        for x in (path, path, path, owner or "", group or "")) + 64
            if size > _ARGS_BUDGET and i > 0:
                return self._write_batch(items[:i]) + self.write_files(items[i:])
        return self._write_batch(items)

    def _write_batch(self, items: list[tuple[str, bytes, str | None, str | None, str | None]]
                     ) -> list[PathFact | Exception]:
        token = secrets.token_hex(6)
        order = sorted(range(len(items)), key=lambda i: os.path.dirname(items[i][0]) or ".")
        args: list[str] = [_STAT_FORMAT, token]
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT,
                          encoding="utf-8", errors="surrogateescape") as tar:
            for index in order:
                path, data, mode, owner, group = items[index]
                _no_nul(path, "a path")
                directory = os.path.dirname(path) or "."
                base = os.path.basename(path)
                info = tarfile.TarInfo(f"{directory}/.tectum-PID-{token}/{base}")
                info.size = len(data)
                info.mode = int(_octal(mode), 8) if mode else 0o644
                info.mtime = int(time.time())
                tar.addfile(info, io.BytesIO(data))
                args += [path, directory, base, _octal(mode), owner or "", group or ""]
                self._record("write", True, path=path, bytes=len(data))
        result = self._exec(_WRITE_MANY, args, buffer.getvalue())
        if result.returncode == 98:  # a missing directory or a directory in the way
            out: list[PathFact | Exception] = []
            for path, data, mode, owner, group in items:
                try:
                    self.write_file(path, data, mode=mode, owner=owner, group=group)
                    fact = self.stat_paths([path])[0]
                    out.append(fact if fact is not None
                               else ConnectorError(f"cannot write {path}: it vanished"))
                except ConnectorError as exc:
                    out.append(exc)
            return out
        head, sep, listing = result.stdout.partition(b"tectum-stat\n")
        if result.timed_out or result.returncode != 0 or not sep:
            detail = _strerror(result.stderr) or f"exit code {result.returncode}"
            if b"tectum-fail:tar" in result.stdout:
                detail = f"the transfer to {self._where()} was cut short or refused: {detail}"
            error = ConnectorError(f"cannot write {len(items)} files on {self._where()}: "
                                   f"{detail}; every file was left as it was")
            return [error for _ in items]
        status: dict[int, str] = {}
        for line in head.splitlines():
            text = line.decode("utf-8", "replace")
            if text.startswith("tectum-ok:"):
                status.setdefault(order[int(text.split(":")[1])], "ok")
            elif text.startswith("tectum-fail:"):
                _, number, what = text.split(":", 2)
                status[order[int(number)]] = what
        facts = self._parse_stat(listing)
        results: list[PathFact | Exception] = []
        for i, (path, _data, _mode, owner, group) in enumerate(items):
            kind = status.get(i, "write")
            fact = facts.get(path)
            if kind == "ok" and fact is not None:
                results.append(fact._replace(sha256=hashlib.sha256(_data).hexdigest()))
                continue
            try:
                self._ids_error(kind, owner, group)
                raise ConnectorError(f"cannot write {path}: "
                                     f"{_strerror(result.stderr) or 'write failed'}")
            except ConnectorError as exc:
                results.append(exc)
        return results

    def set_attrs(
        self, path: str, *, mode: str | None, owner: str | None, group: str | None
    ) -> None:
        self._record("set_attrs", True, path=path, mode=mode, owner=owner, group=group)
        failed = self._mutate(_SET_ATTRS, [path, _octal(mode), owner or "", group or ""])
        if failed is None:
            return
        kind, stderr = failed
        self._ids_error(kind, owner, group)
        raise ConnectorError(f"cannot set attributes of {path}: "
                             f"{_strerror(stderr)}")

    def make_dir(
        self, path: str, *, mode: str | None, owner: str | None, group: str | None
    ) -> None:
        """Create the directory ``path`` (and its missing parents, ``mkdir -p``: mode 0755 or
        stricter by the umask, owned by the user commands run as, root with become; ``mode``,
        ``owner`` and ``group`` are for ``path`` only). Raises :class:`ConnectorError` when
        something is at ``path`` or a parent cannot be made."""
        self._record("mkdir", True, path=path)
        failed = self._mutate(_MKDIR, [path, _octal(mode), owner or "", group or ""])
        if failed is None:
            return
        kind, stderr = failed
        self._ids_error(kind, owner, group)
        raise self._mkdir_error(path, kind, stderr)

    def make_dirs(self, items: Sequence[tuple[str, str | None, str | None, str | None]]
                  ) -> list[PathFact | Exception]:
        """Create many directories (``(path, mode, owner, group)`` each, parents before what is
        inside them) in **one round trip**, each as :meth:`make_dir` does, and return each
        one's facts as made (no second round trip) or the :class:`ConnectorError` that stopped
        it (the others are still made)."""
        items = list(items)
        if not items:
            return []
        args = [_STAT_FORMAT]
        order = sorted(range(len(items)), key=lambda i: items[i][0].count("/"))  # parents first
        for index in order:
            path, mode, owner, group = items[index]
            self._record("mkdir", True, path=path)
            args += [_no_nul(path, "a path"), _octal(mode), owner or "", group or ""]
        result = self._exec(_MKDIR_MANY, args)
        head, sep, listing = result.stdout.partition(b"tectum-stat\n")
        if result.timed_out or result.returncode != 0 or not sep:
            reason = _strerror(result.stderr) if result.stderr else \
                ("timed out" if result.timed_out else f"exit code {result.returncode}")
            error = ConnectorError(f"cannot create {len(items)} directories on "
                                   f"{self._where()}: {reason}")
            return [error for _ in items]
        status: dict[int, tuple[str, bytes]] = {}
        for line in head.split(b"\n"):
            if line.startswith(b"tectum-ok:"):
                status[order[int(line.split(b":")[1])]] = ("ok", b"")
            elif line.startswith(b"tectum-fail:"):
                _, number, what, detail = line.split(b":", 3)
                status[order[int(number)]] = (what.decode(), detail)
        facts = self._parse_stat(listing)
        out: list[PathFact | Exception] = []
        for i, (path, _mode, owner, group) in enumerate(items):
            kind, message = status.get(i, ("mkdir", b""))
            fact = facts.get(path)
            if kind == "ok" and fact is not None:
                out.append(fact)
                continue
            try:
                self._ids_error(kind, owner, group)
                out.append(self._mkdir_error(path, kind, message))
            except ConnectorError as exc:
                out.append(exc)
        return out

    @staticmethod
    def _mkdir_error(path: str, kind: str, stderr: bytes) -> ConnectorError:
        reason = _strerror(stderr)
        if kind == "parents":
            if reason in ("File exists", "Not a directory"):
                reason = "one of them is there and is not a directory"
            return ConnectorError(f"cannot create directory {path}: cannot create its parent "
                                  f"directories ({reason})")
        if kind == "exists" or reason == "File exists":
            return ConnectorError(f"cannot create directory {path}: something is there")
        if reason == "No such file or directory":
            return ConnectorError(f"cannot create directory {path}: its parent does not exist")
        return ConnectorError(f"cannot create directory {path}: {reason}")

    def make_symlink(self, path: str, target: str) -> None:
        self._record("symlink", True, path=path, target=target)
        failed = self._mutate(_SYMLINK, [path, secrets.token_hex(6), target])
        if failed is None:
            return
        kind, stderr = failed
        if kind == "isdir":
            raise ConnectorError(f"cannot create symlink {path}: Is a directory")
        raise ConnectorError(f"cannot create symlink {path}: {_strerror(stderr)}")

    def remove(self, path: str, *, recursive: bool = False) -> None:
        """See :meth:`Connector.remove`: one round trip; a recursive delete is ``rm -rf``
        (which skips entries that vanish under it), twice if the first pass failed, and the
        host checks that ``path`` is gone before it answers."""
        self._record("remove", True, path=path, recursive=recursive)
        failed = self._mutate(_REMOVE, [path, "1" if recursive else "0"])
        if failed is None:
            return
        kind, stderr = failed
        if kind == "absent" and _strerror(stderr) == "No such file or directory":
            return  # already gone, as with LocalConnector
        if kind == "remains":
            lines = [line for line in stderr.splitlines()
                     if line.strip() and not line.startswith(b"tectum:")]
            why = _strerror(lines[0]) if lines else "was something added to it meanwhile?"
            raise ConnectorError(f"cannot remove {path}: it is still there after the delete "
                                 f"({why})")
        raise ConnectorError(f"cannot remove {path}: {_strerror(stderr)}")
