"""Settings: read once from the environment, each variable validated with its name."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import Settings, SettingsError


def test_defaults_and_overrides() -> None:
    assert Settings.from_env({}) == Settings()
    s = Settings.from_env({"COUNTERFEIT_WORKERS": "2", "COUNTERFEIT_BATCHING": "off",
                           "COUNTERFEIT_MODELS_DIR": "/m", "COUNTERFEIT_BATCH_WAIT_MS": "0.5",
                           "UNRELATED": "x"})
    assert (s.workers, s.batching, s.models_dir, s.batch_wait_ms) == (2, False, Path("/m"), 0.5)


@pytest.mark.parametrize(("variable", "value", "words"), [
    ("COUNTERFEIT_WORKERS", "two", "COUNTERFEIT_WORKERS='two'"),
    ("COUNTERFEIT_WORKERS", "0", "[1, 64]"),
    ("COUNTERFEIT_DEVICE", "tpu", "auto, cpu, cuda"),
    ("COUNTERFEIT_BATCHING", "yes", "on or off"),
    ("COUNTERFEIT_MAX_BODY_BYTES", "-1", "COUNTERFEIT_MAX_BODY_BYTES"),
    ("COUNTERFEIT_BATCH_WAIT_MS", "nan", "COUNTERFEIT_BATCH_WAIT_MS"),
    ("COUNTERFEIT_QUEUE_URL", "postgres://db/jobs", "must be a Redis URL"),
    ("COUNTERFEIT_JOB_LEASE_SECONDS", "0", "[1.0, 3600.0]"),
    ("COUNTERFEIT_MAX_QUEUED_JOBS", "0", "COUNTERFEIT_MAX_QUEUED_JOBS='0'"),
])
def test_a_bad_value_names_the_variable(variable: str, value: str, words: str) -> None:
    with pytest.raises(SettingsError, match=None) as err:
        Settings.from_env({variable: value})
    assert words in str(err.value)


def test_only_settings_reads_the_environment() -> None:
    service = Path(__file__).resolve().parents[2] / "service"
    readers = sorted(str(p.relative_to(service)) for p in service.rglob("*.py")
                     if "os.environ" in p.read_text() or "getenv" in p.read_text())
    assert readers == ["settings.py"]


def test_every_setting_is_documented() -> None:
    from dataclasses import fields

    table = (Path(__file__).resolve().parents[2] / "docs" / "http-api.md").read_text()
    missing = [f.name for f in fields(Settings)
               if f"| `COUNTERFEIT_{f.name.upper()}` |" not in table]
    assert missing == []
