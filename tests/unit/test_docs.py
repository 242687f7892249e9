"""The docs' property -> test tables stay true: every test they name exists.

docs/ARCHITECTURE.md and docs/RELIABILITY.md name tests as `tests/dir/file.py::name`,
`file.py::name` (a file named earlier or unique in tests/) or `::name` (the file of the last
reference before it, in the same table cell).  A renamed or deleted test must take its line in
the docs with it.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("docs/ARCHITECTURE.md", "docs/RELIABILITY.md")
_REFERENCE = re.compile(r"`((?:[\w/]+\.py)?::[\w*\[\]]+)`")
# A def, a class, or a module-level name bound to one (a hypothesis state machine's TestCase).
_DEFINED = re.compile(r"^\s*(?:async\s+)?def\s+(\w+)|^class\s+(\w+)|^(\w+)\s*=", re.MULTILINE)


def _test_files() -> dict[str, list[Path]]:
    by_name: dict[str, list[Path]] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        by_name.setdefault(path.name, []).append(path)
    return by_name


def _references(doc: str) -> list[tuple[int, str, str]]:
    """(line number, file as written, test name) of every reference in the doc."""
    found = []
    for number, line in enumerate((ROOT / doc).read_text().splitlines(), 1):
        current = None
        for cell in line.split("|"):
            for reference in _REFERENCE.findall(cell):
                file, name = reference.split("::")
                current = file or current
                if current is None:
                    raise AssertionError(f"{doc}:{number}: {reference} names no file before it")
                found.append((number, current, name.split("[")[0]))
    return found


@pytest.mark.parametrize("doc", DOCS)
def test_every_test_the_docs_name_exists(doc):
    files = _test_files()
    missing = []
    for number, file, name in _references(doc):
        paths = [ROOT / file] if "/" in file else files.get(file, [])
        if len(paths) != 1 or not paths[0].exists():
            missing.append(f"{doc}:{number}: no single file {file}")
            continue
        defined = {a or b or c for a, b, c in _DEFINED.findall(paths[0].read_text())}
        if not fnmatch.filter(defined, name):
            missing.append(f"{doc}:{number}: {file} defines no {name}")
    assert not missing, "\n".join(missing)


def test_the_docs_name_tests_at_all():
    assert sum(len(_references(doc)) for doc in DOCS) > 50
