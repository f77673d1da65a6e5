"""The service tier's fixtures (the in-process `client` is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def runtime_models(served_models: Path) -> dict:
    """Every served model loaded by the service's runtime, outside HTTP."""
    from service.runtime import load_models

    return load_models(served_models, device="cpu")
