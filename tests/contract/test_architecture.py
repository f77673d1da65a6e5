"""The two halves share only the contract: training imports nothing from service/ but
service.contract, and service/ never imports torch or training (docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONTRACT = "service.contract"


def imports(folder: str) -> list[tuple[str, str]]:
    """(file, imported module) for every import statement under REPO/folder."""
    found = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(str(path.relative_to(REPO)), a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((str(path.relative_to(REPO)), node.module))
    return found


def _top(module: str) -> str:
    return module.split(".")[0]


def test_training_imports_only_the_contract_from_service() -> None:
    crossing = [(f, m) for f, m in imports("training")
                if _top(m) == "service" and not (m == CONTRACT or m.startswith(CONTRACT + "."))]
    assert crossing == []


def test_service_never_imports_torch_or_training() -> None:
    assert [(f, m) for f, m in imports("service") if _top(m) in ("torch", "training")] == []


def test_the_contract_is_numpy_only() -> None:
    allowed = {"numpy", "__future__"} | set(sys.stdlib_module_names)
    assert [(f, m) for f, m in imports("service/contract")
            if _top(m) not in allowed and not m.startswith(CONTRACT)] == []


def test_importing_the_service_loads_no_torch() -> None:
    code = ("import sys, service.runtime, service.images, service.jobs, service.settings; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
