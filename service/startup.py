"""Checks run once when `bentoml serve` imports the service, before any worker starts: a
worker whose __init__ fails is restarted for ever, so a bad setting, an unusable jobs
folder or a broken model must stop the server here, with one line naming the variable or
the file."""

from __future__ import annotations

from bentoml._internal.context import server_context

from service.contract.card import CardError
from service.jobs import JobsFolderError, JobStore
from service.runtime import DeviceError, load_models
from service.settings import Settings, SettingsError, current


def check_or_exit(settings: Settings) -> None:
    """The jobs folder can be made and written, and every model loads."""
    if server_context.worker_index is not None:
        return  # a worker of `bentoml serve`: the server checked before it started us
    try:
        JobStore(settings.jobs_dir)
    except JobsFolderError as err:
        raise SystemExit(f"counterfeit: cannot start: COUNTERFEIT_JOBS_DIR: {err}") from None
    try:
        names = sorted(load_models(settings.models_dir, settings.device, threads=1))
    except (CardError, DeviceError) as err:
        raise SystemExit(f"counterfeit: cannot start: {err}") from None
    if settings.default_model is not None and settings.default_model not in names:
        raise SystemExit("counterfeit: cannot start: COUNTERFEIT_DEFAULT_MODEL="
                         f"{settings.default_model!r} is not among the models in "
                         f"{settings.models_dir}: {names}")


def settings_or_exit() -> Settings:
    try:
        return current()
    except SettingsError as err:
        raise SystemExit(f"counterfeit: cannot start: {err}") from None
