"""The core is Sans-IO: every module under core/ imports only what is on an allow-list
(standard-library modules that do no IO, attrs/cattrs/pydantic, idna, and core itself),
so a clock (`time`, `datetime`), randomness (`random`, `secrets`, `uuid`), the process
(`os`, `sys`) or any IO library is caught whether or not anyone thought to forbid it.
Effects carry what the edge should do."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "core"

ALLOWED = frozenset(
    {
        # the language and pure data handling from the standard library
        "__future__",
        "abc",
        "collections",
        "copy",
        "dataclasses",
        "enum",
        "functools",
        "itertools",
        "json",
        "math",
        "operator",
        "re",
        "string",
        "types",
        "typing",
        "unicodedata",
        # the data libraries the design card names, and IDNA for domain rules
        "attrs",
        "cattrs",
        "pydantic",
        "idna",
        # the core itself
        "core",
    }
)

# Calls that reach outside even through an allowed module.
FORBIDDEN_TEXT = ("os.environ", "open(", ".now(", ".utcnow(", ".today(", "__import__", "importlib")


def imported_modules(source: str, filename: str = "<string>") -> Iterator[tuple[str, int]]:
    """Every top-level module name the source imports, with its line, wherever it sits
    (module level, inside functions, under `if TYPE_CHECKING:`)."""
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.partition(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # (a relative import stays inside core)
            yield node.module.partition(".")[0], node.lineno


def violations(source: str, filename: str) -> list[str]:
    """`file:line: reason` for every forbidden import or text in one module's source."""
    found = [
        f"{filename}:{line}: imports {name!r}"
        for name, line in imported_modules(source, filename)
        if name not in ALLOWED
    ]
    for lineno, text in enumerate(source.splitlines(), start=1):
        found.extend(
            f"{filename}:{lineno}: mentions {needle!r}"
            for needle in FORBIDDEN_TEXT
            if needle in text
        )
    return found


def core_modules() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def test_core_has_modules_to_check() -> None:
    names = {path.name for path in core_modules()}
    assert {"__init__.py", "_request.py", "_validation.py"} <= names


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_imports_no_io(path: Path) -> None:
    found = violations(path.read_text(encoding="utf-8"), str(path.relative_to(CORE.parent)))
    assert not found, "core must stay Sans-IO:\n" + "\n".join(found)


# -- the checker itself ------------------------------------------------------------------


def test_checker_catches_a_plain_import() -> None:
    assert violations("import json\nimport asyncio\n", "bad.py") == ["bad.py:2: imports 'asyncio'"]


def test_checker_catches_a_dotted_and_aliased_import() -> None:
    assert violations("import os.path as p\n", "bad.py") == ["bad.py:1: imports 'os'"]


def test_checker_catches_from_import_of_a_submodule() -> None:
    assert violations("from http.client import HTTPConnection\n", "bad.py") == [
        "bad.py:1: imports 'http'"
    ]


def test_checker_catches_imports_inside_functions_and_type_checking() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import httpx\n"
        "def f():\n"
        "    from transports import base\n"
    )
    assert violations(source, "bad.py") == [
        "bad.py:3: imports 'httpx'",
        "bad.py:5: imports 'transports'",
    ]


def test_checker_catches_environment_and_file_access() -> None:
    source = "x = os.environ['A']\ny = open('f')\n"
    found = violations(source, "bad.py")
    assert "bad.py:1: mentions 'os.environ'" in found
    assert "bad.py:2: mentions 'open('" in found


def test_checker_allows_pure_imports_and_relative_imports() -> None:
    source = "import json\nimport enum\nfrom core._records import Identity\nfrom . import x\n"
    assert violations(source, "good.py") == []


def test_checker_matches_allowed_names_whole() -> None:
    # `jsonschema` is not `json`, `typing_extensions` is not `typing`.
    assert violations("import jsonschema\nimport typing_extensions\n", "bad.py") == [
        "bad.py:1: imports 'jsonschema'",
        "bad.py:2: imports 'typing_extensions'",
    ]


@pytest.mark.parametrize(
    "module", ["random", "secrets", "uuid", "time", "datetime", "os", "sys", "logging", "socket"]
)
def test_checker_catches_what_nobody_listed(module: str) -> None:
    assert violations(f"import {module}\n", "bad.py") == [f"bad.py:1: imports {module!r}"]


def test_checker_catches_a_clock_read_through_an_allowed_name() -> None:
    found = violations("from core import x\nstamp = x.datetime.now()\n", "bad.py")
    assert found == ["bad.py:2: mentions '.now('"]
