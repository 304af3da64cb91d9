"""Variables typed with a union (``var("maxmemory", int | str)``, issue 12 item 3): a value of
any of the types is taken as it is; text from ``-var`` or the environment is read as each
non-string type in turn, then as a string; None where the union allows it."""

from __future__ import annotations

import typing
from collections.abc import Callable
from pathlib import Path

import pytest

from tectum.config.declaration import _convert
from tests.conftest import Result


@pytest.mark.parametrize(("given", "typ", "want"), [
    ("512", int | str, 512),
    ("512mb", int | str, "512mb"),
    (512, int | str, 512),
    ("true", bool | int, True),
    ("3", bool | int, 3),
    ("null", int | None, None),
    ("7", typing.Optional[int], 7),  # noqa: UP045 - the typing spelling works too
    ('["a"]', list | str, ["a"]),
    (2.5, int | float, 2.5),
])
def test_union_values(given: object, typ: object, want: object) -> None:
    got = _convert(given, typ)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize(("given", "typ"), [("x", int | float), (True, int | str),
                                            ("null", int | float)])
def test_union_refusals_name_the_types(given: object, typ: object) -> None:
    with pytest.raises(ValueError, match="expected int or "):
        _convert(given, typ)


def test_union_variable_through_the_cli(tmp_path: Path, tectum: Callable[..., Result]) -> None:
    out = tmp_path / "out"
    (tmp_path / "stack.py").write_text(
        "from tectum import var\nfrom tectum.host import File\n"
        'maxmemory = var("maxmemory", int | str, default="64mb")\n'
        f'File("f", path="{out}", content=f"{{type(maxmemory).__name__}} {{maxmemory}}\\n")\n')
    for given, want in (("128", "int 128"), ("1gb", "str 1gb")):
        res = tectum("apply", "--auto-approve", "-var", f"maxmemory={given}", cwd=tmp_path)
        assert res.returncode == 0, res.output
        assert out.read_text() == want + "\n"
    res = tectum("apply", "--auto-approve", cwd=tmp_path)
    assert res.returncode == 0 and out.read_text() == "str 64mb\n", res.output
