from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.jobs import JobStore
from service.request_errors import RequestError


def test_a_job_cut_off_by_a_restart_is_reported_failed(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.start("a", 10, 1, "m")
    store.start("b", 10, 2, "m")
    store.complete("b", np.zeros((10, 28, 28), np.uint8), 2)
    restarted = JobStore(tmp_path)
    assert restarted.mark_interrupted() == 1
    assert restarted.status("a")["state"] == "failed"
    assert "restart" in restarted.status("a")["error"]
    with pytest.raises(RequestError, match="job is failed: interrupted"):
        restarted.result("a")
    assert restarted.result("b").is_file()  # finished results survive
    assert restarted.counts() == {"in_progress": 0, "completed": 1, "failed": 1}


def test_an_unwritable_jobs_folder_fails_the_job_not_the_store(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.start("c", 10, 1, "m")
    (tmp_path / "c.tmp.npz").mkdir()  # np.savez cannot write where a folder stands
    with pytest.raises(OSError):
        store.complete("c", np.zeros((10, 28, 28), np.uint8), 1)
    store.fail("c", "could not write the result")
    assert store.status("c")["state"] == "failed"
