"""The service in this process: BentoML's ASGI app under starlette's TestClient."""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock


@contextmanager
def serve_in_process(models: Path, **settings: str) -> Iterator:
    """A TestClient of the service on `models`, with COUNTERFEIT_<NAME> settings (the
    environment is restored on exit)."""
    # the metrics must know their folder before prometheus_client is first used
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp())
    ours = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERFEIT_")}
    ours.update(COUNTERFEIT_MODELS_DIR=str(models), COUNTERFEIT_JOBS_DIR=tempfile.mkdtemp(),
                BENTOML_HOME=tempfile.mkdtemp(), BENTOML_DO_NOT_TRACK="True",
                **{f"COUNTERFEIT_{k.upper()}": v for k, v in settings.items()})
    from starlette.testclient import TestClient

    from service import settings as service_settings

    with mock.patch.dict(os.environ, ours, clear=True):
        service_settings.current.cache_clear()
        import service.service as module

        module = importlib.reload(module)  # read the settings above
        with TestClient(module.Counterfeit.to_asgi()) as client:
            yield client
    service_settings.current.cache_clear()
