"""Breaking a model folder's card on purpose, for the tests that a broken model stops
loading (tests/service/test_runtime.py) and start-up (tests/e2e/test_serve.py)."""

from __future__ import annotations

import json
from pathlib import Path


def edit_card(folder: Path, **changes: object) -> None:
    """Replace top-level fields of folder/model.json."""
    path = folder / "model.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def free_card(folder: Path) -> Path:
    """Remove folder/model.json and return its path, for something else to take its place."""
    (folder / "model.json").unlink()
    return folder / "model.json"
