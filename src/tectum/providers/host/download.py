"""``download`` and ``archive``: a file fetched over HTTP(S) by the host, and an archive
unpacked on the host.

``download`` is Ansible's ``get_url`` (and pyinfra's ``files.download``): the **host** fetches
the URL (``curl`` when it is installed, else ``wget``; neither is an error naming both) into a
temporary file beside the destination (``.NAME.tectum-PID-download``), verifies the checksum
there, gives it its mode and ownership and renames it over the destination, so a reader never
sees half a file and a failed or mismatching download leaves the old file as it was (the
temporary file of a download killed with its run is removed by the next apply: the sweep of
the journal's unfinished changes, :meth:`DownloadType.sweep_interrupted`, once its process is
gone). The
destination is ``path`` (Ansible calls it ``dest``; tectum's name for the object a resource
manages is ``path``, as for ``file``, and a download shares the path namespace with files,
directories and symlinks). ``checksum`` (``"sha256:<hex>"`` or ``"sha512:<hex>"``, Ansible's
spelling) is required: a download without one must say so with ``insecure_skip_checksum=True``.

The read is part of the host's one fact round trip: the path's ``lstat`` and its digest
(``sha256sum``, and ``sha512sum`` for a sha512 checksum, run as read-only fact commands; the
content itself never travels). A file whose digest matches the checksum is not downloaded
again, so a no-op run makes no network access.

``archive`` is Ansible's ``unarchive`` with ``remote_src: true``: ``src`` is an archive on the
host (typically a download's ``path``), unpacked into the existing directory ``dest`` with GNU
tar (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.xz``/``.txz``, ``.tar.bz2``/``.tbz2``: tar detects the
compression) or ``unzip`` (``.zip``). Before anything is extracted, the archive's entries are
listed on the host and an entry that would land outside ``dest`` is refused, naming it: an
absolute name, a ``..`` component, a symlink whose target is absolute or climbs out of
``dest``, a hard link to such a name, a device node; symlinks in zip archives are refused too
(their targets are file data, not listed). State records the SHA-256 of the archive extracted
and the entries the extraction **created** (those that did not exist before it); see
:class:`ArchiveType` for when it extracts again and what deleting it removes.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeGuard

from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import ApplyError, ImplicitKey, ReadError, ReadItem
from tectum.providers.host.base import HostType
from tectum.providers.host.connector import ConnectorError, FactRequest
from tectum.providers.host.files import (
    _OWNERSHIP,
    _abs_path,
    _account,
    _fill_ownership,
    _ownership_of,
    _PathType,
    ancestors,
)
from tectum.schema import Attr, Schema
from tectum.values import is_known

if TYPE_CHECKING:
    from tectum.providers.host.connector import CommandResult, Connector

# -- shared helpers --------------------------------------------------------------------------

_CHECKSUM = re.compile(r"(sha256|sha512):([0-9a-fA-F]+)")
#: hex digits of each digest
_HEX_LEN = {"sha256": 64, "sha512": 128}
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: an HTTP header name (RFC 9110 token)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _is_token(value: Any) -> bool:
    return isinstance(value, str) and not is_known(value)


def _known_str(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and is_known(value)


def _valid_checksum(value: Any) -> str | None:
    """Validator for ``checksum``: ``sha256:<64 hex digits>`` or ``sha512:<128 hex digits>``
    (Ansible ``get_url``'s ``checksum`` spelling)."""
    if not isinstance(value, str) or _is_token(value):
        return None
    m = _CHECKSUM.fullmatch(value.strip())
    if m is None:
        return ('must be "sha256:<64 hex digits>" or "sha512:<128 hex digits>" (as '
                '`sha256sum FILE` prints the digest)')
    algo, digest = m.groups()
    if len(digest) != _HEX_LEN[algo]:
        return f"a {algo} digest has {_HEX_LEN[algo]} hex digits; this one has {len(digest)}"
    return None


def _valid_sha256(value: Any) -> str | None:
    if not isinstance(value, str) or _is_token(value):
        return None
    if not _HEX64.fullmatch(value.strip().lower()):
        return "must be a SHA-256 digest: 64 hex digits"
    return None


def _valid_url(value: Any) -> str | None:
    """Validator for ``url``: an http, https or ftp URL (what both curl and wget fetch),
    without credentials (they would show in the host's process list and stay in state)."""
    if not isinstance(value, str) or _is_token(value):
        return None
    if any(ord(c) < 33 or ord(c) == 127 for c in value):
        return "must not contain spaces or control characters (percent-encode them)"
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme.lower() not in ("http", "https", "ftp"):
        return "must be an http://, https:// or ftp:// URL"
    if not parts.hostname:
        return "must name a host (http://HOST/...)"
    if parts.username is not None or parts.password is not None:
        return ("must not hold credentials (user:password@): they would show in the host's "
                "process list and in state; send them in headers={\"Authorization\": ...}")
    return None


def _valid_headers(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be a mapping of header names to strings"
    for key, item in value.items():
        if not isinstance(key, str) or not _HEADER_NAME.fullmatch(key):
            return f"{key!r} is not a valid HTTP header name"
        if not isinstance(item, str):
            return f"the value of {key} must be a string, got {item!r}"
        if any(c in item for c in "\r\n\x00"):
            return f"the value of {key} must not contain a line break or a NUL byte"
    return None


def _valid_timeout(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and not 1 <= value <= 86400:
        return "must be 1 to 86400 seconds"
    return None


def _valid_creates(value: Any) -> str | None:
    if not isinstance(value, str) or _is_token(value):
        return None
    return _abs_path(value)


def _digest_of(conn: Connector, path: str, algo: str) -> str:
    """The hex digest of the regular file ``path`` (``sha256sum``/``sha512sum`` run read-only:
    answered from the host's prefetched facts when :meth:`facts` asked for it). Raises
    :class:`ReadError` when it cannot be computed."""
    result = conn.run((f"{algo}sum", "--", path), mutating=False)
    if not result.ok:
        raise ReadError(f"cannot compute the {algo} of {path} on {conn.host}: "
                        f"{result.error_text() or f'exit code {result.returncode}'}")
    words = result.text().split()
    if not words:
        raise ReadError(f"{algo}sum printed nothing for {path} on {conn.host}")
    return words[0].lstrip("\\").lower()


def _tail(result: CommandResult) -> str:
    from tectum.masking import REDACTOR

    return REDACTOR.redact(result.error_text())


# -- download --------------------------------------------------------------------------------

#: The download, run on the host by ``sh -c`` with positional arguments (nothing is
#: interpolated into the script). Header lines (``Name: value``) come on stdin, so they never
#: show in the process list: ``curl --header @-``; wget reads them from a private wgetrc.
#: Exit codes: 3 no directory, 4 transfer failed, 5 no client, 6 digest, 7 checksum mismatch
#: (stdout: the digest found), 8 mode/ownership, 9 rename. Success prints ``sha256:<hex>``.
_DOWNLOAD_SH = r"""
set -u
url=$1 dest=$2 algo=$3 want=$4 tmo=$5 mode=$6 owner=$7 group=$8 hdr=$9
dir=$(dirname -- "$dest") base=$(basename -- "$dest")
[ -d "$dir" ] || { echo "the directory $dir does not exist" >&2; exit 3; }
tmp="$dir/.$base.tectum-$$-download"
rc=""
cleanup() { rm -f -- "$tmp"; [ -z "$rc" ] || rm -f -- "$rc"; }
trap cleanup EXIT
trap 'exit 130' HUP INT TERM
rm -f -- "$tmp"
if command -v curl >/dev/null 2>&1; then
  if [ "$hdr" = 1 ]; then set -- --header @-; else set --; fi
  curl --fail --silent --show-error --location --max-redirs 20 \
    --proto =http,https,ftp --proto-redir =http,https,ftp \
    --connect-timeout "$tmo" --speed-limit 1 --speed-time "$tmo" \
    "$@" --output "$tmp" -- "$url" || exit 4
elif command -v wget >/dev/null 2>&1; then
  set --
  if [ "$hdr" = 1 ]; then
    rc=$(mktemp) || exit 4
    sed 's/^/header = /' > "$rc" || exit 4
    set -- --config="$rc"
  fi
  wget --no-verbose --tries=1 --timeout="$tmo" --max-redirect=20 \
    "$@" --output-document="$tmp" -- "$url" || exit 4
else
  echo "neither curl nor wget is installed" >&2; exit 5
fi
[ -f "$tmp" ] || { echo "nothing was downloaded" >&2; exit 4; }
got=$("${algo}sum" < "$tmp") || exit 6
got=${got%% *}
if [ -n "$want" ] && [ "$got" != "$want" ]; then echo "$algo:$got"; exit 7; fi
if [ "$algo" = sha256 ]; then sha=$got; else sha=$(sha256sum < "$tmp") || exit 6; sha=${sha%% *}; fi
if [ -f "$dest" ] && [ ! -L "$dest" ]; then
  chown --reference="$dest" -- "$tmp" || exit 8
fi
if [ -n "$owner" ]; then chown -- "$owner" "$tmp" || exit 8; fi
if [ -n "$group" ]; then chgrp -- "$group" "$tmp" || exit 8; fi
if [ -n "$mode" ]; then chmod -- "$mode" "$tmp" || exit 8
elif [ -f "$dest" ] && [ ! -L "$dest" ]; then chmod --reference="$dest" -- "$tmp" || exit 8
else chmod 0644 -- "$tmp" || exit 8
fi
mv -f -- "$tmp" "$dest" || exit 9
echo "sha256:$sha"
"""

#: attributes no read can observe (how the file is fetched): never drift; a change is
#: recorded (an update that downloads nothing while the content matches the checksum).
#: ``headers`` is not among them: it is never kept in state (a token would sit there in clear)
#: and changing it plans nothing — the next download sends the new ones.
_FETCH = ("url", "timeout", "insecure_skip_checksum")


def _algo(checksum: Any) -> str | None:
    if _known_str(checksum):
        m = _CHECKSUM.fullmatch(checksum.strip())
        if m is not None:
            return m.group(1)
    return None


class DownloadType(_PathType):
    """A file downloaded by the host from ``url`` to ``path`` and verified against
    ``checksum`` (Ansible ``get_url``, pyinfra ``files.download``; see the module docstring).

    Attributes: ``path`` (absolute, in normal form; Ansible's ``dest``), ``url`` (http, https
    or ftp), ``checksum`` (``"sha256:<hex>"``/``"sha512:<hex>"``; required unless
    ``insecure_skip_checksum=True``), ``mode``/``owner``/``group`` (as for ``file``: left unset
    they are kept from the file replaced, else 0644 and the downloader's), ``headers`` (a
    mapping, sent on the host's stdin, never on a command line; masked in plans and never kept
    in state, so changing them alone plans nothing), ``timeout`` (seconds without
    progress — connecting, or no byte received — before the download is given up; Ansible's
    default 10). Computed: ``sha256``, the hex SHA-256 of the file (an ``archive`` that unpacks
    it uses it to know it changed).

    Plan: absent → create (download). With a checksum: a file whose digest differs is
    downloaded again (drift "checksum" when it was changed by hand); a change of ``url`` or
    ``timeout`` alone downloads nothing (the checksum pins the content) and is only recorded.
    Without a checksum (``insecure_skip_checksum=True``, Ansible's ``get_url`` with
    ``force: no``): a file that is there is kept; it is downloaded again only when its
    SHA-256 differs from the one recorded when tectum downloaded it (drift "content") or when
    ``url`` changed. A file found at ``path`` before tectum is adopted when it matches
    (forgotten, never deleted, when the resource goes; README "What tectum deletes").

    Apply raises :class:`ApplyError` for a transfer error (the client's message, e.g.
    ``curl: (22) The requested URL returned error: 404``), a checksum mismatch (both digests;
    the old file is left as it was) or a host with neither curl nor wget."""

    name = "download"
    kind = "file"
    schema = Schema({
        "path": Attr(str, required=True, identity=True, force_new=True, validate=_abs_path,
                     description="absolute path of the downloaded file (Ansible get_url's "
                                 "dest), in normal form"),
        "url": Attr(str, required=True, validate=_valid_url,
                    description="http://, https:// or ftp:// URL the host downloads"),
        "checksum": Attr(str, validate=_valid_checksum, description=(
            "\"sha256:<hex>\" or \"sha512:<hex>\": the digest the file must have, verified on "
            "the host before the file replaces the old one; required unless "
            "insecure_skip_checksum=True")),
        "insecure_skip_checksum": Attr(bool, default=False, description=(
            "download without a checksum (nothing verifies what the server sent); the file is "
            "then only downloaded when it is absent, its content changed since tectum "
            "downloaded it, or url changed")),
        **_OWNERSHIP,
        "headers": Attr(dict, sensitive=True, validate=_valid_headers, description=(
            "HTTP headers to send, e.g. {\"Authorization\": secret(...)}: passed on stdin, "
            "never on a command line, masked in plans and never kept in state (a change of "
            "them alone plans nothing)")),
        "timeout": Attr(int, default=10, validate=_valid_timeout, description=(
            "seconds without progress (connecting, or no byte received) before the download "
            "is given up (Ansible get_url's timeout)")),
        "sha256": Attr(str, computed=True, description="hex SHA-256 of the file"),
    })
    stored_computed = ("sha256",)
    unobserved = frozenset({*_FETCH, "headers"})
    #: the digest stands for the content: drift and changes name "content"
    labels = {"sha256": "content"}

    # -- configuration -------------------------------------------------------------------
    def check(self, attrs: dict[str, Any]) -> list[str]:
        checksum = attrs.get("checksum")
        skip = attrs.get("insecure_skip_checksum")
        if checksum is None and skip is not True:
            return ["checksum is not set. Set checksum=\"sha256:<hex>\" (the digest the file "
                    "must have, as `sha256sum FILE` prints it; sha512: works too) so the host "
                    "verifies what it downloads, or set insecure_skip_checksum=True to download "
                    "without verification (the file is then fetched only when it is absent or "
                    "changed since tectum fetched it)."]
        if checksum is not None and skip is True:
            return ["Set either checksum or insecure_skip_checksum=True, not both."]
        return []

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        """Fill defaults; the checksum in lower case; an empty ``headers`` is none."""
        out = super().prepare(attrs, base_dir)
        checksum = out.get("checksum")
        if _known_str(checksum):
            out["checksum"] = checksum.strip().lower()
        if out.get("headers") == {}:
            out["headers"] = None
        return out

    def implicit_keys(self, attrs: dict[str, Any]) -> list[ImplicitKey]:
        """``("download", path)``: an archive whose ``src`` is this path depends on it."""
        path = attrs.get("path")
        return [("download", path)] if _known_str(path) else []

    def journal_identity(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The path, and the checksum (its algorithm says which digest a read reports)."""
        return {"path": attrs.get("path"), "checksum": attrs.get("checksum")}

    def describe(self, attrs: dict[str, Any]) -> str:
        return str(attrs.get("path", ""))

    # -- refresh -------------------------------------------------------------------------
    def facts(self, objects: Sequence[dict[str, Any]]) -> FactRequest:
        """The paths' ``lstat`` and their digests (read-only commands: the content itself is
        not transferred)."""
        paths: list[str] = []
        commands: list[tuple[str, ...]] = []
        for obj in objects:
            path = obj.get("path")
            if not _known_str(path):
                continue
            paths.append(path)
            commands.append(("sha256sum", "--", path))
            if _algo(obj.get("checksum")) == "sha512":
                commands.append(("sha512sum", "--", path))
        return FactRequest(paths=tuple(paths), commands=tuple(commands))

    def read_objects(self, conn: Connector, objects: Sequence[dict[str, Any]]
                     ) -> list[dict[str, Any] | None]:
        """Per object: None when nothing is at ``path``; ``{"path", "_kind"}`` for something
        that is not a regular file; else ``{"path", "sha256", "checksum"`` (the file's digest in
        the object's checksum algorithm, sha256 without one)``, "mode", "owner", "group"}``
        and the fetch attributes echoed from the object (nothing on the host shows them)."""
        facts = conn.stat_paths([str(o["path"]) for o in objects])
        out: list[dict[str, Any] | None] = []
        for obj, fact in zip(objects, facts, strict=True):
            path = str(obj["path"])
            if fact is None:
                out.append(None)
                continue
            if fact.kind != "file":
                out.append({"path": path, "_kind": fact.kind, **_ownership_of(fact, obj)})
                continue
            sha = _digest_of(conn, path, "sha256")
            algo = _algo(obj.get("checksum")) or "sha256"
            digest = sha if algo == "sha256" else _digest_of(conn, path, algo)
            entry: dict[str, Any] = {"path": path, "sha256": sha, "checksum": f"{algo}:{digest}",
                                     **_ownership_of(fact, obj)}
            for key in _FETCH:
                if key in obj:
                    entry[key] = obj[key]
            out.append(entry)
        return out

    # -- plan ----------------------------------------------------------------------------
    def plan(self, desired: dict[str, Any], observed: dict[str, Any] | None,
             prior: dict[str, Any] | None) -> tuple[Action, list[AttrChange]]:
        """See the class docstring."""
        if observed is None:
            return super().plan(desired, observed, prior)
        if observed.get("_kind"):
            return Action.REPLACE, [AttrChange("kind", observed["_kind"], "file",
                                               force_new=True)]
        changes: list[AttrChange] = []
        want = desired.get("checksum")
        if want is not None:
            if observed.get("checksum") != want:
                changes.append(AttrChange("checksum", observed.get("checksum"), want))
        elif prior is not None:
            was = prior.get("sha256")
            if was is not None and observed.get("sha256") != was:
                changes.append(AttrChange("sha256", observed.get("sha256"), was))
        for key in ("mode", "owner", "group"):
            value = desired.get(key)
            if value is not None and value != observed.get(key):
                changes.append(AttrChange(key, observed.get(key), value))
        if prior is not None:
            for key in _FETCH:
                if prior.get(key) != desired.get(key):
                    changes.append(AttrChange(key, prior.get(key), desired.get(key)))
        return (Action.UPDATE if changes else Action.NOOP), changes

    def stored(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The record, without ``headers`` (see :data:`_FETCH`)."""
        out = super().stored(attrs)
        out.pop("headers", None)
        return out

    def warnings(self, change: ResourceChange) -> list[str]:
        after = change.after or {}
        if change.action is not Action.DELETE and after.get("checksum") is None \
                and after.get("insecure_skip_checksum"):
            if change.action is Action.NOOP:
                return []
            return ["downloaded without a checksum (insecure_skip_checksum): nothing verifies "
                    "what the server sends."]
        return []

    # -- apply ---------------------------------------------------------------------------
    def apply(self, conn: Connector, change: ResourceChange) -> dict[str, Any] | None:
        path = str((change.after or change.before or change.prior or {}).get("path"))
        try:
            if change.action is Action.DELETE:
                conn.remove(path)
                return None
            after = dict(change.after or {})
            names = {c.name for c in change.changes}
            if change.action is Action.REPLACE and change.before is not None \
                    and change.before.get("path") not in (None, path):
                conn.remove(str(change.before["path"]))
            if "kind" in names:
                kind = next(c.before for c in change.changes if c.name == "kind")
                if kind == "directory":
                    raise ApplyError(f"{path} is a directory; tectum does not replace a "
                                     "directory with a downloaded file. Remove it by hand or "
                                     "choose another path.")
                conn.remove(path)
            unchecked = after.get("checksum") is None
            fetch = change.action in (Action.CREATE, Action.REPLACE) \
                or bool(names & {"checksum", "sha256"}) or ("url" in names and unchecked)
            if fetch:
                after["sha256"] = self._download(conn, path, after)
                _fill_ownership(conn, path, after, None)
            else:
                self._apply_ownership(conn, path, change.changes, after)
                after["sha256"] = (change.before or {}).get("sha256") \
                    or (change.prior or {}).get("sha256")
                _fill_ownership(conn, path, after, change.before)
        except ConnectorError as exc:
            raise ApplyError(str(exc)) from None
        return self.stored(after)

    def _download(self, conn: Connector, path: str, after: dict[str, Any]) -> str:
        """Download ``after["url"]`` to ``path`` on the host; returns the new file's SHA-256."""
        url = str(after["url"])
        checksum = after.get("checksum")
        algo = _algo(checksum) or "sha256"
        want = str(checksum).split(":", 1)[1] if checksum else ""
        headers: dict[str, str] = after.get("headers") or {}
        lines = "".join(f"{k}: {v}\n" for k, v in headers.items())
        argv = ["/bin/sh", "-c", _DOWNLOAD_SH, "tectum-download", url, path, algo, want,
                str(after.get("timeout") or 10), after.get("mode") or "",
                after.get("owner") or "", after.get("group") or "", "1" if headers else "0"]
        result = conn.run(argv, mutating=True, input=lines.encode() if headers else None)
        kept = f"{path} was left as it was"
        if result.returncode == 7:
            got = result.text().strip()
            raise ApplyError(f"checksum mismatch for {url}: expected {checksum}, got {got}. "
                             f"The server sent other content (a new release under the same "
                             f"URL? a tampered or truncated file?); {kept} and the download "
                             "was removed. Check the source, then update checksum.")
        if result.returncode == 5:
            raise ApplyError(f"cannot download {url} on {conn.host}: neither curl nor wget is "
                             "installed there. Install one (Package(\"curl\")) and make this "
                             "download depend on it.")
        if result.returncode == 3:
            raise ApplyError(f"cannot download {url} to {path}: {_tail(result)}. Create it "
                             "first (a Directory resource).")
        if not result.ok:
            why = _tail(result) or f"exit code {result.returncode}"
            step = {4: "the transfer failed", 6: "its digest could not be computed",
                    8: "its mode or ownership could not be set",
                    9: "it could not be renamed into place"}.get(result.returncode,
                                                                  "it failed")
            raise ApplyError(f"cannot download {url} to {path}: {step}: {why}; {kept}")
        out = result.text().strip().splitlines()
        last = out[-1] if out else ""
        if not last.startswith("sha256:"):
            raise ApplyError(f"download of {url} to {path} reported {last!r}, not its digest")
        return last.removeprefix("sha256:")


# -- archive ---------------------------------------------------------------------------------

#: suffixes read as zip; every other archive goes to GNU tar, which detects the compression
_ZIP_SUFFIXES = (".zip",)
#: what an extraction records and compares (besides src and dest)
_EXTRACT_ON = ("owner", "group", "format")
#: attributes no read of the archive observes
_ARCHIVE_UNOBSERVED = ("creates", "owner", "group", "src_sha256", "format", "files")


class Entry(NamedTuple):
    """One archive member: ``kind`` (``file``, ``dir``, ``symlink``, ``hardlink`` or
    ``other:<type letter>``), ``name`` as listed, ``target`` for links."""

    kind: str
    name: str
    target: str | None = None


class UnsafeArchive(ApplyError):
    """An archive entry would land outside the destination: nothing was extracted."""


def _format_of(attrs: dict[str, Any]) -> str:
    fmt = attrs.get("format")
    if fmt in ("tar", "zip"):
        return str(fmt)
    src = str(attrs.get("src") or "")
    return "zip" if src.lower().endswith(_ZIP_SUFFIXES) else "tar"


def _cstring(text: str, start: int) -> tuple[str, int]:
    """The C-quoted string (tar's ``--quoting-style=c``) starting at ``text[start]`` (a
    ``"``): its value and the index after the closing quote. Raises ``ValueError``."""
    if start >= len(text) or text[start] != '"':
        raise ValueError("no quoted name")
    i = start + 1
    raw: list[str] = []
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            raw.append(text[i:i + 2])
            i += 2
            continue
        if c == '"':
            data = "".join(raw).encode("utf-8", "surrogateescape")
            value = codecs.escape_decode(data)[0]
            assert isinstance(value, bytes)
            return value.decode("utf-8", "surrogateescape"), i + 1
        raw.append(c)
        i += 1
    raise ValueError("unterminated quoted name")


_TAR_KINDS = {"-": "file", "d": "dir", "l": "symlink", "h": "hardlink"}


def parse_tar_listing(text: str) -> list[Entry]:
    """Entries of ``tar -tv --quoting-style=c`` output (GNU tar). Raises ``ValueError`` for a
    line it cannot read."""
    out: list[Entry] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        quote = line.find('"')
        if quote < 0:
            raise ValueError(f"cannot read the tar listing line {line!r}")
        name, end = _cstring(line, quote)
        kind = _TAR_KINDS.get(line[0], f"other:{line[0]}")
        target = None
        rest = line[end:]
        if kind == "symlink" and rest.startswith(" -> "):
            target, _ = _cstring(rest, 4)
        elif kind == "hardlink" and rest.startswith(" link to "):
            target, _ = _cstring(rest, 9)
        elif kind in ("symlink", "hardlink"):
            raise ValueError(f"cannot read the link target in {line!r}")
        out.append(Entry(kind, name, target))
    return out


def parse_zip_listing(names: str, long: str) -> list[Entry]:
    """Entries of a zip archive from ``unzip -Z1`` (names, one a line) and ``unzip -Zs`` (the
    same entries in ``ls -l`` form, whose first letter is the type). Raises ``ValueError``
    when the two do not match."""
    listed = [n for n in names.split("\n") if n != ""]
    kinds = [line[0] for line in long.splitlines()
             if len(line) > 10 and line[0] in "-dl?" and line[1:10].strip("rwxsStT-") == ""]
    if len(kinds) != len(listed):
        raise ValueError(f"the zip listing has {len(listed)} names but {len(kinds)} entries")
    out = []
    for name, letter in zip(listed, kinds, strict=True):
        kind = "dir" if letter == "d" or name.endswith("/") else \
            "symlink" if letter == "l" else "file"
        out.append(Entry(kind, name))
    return out


def _parts(name: str) -> list[str]:
    return [p for p in name.split("/") if p not in ("", ".")]


def normal_entry(name: str) -> str:
    """An entry's name relative to the destination: ``./a/b/`` → ``a/b`` (``""`` for the
    destination itself)."""
    return "/".join(_parts(name))


def unsafe_entry(entry: Entry, fmt: str) -> str | None:
    """Why extracting ``entry`` could write outside the destination (a sentence), or None."""
    name = entry.name
    if name.startswith("/") or (fmt == "zip" and re.match(r"[A-Za-z]:[\\/]|\\", name)):
        return "its name is an absolute path"
    if ".." in name.split("/") or (fmt == "zip" and ".." in re.split(r"[\\/]", name)):
        return "its name has a \"..\" component"
    if "\x00" in name or "\n" in name:
        return "its name holds a NUL byte or a line break"
    if entry.kind.startswith("other"):
        return (f"it is neither a file, a directory nor a link (tar type "
                f"{entry.kind.split(':', 1)[1]!r}: a device node or a FIFO)")
    if entry.kind == "symlink":
        if fmt == "zip":
            return ("it is a symlink, and the target of a symlink in a zip archive cannot be "
                    "checked before extraction; repack the archive as a tar archive")
        target = entry.target or ""
        if target.startswith("/"):
            return f"it is a symlink to the absolute path {target!r}, outside the destination"
        resolved = os.path.normpath(os.path.join(os.path.dirname(normal_entry(name)), target))
        if resolved == ".." or resolved.startswith("../"):
            return f"it is a symlink to {target!r}, which points outside the destination"
    if entry.kind == "hardlink":
        target = entry.target or ""
        if target.startswith("/") or ".." in target.split("/"):
            return f"it is a hard link to {target!r}, outside the destination"
    return None


#: the extraction, run by ``sh -c``: the archive's SHA-256 must still be the one listed
#: (it cannot change between the check and the extraction). Exit codes: 3 dest is not a
#: directory, 4 archive changed, 5 extraction failed.
_EXTRACT_SH = r"""
set -u
src=$1 dest=$2 want=$3 fmt=$4
[ -d "$dest" ] || { echo "$dest is not a directory" >&2; exit 3; }
got=$(sha256sum < "$src") || exit 5
got=${got%% *}
[ "$got" = "$want" ] || { echo "$got"; exit 4; }
if [ "$fmt" = zip ]; then
  unzip -o -q -- "$src" -d "$dest" || exit 5
else
  tar -x --no-same-owner --no-overwrite-dir -f "$src" -C "$dest" || exit 5
fi
"""


class ArchiveType(HostType):
    """An archive on the host unpacked into a directory (Ansible ``unarchive`` with
    ``remote_src: true``; see the module docstring for the formats and what is refused).

    Attributes: ``src`` (absolute path of the archive on the host; a ``download``'s path orders
    the two), ``dest`` (an existing directory; Ansible's ``dest`` must exist too), ``creates``
    (a path: while it exists and tectum has not extracted this archive, nothing is done —
    Ansible's ``creates``; the archive is then adopted as found), ``owner``/``group`` (given to
    every extracted file and to each directory the extraction created; left unset, entries
    belong to the user tectum runs as: tar runs with ``--no-same-owner``, so uids from someone
    else's machine never appear), ``format`` (``tar`` or ``zip``; default from ``src``: ``.zip``
    is zip, anything else tar, whose compression GNU tar detects), ``src_sha256`` (the SHA-256
    the archive must have; ``Archive(src=download.path)`` sets it to the download's
    ``sha256``, so a download that changes in the same plan re-extracts the archive).
    Computed: ``archive_sha256`` (of the archive extracted) and ``files`` (the entries, relative
    to ``dest``, that the extractions created: they did not exist before).

    Plan: never extracted and ``creates`` absent (or unset) → create: list, check, extract.
    Extracted by tectum → extracted again (an update) when the archive's SHA-256 differs from
    the one recorded (a new archive: it is not drift), when ``owner``/``group``/``format``
    changed, or when recorded entries are missing (drift "files"); otherwise nothing, even when
    ``creates`` exists. A changed ``src`` or ``dest`` replaces it: the old extraction is
    deleted, the new one made. What an extraction overwrote stays overwritten (tar's rule);
    directories already there keep their mode and owner (``--no-overwrite-dir``). A symlink
    already in ``dest`` where the archive has a directory is refused too (tar would write
    through it or replace it).

    Read: ``src``, ``dest`` and ``creates`` are stat'ed and the archive hashed in the host's
    prefetch round trip; an extraction tectum recorded costs one more ``stat`` call (the
    recorded entries of every archive of the host together), to see entries removed by hand.

    Delete (of an extraction tectum made): removes the recorded entries it created — files and
    links first, then the directories it created, deepest first, only when empty — and never
    follows a symlink to reach an entry; what was in ``dest`` before stays. An archive adopted
    through ``creates`` is only forgotten.

    Crash safety: before tar or unzip runs, the entries the extraction is about to create are
    written to a manifest in ``dest`` (:func:`manifest_path`: ``.tectum-extract-<hash of
    src>.json``), removed once the extraction is done. After a killed run the manifest names
    what the interrupted extraction made: the next apply's sweep removes those entries (so
    the extraction made again creates, and records, them), and an extraction that finds a
    manifest counts its entries as its own."""

    name = "archive"
    schema = Schema({
        "src": Attr(str, required=True, identity=True, force_new=True, validate=_abs_path,
                    description="absolute path of the archive on the host"),
        "dest": Attr(str, required=True, identity=True, force_new=True, validate=_abs_path,
                     description="existing directory the archive is unpacked into"),
        "creates": Attr(str, validate=_valid_creates, description=(
            "absolute path: while it exists (and tectum has not extracted this archive), "
            "nothing is extracted (Ansible unarchive's creates)")),
        "owner": Attr(str, validate=_account, description="user owning the extracted entries"),
        "group": Attr(str, validate=_account, description="group owning the extracted entries"),
        "format": Attr(str, choices=("tar", "zip"), description=(
            "tar (.tar, .tar.gz, .tgz, .tar.xz, .tar.bz2...) or zip; default from src's "
            "suffix")),
        "src_sha256": Attr(str, validate=_valid_sha256, description=(
            "the SHA-256 the archive must have (set from a download's sha256 when src is a "
            "download's path)")),
        "archive_sha256": Attr(str, computed=True,
                               description="SHA-256 of the archive last extracted"),
        "files": Attr(list, computed=True, description=(
            "entries (relative to dest) the extractions created")),
    })
    stored_computed = ("archive_sha256", "files")
    unobserved = frozenset(_ARCHIVE_UNOBSERVED)
    side_effects = True

    # -- configuration -------------------------------------------------------------------
    def check(self, attrs: dict[str, Any]) -> list[str]:
        src, fmt = attrs.get("src"), attrs.get("format")
        if _known_str(src) and fmt is None and not re.search(
                r"\.(zip|tar|tgz|tbz2?|txz|tar\.(gz|xz|bz2|zst|lz|lzma|Z))$", src, re.I):
            return [f"src {src!r} has no archive suffix (.tar, .tar.gz, .tgz, .tar.xz, "
                    ".tar.bz2, .zip): set format=\"tar\" or format=\"zip\"."]
        return []

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        digest = out.get("src_sha256")
        if _known_str(digest):
            out["src_sha256"] = digest.strip().lower()
        if out.get("format") is None and _known_str(out.get("src")):
            out["format"] = _format_of(out)
        return out

    def identity_key(self, attrs: dict[str, Any]) -> tuple[Any, ...]:
        return ("archive", attrs.get("src"), attrs.get("dest"))

    def journal_identity(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """``src``, ``dest`` and ``creates`` (after a crash an extraction is found through
        ``creates``; without it, it is extracted again: tar over the same files)."""
        return {k: attrs.get(k) for k in ("src", "dest", "creates")}

    def implicit_needs(self, attrs: dict[str, Any]) -> list[list[ImplicitKey]]:
        """The download whose path is ``src``; the nearest managed directory at or above
        ``dest``; the owner and the group."""
        out: list[list[ImplicitKey]] = []
        src, dest = attrs.get("src"), attrs.get("dest")
        if _known_str(src):
            out.append([("download", src)])
        if _known_str(dest):
            out.append([("dir", dest), *(("dir", p) for p in ancestors(dest))])
        for key, kind in (("owner", "user"), ("group", "group")):
            value = attrs.get(key)
            if isinstance(value, str):
                out.append([(kind, value)])
        return out

    def describe(self, attrs: dict[str, Any]) -> str:
        return f"{attrs.get('src', '')} → {attrs.get('dest', '')}"

    def sweep_interrupted(self, target: Connector,
                          identities: Sequence[dict[str, Any]]) -> None:
        """Remove what extractions a killed run did not finish created (the entries their
        manifest names, :func:`manifest_path`) and the manifest. Raises :class:`ApplyError`
        when an entry cannot be removed."""
        for ident in identities:
            src, dest = ident.get("src"), ident.get("dest")
            if not (_known_str(src) and _known_str(dest)):
                continue
            manifest = manifest_path(src, dest)
            names = _read_manifest(target, manifest)
            if names is None:
                continue
            self._remove(target, {"dest": dest, "files": names})
            try:
                target.remove(manifest)
            except ConnectorError as exc:
                raise ApplyError(str(exc)) from None

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        files = prior.get("files")
        if isinstance(files, list):
            return f"removes the {len(files)} entries its extraction created"
        return None

    # -- refresh -------------------------------------------------------------------------
    def facts(self, objects: Sequence[dict[str, Any]]) -> FactRequest:
        paths: list[str] = []
        commands: list[tuple[str, ...]] = []
        for obj in objects:
            for key in ("src", "dest", "creates"):
                if _known_str(obj.get(key)):
                    paths.append(obj[key])
            if _known_str(obj.get("src")):
                commands.append(("sha256sum", "--", obj["src"]))
        return FactRequest(paths=tuple(paths), commands=tuple(commands))

    def read(self, target: Connector, items: Sequence[ReadItem]
             ) -> list[dict[str, Any] | None]:
        """Reads by the configuration over the record (the record holds what was
        extracted)."""
        return self.read_objects(target, [{**(i.prior or {}), **(i.desired or {})}
                                          for i in items])

    def read_objects(self, conn: Connector, objects: Sequence[dict[str, Any]]
                     ) -> list[dict[str, Any] | None]:
        """Per object: None when it was not extracted (no record of an extraction and
        ``creates`` unset or absent; or none of the recorded entries is left); else ``{"src",
        "dest", "archive_sha256"`` (left out when the archive is gone)``}``, the object's own
        unobservable attributes echoed, and ``_missing`` (recorded entries not there)."""
        first: list[str] = []
        for obj in objects:
            first += [str(obj["src"]), str(obj["dest"])]
            if obj.get("creates") is not None:
                first.append(str(obj["creates"]))
        facts = dict(zip(first, conn.stat_paths(first), strict=True))
        recorded = [os.path.join(str(o["dest"]), f) for o in objects
                    for f in (o.get("files") or [])]
        later = dict(zip(recorded, conn.stat_paths(recorded), strict=True)) if recorded else {}
        out: list[dict[str, Any] | None] = []
        for obj in objects:
            src, dest = str(obj["src"]), str(obj["dest"])
            dest_fact = facts.get(dest)
            if dest_fact is None or dest_fact.kind != "directory":
                out.append(None)
                continue
            files = obj.get("files")
            creates = obj.get("creates")
            created = creates is not None and facts.get(str(creates)) is not None
            missing: list[str] = []
            if isinstance(files, list):
                missing = [f for f in files if later.get(os.path.join(dest, f)) is None]
                if files and len(missing) == len(files):
                    out.append(None)
                    continue
                if not files and creates is not None and not created:
                    out.append(None)
                    continue
            elif not created:
                out.append(None)
                continue
            src_fact = facts.get(src)
            digest = _digest_of(conn, src, "sha256") \
                if src_fact is not None and src_fact.kind == "file" else None
            entry: dict[str, Any] = {"src": src, "dest": dest}
            if digest is not None:  # (an archive removed after extraction is no drift)
                entry["archive_sha256"] = digest
            for key in _ARCHIVE_UNOBSERVED:
                if key in obj:
                    entry[key] = obj[key]
            if missing:
                entry["_missing"] = missing
            out.append(entry)
        return out

    def exists(self, observed: dict[str, Any]) -> bool:
        return True

    # -- plan ----------------------------------------------------------------------------
    def plan(self, desired: dict[str, Any], observed: dict[str, Any] | None,
             prior: dict[str, Any] | None) -> tuple[Action, list[AttrChange]]:
        """See the class docstring."""
        if observed is None:
            action, made = super().plan(desired, observed, prior)
            return action, [*made, AttrChange("extract", None, "pending")]
        if prior is None:
            return Action.NOOP, []  # found extracted (creates exists): adopted
        changes: list[AttrChange] = []
        was = prior.get("archive_sha256")
        want = desired.get("src_sha256")  # (unknown when the download changes too)
        if want is None:
            want = observed.get("archive_sha256")
        new_archive = was is not None and want is not None and want != was
        if new_archive:
            changes.append(AttrChange("archive_sha256", was, want))
        missing = observed.get("_missing") or []
        if missing:
            files = prior.get("files") or []
            changes.append(AttrChange(
                "files", f"{len(missing)} of {len(files)} extracted entries missing "
                         f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})",
                "extracted again"))
        for key in (*_EXTRACT_ON, "creates", "src_sha256"):
            if prior.get(key) != desired.get(key) \
                    and not (key == "src_sha256" and new_archive):
                changes.append(AttrChange(key, prior.get(key), desired.get(key)))
        return (Action.UPDATE if changes else Action.NOOP), changes

    def warnings(self, change: ResourceChange) -> list[str]:
        if change.action in (Action.UPDATE, Action.REPLACE) and any(
                c.name in ("archive_sha256", "files") for c in change.changes):
            return ["files the extraction overwrites are not restored by a rollback."]
        return []

    # -- apply ---------------------------------------------------------------------------
    def apply(self, conn: Connector, change: ResourceChange) -> dict[str, Any] | None:
        try:
            if change.action is Action.DELETE:
                record = change.prior or change.before or {}
                self._remove(conn, record)
                return None
            after = dict(change.after or {})
            prior = change.prior or {}
            names = {c.name for c in change.changes}
            files: list[str] = list(prior.get("files") or [])
            if change.action is Action.REPLACE:
                self._remove(conn, prior)
                files = []
            extract = change.action in (Action.CREATE, Action.REPLACE) \
                or bool(names & {"archive_sha256", "files", *_EXTRACT_ON})
            if extract:
                digest, made = self._extract(conn, after, files)
                after["archive_sha256"] = digest
                after["files"] = made
            else:
                after["archive_sha256"] = prior.get("archive_sha256")
                after["files"] = prior.get("files")
        except ConnectorError as exc:
            raise ApplyError(str(exc)) from None
        return self.stored(after)

    def _list(self, conn: Connector, src: str, fmt: str) -> tuple[str, list[Entry]]:
        """The archive's SHA-256 and its entries, read on the host (read-only commands)."""
        if not conn.exists(src):
            raise ApplyError(f"cannot extract {src}: it does not exist")
        digest = _digest_of(conn, src, "sha256")
        try:
            if fmt == "zip":
                names = conn.run(("unzip", "-Z1", "--", src), mutating=False)
                long = conn.run(("unzip", "-Zs", "--", src), mutating=False)
                for result in (names, long):
                    if not result.ok:
                        raise ApplyError(self._list_error(src, fmt, result))
                entries = parse_zip_listing(names.text(), long.text())
            else:
                # -P: names and link targets as stored (else tar strips "/" and "../")
                result = conn.run(("tar", "-t", "-v", "-P", "--numeric-owner",
                                   "--quoting-style=c", "-f", src), mutating=False)
                if not result.ok:
                    raise ApplyError(self._list_error(src, fmt, result))
                entries = parse_tar_listing(result.stdout.decode("utf-8", "surrogateescape"))
        except ValueError as exc:
            raise ApplyError(f"cannot read the entries of {src}: {exc}") from None
        return digest, entries

    @staticmethod
    def _list_error(src: str, fmt: str, result: CommandResult) -> str:
        if result.returncode == 127:
            tool = "unzip" if fmt == "zip" else "tar"
            return (f"cannot list {src}: {tool} is not installed on the host; install it "
                    f"(Package(\"{tool}\")) and make the archive depend on it")
        return (f"cannot list {src} as a {fmt} archive: "
                f"{_tail(result) or f'exit code {result.returncode}'}")

    def _extract(self, conn: Connector, after: dict[str, Any], recorded: list[str]
                 ) -> tuple[str, list[str]]:
        """List, check, extract, chown. Returns the archive's SHA-256 and the entries created
        (``recorded`` and what this extraction created)."""
        src, dest = str(after["src"]), str(after["dest"])
        fmt = _format_of(after)
        digest, entries = self._list(conn, src, fmt)
        want = after.get("src_sha256")
        if _known_str(want) and want != digest:
            raise ApplyError(f"{src} has SHA-256 {digest}, not {want} as planned (the archive "
                             "changed since the plan?); nothing was extracted")
        for entry in entries:
            why = unsafe_entry(entry, fmt)
            if why is not None:
                raise UnsafeArchive(
                    f"refusing to extract {src} into {dest}: the entry {entry.name!r} would "
                    f"escape the destination ({why}); nothing was extracted. Use an archive "
                    "whose entries all stay inside the directory.")
        listed = {n for n in (normal_entry(e.name) for e in entries) if n}
        # with the directories an entry implies (a zip often lists none): made if missing
        names = sorted(listed | {"/".join(n.split("/")[:i]) for n in listed
                                 for i in range(1, n.count("/") + 1)})
        dest_fact = conn.stat_paths([dest])[0]
        if dest_fact is None or dest_fact.kind != "directory":
            raise ApplyError(f"cannot extract {src}: the destination {dest} is not an existing "
                             "directory (Ansible's unarchive needs it too); declare it with "
                             "Directory(...)")
        before = conn.stat_paths([os.path.join(dest, n) for n in names])
        dirs = {normal_entry(e.name) for e in entries if e.kind == "dir"} | \
            (set(names) - listed)
        for name, fact in zip(names, before, strict=True):
            if name in dirs and fact is not None and fact.kind == "symlink":
                raise UnsafeArchive(
                    f"refusing to extract {src} into {dest}: {dest}/{name} is a symlink where "
                    f"the archive has a directory; extracting would write through it (maybe "
                    f"outside the destination) or replace it. Nothing was extracted. Remove "
                    f"the symlink or choose another destination.")
        new = [n for n, fact in zip(names, before, strict=True) if fact is None]
        # what an interrupted extraction of it made (its manifest is still there) is its own
        manifest = manifest_path(src, dest)
        earlier = _read_manifest(conn, manifest) or []
        if earlier:
            there = conn.stat_paths([os.path.join(dest, n) for n in earlier])
            new = sorted(set(new) | {n for n, f in zip(earlier, there, strict=True)
                                     if f is not None})
        conn.write_file(manifest, json.dumps(new).encode(), mode="0600", owner=None,
                        group=None)
        result = conn.run(["/bin/sh", "-c", _EXTRACT_SH, "tectum-extract", src, dest, digest,
                           fmt], mutating=True)
        if result.returncode == 4:
            conn.remove(manifest)
            raise ApplyError(f"{src} changed while it was being extracted (its SHA-256 is now "
                             f"{result.text().strip()}, not {digest}); nothing was extracted")
        if not result.ok:
            # what the failed extraction made goes (what was there before stays); if that
            # fails too, the manifest stays and the next extraction counts them as its own
            try:
                self._remove(conn, {"dest": dest, "files": new})
                conn.remove(manifest)
            except (ApplyError, ConnectorError):
                pass
            raise ApplyError(f"cannot extract {src} into {dest}: "
                             f"{_tail(result) or f'exit code {result.returncode}'}; what it "
                             "had created was removed")
        made = sorted(set(recorded) | set(new))
        owner, group = after.get("owner"), after.get("group")
        if owner or group:
            mine = set(made)
            targets = [n for n in names if n not in dirs or n in mine]
            spec = (owner or "") + (f":{group}" if group else "")
            data = b"".join(os.path.join(dest, n).encode("utf-8", "surrogateescape") + b"\0"
                            for n in targets)
            chown = conn.run(("xargs", "-0", "-r", "chown", "-h", "--", spec), input=data,
                             mutating=True)
            if not chown.ok:
                raise ApplyError(f"extracted {src} into {dest}, but cannot give its entries to "
                                 f"{spec}: {_tail(chown)}")
        conn.remove(manifest)
        return digest, made

    def _remove(self, conn: Connector, record: dict[str, Any]) -> None:
        """Remove the entries ``record`` says an extraction created: never through a symlink
        (every directory between ``dest`` and an entry must be a real directory), files and
        links first, then directories deepest first (only when empty)."""
        files = record.get("files")
        dest = record.get("dest")
        if not isinstance(files, list) or not files or not isinstance(dest, str):
            return
        names = [n for n in files if isinstance(n, str) and n
                 and not n.startswith("/") and ".." not in n.split("/")]
        parents = sorted({"/".join(n.split("/")[:i]) for n in names
                          for i in range(1, len(n.split("/")))})
        asked = [os.path.join(dest, p) for p in [*parents, *names]]
        facts = dict(zip(asked, conn.stat_paths(asked), strict=True))
        root = conn.stat_paths([dest])[0]
        if root is None or root.kind != "directory":
            return

        def reachable(name: str) -> bool:
            parts = name.split("/")
            for i in range(1, len(parts)):
                fact = facts.get(os.path.join(dest, "/".join(parts[:i])))
                if fact is None or fact.kind != "directory":
                    return False
            return True

        plain: list[str] = []
        dirs: list[str] = []
        for name in names:
            fact = facts.get(os.path.join(dest, name))
            if fact is None or not reachable(name):
                continue
            (dirs if fact.kind == "directory" else plain).append(os.path.join(dest, name))
        if plain:
            data = b"".join(p.encode("utf-8", "surrogateescape") + b"\0" for p in plain)
            result = conn.run(("xargs", "-0", "-r", "rm", "-f", "--"), input=data,
                              mutating=True)
            if not result.ok:
                raise ApplyError(f"cannot remove the files extracted into {dest}: "
                                 f"{_tail(result)}")
        if dirs:
            dirs.sort(key=lambda p: (-p.count("/"), p))
            data = b"".join(p.encode("utf-8", "surrogateescape") + b"\0" for p in dirs)
            result = conn.run(("xargs", "-0", "-r", "rmdir", "--ignore-fail-on-non-empty",
                               "--"), input=data, mutating=True)
            if not result.ok:
                raise ApplyError(f"cannot remove the directories extracted into {dest}: "
                                 f"{_tail(result)}")
        left = [p for p, fact in zip(plain, conn.stat_paths(plain), strict=True)
                if fact is not None] if plain else []
        if left:
            raise ApplyError(f"cannot remove {left[0]} (extracted into {dest}): it is still "
                             "there after the delete")


def manifest_path(src: str, dest: str) -> str:
    """The file in ``dest`` that names the entries an extraction of ``src`` is creating
    (while it runs): ``DEST/.tectum-extract-<first 16 hex digits of SHA-256(src)>.json``."""
    digest = hashlib.sha256(src.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return os.path.join(dest, f".tectum-extract-{digest}.json")


def _read_manifest(conn: Connector, manifest: str) -> list[str] | None:
    """The entry names a manifest holds (None: no manifest, or not one tectum wrote)."""
    fact = conn.stat_paths([manifest], content=True)[0]
    if fact is None or fact.kind != "file":
        return None
    try:
        names = json.loads((fact.content or b"").decode("utf-8", "surrogateescape"))
    except ValueError:
        return None
    if not isinstance(names, list):
        return None
    return [n for n in names if isinstance(n, str) and n and not n.startswith("/")
            and ".." not in n.split("/")]


__all__ = ["ArchiveType", "DownloadType", "Entry", "UnsafeArchive", "normal_entry",
           "manifest_path", "parse_tar_listing", "parse_zip_listing", "unsafe_entry"]
