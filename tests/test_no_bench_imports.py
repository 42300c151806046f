"""Tests never import bench/: bench scripts are measurements that may change or need data and time a test has not
got, so what tests share lives in tests/helpers (which bench may import). Run: pytest tests/test_no_bench_imports.py
"""

import ast

from tests.conftest import ROOT


def bench_imports(source: str) -> list:
    """(line, module) for every import of bench or a module under it, at any depth (inside functions too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        found += [(node.lineno, name) for name in names if name == "bench" or name.startswith("bench.")]
    return found


def test_no_test_or_helper_imports_bench():
    files = sorted((ROOT / "tests").rglob("*.py"))
    assert ROOT / "tests" / "helpers" / "judge_reference.py" in files
    offenders = {str(f.relative_to(ROOT)): hits for f in files if (hits := bench_imports(f.read_text()))}
    assert not offenders, f"tests import bench/ (move what they need to tests/helpers): {offenders}"


def test_every_form_of_a_bench_import_is_caught():
    source = (
        "import bench\nimport os, bench.judge\nfrom bench import judge\n"
        "def f():\n    from bench.judge import HAPPY\n"
        "import benchmark\nfrom tests.helpers import bench_like\nfrom . import bench_x\n"
    )
    assert bench_imports(source) == [(1, "bench"), (2, "bench.judge"), (3, "bench"), (5, "bench.judge")]
