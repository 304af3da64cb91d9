"""Ansible's template filters and tests, written on top of Jinja2 (ansible-core is not imported).

The names, arguments and output follow ansible-core 2.19's ``ansible.builtin`` filters and tests
so that a role's templates render byte-for-byte as the ``template`` module renders them
(``tests/providers/host/test_templates_ansible.py`` checks that against ansible-core itself).
Jinja2's own filters (``default``/``d``, ``join``, ``unique``, ``indent``, ``map``, ...) and tests
(``defined``, ``sameas``, ``in``, ...) are used as they are: Ansible uses them too.

Where tectum deliberately differs:

* ``union``, ``intersect``, ``difference`` and ``symmetric_difference`` keep the order of first
  appearance. Ansible goes through a Python ``set``, whose order for strings changes from run to
  run (hash randomisation); a file whose lines moved on every plan would be reported as drift.
* Filters and tests that read the machine running tectum rather than the managed host
  (``fileglob``, ``expanduser``, ``realpath``, ``is file``/``exists``/``directory``...), clocks and
  randomness (``now``, ``random``, ``shuffle``, ``strftime`` without a time) and lookups are not
  provided: a template that uses one fails with "no filter named ..." (it would make the file
  change from one run or machine to the next).
* Filters that transform text (hashes, base64, regexes, ``quote``, ``comment``, paths, JSON/YAML)
  refuse a value known only after apply (a reference token; see :func:`deferred`): the template
  is rendered when the plan is made and the transform would apply to the token, not the value.

Errors raised here are :class:`FilterError` (a :class:`ValueError`); the renderer adds the template
and line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import math
import ntpath
import operator
import os.path
import re
import shlex
import uuid
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any

from tectum.values import SECRET_SOURCES, TOKEN_RE


class FilterError(ValueError):
    """A filter or test was used with a bad value; the message says which and why."""


# -- values known later ---------------------------------------------------------------------

def deferred(value: Any, name: str) -> bool:
    """Whether ``value`` (text, or any list/dict holding text) holds a token (a value not known
    yet). Raises :class:`FilterError` for a reference to a resource attribute known only after
    apply: a transform of the token would be written as it is. A secret or sensitive variable
    is unknown only in ``tectum validate`` (which does not open the secrets file); the content
    then stays unknown, as it is."""
    tokens: list[str] = []
    _tokens_in(value, tokens)
    later = [t for t in tokens if t not in SECRET_SOURCES]
    if later:
        raise FilterError(
            f"{name} of a value that is known only after apply (a reference to {later[0]}): "
            "the template is rendered when the plan is made, so it cannot transform it. Use a "
            "value known at plan time (a secret, a variable, a configured attribute)")
    return bool(tokens)


def _tokens_in(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        if "${tectum:" in value:
            out.extend(m[1] for m in TOKEN_RE.finditer(value))
    elif isinstance(value, Mapping):
        for k, v in value.items():
            _tokens_in(k, out)
            _tokens_in(v, out)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            _tokens_in(v, out)


def _text(value: Any) -> str:
    """Ansible's ``to_text(value, nonstring='simplerepr')``: ``str()`` of anything."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def _undefined_check(value: Any) -> None:
    """Fail as using an undefined variable fails (a filter that serialises its input)."""
    import jinja2

    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()


# -- serialisation --------------------------------------------------------------------------

def _json_default(value: Any) -> Any:
    import datetime

    import jinja2

    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def to_json(value: Any, **kwargs: Any) -> str:
    """``{{ data | to_json }}``: compact JSON (``json.dumps`` defaults: ASCII, ``", "`` and
    ``": "`` separators), as Ansible's ``to_json``; keyword arguments go to ``json.dumps``."""
    _undefined_check(value)
    deferred(value, "to_json")
    kwargs.pop("profile", None)
    kwargs.pop("vault_to_text", None)
    kwargs.pop("preprocess_unsafe", None)
    return json.dumps(value, default=_json_default, **kwargs)


def to_nice_json(value: Any, indent: int = 4, sort_keys: bool = True, **kwargs: Any) -> str:
    """``{{ data | to_nice_json }}``: JSON indented by 4 with sorted keys, as Ansible's."""
    kwargs.pop("separators", None)
    return to_json(value, indent=indent, sort_keys=sort_keys, separators=(",", ": "), **kwargs)


def _dumper() -> Any:
    import yaml

    base: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

    class Dumper(base):  # type: ignore[misc]
        """SafeDumper that writes any mapping as a dict and any other collection as a list
        (Ansible's ``AnsibleDumper``)."""

    def undefined(dumper: Any, data: Any) -> Any:
        data._fail_with_undefined_error()

    import jinja2

    Dumper.add_multi_representer(jinja2.Undefined, undefined)
    Dumper.add_multi_representer(str, lambda d, v: d.represent_str(str(v)))
    Dumper.add_multi_representer(Mapping, lambda d, v: d.represent_dict(v))
    Dumper.add_multi_representer(tuple, lambda d, v: d.represent_list(v))
    Dumper.add_multi_representer(set, lambda d, v: d.represent_list(v))
    Dumper.add_multi_representer(frozenset, lambda d, v: d.represent_list(v))
    return Dumper


_DUMPER: Any = None


def to_yaml(value: Any, *_args: Any, default_flow_style: bool | None = None,
            **kwargs: Any) -> str:
    """``{{ data | to_yaml }}``: YAML, flow style for leaf collections (``yaml.dump`` with
    ``allow_unicode=True``), as Ansible's ``to_yaml``; keyword arguments go to ``yaml.dump``."""
    import yaml

    global _DUMPER
    _undefined_check(value)
    deferred(value, "to_yaml")
    if _DUMPER is None:
        _DUMPER = _dumper()
    out: str = yaml.dump(value, Dumper=_DUMPER, allow_unicode=True,
                         default_flow_style=default_flow_style, **kwargs)
    return out


def to_nice_yaml(value: Any, indent: int = 4, *_args: Any, default_flow_style: bool = False,
                 **kwargs: Any) -> str:
    """``{{ data | to_nice_yaml }}``: block-style YAML indented by 4, as Ansible's."""
    return to_yaml(value, indent=indent, default_flow_style=default_flow_style, **kwargs)


def from_json(value: Any, **kwargs: Any) -> Any:
    """``{{ text | from_json }}``: the data that JSON ``text`` holds."""
    try:
        return json.loads(value, **kwargs)
    except (TypeError, ValueError) as exc:
        raise FilterError(f"from_json: not JSON ({exc})") from None


def from_yaml(value: Any) -> Any:
    """``{{ text | from_yaml }}``: the data that YAML ``text`` holds (safe loader)."""
    import yaml

    if value is None:
        return None
    if not isinstance(value, str):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise FilterError(f"from_yaml: not YAML ({exc})") from None


# -- booleans, choices ------------------------------------------------------------------------

_TRUE = {"yes", "on", "true", "1"}
_FALSE = {"no", "off", "false", "0"}


def to_bool(value: Any) -> bool:
    """``{{ x | bool }}``: ``yes/on/true/1`` (any case, or the int/bool) → True, ``no/off/
    false/0`` → False; anything else is ``value == 1`` (Ansible's deprecated fallback)."""
    _undefined_check(value)
    if isinstance(value, str):
        probe: Any = value.lower()
    elif isinstance(value, int):
        probe = str(value).lower()
    else:
        probe = value
    try:
        if probe in _TRUE:
            return True
        if probe in _FALSE:
            return False
        return bool(probe == 1)
    except TypeError:
        return False


def ternary(value: Any, true_val: Any, false_val: Any, none_val: Any = None) -> Any:
    """``{{ cond | ternary(a, b[, if_none]) }}``: ``a`` when ``cond`` is true, else ``b``
    (``if_none`` for None when given)."""
    if value is None and none_val is not None:
        return none_val
    return true_val if bool(value) else false_val


def mandatory(value: Any, msg: str | None = None) -> Any:
    """``{{ x | mandatory }}``: ``x``, or an error naming the variable when it is undefined
    (``msg`` replaces the message)."""
    import jinja2

    if isinstance(value, jinja2.Undefined):
        if msg is not None:
            raise FilterError(str(msg))
        name = getattr(value, "_undefined_name", None)
        what = f"{name!r} " if name is not None else ""
        raise FilterError(f"mandatory variable {what}is not defined. Pass it in the "
                          "resource's vars={...}")
    return value


# -- text -------------------------------------------------------------------------------------

def b64encode(value: Any, encoding: str = "utf-8", urlsafe: bool = False) -> str:
    """``{{ text | b64encode }}``: the base64 of ``text`` (UTF-8 by default; ``urlsafe=true``:
    the URL-safe alphabet), as Ansible's filter. Raises :class:`FilterError` for a value known
    only after apply."""
    text = _text(value)
    if deferred(text, "b64encode"):
        return text
    fn = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return fn(text.encode(encoding, "surrogateescape")).decode("ascii")


def b64decode(value: Any, encoding: str = "utf-8", urlsafe: bool = False) -> str:
    """``{{ text | b64decode }}``: the text that base64 ``text`` encodes. Raises
    :class:`FilterError` for text that is not base64 of ``encoding`` text, or a value known
    only after apply."""
    text = _text(value)
    if deferred(text, "b64decode"):
        return text
    try:
        raw = (base64.urlsafe_b64decode(text) if urlsafe
               else base64.b64decode(text, validate=True))
        return raw.decode(encoding)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise FilterError(f"b64decode: not base64 of {encoding} text ({exc})") from None


def _flags(ignorecase: bool, multiline: bool) -> int:
    return (re.I if ignorecase else 0) | (re.M if multiline else 0)


def regex_replace(value: Any = "", pattern: str = "", replacement: str = "",
                  ignorecase: bool = False, multiline: bool = False, count: int = 0,
                  mandatory_count: int = 0) -> str:
    """``{{ text | regex_replace(pattern, replacement) }}``: Python ``re.sub`` (``\\1`` back
    references), as Ansible's. ``mandatory_count``: fail unless it matched that many times."""
    text = _text(value)
    if deferred(text, "regex_replace"):
        return text
    out, subs = re.compile(pattern, _flags(ignorecase, multiline)).subn(replacement, text,
                                                                         count=count)
    if mandatory_count and mandatory_count != subs:
        raise FilterError(f"regex_replace: {pattern!r} should match {mandatory_count} times, "
                          f"but matches {subs} times")
    return out


def regex_search(value: Any, regex: str, *args: str, ignorecase: bool = False,
                 multiline: bool = False) -> Any:
    """``{{ text | regex_search(pattern[, '\\1', '\\g<name>'...]) }}``: the first match (or the
    listed groups of it, as a list); None when nothing matches, as Ansible's."""
    text = _text(value)
    if deferred(text, "regex_search"):
        return text
    groups: list[int | str] = []
    for arg in args:
        named = re.match(r"\\g<(\S+)>", arg)
        numbered = re.match(r"\\(\d+)", arg)
        if named:
            groups.append(named.group(1))
        elif numbered:
            groups.append(int(numbered.group(1)))
        else:
            raise FilterError(f"regex_search: unknown argument {arg!r} (use '\\\\1' or "
                              "'\\\\g<name>')")
    match = re.search(regex, text, _flags(ignorecase, multiline))
    if not match:
        return None
    if not groups:
        return match.group()
    return [match.group(g) for g in groups]


def regex_findall(value: Any, regex: str, multiline: bool = False,
                  ignorecase: bool = False) -> list[Any]:
    """``{{ text | regex_findall(pattern) }}``: Python ``re.findall``."""
    text = _text(value)
    if deferred(text, "regex_findall"):
        return [text]
    return re.findall(regex, text, _flags(ignorecase, multiline))


def regex_escape(value: Any, re_type: str = "python") -> str:
    """``{{ text | regex_escape }}``: ``re.escape`` (``re_type='posix_basic'``: a BRE)."""
    text = _text(value)
    if deferred(text, "regex_escape"):
        return text
    if re_type == "python":
        return re.escape(text)
    if re_type == "posix_basic":
        return re.sub(r"([].[^$*\\])", r"\\\1", text)
    raise FilterError(f"regex_escape: regex type {re_type!r} is not supported (python, "
                      "posix_basic)")


def quote(value: Any) -> str:
    """``{{ arg | quote }}``: ``arg`` quoted for a POSIX shell (``shlex.quote``; None → ``''``)."""
    text = "" if value is None else _text(value)
    if deferred(text, "quote"):
        return text
    return shlex.quote(text)


_COMMENT_STYLES: dict[str, dict[str, str]] = {
    "plain": {"decoration": "# "},
    "erlang": {"decoration": "% "},
    "c": {"decoration": "// "},
    "cblock": {"beginning": "/*", "decoration": " * ", "end": " */"},
    "xml": {"beginning": "<!--", "decoration": " - ", "end": "-->"},
}


def comment(text: Any, style: str = "plain", **kw: Any) -> str:
    """``{{ ansible_managed | comment }}``: ``text`` as a comment block, as Ansible's ``comment``
    filter: styles ``plain`` (``#``), ``erlang`` (``%``), ``c`` (``//``), ``cblock``
    (``/* */``), ``xml`` (``<!-- -->``), and its ``decoration``/``prefix``/``postfix``/
    ``beginning``/``end``/``newline`` and ``*_count`` overrides. The default is three lines:
    ``#``, ``# text``, ``#``."""
    if style not in _COMMENT_STYLES:
        raise FilterError(f"comment: invalid style {style!r} (one of "
                          f"{', '.join(_COMMENT_STYLES)})")
    body = _text(text)
    deferred(body, "comment")
    params = _COMMENT_STYLES[style]
    deco = kw.get("decoration", params["decoration"])
    p: dict[str, Any] = {"newline": "\n", "beginning": "", "prefix": deco.rstrip(),
                         "prefix_count": 1, "decoration": "", "postfix": deco.rstrip(),
                         "postfix_count": 1, "end": ""}
    p.update(params)
    p.update(kw)
    nl = p["newline"]
    head = f"{p['beginning']}{nl}" if p["beginning"] else ""
    prefix = ""
    if p["prefix"]:
        line = f"{p['prefix']}{nl}" if p["prefix"] != nl else nl
        prefix = line * int(p["prefix_count"])
    decoration = p["decoration"]
    lines = (decoration + body.replace(nl, nl + decoration)).replace(
        decoration + nl, decoration.rstrip() + nl)
    postfix = nl.join([""] + [p["postfix"]] * int(p["postfix_count"]))
    end = f"{nl}{p['end']}" if p["end"] else ""
    return f"{head}{prefix}{lines}{postfix}{end}"


def split(value: Any, sep: str | None = None, maxsplit: int = -1) -> list[str]:
    """``{{ text | split(',') }}``: ``str.split``."""
    return _text(value).split(sep, maxsplit)


def get_hash(value: Any, hashtype: str = "sha1") -> str:
    """``{{ text | hash('sha256') }}``: the hex digest of ``text`` (UTF-8) with any
    ``hashlib`` algorithm (default sha1)."""
    text = _text(value)
    if deferred(text, "hash"):
        return text
    try:
        h = hashlib.new(hashtype)
    except ValueError as exc:
        raise FilterError(f"hash: {exc}") from None
    h.update(text.encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def checksum(value: Any) -> str:
    """``{{ text | checksum }}`` / ``sha1``: the SHA-1 hex digest of ``text``."""
    return get_hash(value, "sha1")


def md5(value: Any) -> str:
    """``{{ text | md5 }}``: the MD5 hex digest of ``text``."""
    return get_hash(value, "md5")


_UUID_NAMESPACE_ANSIBLE = uuid.UUID("361E6D51-FAEC-444A-9079-341386DA8E2E")


def to_uuid(value: Any, namespace: Any = _UUID_NAMESPACE_ANSIBLE) -> str:
    """``{{ name | to_uuid }}``: a UUID v5 of ``name`` in Ansible's namespace (or ``namespace``)
    — the same UUID Ansible gives."""
    text = _text(value)
    if deferred(text, "to_uuid"):
        return text
    try:
        ns = namespace if isinstance(namespace, uuid.UUID) else uuid.UUID(str(namespace))
    except ValueError as exc:
        raise FilterError(f"to_uuid: invalid namespace {namespace!r} ({exc})") from None
    return str(uuid.uuid5(ns, text))


def _path_filter(fn: Callable[[str], Any], name: str) -> Callable[[Any], Any]:
    def apply(value: Any) -> Any:
        text = _text(value)
        if deferred(text, name):
            return text
        return fn(text)

    apply.__name__ = name
    apply.__doc__ = f"``{{{{ path | {name} }}}}``: Python's ``{fn.__module__}.{fn.__name__}``."
    return apply


def path_join(paths: Any) -> str:
    """``{{ ['/etc', 'app', 'x.conf'] | path_join }}``: ``os.path.join`` of the parts."""
    deferred(paths, "path_join")
    if isinstance(paths, str):
        return os.path.join(paths)
    if isinstance(paths, Sequence):
        return os.path.join(*[_text(p) for p in paths])
    raise FilterError(f"path_join expects a string or a list, got {type(paths).__name__}")


def commonpath(paths: Any) -> str:
    """``{{ paths | commonpath }}``: ``os.path.commonpath``."""
    deferred(paths, "commonpath")
    if isinstance(paths, str) or not isinstance(paths, Sequence):
        raise FilterError(f"commonpath expects a list, got {type(paths).__name__}")
    return str(os.path.commonpath(list(paths)))


# -- lists and dicts ----------------------------------------------------------------------------

def _unique(items: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for x in items:
        if x not in out:
            out.append(x)
    return out


def unique(environment: Any, value: Iterable[Any], case_sensitive: bool | None = None,
           attribute: Any = None) -> list[Any]:
    """``{{ xs | unique }}``: Jinja2's ``unique`` as a list (case-insensitive unless
    ``case_sensitive=true``), as Ansible's."""
    from jinja2.filters import sync_do_unique

    return list(sync_do_unique(environment, value, case_sensitive=bool(case_sensitive),
                               attribute=attribute))


def union(a: Iterable[Any], b: Iterable[Any]) -> list[Any]:
    """``{{ a | union(b) }}``: the items of ``a`` then ``b``, each once (first-appearance
    order; Ansible's order is a set's, see the module docstring)."""
    return _unique(list(a) + list(b))


def intersect(a: Iterable[Any], b: Iterable[Any]) -> list[Any]:
    """``{{ a | intersect(b) }}``: the items of ``a`` that are in ``b``, each once."""
    bl = list(b)
    return _unique(x for x in a if x in bl)


def difference(a: Iterable[Any], b: Iterable[Any]) -> list[Any]:
    """``{{ a | difference(b) }}``: the items of ``a`` that are not in ``b``, each once."""
    bl = list(b)
    return _unique(x for x in a if x not in bl)


def symmetric_difference(a: Iterable[Any], b: Iterable[Any]) -> list[Any]:
    """``{{ a | symmetric_difference(b) }}``: the items in exactly one of ``a`` and ``b``."""
    al, bl = list(a), list(b)
    both = intersect(al, bl)
    return [x for x in union(al, bl) if x not in both]


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence | set | frozenset) and not isinstance(value, str | bytes)


def flatten(items: Any, levels: int | None = None, skip_nulls: bool = True) -> list[Any]:
    """``{{ lists | flatten[(levels)] }}``: nested lists made flat (all levels, or ``levels``);
    None, ``'None'`` and ``'null'`` items are dropped unless ``skip_nulls=false``."""
    out: list[Any] = []
    for element in items:
        if skip_nulls and element in (None, "None", "null"):
            continue
        if _is_sequence(element):
            if levels is None:
                out.extend(flatten(element, skip_nulls=skip_nulls))
            elif levels >= 1:
                out.extend(flatten(element, levels=int(levels) - 1, skip_nulls=skip_nulls))
            else:
                out.append(element)
        else:
            out.append(element)
    return out


_LIST_MERGE = ("replace", "keep", "append", "prepend", "append_rp", "prepend_rp")


def _merge(x: Mapping[Any, Any], y: Mapping[Any, Any], recursive: bool,
           list_merge: str) -> dict[Any, Any]:
    """``y`` merged into a copy of ``x`` (Ansible's ``merge_hash``)."""
    out = dict(x)
    for key, yv in y.items():
        if key not in out:
            out[key] = yv
            continue
        xv = out[key]
        if isinstance(xv, MutableMapping) and isinstance(yv, MutableMapping):
            out[key] = _merge(xv, yv, recursive, list_merge) if recursive else yv
        elif isinstance(xv, list) and isinstance(yv, list):
            if list_merge == "replace":
                out[key] = yv
            elif list_merge == "keep":
                pass
            elif list_merge == "append":
                out[key] = xv + yv
            elif list_merge == "prepend":
                out[key] = yv + xv
            elif list_merge == "append_rp":
                out[key] = [z for z in xv if z not in yv] + yv
            else:  # prepend_rp
                out[key] = yv + [z for z in xv if z not in yv]
        else:
            out[key] = yv
    return out


def combine(*terms: Any, recursive: bool = False, list_merge: str = "replace") -> Any:
    """``{{ a | combine(b, ...[, recursive=true][, list_merge='append']) }}``: the dicts merged,
    later ones winning, as Ansible's ``combine`` (``list_merge``: replace, keep, append, prepend,
    append_rp, prepend_rp). A list of dicts may be given as one argument."""
    if list_merge not in _LIST_MERGE:
        raise FilterError(f"combine: list_merge must be one of {', '.join(_LIST_MERGE)}")
    dicts = flatten(terms, levels=1)
    if not dicts:
        return {}
    for d in dicts:
        if not isinstance(d, Mapping):
            raise FilterError(f"combine: expects dicts, got {type(d).__name__}")
    if len(dicts) == 1:
        return dicts[0]
    result: dict[Any, Any] = dict(dicts[0])
    for d in dicts[1:]:
        result = _merge(result, d, recursive, list_merge)
    return result


def dict2items(value: Any, key_name: str = "key", value_name: str = "value") -> list[Any]:
    """``{{ d | dict2items }}``: ``[{key: k, value: v}, ...]`` in the dict's order."""
    if not isinstance(value, Mapping):
        raise FilterError(f"dict2items requires a dict, got {type(value).__name__}")
    return [{key_name: k, value_name: v} for k, v in value.items()]


def items2dict(value: Any, key_name: str = "key", value_name: str = "value") -> dict[Any, Any]:
    """``{{ items | items2dict }}``: the dict that ``[{key: k, value: v}, ...]`` lists."""
    if not _is_sequence(value):
        raise FilterError(f"items2dict requires a list, got {type(value).__name__}")
    try:
        return {item[key_name]: item[value_name] for item in value}
    except (KeyError, TypeError):
        raise FilterError(f"items2dict requires a list of dicts with the keys {key_name!r} and "
                          f"{value_name!r}") from None


def subelements(obj: Any, path: Any, skip_missing: bool = False) -> list[tuple[Any, Any]]:
    """``{{ users | subelements('groups') }}``: ``(item, sub)`` for each ``sub`` in each item's
    list at the dotted ``path``."""
    elements = list(obj.values()) if isinstance(obj, Mapping) else list(obj)
    keys = path.split(".") if isinstance(path, str) else list(path)
    out: list[tuple[Any, Any]] = []
    for element in elements:
        values = element
        for key in keys:
            try:
                values = values[key]
            except KeyError:
                if skip_missing:
                    values = []
                    break
                raise FilterError(f"subelements: could not find {key!r} in {values!r}") from None
        if not isinstance(values, list):
            raise FilterError(f"subelements: {path!r} should point to a list, got {values!r}")
        out.extend((element, v) for v in values)
    return out


def extract(item: Any, container: Any, morekeys: Any = None) -> Any:
    """``{{ keys | map('extract', data) }}``: ``container[item]`` (then ``[morekeys]``)."""
    keys = [item] if morekeys is None else [item] + (
        morekeys if isinstance(morekeys, list) else [morekeys])
    value = container
    for key in keys:
        value = value[key]
    return value


def type_debug(value: Any) -> str:
    """``{{ x | type_debug }}``: the Python type name of ``x``."""
    return type(value).__name__


def logarithm(x: Any, base: float = math.e) -> float:
    """``{{ n | log[(base)] }}``."""
    return math.log10(x) if base == 10 else math.log(x, base)


def power(x: Any, y: Any) -> float:
    """``{{ n | pow(y) }}``: ``math.pow``."""
    return math.pow(x, y)


def root(x: Any, base: float = 2) -> float:
    """``{{ n | root[(base)] }}``: the square (or ``base``) root."""
    return math.sqrt(x) if base == 2 else math.pow(x, 1.0 / float(base))


# -- tests ------------------------------------------------------------------------------------

def _regex_test(value: Any, pattern: str = "", ignorecase: bool = False,
                multiline: bool = False, match_type: str = "search") -> bool:
    text = _text(value)
    compiled = re.compile(pattern, _flags(ignorecase, multiline))
    method = {"match": compiled.match, "search": compiled.search,
              "fullmatch": compiled.fullmatch}.get(match_type, compiled.search)
    return bool(method(text))


def match(value: Any, pattern: str = "", ignorecase: bool = False,
          multiline: bool = False) -> bool:
    """``x is match(pattern)``: ``re.match`` (anchored at the start)."""
    return _regex_test(value, pattern, ignorecase, multiline, "match")


def search(value: Any, pattern: str = "", ignorecase: bool = False,
           multiline: bool = False) -> bool:
    """``x is search(pattern)``: ``re.search``."""
    return _regex_test(value, pattern, ignorecase, multiline, "search")


def _loose(text: str) -> list[int | str]:
    """distutils' ``LooseVersion`` components: numbers as ints, other runs as text."""
    parts = [p for p in re.split(r"(\d+|[a-z]+|\.)", text, flags=re.X) if p and p != "."]
    return [int(p) if p.isdigit() else p for p in parts]


_STRICT = re.compile(r"^(\d+)\.(\d+)(\.(\d+))?([ab](\d+))?$", re.A)


def _strict(text: str) -> tuple[tuple[int, int, int], tuple[str, int] | tuple[str]]:
    m = _STRICT.match(text)
    if not m:
        raise ValueError(f"invalid version number {text!r}")
    major, minor, _, patch, pre, prenum = m.groups()
    number = (int(major), int(minor), int(patch or 0))
    # a release sorts after its pre-releases
    return number, ((pre[0], int(prenum)) if pre else ("~",))


_OPS = {"==": "eq", "=": "eq", "eq": "eq", "<": "lt", "lt": "lt", "<=": "le", "le": "le",
        ">": "gt", "gt": "gt", ">=": "ge", "ge": "ge", "!=": "ne", "<>": "ne", "ne": "ne"}


def version_compare(value: Any, version: Any, operator_: str = "eq", strict: Any = None,
                    version_type: str | None = None, **kwargs: Any) -> bool:
    """``x is version('1.2', '>=')``: compare versions as Ansible's ``version`` test: loose
    (default; distutils ``LooseVersion``), ``strict`` (``StrictVersion``) or ``pep440``
    (needs the ``packaging`` library). Operators: ``== = eq < lt <= le > gt >= ge != <> ne``."""
    op_name = kwargs.pop("operator", operator_)
    if kwargs:
        raise FilterError(f"version: unknown arguments {', '.join(kwargs)}")
    if not value:
        raise FilterError("version: the version to test is empty")
    if not version:
        raise FilterError("version: the version to compare against is empty")
    if op_name not in _OPS:
        raise FilterError(f"version: invalid operator {op_name!r} (one of {', '.join(_OPS)})")
    compare = getattr(operator, _OPS[op_name])
    kind = "strict" if strict else (version_type or "loose")
    a, b = _text(value), _text(version)
    try:
        if kind == "loose":
            return bool(compare(_loose(a), _loose(b)))
        if kind == "strict":
            return bool(compare(_strict(a), _strict(b)))
        if kind == "pep440":
            from packaging.version import Version

            return bool(compare(Version(a), Version(b)))
    except ImportError:
        raise FilterError("version: version_type='pep440' needs the Python 'packaging' "
                          "library") from None
    except Exception as exc:  # noqa: BLE001 - a comparison of mismatched parts, a bad version
        raise FilterError(f"version comparison failed: {exc}") from None
    raise FilterError(f"version: version_type {kind!r} is not supported by tectum (loose, "
                      "strict, pep440)")


def truthy(value: Any, convert_bool: bool = False) -> bool:
    """``x is truthy``: Python truth (``convert_bool=true``: ``yes``/``no``... first)."""
    if convert_bool:
        lowered = _text(value).lower() if isinstance(value, str | int) else value
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    return bool(value)


def falsy(value: Any, convert_bool: bool = False) -> bool:
    """``x is falsy``: not :func:`truthy`."""
    return not truthy(value, convert_bool)


def issubset(a: Iterable[Any], b: Iterable[Any]) -> bool:
    """``a is subset(b)``."""
    bl = list(b)
    return all(x in bl for x in a)


def issuperset(a: Iterable[Any], b: Iterable[Any]) -> bool:
    """``a is superset(b)``."""
    return issubset(b, a)


def contains(seq: Any, value: Any) -> bool:
    """``seq is contains(value)``: ``value in seq``."""
    return value in seq


def isnan(x: Any) -> bool:
    """``x is nan``."""
    try:
        return math.isnan(x)
    except TypeError:
        return False


def is_abs(path: Any) -> bool:
    """``path is abs``: ``os.path.isabs`` (of the text; nothing on disk is read)."""
    return os.path.isabs(_text(path))


FILTERS: dict[str, Callable[..., Any]] = {
    "to_json": to_json, "to_nice_json": to_nice_json, "from_json": from_json,
    "to_yaml": to_yaml, "to_nice_yaml": to_nice_yaml, "from_yaml": from_yaml,
    "bool": to_bool, "ternary": ternary, "mandatory": mandatory,
    "b64encode": b64encode, "b64decode": b64decode,
    "regex_replace": regex_replace, "regex_search": regex_search,
    "regex_findall": regex_findall, "regex_escape": regex_escape,
    "quote": quote, "comment": comment, "split": split,
    "hash": get_hash, "checksum": checksum, "sha1": checksum, "md5": md5, "to_uuid": to_uuid,
    "basename": _path_filter(os.path.basename, "basename"),
    "dirname": _path_filter(os.path.dirname, "dirname"),
    "normpath": _path_filter(os.path.normpath, "normpath"),
    "splitext": _path_filter(os.path.splitext, "splitext"),
    "win_basename": _path_filter(ntpath.basename, "win_basename"),
    "win_dirname": _path_filter(ntpath.dirname, "win_dirname"),
    "win_splitdrive": _path_filter(ntpath.splitdrive, "win_splitdrive"),
    "path_join": path_join, "commonpath": commonpath,
    "unique": unique, "union": union, "intersect": intersect, "difference": difference,
    "symmetric_difference": symmetric_difference,
    "flatten": flatten, "combine": combine, "dict2items": dict2items,
    "items2dict": items2dict, "subelements": subelements, "extract": extract,
    "type_debug": type_debug,
    "log": logarithm, "pow": power, "root": root,
    "zip": zip, "zip_longest": itertools.zip_longest, "product": itertools.product,
    "permutations": itertools.permutations, "combinations": itertools.combinations,
}
"""Ansible's filters by name (on top of Jinja2's own)."""

#: filters whose first argument is the Jinja2 environment (``jinja2.pass_environment``)
PASS_ENVIRONMENT = frozenset({"unique"})

TESTS: dict[str, Callable[..., bool]] = {
    "match": match, "search": search, "regex": _regex_test,
    "version": version_compare, "version_compare": version_compare,
    "truthy": truthy, "falsy": falsy,
    "subset": issubset, "issubset": issubset, "superset": issuperset,
    "issuperset": issuperset, "contains": contains,
    "nan": isnan, "isnan": isnan, "any": any, "all": all,
    "abs": is_abs, "is_abs": is_abs,
}
"""Ansible's tests by name (on top of Jinja2's own)."""
