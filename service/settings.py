"""Every setting of the service, read from the environment once (`current()`), validated,
into one typed object. Nothing else in `service/` reads `os.environ`."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A setting with a value the service cannot use; the message names the variable."""


def _default_jobs_dir() -> Path:
    return Path.home() / ".local" / "state" / "counterfeit" / "jobs"


@dataclass(frozen=True)
class Settings:
    """One field per COUNTERFEIT_<FIELD> variable (docs/http-api.md lists them)."""

    models_dir: Path = REPO / "models"
    default_model: str | None = None  # None: the first model by name
    device: str = "auto"  # auto | cpu | cuda
    workers: int = 1
    max_body_bytes: int = 8 * 1024 * 1024
    # concurrent small requests share one onnxruntime call (service/batcher.py)
    batching: bool = True
    batch_max_rows: int = 256
    batch_wait_ms: float = 2.0
    # a log line per request costs ~10% of n=1 throughput on 2 cores; /metrics counts them
    access_log: bool = False
    jobs_dir: Path = _default_jobs_dir()
    job_workers: int = 1  # jobs run beside requests, never on request threads
    # who may use it (service/asgi/access.py): with a key, every route but the health
    # checks wants it; with host names, a request to any other Host is refused
    api_key: str | None = field(default=None, repr=False, metadata={"secret": True})
    allowed_hosts: tuple[str, ...] = ()  # empty: any host

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f"COUNTERFEIT_{f.name.upper()}"
            raw = environ.get(name)
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = _PARSERS[f.name](raw)
            except ValueError as err:
                shown = name if f.metadata.get("secret") else f"{name}={raw!r}"  # never a key
                raise SettingsError(f"{shown}: {err}") from None
        return cls(**values)


def _number(kind: type[int] | type[float], low: float, high: float) -> Callable[[str], Any]:
    def parse(raw: str) -> int | float:
        value = kind(raw)
        if not low <= value <= high:  # NaN fails too
            raise ValueError(f"must be {'an integer' if kind is int else 'a number'} in "
                             f"[{low}, {high}]")
        return value
    return parse


def _switch(raw: str) -> bool:
    if raw not in ("on", "off"):
        raise ValueError("must be on or off")
    return raw == "on"


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return raw
    return parse


MIN_API_KEY_CHARS = 16


def _api_key(raw: str) -> str:
    if len(raw) < MIN_API_KEY_CHARS:
        raise ValueError(f"an API key must be at least {MIN_API_KEY_CHARS} characters "
                         "(python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    if not all("!" <= c <= "~" for c in raw):
        raise ValueError("an API key must be printable ASCII without spaces")
    return raw


# a DNS name or a bracketed IPv6 address, lower-case, without a port
_HOST = re.compile(r"\[[0-9a-f:.]+\]|[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?")


def _hosts(raw: str) -> tuple[str, ...]:
    hosts = tuple(h.strip().lower().rstrip(".") for h in raw.split(",") if h.strip())
    for host in hosts:
        if not _HOST.fullmatch(host):
            raise ValueError(f"{host!r} is not a host name (comma-separated names without "
                             "ports; IPv6 addresses in brackets: [::1])")
    return hosts


_PARSERS: dict[str, Callable[[str], Any]] = {
    "models_dir": Path, "default_model": str, "device": _choice("auto", "cpu", "cuda"),
    "workers": _number(int, 1, 64), "max_body_bytes": _number(int, 1024, 1 << 30),
    "batching": _switch, "batch_max_rows": _number(int, 1, 65_536),
    "batch_wait_ms": _number(float, 0.0, 1000.0), "access_log": _switch, "jobs_dir": Path,
    "job_workers": _number(int, 1, 64), "api_key": _api_key, "allowed_hosts": _hosts,
}


@functools.cache
def current() -> Settings:
    """The settings of this process, read once."""
    return Settings.from_env(os.environ)
