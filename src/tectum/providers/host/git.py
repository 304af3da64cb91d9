"""``git_checkout``: a git working tree at a path, at the commit a branch, tag or commit names.

The attributes are those of Ansible's ``git`` module: ``repo`` (a URL or an absolute path),
``dest``, ``version`` (a branch, a tag or a full commit id; unset: the remote's ``HEAD``),
``depth`` (a shallow fetch) and ``force`` (discard local changes); ``owner``/``group`` (not
Ansible's: it runs git as ``become_user``) give the working tree to an account — git runs as
the connector's user, then ``chown -R`` after every change. It is a deploy step: the
checkout follows the remote, so a branch that moved upstream is a change of the next plan.

``repo`` never holds credentials: a URL with a password (``https://user:token@...``,
``ssh://user:pw@...``) or a user name in an http(s) URL (``https://TOKEN@host/...``) is
refused at validate time, as ``download`` refuses them, because it would show in the host's
process list, in plan output and in state; the host's git gets them from a credential
helper, ``~/.netrc`` or an ssh key. A ``repo`` starting with ``-`` is refused too, and every
git command that takes a repository gets it after ``--``.

Shapes (attribute dicts):

* desired: ``{"repo", "dest", "version" | None, "depth" | None, "force": bool, "owner" |
  None, "group" | None}``.
* observed (:meth:`GitCheckoutType.read`): None when ``dest`` does not exist (or is an empty
  directory: a clone goes into it); else ``{"dest", "repo": the checkout's origin URL,
  "commit": HEAD, "owner", "group"}`` (``dest``'s) plus transient keys the plan decides
  with — ``_ref`` (the branch checked out, ``refs/heads/NAME``, None when detached),
  ``_changes`` (tracked files with local modifications, as ``git status --porcelain
  --untracked-files=no`` lists them: Ansible's ``has_local_mods`` ignores untracked files
  too), ``_want`` / ``_want_ref`` (the commit and the ref ``version`` resolves to on the
  remote), ``_problem`` (why no checkout can be planned there: a file at ``dest``, a
  directory that is not a checkout, an unreachable remote, a version the remote lacks).
* stored (what :meth:`GitCheckoutType.apply` returns): the desired attributes, ``commit`` (the
  commit checked out), ``owner``/``group`` of ``dest`` as they are (also when unset), and
  ``dest_existed`` (``dest`` was an empty directory before the clone, so a delete empties
  it and leaves it).

**One read per host.** Every checkout of a host is read by one shell command in the host's
facts round trip (:meth:`GitCheckoutType.facts`): ``git rev-parse`` / ``symbolic-ref`` /
``config remote.origin.url`` / ``status`` in each ``dest``, and one ``git ls-remote --symref``
per repository for all the versions wanted from it. The read writes nothing: ``git status``
runs with ``GIT_OPTIONAL_LOCKS=0`` (it neither takes the index lock nor refreshes the
index). A full commit id is not looked up on the remote; a record read without a
configuration (a resource that left the stack) is not looked up at all. The version
resolves as Ansible's ``git`` does: a branch (``refs/heads/V``) first, then a tag
(``refs/tags/V``, peeled to its commit), else a full 40-hex commit id; an abbreviated
commit id is refused (the remote cannot resolve one without a fetch).

**Plan.** ``commit: OLD → NEW`` (and ``ref``: the branch, tag or commit checked out) when HEAD
is not the wanted commit, or a branch is wanted and another (or none) is checked out;
``repo: OLD → NEW`` when the origin URL differs (its URL is changed, as Ansible does);
``owner``/``group: OLD → NEW`` when set and ``dest`` has another (then ``chown -R``). A
checkout with local modifications is refused at plan time, as Ansible fails on them, unless
``force=True`` (then ``git reset --hard`` discards them: ``local_changes: N files → discarded``).
A no-op reads only: it never fetches.

**Apply.** A new checkout is ``git init`` + ``git remote add origin REPO`` (the same repository
``git clone`` makes, and a ``depth`` works with any version); then one ``git fetch`` of the
one ref wanted (``--depth N`` when set), skipped when the planned commit is already there;
then ``git checkout -B BRANCH COMMIT`` (tracking ``origin/BRANCH``) for a branch, ``git
checkout --detach COMMIT`` for a tag or a commit. The commit checked out is the one the plan
showed, even when the branch moved again since; one that the fetch does not bring (the
branch was rewritten) fails the apply: plan again. A failed clone removes what it made.
A clone marks itself (``.git/tectum-clone``, saying whether ``dest`` was there before) until
its commit is checked out: what a killed clone leaves — a repository without a commit that
is marked, or that holds nothing but ``git init`` + ``remote add origin REPO`` — is read as
absent, and the next apply finishes the clone in it; :meth:`GitCheckoutType.sweep_interrupted`
removes it when the journal says a killed run was applying the checkout there. Git
must be installed on the host: the plan shows the commit as known after apply when it is not
(a ``Package("git")`` in the same apply may bring it), and the apply fails with what to do.

**Delete** (Terraform's rule, README "What tectum deletes"): a checkout tectum cloned is
removed with everything in it (into a directory that was there and empty: it is emptied and
left); one it found is only forgotten. The engine makes that choice from
:meth:`GitCheckoutType.takes_over_as_created`.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from tectum.diagnostics import Diagnostic, DiagnosticError
from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import ApplyError, ImplicitKey, ReadError
from tectum.providers.host.base import HostType
from tectum.providers.host.connector import ConnectorError, FactRequest
from tectum.providers.host.files import ancestors, path_problem, tree_path
from tectum.schema import Attr, Schema
from tectum.values import is_known

if TYPE_CHECKING:
    from tectum.providers.host.connector import CommandResult, Connector

#: what the plan shows for a commit it cannot know before apply (git is not installed yet)
UNKNOWN_COMMIT = "(known after apply)"
#: the environment of every git command tectum runs: never wait for a password prompt (and
#: ssh in batch mode unless the host's environment sets its own GIT_SSH_COMMAND: see _GIT)
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0"}
_GIT = ('GIT_SSH_COMMAND="${GIT_SSH_COMMAND:-ssh -o BatchMode=yes}"; export GIT_SSH_COMMAND; '
        'exec git "$@"')

_COMMIT_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_ABBREV_RE = re.compile(r"[0-9a-f]{7,39}")
# URLs git fetches from (ext:: and fd:: run commands: never), and scp-like user@host:path
_URL_RE = re.compile(r"(https?|ssh|git|file)://\S+|(git\+ssh|ssh\+git)://\S+")
_SCP_RE = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:\S*")
# a branch or tag name: git's check-ref-format, restricted to the characters names use
_VERSION_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/+@-]*")

# The read: every checkout and every remote of a host in one command (the facts round trip).
# Arguments: N, then N dests; then, per repository: the repository, K and K ls-remote
# patterns. Output lines are tab-separated; a dest's modified files are listed after its
# fields (at most 5, as git status prints them).
_READ = r"""
export GIT_TERMINAL_PROMPT=0 GIT_OPTIONAL_LOCKS=0
: "${GIT_SSH_COMMAND:=ssh -o BatchMode=yes}"; export GIT_SSH_COMMAND
set -f
if command -v git >/dev/null 2>&1; then has=1; else has=0; fi
printf 'git\t%s\n' "$has"
n=$1; shift; i=0
while [ "$i" -lt "$n" ]; do
  d=$1; shift; i=$((i + 1))
  if [ -L "$d" ] || { [ -e "$d" ] && [ ! -d "$d" ]; }; then printf 'D\t%s\tnotdir\n' "$i"
  elif [ ! -e "$d" ]; then printf 'D\t%s\tabsent\n' "$i"
  elif [ -z "$(ls -A -- "$d" 2>/dev/null)" ]; then printf 'D\t%s\tempty\n' "$i"
  elif [ "$has" = 0 ]; then printf 'D\t%s\tnogit\n' "$i"
  else
    g() { git -c safe.directory="$d" -C "$d" "$@"; }
    top=$(g rev-parse --is-inside-work-tree --show-prefix 2>/dev/null | tr '\n' ':')
    if [ "$top" != "true::" ]; then printf 'D\t%s\tnotrepo\n' "$i"; continue; fi
    head=$(g rev-parse -q --verify HEAD 2>/dev/null)
    ref=$(g symbolic-ref -q HEAD 2>/dev/null)
    url=$(g config --get remote.origin.url 2>/dev/null)
    if ! mods=$(g status --porcelain --untracked-files=no 2>&1); then
      printf 'D\t%s\tbroken\t%s\n' "$i" "$(printf '%s' "$mods" | tail -n 2 | tr '\n\t' '  ')"
      continue
    fi
    count=$(printf '%s' "$mods" | grep -c '')
    own=$(stat -c '%U	%G	%u	%g' -- "$d")
    mark=""; only=""
    if [ -z "$head" ]; then
      # no commit yet: what an interrupted clone leaves (see GitCheckoutType._leftover)
      mark=$(head -c 16 -- "$d/.git/tectum-clone" 2>/dev/null | tr -cd 'a-z')
      if [ -z "$(ls -A -- "$d" | grep -vx '.git')" ]; then only=1; fi
    fi
    printf 'D\t%s\trepo\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$i" "$head" "$ref" "$url" "$count" \
      "$own" "$mark" "$only"
    printf '%s\n' "$mods" | head -n 5 | while IFS= read -r line; do
      if [ -n "$line" ]; then printf 'M\t%s\t%s\n' "$i" "$line"; fi
    done
  fi
done
[ "$has" = 1 ] || exit 0
j=0
while [ "$#" -gt 0 ]; do
  r=$1; k=$2; shift 2; j=$((j + 1))
  pats=""; m=0
  while [ "$m" -lt "$k" ]; do pats="$pats
$1"; shift; m=$((m + 1)); done
  old_ifs=$IFS; IFS='
'
  out=$(git ls-remote --symref -- "$r" $pats 2>&1); rc=$?
  IFS=$old_ifs
  printf 'R\t%s\t%s\n' "$j" "$rc"
  printf '%s\n' "$out" | while IFS= read -r line; do printf 'L\t%s\t%s\n' "$j" "$line"; done
done
"""


def _valid_repo(value: Any) -> str | None:
    if not isinstance(value, str) or not is_known(value):
        return None
    if any(ord(c) < 32 for c in value):
        return "must not contain control characters"
    if value.startswith("-"):
        return "must not start with - (git would take it for an option)"
    if value.startswith("/"):
        return path_problem(value)
    if _URL_RE.fullmatch(value):
        return _credentials_problem(value)
    if _SCP_RE.fullmatch(value):
        return None
    return ("must be a URL git fetches from (https://, ssh://, git://, file://), an scp-like "
            "address (git@host:path) or an absolute path to a repository")


def _credentials_problem(url: str) -> str | None:
    """Why ``url`` must not be used as it is: it holds a password (any scheme), or a user name
    in an http(s) URL (where it is a token: ``https://TOKEN@host/...``). Such a URL would
    show in the host's process list, in plan output and in state. The value itself is never
    repeated in the sentence."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.password is not None or (
            parts.username is not None and parts.scheme.lower() in ("http", "https")):
        return ("must not hold credentials (user:password@ or token@): they would show in "
                "the host's process list, in plan output and in state; give them to git on "
                "the host instead: a credential helper (git config --global "
                "credential.helper ...), ~/.netrc, or an ssh key with an ssh:// or "
                "git@host:path URL")
    return None




def _valid_version(value: Any) -> str | None:
    if not isinstance(value, str) or not is_known(value):
        return None
    if _COMMIT_RE.fullmatch(value):
        return None
    if not _VERSION_RE.fullmatch(value) or ".." in value or value.endswith((".", "/", ".lock")) \
            or "//" in value or "@{" in value:
        return ("must be a branch or tag name (letters, digits and . _ / + @ -, not starting "
                "with - or .) or a full commit id (40 hex digits)")
    return None


def _valid_depth(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value < 1:
        return "must be at least 1 (the number of commits fetched)"
    return None


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and value.isascii() and value.isdigit()


def _valid_account(value: Any) -> str | None:
    if not isinstance(value, str) or not is_known(value):
        return None
    if not value or value.startswith("-") or any(c in value for c in ":\x00\n\t "):
        return "must be a user or group name (or a numeric id), without ':' or spaces"
    return None


def _patterns(version: str | None) -> list[str]:
    """The ``git ls-remote`` patterns that resolve ``version`` (unset: the remote's HEAD)."""
    if version is None:
        return ["HEAD"]
    if _COMMIT_RE.fullmatch(version):
        return []
    return [f"refs/heads/{version}", f"refs/tags/{version}", f"refs/tags/{version}^{{}}"]


def _read_argv(objects: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The one read command for ``objects`` (see :data:`_READ`): the same argv for the same
    objects, so the facts round trip answers the read."""
    dests = [str(o["dest"]) for o in objects]
    remotes: dict[str, list[str]] = {}
    for obj in objects:
        if "commit" in obj or not isinstance(obj.get("repo"), str):
            continue  # a state record read without its configuration: no remote look-up
        pats = _patterns(obj.get("version"))
        if pats:
            remotes.setdefault(str(obj["repo"]), [])
            remotes[str(obj["repo"])].extend(p for p in pats if p not in remotes[obj["repo"]])
    argv = ["/bin/sh", "-c", _READ, "sh", str(len(dests)), *dests]
    for repo, pats in remotes.items():
        argv += [repo, str(len(pats)), *pats]
    return tuple(argv)


def _resolve(version: str | None, refs: dict[str, str], head_ref: str | None
             ) -> tuple[str, str] | None:
    """``(commit, ref)`` that ``version`` names among the remote's ``refs`` (ref → commit):
    a branch first, then a tag (peeled), as Ansible's ``git`` module; None when it names
    neither. ``ref`` is ``refs/heads/NAME`` for a branch (the remote's HEAD: the branch it
    points to), ``refs/tags/NAME`` for a tag."""
    if version is None:
        commit = refs.get("HEAD")
        if commit is None:
            return None
        return commit, head_ref or commit
    branch = f"refs/heads/{version}"
    if branch in refs:
        return refs[branch], branch
    tag = f"refs/tags/{version}"
    if tag in refs:
        return refs.get(tag + "^{}", refs[tag]), tag
    return None


def _short(commit: Any) -> str:
    return str(commit)[:7] if isinstance(commit, str) and _COMMIT_RE.fullmatch(commit) \
        else str(commit)


class GitCheckoutType(HostType):
    """A git checkout (Ansible's ``git`` module); see the module docstring."""

    name = "git_checkout"
    schema = Schema({
        "repo": Attr(str, required=True, validate=_valid_repo,
                     description="the repository: a URL (https://, ssh://, git://, file://), "
                                 "git@host:path, or an absolute path"),
        "dest": Attr(str, required=True, identity=True, force_new=True, validate=tree_path,
                     description="absolute path of the working tree"),
        "version": Attr(str, validate=_valid_version,
                        description="branch, tag or full commit id; unset: the remote's HEAD"),
        "depth": Attr(int, validate=_valid_depth,
                      description="fetch only this many commits (a shallow checkout)"),
        "force": Attr(bool, default=False,
                      description="discard local modifications (git reset --hard) instead of "
                                  "refusing to plan"),
        "owner": Attr(str, validate=_valid_account, description=(
            "user owning the working tree (every file in it: chown -R after each change); "
            "unset: left as git makes it (the user tectum runs as)")),
        "group": Attr(str, validate=_valid_account,
                      description="group owning the working tree, as owner"),
        "commit": Attr(str, computed=True, description="the commit checked out"),
        "dest_existed": Attr(bool, computed=True, description=(
            "dest was an empty directory before the clone: a delete empties it, keeps it")),
    })
    stored_computed = ("commit", "dest_existed")
    #: a checkout moved to another commit by hand is drift (the configuration names a
    #: version, never the commit)
    drift_attrs = frozenset({"commit"})
    #: how to fetch and what to do with local changes: no read can see them
    unobserved = frozenset({"version", "depth", "force", "dest_existed"})
    replace_refused = None
    #: accounts it names: one the host lacks is reported at plan time where the host
    #: provider checks them (HostType.missing)
    account_attrs: ClassVar[Mapping[str, str]] = {"owner": "user", "group": "group"}

    # -- configuration -------------------------------------------------------------------
    def describe(self, attrs: dict[str, Any]) -> str:
        return str(attrs.get("dest", ""))

    def implicit_needs(self, attrs: dict[str, Any]) -> list[list[ImplicitKey]]:
        """The directory it is cloned into, if managed, else the nearest managed one above;
        the owner (a user) and the group, when managed."""
        out: list[list[ImplicitKey]] = []
        dest = attrs.get("dest")
        if isinstance(dest, str) and is_known(dest):
            out.append([("dir", dest), *[("dir", p) for p in ancestors(dest)]])
        for key, kind in (("owner", "user"), ("group", "group")):
            value = attrs.get(key)
            if isinstance(value, str):
                out.append([(kind, value)])
        return out

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        if prior.get("dest_existed"):
            return "empties the directory (local changes and untracked files too)"
        return "with everything in it (local changes and untracked files too)"

    def warnings(self, change: ResourceChange) -> list[str]:
        if change.action is Action.DELETE:
            return ["the checkout is deleted with its local changes and untracked files."]
        if any(c.name == "local_changes" for c in change.changes):
            return ["force=True: the local modifications are discarded (git reset --hard)."]
        return []

    def takes_over_as_created(self, found: dict[str, Any] | None,
                              desired: dict[str, Any]) -> bool:
        """tectum made the checkout when nothing was at ``dest`` (or an empty directory);
        a checkout found there is only forgotten when its resource goes."""
        return found is None or found.get("commit") is None

    def exists(self, observed: dict[str, Any]) -> bool:
        return observed.get("commit") is not None

    def journal_identity(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """``dest``, and ``origin``: the ``repo`` (an interrupted clone is recognised by its
        origin URL; not kept as ``repo``, so reading the record of a resource that left the
        configuration looks up no remote)."""
        return {"dest": attrs.get("dest"), "origin": attrs.get("repo")}

    def sweep_interrupted(self, target: Connector,
                          identities: Sequence[dict[str, Any]]) -> None:
        """Remove what a killed clone left at these ``dest`` s: a repository without a commit
        that tectum's clone marked (``.git/tectum-clone``), or that holds nothing but ``git
        init`` + ``remote add`` of the journal's ``origin``. A directory that was there before
        the clone is emptied and kept; nothing else is touched."""
        dests = [i for i in identities if isinstance(i.get("dest"), str)
                 and str(i["dest"]).startswith("/") and i["dest"] != "/"]
        if not dests:
            return
        for ident, fields in zip(dests, _read_dests(target, [str(i["dest"]) for i in dests]),
                                 strict=True):
            existed = _leftover(fields, ident.get("origin"))
            if existed is not None:
                self._delete(target, {"dest": ident["dest"], "dest_existed": existed})

    # -- refresh -------------------------------------------------------------------------
    def facts(self, objects: Sequence[dict[str, Any]]) -> FactRequest:
        return FactRequest(commands=(_read_argv(objects),) if objects else ())

    def read_objects(self, conn: Connector, objects: Sequence[dict[str, Any]]
                     ) -> list[dict[str, Any] | None]:
        """Read every checkout (and the remotes the configured ones want) with one command:
        see the module docstring for the shape. Raises :class:`ReadError` when the command
        cannot run."""
        if not objects:
            return []
        argv = _read_argv(objects)
        result = conn.run(argv, mutating=False)
        if not result.ok:
            raise ReadError(f"cannot read git checkouts on {conn.host}: "
                            f"{result.error_text()} (exit {result.returncode})")
        dests, remotes, has_git = _parse_read(result, argv)
        repo_index = {repo: n for n, repo in enumerate(_remote_order(argv), start=1)}
        out: list[dict[str, Any] | None] = []
        for i, obj in enumerate(objects, start=1):
            dest = str(obj["dest"])
            fields = dests.get(i, {"state": "absent"})
            state = fields["state"]
            found: dict[str, Any] | None
            if state == "absent":
                found = None
            elif state == "empty":
                found = {"dest": dest, "_empty": True}
            elif state == "nogit":
                found = {"dest": dest, "_problem": f"git is not installed on {conn.host}, and "
                                                   f"{dest} is not empty"}
            elif state == "notdir":
                found = {"dest": dest, "_problem": f"{dest} is a file or a symlink, not a "
                                                   "directory"}
            elif state == "broken":
                found = {"dest": dest, "_problem": f"git status fails in {dest} "
                                                   f"({fields.get('detail') or 'no output'})"}
            elif state == "notrepo":
                found = {"dest": dest, "_problem": f"{dest} is a directory with files in it, "
                                                   "not the top of a git checkout"}
            elif _leftover(fields, obj.get("repo")) is not None:
                # what an interrupted clone left (no commit yet): the next apply finishes it
                found = {"dest": dest, "_resume": True}
            else:
                found = {"dest": dest, "repo": fields["url"] or None,
                         "commit": fields["head"] or None, "_ref": fields["ref"] or None,
                         "_changes": fields["changes"], "_changed": fields["mods"],
                         **{key: fields[key][1 if _is_id(obj.get(key)) else 0]
                            for key in ("owner", "group")}}
            if has_git and "commit" not in obj and isinstance(obj.get("repo"), str):
                # a configured checkout: what its version resolves to now (a record read
                # without its configuration is only looked at)
                want = self._want(obj, remotes.get(repo_index.get(str(obj["repo"]), 0)))
                found = {"dest": dest, **(found or {"_absent": True}), **want}
            out.append(found)
        return out

    def _want(self, obj: dict[str, Any], remote: tuple[int, list[str]] | None
              ) -> dict[str, Any]:
        """``_want``/``_want_ref`` for a configured object, or ``_remote_problem``."""
        version = obj.get("version")
        if isinstance(version, str) and _COMMIT_RE.fullmatch(version):
            return {"_want": version, "_want_ref": version}
        if remote is None:
            return {"_remote_problem": "the remote was not read"}
        rc, lines = remote
        if rc != 0:
            text = " ".join(ln.strip() for ln in lines if ln.strip() and not
                            ln.startswith("Please make sure"))[-400:]
            return {"_remote_problem": f"git ls-remote {obj['repo']} failed (exit {rc}): "
                                       f"{text or 'no output'}"}
        refs: dict[str, str] = {}
        head_ref: str | None = None
        for line in lines:
            sha, sep, ref = line.partition("\t")
            if not sep:
                continue
            if sha.startswith("ref: ") and ref == "HEAD":
                head_ref = sha[5:]
            elif _COMMIT_RE.fullmatch(sha):
                refs[ref] = sha
        found = _resolve(version, refs, head_ref)
        if found is None:
            what = "has no HEAD (an empty repository?)" if version is None else \
                f"has no branch or tag {version!r}"
            hint = " (a commit is written as its full 40-hex id)" \
                if isinstance(version, str) and _ABBREV_RE.fullmatch(version) else ""
            return {"_remote_problem": f"{obj['repo']} {what}{hint}"}
        return {"_want": found[0], "_want_ref": found[1]}

    # -- plan ----------------------------------------------------------------------------
    def plan(self, desired: dict[str, Any], observed: dict[str, Any] | None,
             prior: dict[str, Any] | None) -> tuple[Action, list[AttrChange]]:
        """Decide (see the module docstring). Raises :class:`DiagnosticError` for what no
        apply can fix by itself: something other than a checkout at ``dest``, local
        modifications without ``force``, a remote that cannot be read or lacks ``version``."""
        obs = observed or {}
        dest = str(desired.get("dest"))
        if obs.get("_problem") is not None:
            raise _refuse(dest, f"{obs['_problem']}. Move it away, or choose another dest.")
        if obs.get("_remote_problem") is not None:
            raise _refuse(dest, f"{obs['_remote_problem']}. Check repo and version (and that "
                                "the host can reach the repository).")
        want = obs.get("_want", UNKNOWN_COMMIT)
        want_ref = obs.get("_want_ref", UNKNOWN_COMMIT)
        if obs.get("commit") is None:
            changes = [AttrChange("repo", None, desired.get("repo"))]
            if desired.get("version") is not None:
                changes.append(AttrChange("version", None, desired["version"]))
            changes += [AttrChange(k, None, desired[k]) for k in ("owner", "group")
                        if desired.get(k) is not None]
            changes += [AttrChange("ref", None, want_ref), AttrChange("commit", None, want)]
            return Action.CREATE, changes
        changes = []
        count = int(obs.get("_changes") or 0)
        if count:
            if not desired.get("force"):
                shown = "; ".join(obs.get("_changed") or []) + ("..." if count > 5 else "")
                plural = "s" if count != 1 else ""
                raise _refuse(dest, f"{dest} has local modifications in {count} tracked "
                              f"file{plural} ({shown}). Commit them, or discard them (git -C "
                              f"{dest} reset --hard), or set force=True to have them "
                              "discarded, as Ansible's force does.")
            changes.append(AttrChange("local_changes", f"{count} modified file"
                                      f"{'s' if count != 1 else ''}", "discarded"))
        if obs.get("repo") != desired.get("repo"):
            changes.append(AttrChange("repo", obs.get("repo"), desired.get("repo")))
        for key in ("owner", "group"):
            if desired.get(key) is not None and obs.get(key) != desired[key]:
                changes.append(AttrChange(key, obs.get(key), desired[key]))
        have_ref = obs.get("_ref")
        moves = obs.get("commit") != want
        if isinstance(want_ref, str) and want_ref.startswith("refs/heads/"):
            moves = moves or have_ref != want_ref
        if moves or (count and desired.get("force")):
            if have_ref != want_ref:
                changes.append(AttrChange("ref", have_ref, want_ref))
            changes.append(AttrChange("commit", obs.get("commit"), want))
        return (Action.UPDATE if changes else Action.NOOP), changes

    def stored(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in attrs.items() if k in self._keep and v is not None}

    # -- apply ---------------------------------------------------------------------------
    def apply(self, conn: Connector, change: ResourceChange) -> dict[str, Any] | None:
        """Carry out the plan (see the module docstring). Raises :class:`ApplyError` with
        git's own words when a step fails."""
        if change.action is Action.DELETE:
            self._delete(conn, change.prior or change.before or {})
            return None
        after = dict(change.after or {})
        dest = str(after["dest"])
        if not _run(conn, ["git", "--version"], mutating=False).ok:
            raise ApplyError(f"git is not installed on {conn.host}: install it first "
                             "(Package(\"git\"), and depends_on it), then apply again")
        planned = {c.name: c.after for c in change.changes}
        if change.action is Action.REPLACE:
            old = change.before or change.prior or {}
            self._delete(conn, {**(change.prior or {}), "dest": old.get("dest", dest)})
        sha, ref = planned.get("commit"), planned.get("ref")
        if ref is None and "commit" in planned and change.action is Action.UPDATE:
            # the branch checked out stays (only its commit moves): it is read, not decided
            ref = _run(conn, ["git", "-c", f"safe.directory={dest}", "-C", dest, "symbolic-ref",
                              "-q", "HEAD"], mutating=False).text().strip() or sha
        if change.action is Action.UPDATE and "commit" not in planned:
            # only the origin URL changes: HEAD stays where the plan found it
            sha = (change.before or {}).get("commit")
            if "repo" in planned:
                res = _run(conn, ["git", "-c", f"safe.directory={dest}", "-C", dest, "remote",
                                  "set-url", "--", "origin", str(after["repo"])])
                if not res.ok:
                    raise ApplyError(f"git remote set-url failed in {dest}: "
                                     f"{res.error_text()}")
            self._own(conn, dest, after)
            return self.stored({**after, "commit": sha, **_ownership(conn, dest, after),
                                "dest_existed": (change.prior or {}).get("dest_existed")})
        if not (isinstance(sha, str) and _COMMIT_RE.fullmatch(sha) and isinstance(ref, str)):
            sha, ref = self._resolve_now(conn, after)
        fact = conn.stat_paths([dest])[0]
        fresh = fact is None or change.action in (Action.CREATE, Action.REPLACE)
        existed = bool((change.prior or {}).get("dest_existed")) if not fresh \
            else fact is not None
        resume = False
        if fresh and fact is not None and (fact.kind != "directory" or
                                           _run(conn, ["find", dest, "-mindepth", "1",
                                                       "-maxdepth", "1"], mutating=False
                                                ).stdout.strip()):
            try:
                left = _leftover(_read_dests(conn, [dest])[0], after.get("repo"))
            except ConnectorError as exc:
                raise ApplyError(str(exc)) from None
            if left is None:
                raise ApplyError(f"cannot clone into {dest}: something is there now that was "
                                 "not when the plan was made; plan again")
            resume, existed = True, left  # (an interrupted clone: finished now)
        try:
            self._checkout(conn, dest, str(after["repo"]), sha, ref, after, fresh, planned,
                           resume=resume)
        except ApplyError:
            if fresh:
                self._delete(conn, {"dest": dest, "dest_existed": existed}, quiet=True)
            raise
        self._own(conn, dest, after)
        return self.stored({**after, "commit": sha, **_ownership(conn, dest, after),
                            "dest_existed": existed or None})

    def _own(self, conn: Connector, dest: str, after: dict[str, Any]) -> None:
        """``chown -R`` the working tree to ``owner``/``group`` when the configuration sets
        them (git ran as the connector's user: what it wrote is that user's)."""
        owner, group = after.get("owner"), after.get("group")
        if owner is None and group is None:
            return
        spec = f"{owner or ''}{':' + group if group else ''}"
        res = conn.run(["chown", "-R", "--", spec, dest])
        if not res.ok:
            raise ApplyError(f"cannot give {dest} to {spec}: {res.error_text()}")

    def _resolve_now(self, conn: Connector, after: dict[str, Any]) -> tuple[str, str]:
        """The plan could not know the commit (git was not installed): resolve it now."""
        version = after.get("version")
        if isinstance(version, str) and _COMMIT_RE.fullmatch(version):
            return version, version
        res = _run(conn, ["git", "ls-remote", "--symref", "--", str(after["repo"]),
                          *_patterns(version)], mutating=False)
        want = self._want(after, (res.returncode, res.text().splitlines()
                                  if res.ok else [res.error_text()]))
        if "_want" not in want:
            raise ApplyError(str(want.get("_remote_problem")))
        return str(want["_want"]), str(want["_want_ref"])

    def _checkout(self, conn: Connector, dest: str, repo: str, sha: str, ref: str,
                  after: dict[str, Any], fresh: bool, planned: dict[str, Any], *,
                  resume: bool = False) -> None:
        """Make (``fresh``) or move the checkout at ``dest``. A fresh clone marks itself
        (``.git/tectum-clone``: ``new``, or ``existed`` when ``dest`` was an empty directory)
        until its commit is checked out, so what a killed clone leaves is known as tectum's
        (:func:`_leftover`); ``resume`` goes on from such a leftover."""
        def git(*args: str, mutating: bool = True) -> CommandResult:
            return _run(conn, ["git", "-c", f"safe.directory={dest}", "-C", dest, *args],
                        mutating=mutating)

        def must(what: str, res: CommandResult) -> None:
            if not res.ok:
                raise ApplyError(f"{what} failed in {dest} (exit {res.returncode}): "
                                 f"{res.error_text()}")

        marker = f"{dest}/.git/tectum-clone"
        if fresh and not resume:
            existed = conn.exists(dest)
            must("git init", _run(conn, ["git", "init", "-q", "--", dest]))
            try:
                conn.write_file(marker, b"existed\n" if existed else b"new\n", mode=None,
                                owner=None, group=None)
            except ConnectorError as exc:
                raise ApplyError(f"cannot write {marker}: {exc}") from None
            must("git remote add", git("remote", "add", "--", "origin", repo))
        elif resume:
            url = git("config", "--get", "remote.origin.url", mutating=False)
            if not url.stdout.strip():
                must("git remote add", git("remote", "add", "--", "origin", repo))
            elif url.text().strip() != repo:
                must("git remote set-url", git("remote", "set-url", "--", "origin", repo))
        elif "repo" in planned:
            must("git remote set-url", git("remote", "set-url", "--", "origin", repo))
        if "local_changes" in planned:
            must("git reset --hard", git("reset", "-q", "--hard"))
        if not git("cat-file", "-e", f"{sha}^{{commit}}", mutating=False).ok:
            depth = ["--depth", str(after["depth"])] if after.get("depth") else []
            if ref.startswith("refs/heads/"):
                spec = f"+{ref}:refs/remotes/origin/{ref.removeprefix('refs/heads/')}"
            elif ref.startswith("refs/tags/"):
                spec = f"+{ref}:{ref}"
            else:
                spec = sha
            must("git fetch", git("fetch", "-q", *depth, "origin", spec))
            if not git("cat-file", "-e", f"{sha}^{{commit}}", mutating=False).ok:
                raise ApplyError(f"{repo} no longer has the planned commit {sha} at {ref} "
                                 "(rewritten since the plan?): plan again")
        if ref.startswith("refs/heads/"):
            branch = ref.removeprefix("refs/heads/")
            must("git checkout", git("checkout", "-q", "-B", branch, sha))
            must("git config", git("config", f"branch.{branch}.remote", "origin"))
            must("git config", git("config", f"branch.{branch}.merge", ref))
        else:
            must("git checkout", git("checkout", "-q", "--detach", sha))
        head = git("rev-parse", "HEAD", mutating=False).text().strip()
        if head != sha:
            raise ApplyError(f"{dest} is at {head or 'no commit'} after the checkout, not {sha}")
        if fresh:
            try:
                conn.remove(marker)
            except ConnectorError as exc:
                raise ApplyError(f"cannot remove {marker}: {exc}") from None
        left = git("status", "--porcelain", "--untracked-files=no", mutating=False)
        if left.stdout.strip():
            raise ApplyError(f"{dest} has local modifications after the checkout "
                             f"({left.text().strip().splitlines()[0]}): they were made "
                             "meanwhile; commit or discard them, or set force=True")

    def _delete(self, conn: Connector, record: dict[str, Any], *, quiet: bool = False) -> None:
        dest = record.get("dest")
        if not isinstance(dest, str) or not dest.startswith("/") or dest == "/":
            return
        try:
            if record.get("dest_existed"):
                res = _run(conn, ["find", dest, "-mindepth", "1", "-delete"])
                if not res.ok and conn.exists(dest):
                    raise ConnectorError(f"cannot empty {dest}: {res.error_text()}")
            else:
                conn.remove(dest, recursive=True)
        except ConnectorError as exc:
            if not quiet:
                raise ApplyError(str(exc)) from None


def _leftover(fields: dict[str, Any], repo: Any) -> bool | None:
    """Whether the read ``fields`` of a dest (:func:`_parse_read`) are what an interrupted
    clone of ``repo`` leaves — a repository without a commit that tectum's clone marked, or
    one holding nothing but what ``git init`` and ``git remote add origin REPO`` make (no
    file, no other origin; killed before the mark was written). Returns None when not (it is
    someone's work), else whether ``dest`` was there before the clone (unmarked: assumed
    so, so it is emptied, never removed)."""
    if fields.get("state") != "repo" or fields.get("head"):
        return None
    mark = fields.get("mark")
    if mark in ("new", "existed"):
        return bool(mark == "existed")
    if fields.get("only_git") and fields.get("url") in ("", repo):
        return True
    return None


def _read_dests(conn: Connector, dests: Sequence[str]) -> list[dict[str, Any]]:
    """The read command's fields for ``dests`` alone (no remote is looked up)."""
    argv = _read_argv([{"dest": d} for d in dests])
    result = conn.run(argv, mutating=False)
    if not result.ok:
        raise ConnectorError(f"cannot read {', '.join(dests)} on {conn.host}: "
                             f"{result.error_text()}")
    found = _parse_read(result, argv)[0]
    return [found.get(i, {"state": "absent"}) for i in range(1, len(dests) + 1)]


def _ownership(conn: Connector, dest: str, after: dict[str, Any]) -> dict[str, Any]:
    """owner/group of ``dest`` as it is now (ids where the configuration gives ids)."""
    fact = conn.stat_paths([dest])[0]
    if fact is None:
        return {}
    return {"owner": str(fact.uid) if _is_id(after.get("owner")) else fact.owner,
            "group": str(fact.gid) if _is_id(after.get("group")) else fact.group}


def _refuse(dest: str, detail: str) -> DiagnosticError:
    return DiagnosticError(Diagnostic.error(f"Cannot check out {dest}", detail))


def _run(conn: Connector, argv: list[str], *, mutating: bool = True) -> CommandResult:
    """Run ``argv`` on the host (a ``git`` command through :data:`_GIT`)."""
    if argv[0] == "git":
        argv = ["/bin/sh", "-c", _GIT, "git", *argv[1:]]
    return conn.run(argv, mutating=mutating, env=GIT_ENV)


def _remote_order(argv: tuple[str, ...]) -> list[str]:
    """The repositories of a read command, in the order it reads them."""
    n = int(argv[4])
    rest = list(argv[5 + n:])
    out = []
    while rest:
        repo, k = rest[0], int(rest[1])
        out.append(repo)
        rest = rest[2 + k:]
    return out


def _parse_read(result: CommandResult, argv: tuple[str, ...]
                ) -> tuple[dict[int, dict[str, Any]], dict[int, tuple[int, list[str]]], bool]:
    """The read command's output: per dest index its fields, per remote index its exit code
    and ``ls-remote`` lines, and whether git is installed."""
    dests: dict[int, dict[str, Any]] = {}
    remotes: dict[int, tuple[int, list[str]]] = {}
    has_git = False
    for line in result.text().splitlines():
        kind, _, rest = line.partition("\t")
        if kind == "git":
            has_git = rest.strip() == "1"
        elif kind == "D":
            parts = rest.split("\t")
            idx = int(parts[0])
            if parts[1] == "repo" and len(parts) >= 10:
                dests[idx] = {"state": "repo", "head": parts[2], "ref": parts[3],
                              "url": parts[4], "changes": int(parts[5] or 0), "mods": [],
                              "owner": (parts[6], parts[8]), "group": (parts[7], parts[9]),
                              "mark": parts[10] if len(parts) > 10 else "",
                              "only_git": len(parts) > 11 and parts[11] == "1"}
            else:
                dests[idx] = {"state": parts[1], "detail": "\t".join(parts[2:]).strip()}
        elif kind == "M":
            idx_text, _, text = rest.partition("\t")
            entry = dests.get(int(idx_text))
            if entry is not None:
                entry["mods"].append(text[3:] if len(text) > 3 else text)
        elif kind == "R":
            idx_text, _, rc = rest.partition("\t")
            remotes[int(idx_text)] = (int(rc), [])
        elif kind == "L":
            idx_text, _, text = rest.partition("\t")
            if int(idx_text) in remotes:
                remotes[int(idx_text)][1].append(text)
    return dests, remotes, has_git
