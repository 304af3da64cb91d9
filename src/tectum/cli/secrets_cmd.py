"""``tectum secrets``: the encrypted secrets files of a project (``secrets/ENV.yaml``).

Sub-commands::

    tectum secrets init [--env ENV] [--recipient R ...] [DIR]
    tectum secrets set KEY [--env ENV] [--from-file PATH] [DIR]   (value on standard input)
    tectum secrets get KEY [--env ENV] [DIR]                      (prints the plaintext)
    tectum secrets list [--env ENV] [DIR]
    tectum secrets edit [--env ENV] [DIR]
    tectum secrets rm KEY [--env ENV] [DIR]
    tectum secrets recipients list|add R|rm R [--env ENV] [DIR]
    tectum secrets rotate [--env ENV] [DIR]
    tectum secrets keygen [-o FILE]

``ENV`` defaults to ``TECTUM_WORKSPACE``, else the workspace selected in ``DIR/.tectum/workspace``,
else ``default``; ``DIR`` to the current directory. Keys are looked up as
:func:`tectum.secrets.store.load_keyring` says. A value is never taken from the command line
(other users can read command lines): ``set`` reads standard input or ``--from-file``.

Hooking into ``tectum``: :func:`add_parser` adds the ``secrets`` command to the sub-parsers of
``tectum``'s parser and sets its ``func`` default to an adapter that ``tectum.cli.main.main``
calls as ``func(obj, **params)``; :func:`run` runs a parsed command line and returns the exit
code; :func:`main` is the stand-alone entry (``python -m tectum.cli.secrets_cmd init ...``).
Errors print ``Error: SUMMARY`` and the detail on standard error and exit 1, never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from tectum.diagnostics import Diagnostic, DiagnosticError

if TYPE_CHECKING:  # imported when used: `tectum` starts faster without pyrage and PyYAML
    from tectum.cli.views import View
    from tectum.secrets.store import Keyring, SecretsFile

Handler = Callable[["_Ctx", argparse.Namespace], int]

_EDIT_HEADER = """\
# tectum secrets edit: {name}
# One secret a line, NAME: value (YAML: quote a value that holds ': ' or '#' or starts with a
# special character; use | for several lines). Delete a line to remove that secret.
# Save and quit to encrypt. Quit without saving, or make the editor fail, to change nothing.
# This plaintext file is in a private temporary directory that is removed afterwards.
"""


# -- the parser -----------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``secrets`` command (with its sub-commands) to ``tectum``'s sub-parsers.

    The parser's ``func`` default is the adapter ``tectum.cli.main.main`` calls; :func:`run`
    runs the parsed arguments directly.
    """
    doc = "Manage the encrypted secrets files of the project (secrets/ENV.yaml)."
    parser = subparsers.add_parser("secrets", help=doc, description=doc, allow_abbrev=False)
    parser.set_defaults(func=_from_tectum_main)
    parser.add_argument("--no-color", action="store_true", default=argparse.SUPPRESS,
                        help="plain output without colour")
    _add_subcommands(parser)


class _Parser(argparse.ArgumentParser):
    """A sub-command's parser that takes its options anywhere: ``get KEY --env prod DIR``.

    argparse (before Python 3.12) fills an optional positional (``DIR``) with its default as
    soon as an option follows the positionals before it, and then refuses ``DIR``; moving the
    options (with their values) ahead of the positionals avoids that.
    """

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if args is not None and self._subparsers is None:  # a leaf: no sub-commands
            args = self._options_first(list(args))
        return super().parse_known_args(args, namespace)

    def _options_first(self, args: list[str]) -> list[str]:
        options: list[str] = []
        positionals: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                positionals.extend(args[i:])
                break
            if arg.startswith("-") and arg != "-":
                options.append(arg)
                action = self._option_string_actions.get(arg)
                if action is not None and action.nargs is None and action.option_strings \
                        and not isinstance(action, argparse._StoreConstAction) \
                        and i + 1 < len(args):
                    options.append(args[i + 1])
                    i += 1
            else:
                positionals.append(arg)
            i += 1
        return options + positionals


def _add_subcommands(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="secrets_command", metavar="COMMAND", required=True,
                                parser_class=_Parser)

    def command(name: str, handler: Handler, doc: str,
                where: argparse._SubParsersAction[_Parser] = sub,
                env: bool = True) -> argparse.ArgumentParser:
        p = where.add_parser(name, help=doc.splitlines()[0], description=doc,
                             allow_abbrev=False)
        p.set_defaults(secrets_handler=handler)
        p.add_argument("--no-color", action="store_true", default=argparse.SUPPRESS,
                       help="plain output without colour")
        if env:
            p.add_argument("--env", metavar="ENV",
                           help="the environment: secrets/ENV.yaml (default: TECTUM_WORKSPACE, "
                                "else the selected workspace, else 'default')")
        return p

    def directory(p: argparse.ArgumentParser) -> None:
        p.add_argument("directory", nargs="?", default=".", metavar="DIR",
                       help="project directory (default: the current one)")

    p = command("init", _init, "Create secrets/ENV.yaml, encrypted to the recipients given "
                "(default: your own public key).")
    p.add_argument("--recipient", "-r", action="append", default=[], metavar="R",
                   help="an age public key (age1...) or SSH public key ('ssh-ed25519 AAAA...'), "
                        "or a file holding one (repeatable)")
    directory(p)

    p = command("set", _set, "Add or change secret KEY. The value is read from standard input "
                "(a prompt on a terminal) or --from-file, never from the command line.")
    p.add_argument("key", metavar="KEY")
    directory(p)
    p.add_argument("extra", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--from-file", metavar="PATH",
                   help="take the value from the file PATH (exactly, final newline included)")

    p = command("get", _get, "Print the plaintext of secret KEY on standard output (this reveals "
                "it).")
    p.add_argument("key", metavar="KEY")
    directory(p)

    p = command("list", _list, "List the names of the secrets (not the values).")
    directory(p)

    p = command("edit", _edit, "Edit every secret in plaintext with $VISUAL or $EDITOR, then "
                "encrypt again (this reveals them).")
    directory(p)

    p = command("rm", _rm, "Remove secret KEY.")
    p.add_argument("key", metavar="KEY")
    directory(p)

    rp = sub.add_parser("recipients", help="List, add or remove the recipients.",
                        description="List, add or remove the recipients (who can decrypt).",
                        allow_abbrev=False)
    rsub = rp.add_subparsers(dest="recipients_command", metavar="COMMAND", required=True,
                             parser_class=_Parser)
    p = command("list", _recipients_list, "List the recipients.", rsub)
    directory(p)
    p = command("add", _recipients_add, "Add recipient R (the values are unchanged).", rsub)
    p.add_argument("recipient", metavar="R",
                   help="an age public key (age1...), an SSH public key (quoted: "
                        "'ssh-ed25519 AAAA... comment'), or a .pub file")
    directory(p)
    p = command("rm", _recipients_rm, "Remove recipient R and rotate the data key.", rsub)
    p.add_argument("recipient", metavar="R", help="the recipient, as `recipients list` shows it")
    directory(p)

    p = command("rotate", _rotate, "Make a new data key and encrypt every value again.")
    directory(p)

    p = command("keygen", _keygen, "Make a new age key (private: keep it out of the repository) "
                "and print its public key.", env=False)
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where to write it (default: ~/.config/tectum/age/keys.txt)")


# -- running ---------------------------------------------------------------------------------


class _Ctx:
    """What every sub-command needs: the view, the project directory, the environment, the
    secrets file's path and the user's keys (read once, when first needed)."""

    def __init__(self, args: argparse.Namespace, view: View) -> None:
        self.args = args
        self.view = view
        self.directory: str = getattr(args, "directory", ".") or "."
        self._keyring: Keyring | None = None

    def out(self, text: str = "") -> None:
        self.view.out(text)

    def note(self, text: str) -> None:
        self.view.out(text, err=True)

    def check_directory(self) -> None:
        from tectum.secrets.store import SecretsError

        if not os.path.isdir(self.directory):
            raise SecretsError(f"{self.directory} is not a directory: give the project "
                               "directory (default: the current one).", "No such directory")

    @property
    def env(self) -> str:
        env: str | None = getattr(self.args, "env", None)
        if env:
            return env
        env = os.environ.get("TECTUM_WORKSPACE")
        if env:
            return env
        try:
            with open(os.path.join(self.directory, ".tectum", "workspace"),
                      encoding="utf-8") as fh:
                return fh.read().strip() or "default"
        except (OSError, UnicodeDecodeError):
            return "default"

    @property
    def path(self) -> str:
        from tectum.secrets.store import secrets_path

        return secrets_path(self.directory, self.env)

    @property
    def display(self) -> str:
        from tectum.secrets.store import SECRETS_DIR

        return os.path.normpath(os.path.join(self.directory, SECRETS_DIR, f"{self.env}.yaml"))

    def keyring(self) -> Keyring:
        from tectum.secrets.store import load_keyring

        if self._keyring is None:
            self._keyring = load_keyring()
        return self._keyring

    def load(self) -> SecretsFile:
        from tectum.secrets.store import SecretsFile

        self.check_directory()
        return SecretsFile.load(self.path, display=self.display)


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``tectum secrets`` command line; the exit code (0 success, 1 error).

    Errors (:class:`~tectum.secrets.store.SecretsError`,
    :class:`~tectum.diagnostics.DiagnosticError`) are printed as diagnostics on standard error,
    never as a traceback; 130 after Ctrl-C.
    """
    from tectum.cli.views import View
    from tectum.secrets.store import SecretsError

    color = False if getattr(args, "no_color", False) or os.environ.get("NO_COLOR") else None
    view = View(color)
    handler: Handler | None = getattr(args, "secrets_handler", None)
    if handler is None:
        view.diagnostic(Diagnostic.error("Missing command", "Give a `tectum secrets` command: "
                                         "init, set, get, list, edit, rm, recipients, rotate, "
                                         "keygen."))
        return 1
    try:
        return handler(_Ctx(args, view), args)
    except SecretsError as exc:
        view.diagnostic(exc.diagnostic())
        return 1
    except DiagnosticError as exc:
        view.diagnostics(exc.diagnostics)
        return 1
    except KeyboardInterrupt:
        view.out("\nInterrupted: nothing was changed.", err=True)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _from_tectum_main(obj: Any, **params: Any) -> None:
    """What ``tectum.cli.main.main`` calls (``func(obj, **params)``)."""
    view = getattr(obj, "view", None)
    params.setdefault("no_color", getattr(view, "color", None) is False)
    code = run(argparse.Namespace(**params))
    if code:
        sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: ``python -m tectum.cli.secrets_cmd COMMAND ...`` (the same as
    ``tectum secrets COMMAND ...``). Returns the exit code (2 for a command line that does not
    parse, as argparse does)."""
    parser = argparse.ArgumentParser(
        prog="tectum secrets", allow_abbrev=False,
        description="Manage the encrypted secrets files of the project (secrets/ENV.yaml).")
    parser.add_argument("--no-color", action="store_true", help="plain output without colour")
    _add_subcommands(parser)
    from tectum.cli.main import both_dash_forms

    both_dash_forms(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    return run(args)


# -- sub-commands ----------------------------------------------------------------------------


def _recipient_arg(text: str) -> str:
    """A recipient given on the command line: the key itself, or a file holding one (a .pub
    file, an age recipients file: the first line that is not a comment)."""
    from tectum.secrets.store import SecretsError

    stripped = text.strip()
    if stripped in ("ssh-ed25519", "ssh-rsa"):
        raise SecretsError(
            "An SSH public key has spaces: quote all of it, e.g. "
            "--recipient \"$(cat ~/.ssh/id_ed25519.pub)\", or give the path of the .pub file.",
            "Invalid recipient")
    if stripped.startswith(("age1", "ssh-", "AGE-")) or not os.path.isfile(stripped):
        return stripped
    try:
        with open(stripped, encoding="utf-8") as fh:
            for line in fh:
                if line.strip() and not line.lstrip().startswith("#"):
                    return line.strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretsError(f"Cannot read a recipient from the file {stripped}: {exc}.",
                           "Invalid recipient") from None
    raise SecretsError(f"The file {stripped} holds no recipient.", "Invalid recipient")


def _init(ctx: _Ctx, args: argparse.Namespace) -> int:
    from tectum.secrets.store import SecretsError, SecretsFile

    ctx.check_directory()
    recipients = [_recipient_arg(r) for r in args.recipient]
    if not recipients:
        keyring = ctx.keyring()
        if not keyring.public_keys:
            raise SecretsError(
                f"Cannot tell the public key of your private key (from {keyring.source}): give "
                "the recipients with --recipient (age1... or 'ssh-ed25519 AAAA...').",
                "No recipient")
        recipients = list(keyring.public_keys)
    secrets = SecretsFile.create(ctx.path, recipients, display=ctx.display)
    secrets.save()
    n = len(secrets.recipients)
    ctx.out(f"Created {ctx.display}, encrypted to {n} recipient{'s' if n != 1 else ''}:")
    for r in secrets.recipients:
        ctx.out(f"  {r}")
    ctx.out(f"Add a secret with `tectum secrets set KEY --env {ctx.env}` (the value on standard "
            "input). The file holds only ciphertext: commit it.")
    return 0


def _read_value(ctx: _Ctx, args: argparse.Namespace) -> str:
    from tectum.secrets.store import SecretsError

    if args.from_file:
        source = args.from_file
        try:
            with open(args.from_file, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise SecretsError(f"Cannot read {args.from_file}: {exc.strerror or exc}.",
                               "Cannot read the value") from None
    elif sys.stdin is not None and sys.stdin.isatty():
        source = "the terminal"
        data = getpass.getpass(f"Value of {args.key} (not shown): ").encode("utf-8")
    else:
        source = "standard input"
        data = sys.stdin.buffer.read() if sys.stdin is not None else b""
        if data.endswith(b"\r\n"):
            data = data[:-2]
        elif data.endswith(b"\n"):
            data = data[:-1]
    try:
        value = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretsError(
            f"The value from {source} is not UTF-8 text. Secrets hold text: encode binary data "
            "(e.g. with base64) first.", "Invalid value") from None
    if not value:
        raise SecretsError(
            f"The value from {source} is empty. Give it on standard input (`tectum secrets set "
            f"{args.key} < FILE`, or type it at the prompt on a terminal) or with --from-file; "
            "never on the command line. (`tectum secrets edit` can set an empty value.)",
            "No value")
    return value


def _set(ctx: _Ctx, args: argparse.Namespace) -> int:
    from tectum.secrets.store import SecretsError, valid_key

    if args.extra or (args.directory != "." and not os.path.isdir(args.directory)):
        # `set KEY VALUE`: the value would be in the command line, which other users can
        # read (ps, /proc). Refuse, and do not repeat it.
        raise SecretsError(
            "`tectum secrets set KEY` takes the value on standard input (or --from-file PATH), "
            "never on the command line: other users of this machine can read command lines, "
            "and shells keep them in their history. The only other argument is the project "
            "directory, and what was given is not one. Nothing was changed. If that was a "
            "secret value, consider it exposed and change it.",
            "Value on the command line")
    if not valid_key(args.key):
        raise SecretsError(
            "The secret name given is not valid: use letters, digits, '_', '.' and '-', "
            "starting with a letter or '_' (e.g. DB_PASSWORD or db.password).",
            "Invalid secret name")
    secrets = ctx.load()
    keyring = ctx.keyring()
    secrets.verify(keyring)
    value = _read_value(ctx, args)
    added = secrets.set(args.key, value, keyring)
    secrets.save()
    ctx.out(f"{'Added' if added else 'Changed'} {args.key} in {ctx.display}.")
    return 0


def _get(ctx: _Ctx, args: argparse.Namespace) -> int:
    secrets = ctx.load()
    value = secrets.get(args.key, ctx.keyring())
    sys.stdout.flush()
    out = sys.stdout.buffer
    out.write(value.encode("utf-8"))
    if sys.stdout.isatty() and not value.endswith("\n"):
        out.write(b"\n")
    out.flush()
    return 0


def _list(ctx: _Ctx, args: argparse.Namespace) -> int:
    secrets = ctx.load()
    secrets.verify(ctx.keyring())
    keys = secrets.keys()
    for key in keys:
        ctx.out(key)
    if not keys:
        ctx.note(f"{ctx.display} has no secrets yet: `tectum secrets set KEY` adds one.")
    return 0


def _rm(ctx: _Ctx, args: argparse.Namespace) -> int:
    secrets = ctx.load()
    secrets.remove(args.key, ctx.keyring())
    secrets.save()
    ctx.out(f"Removed {args.key} from {ctx.display}.")
    return 0


def _recipients_list(ctx: _Ctx, args: argparse.Namespace) -> int:
    secrets = ctx.load()
    secrets.verify(ctx.keyring())
    for r in secrets.recipients:
        ctx.out(r)
    return 0


def _recipients_add(ctx: _Ctx, args: argparse.Namespace) -> int:
    recipient = _recipient_arg(args.recipient)
    secrets = ctx.load()
    added = secrets.add_recipient(recipient, ctx.keyring())
    secrets.save()
    ctx.out(f"Added {added} to {ctx.display} ({len(secrets.recipients)} recipients). It can "
            "read the current values, and the earlier versions in version control too.")
    return 0


def _recipients_rm(ctx: _Ctx, args: argparse.Namespace) -> int:
    from tectum.secrets.store import SecretsError, SecretsFile

    recipient = _recipient_arg(args.recipient)
    secrets = ctx.load()
    keyring = ctx.keyring()
    removed = secrets.remove_recipient(recipient, keyring)
    secrets.save()
    ctx.out(f"Removed {removed} from {ctx.display} and rotated its data key: every value was "
            "encrypted again, so the removed key cannot read this version or later ones.")
    ctx.note("It can still read the versions it could read before (in version control): "
             "change the secrets themselves (passwords, tokens) if it must lose access to them.")
    try:
        SecretsFile.load(ctx.path, display=ctx.display).verify(keyring)
    except SecretsError:
        ctx.note(f"Note: your own key is no longer a recipient of {ctx.display}.")
    return 0


def _rotate(ctx: _Ctx, args: argparse.Namespace) -> int:
    secrets = ctx.load()
    secrets.rotate(ctx.keyring())
    secrets.save()
    ctx.out(f"Rotated the data key of {ctx.display}: every value was encrypted again.")
    return 0


def _keygen(ctx: _Ctx, args: argparse.Namespace) -> int:
    import datetime

    from tectum.secrets.store import SecretsError, default_key_file, generate_identity

    path = args.output or default_key_file()
    if os.path.lexists(path):
        raise SecretsError(f"{path} exists already; nothing was overwritten. Give another "
                           "file with -o.", "The key file exists")
    identity, public = generate_identity()
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise SecretsError(f"Cannot write {path}: {exc.strerror or exc}.",
                           "Cannot write the key file") from None
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(f"# created: {now}\n# public key: {public}\n{identity}\n")
    ctx.out(f"Wrote a new age key to {path} (mode 0600). Keep it private and out of the "
            "repository: it opens every secrets file it is a recipient of.")
    ctx.out(f"Public key: {public}")
    if args.output and path != default_key_file():
        ctx.note(f"tectum finds it with TECTUM_AGE_KEY_FILE={path}.")
    return 0


# -- edit ------------------------------------------------------------------------------------


def _edit(ctx: _Ctx, args: argparse.Namespace) -> int:
    secrets = ctx.load()
    keyring = ctx.keyring()
    values = secrets.decrypt(keyring)
    with _signals_interrupt():
        return _edit_values(ctx, secrets, keyring, values)


def _edit_values(ctx: _Ctx, secrets: SecretsFile, keyring: Keyring,
                 values: dict[str, str]) -> int:
    from tectum.secrets.store import SecretsError, parse_plaintext_yaml, plaintext_yaml

    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    private_dir = tempfile.mkdtemp(prefix="tectum-secrets-")  # mode 0700
    try:
        path = os.path.join(private_dir, f"{ctx.env}.yaml")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(plaintext_yaml(values, _EDIT_HEADER.format(name=ctx.display)))
        while True:
            _run_editor(editor, path)
            try:
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
            except FileNotFoundError:
                raise SecretsError("The editor removed the file; nothing was changed.",
                                   "Edit abandoned") from None
            except UnicodeDecodeError:
                raise SecretsError("The edited file is not UTF-8 text; nothing was changed.",
                                   "Invalid secrets") from None
            try:
                new = parse_plaintext_yaml(text, f"the edited {ctx.display}")
                break
            except SecretsError as exc:
                if not _interactive():
                    raise
                ctx.view.diagnostic(exc.diagnostic())
                ctx.note("Press Enter to edit again, or Ctrl-C to abandon the changes.")
                if not sys.stdin.readline():
                    raise
        added, changed, removed = secrets.replace(new, keyring)
        if not (added or changed or removed):
            ctx.out(f"No changes: {ctx.display} was left as it was.")
            return 0
        secrets.save()
    finally:
        _shred_tree(private_dir)
    parts = [f"{len(names)} {what}" for names, what in
             ((added, "added"), (changed, "changed"), (removed, "removed")) if names]
    ctx.out(f"Saved {ctx.display}: {', '.join(parts)}.")
    for names, sign in ((added, "+"), (changed, "~"), (removed, "-")):
        for name in names:
            ctx.out(f"  {sign} {name}")
    return 0


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) raise KeyboardInterrupt while the plaintext is on
    disk, so that the ``finally`` that removes it runs (their default action would end the
    process at once and leave it behind)."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, interrupt)
    except ValueError:  # not the main thread: signals cannot be handled here
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interactive() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty() and sys.stderr.isatty()
    except (ValueError, OSError):
        return False


def _run_editor(editor: str, path: str) -> None:
    from tectum.secrets.store import SecretsError

    try:
        command = shlex.split(editor)
    except ValueError:
        command = []
    if not command:
        raise SecretsError("$VISUAL/$EDITOR is not a command line; nothing was changed.",
                           "No editor")
    try:
        code = subprocess.run([*command, path], check=False).returncode
    except OSError as exc:
        raise SecretsError(
            f"Cannot run the editor {command[0]!r} ({exc.strerror or exc}); set $VISUAL or "
            "$EDITOR to an editor that waits until the file is closed (e.g. `vi`, "
            "`code --wait`). Nothing was changed.", "No editor") from None
    if code != 0:
        raise SecretsError(f"The editor exited with status {code}; nothing was changed.",
                           "Edit abandoned")


def _shred_tree(directory: str) -> None:
    """Overwrite every regular file under ``directory`` with zeros, then remove it all (on a
    copy-on-write or journaling file system the old blocks may survive: that is why the
    directory is private and short-lived)."""
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            try:
                if not os.path.isfile(path) or os.path.islink(path):
                    continue
                size = os.path.getsize(path)
                with open(path, "r+b") as fh:
                    fh.write(b"\0" * size)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError:
                pass
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
