"""The job queue, on Huey (docs/jobs.md says why Huey): SQLite in the jobs folder by
default, so one machine needs no server, or Redis when COUNTERFEIT_QUEUE_URL names one, so
that every replica takes jobs from one queue. Besides the queue, Huey's storage keeps a few
atomic counters: each running job's heartbeat, the bytes reserved by stored results, and
one-time claims that let exactly one worker resume a job whose worker stopped."""

from __future__ import annotations

import logging
from pathlib import Path

from huey import RedisHuey, SqliteHuey
from huey.api import Huey
from huey.consumer import Consumer

logging.getLogger("huey").setLevel(logging.WARNING)  # not a line per job at INFO


def make_huey(jobs_dir: Path, queue_url: str | None) -> Huey:
    if queue_url:
        return RedisHuey("counterfeit", url=queue_url, results=False)
    # WAL lets the workers of one machine read while one writes
    return SqliteHuey("counterfeit", filename=str(jobs_dir / "queue.sqlite3"), results=False,
                      journal_mode="wal", timeout=10)


class EmbeddedConsumer(Consumer):
    """Huey's consumer as threads inside a service worker. The worker's signal handlers
    stay the server's: the service stops the consumer itself when it shuts down."""

    def _set_signal_handlers(self) -> None:
        pass


def start_consumer(huey: Huey, workers: int) -> EmbeddedConsumer:
    # poll an empty queue at most every 0.5 s: a submitted job starts within that
    consumer = EmbeddedConsumer(huey, workers=workers, worker_type="thread", periodic=False,
                                initial_delay=0.05, backoff=1.5, max_delay=0.5,
                                check_worker_health=False)
    consumer.start()
    return consumer


class Counters:
    """Named integers in the queue's storage, atomic across workers and replicas."""

    def __init__(self, huey: Huey) -> None:
        self.storage = huey.storage

    def add(self, key: str, amount: int) -> int:
        return int(self.storage.incr(key, amount))

    def get(self, key: str) -> int:
        return self.add(key, 0)

    def forget(self, key: str) -> None:
        self.storage.delete_counter(key)

    def claim(self, key: str) -> bool:
        """True for exactly one caller, ever, per key (until `release`)."""
        return bool(self.storage.put_if_empty(key, b"1"))

    def release(self, key: str) -> None:
        self.storage.delete_data(key)
