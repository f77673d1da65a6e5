"""A real Prometheus server scrapes the service and gives our counters back through its
HTTP API; promtool finds nothing to fix in /metrics. Needs Debian's `prometheus` package
(`.ci/run` installs it); skipped without it."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from loadtests.server import free_port, running, serving

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(shutil.which("prometheus") is None or shutil.which("promtool") is None,
                       reason="needs prometheus and promtool: apt-get install prometheus"),
]

SCRAPE_CONFIG = """\
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: counterfeit
    static_configs:
      - targets: ["{target}"]
"""


def _query(prometheus: str, expr: str) -> float | None:
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert body["status"] == "success", body
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_the_images_generated(served_models: Path, tmp_path: Path) -> None:
    with serving(served_models, tmp_path, COUNTERFEIT_DEFAULT_MODEL="tiny") as server:
        sizes = [1, 7, 64, 3]
        for n in sizes:
            assert httpx.post(f"{server.url}/sample", json={"n": n, "format": "npy"},
                              timeout=30).status_code == 200
        assert httpx.post(f"{server.url}/interpolate", timeout=30,
                          json={"seed_start": 1, "seed_end": 2, "steps": 5}).status_code == 200

        metrics = httpx.get(f"{server.url}/metrics").text
        lint = subprocess.run(["promtool", "check", "metrics"], input=metrics,
                              capture_output=True, text=True, timeout=30)
        assert lint.returncode == 0, lint.stdout + lint.stderr

        config = tmp_path / "prometheus.yml"
        config.write_text(SCRAPE_CONFIG.format(target=server.url.removeprefix("http://")))
        prometheus = f"http://127.0.0.1:{free_port()}"
        command = ["prometheus", f"--config.file={config}",
                   f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                   f"--web.listen-address={prometheus.removeprefix('http://')}"]
        with running(command, prometheus, tmp_path / "prometheus.log", ready_path="/-/ready"):
            deadline = time.monotonic() + 60
            while True:
                sample = _query(prometheus, 'counterfeit_images_generated_total'
                                            '{endpoint="sample"}')
                interpolated = _query(prometheus, 'counterfeit_images_generated_total'
                                                  '{endpoint="interpolate"}')
                up = _query(prometheus, 'up{job="counterfeit"}')
                if sample is not None and interpolated is not None:
                    break
                assert time.monotonic() < deadline, f"no sample scraped; up={up}"
                time.sleep(0.5)
    assert sample == sum(sizes)
    assert interpolated == 5
    assert up == 1
