"""The layering of docs/architecture.md ("Who may import whom"), checked on the code as it is:
the import contracts in pyproject.toml (import-linter), the purity of ``notifier.lifecycle``,
and that only ``notifier/storage`` builds or writes queries."""

from __future__ import annotations

import ast
import contextlib
import io
import re
import sys
from pathlib import Path

import grimp
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent

# Packages where no query may be built or written: they call notifier/storage.
QUERY_FREE = ("notifier/api", "notifier/triggers", "workers")
# The readiness probe's ``SELECT 1`` is a ping of the connection, not a query of the data.
PINGS = {"notifier/api/routes/health.py"}

# What builds a statement (sqlalchemy's constructors and expression helpers).
_BUILDERS = frozenset(
    {
        "select",
        "insert",
        "update",
        "delete",
        "text",
        "func",
        "literal",
        "literal_column",
        "bindparam",
        "tuple_",
        "case",
        "exists",
        "and_",
        "or_",
        "not_",
        "union",
        "union_all",
    }
)
# What runs one on a session or connection, or writes through the ORM's unit of work.
_RUNNERS = frozenset(
    {"execute", "scalar", "scalars", "stream", "add", "add_all", "merge", "delete", "get"}
)
_SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|LISTEN|NOTIFY|TRUNCATE)\b")


def test_the_import_contracts_hold() -> None:
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        status = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True)
    assert status == 0, report.getvalue()


def test_the_lifecycle_imports_nothing_but_the_standard_library() -> None:
    graph = grimp.build_graph("notifier", include_external_packages=True)
    lifecycle = graph.find_descendants("notifier.lifecycle") | {"notifier.lifecycle"}
    outside = {
        (module, imported)
        for module in lifecycle
        for imported in graph.find_modules_directly_imported_by(module)
        if imported not in lifecycle and imported.split(".")[0] not in sys.stdlib_module_names
    }
    assert outside == set()


def _query_sites(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            built = sorted(a.name for a in node.names if a.name in _BUILDERS)
            if built or (node.module or "").startswith(("sqlalchemy.sql", "sqlalchemy.dialects")):
                found.append(f"{node.lineno}: imports {built or node.module} from sqlalchemy")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _RUNNERS
            and isinstance(node.func.value, ast.Name)
            and re.search(r"session|connection|conn\b", node.func.value.id)
        ):
            found.append(f"{node.lineno}: {node.func.value.id}.{node.func.attr}(...)")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _SQL.match(node.value)
        ):
            found.append(f"{node.lineno}: SQL text {node.value[:40]!r}")
    return found


def test_only_storage_builds_or_writes_queries() -> None:
    offenders = {}
    for package in QUERY_FREE:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if name in PINGS:
                continue
            sites = _query_sites(path)
            if sites:
                offenders[name] = sites
    assert offenders == {}, "queries belong in notifier/storage"


def test_the_scan_finds_a_query() -> None:
    """The scan above is not blind: it finds each kind of query it looks for."""
    sample = ROOT / "notifier/api/routes/health.py"
    assert any("text" in site for site in _query_sites(sample))
    assert any("SQL text" in site for site in _query_sites(sample))
