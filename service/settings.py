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


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity: taskset, a container's cpuset),
    not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        os.cpu_count() or 1


def _default_jobs_dir() -> Path:
    return Path.home() / ".local" / "state" / "counterfeit" / "jobs"


@dataclass(frozen=True)
class Settings:
    """One field per COUNTERFEIT_<FIELD> variable (docs/http-api.md lists them)."""

    models_dir: Path = REPO / "models"
    default_model: str | None = None  # None: the first model by name
    device: str = "auto"  # auto | cpu | cuda
    # one worker process per core: each has its own GIL, and n = 1 requests are GIL-bound
    workers: int = field(default_factory=available_cores)
    max_body_bytes: int = 8 * 1024 * 1024
    # concurrent small requests share one onnxruntime call (service/batcher.py)
    batching: bool = True
    batch_max_rows: int = 256
    batch_wait_ms: float = 2.0
    # off: wait only while other requests are in flight; on: always wait batch_wait_ms (the
    # batcher as it was, to compare the two, and to make requests slow in tests)
    batch_wait_always: bool = False
    # a log line per request costs ~10% of n=1 throughput on 2 cores; /metrics counts them
    access_log: bool = False
    # BentoML's OpenTelemetry spans: ~10% of a worker's time at n = 1 even with no exporter
    # configured; on for an operator who configures one (BentoML's `tracing` settings)
    tracing: bool = False
    # /sample and /interpolate answered without BentoML's per-request machinery
    # (service/asgi/fast_routes.py); off: by BentoML, to compare the two
    fast_routes: bool = True
    jobs_dir: Path = _default_jobs_dir()
    job_workers: int = 1  # jobs run beside requests, never on request threads
    # the job queue (service/jobs/queue.py): none, SQLite in the jobs folder (one machine);
    # redis://host:port/db, one queue shared by every replica that also shares the folder
    queue_url: str | None = None
    max_queued_jobs: int = 256  # a submit beyond this is a 429 with Retry-After
    job_retention_hours: float = 24.0  # finished jobs and their results are removed after
    jobs_max_bytes: int = 4 << 30  # results on disk; a submit that would pass it is a 507
    job_lease_seconds: float = 30.0  # a running job silent this long is resumed elsewhere
    # who may use it (service/asgi/access.py): with a key, every route but the health
    # checks wants it; with host names, a request to any other Host is refused
    api_key: str | None = field(default=None, repr=False, metadata={"secret": True})
    allowed_hosts: tuple[str, ...] = ()  # empty: any host
    # overload and connection limits, each per worker (service/asgi/load_shedding.py,
    # service/asgi/connections.py): past them a request is refused at once, never queued
    max_in_flight: int = 32  # requests being processed; one more is a 503 with Retry-After
    max_connections: int = 1000  # open connections; one more closes the longest-idle one
    max_header_bytes: int = 32 * 1024  # request line and headers; a longer head is a 431
    header_timeout_seconds: float = 10.0  # a request head not complete by then: 408, closed
    idle_timeout_seconds: float = 5.0  # a connection without a request this long is closed

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


def _queue_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must be a Redis URL (redis://host:6379/0, rediss://..., "
                         "unix:///path/redis.sock); unset: SQLite in the jobs folder")
    return raw


_PARSERS: dict[str, Callable[[str], Any]] = {
    "models_dir": Path, "default_model": str, "device": _choice("auto", "cpu", "cuda"),
    "workers": _number(int, 1, 64), "max_body_bytes": _number(int, 1024, 1 << 30),
    "batching": _switch, "batch_max_rows": _number(int, 1, 65_536),
    "batch_wait_ms": _number(float, 0.0, 1000.0), "batch_wait_always": _switch,
    "access_log": _switch, "tracing": _switch, "fast_routes": _switch,
    "jobs_dir": Path,
    "job_workers": _number(int, 1, 64), "queue_url": _queue_url,
    "max_queued_jobs": _number(int, 1, 1_000_000),
    "job_retention_hours": _number(float, 0.0, 24.0 * 365),
    "jobs_max_bytes": _number(int, 1 << 20, 1 << 50),
    "job_lease_seconds": _number(float, 1.0, 3600.0), "api_key": _api_key, "allowed_hosts": _hosts,
    # overload and connection limits
    "max_in_flight": _number(int, 1, 100_000), "max_connections": _number(int, 16, 1_000_000),
    "max_header_bytes": _number(int, 1024, 1 << 24),
    "header_timeout_seconds": _number(float, 0.1, 3600.0),
    "idle_timeout_seconds": _number(float, 0.1, 3600.0),
}


@functools.cache
def current() -> Settings:
    """The settings of this process, read once."""
    return Settings.from_env(os.environ)
