"""Checks run once when `bentoml serve` imports the service, before any worker starts: a
worker whose __init__ fails is restarted for ever, so a bad setting, an unusable jobs
folder or a broken model must stop the server here, with one line naming the variable or
the file."""

from __future__ import annotations

from bentoml._internal.context import server_context

from service.contract.card import CardError
from service.jobs import JobsFolderError, JobStore
from service.jobs.queue import make_huey
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
    check_queue(settings)
    try:
        names = sorted(load_models(settings.models_dir, settings.device, threads=1))
    except (CardError, DeviceError) as err:
        raise SystemExit(f"counterfeit: cannot start: {err}") from None
    if settings.default_model is not None and settings.default_model not in names:
        raise SystemExit("counterfeit: cannot start: COUNTERFEIT_DEFAULT_MODEL="
                         f"{settings.default_model!r} is not among the models in "
                         f"{settings.models_dir}: {names}")


def check_queue(settings: Settings) -> None:
    """The job queue answers: Redis is reachable, or the SQLite file is a database."""
    where = (f"COUNTERFEIT_QUEUE_URL: {settings.queue_url}" if settings.queue_url else
             f"COUNTERFEIT_JOBS_DIR: {settings.jobs_dir / 'queue.sqlite3'}")
    try:
        make_huey(settings.jobs_dir, settings.queue_url).pending_count()
    except Exception as err:  # redis' and sqlite3's errors have no common base
        reason = " ".join(str(err).split()) or type(err).__name__
        raise SystemExit(f"counterfeit: cannot start: {where}: the job queue does not "
                         f"answer ({reason})") from None


def settings_or_exit() -> Settings:
    try:
        return current()
    except SettingsError as err:
        raise SystemExit(f"counterfeit: cannot start: {err}") from None
