"""Batch-generation jobs (docs/jobs.md): the jobs folder (store), the queue (Huey) and the
workers that run, resume and expire jobs (runner)."""

from service.jobs.runner import JobLimits, JobRunner
from service.jobs.store import JobsFolderError, JobStore

__all__ = ["JobLimits", "JobRunner", "JobStore", "JobsFolderError"]
