"""Against a real `bentoml serve` with an API key and a host list: every route but the
health checks wants the key, /metrics included; other hosts are refused; the key is never
logged; a short key stops start-up without showing it."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import httpx

from loadtests.server import REPO, free_port, serve_command, serve_env, serving

KEY = secrets.token_urlsafe(32)


def test_a_real_server_wants_the_key_on_every_route_but_the_health_checks(
        served_models: Path, tmp_path: Path) -> None:
    with serving(served_models, tmp_path, COUNTERFEIT_API_KEY=KEY,
                 COUNTERFEIT_ALLOWED_HOSTS="127.0.0.1,localhost",
                 COUNTERFEIT_DEFAULT_MODEL="tiny") as server, \
            httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post("/sample", json={"n": 1})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["field"] == "authorization"
        r = http.post("/sample", json={"n": 1}, headers={"authorization": f"Bearer {KEY}"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        r = http.post("/sample", json={"n": 2, "format": "npy"}, headers={"x-api-key": KEY})
        assert r.status_code == 200
        assert http.post("/sample", json={"n": 1},
                         headers={"x-api-key": KEY[:-1] + "!"}).status_code == 401

        assert http.get("/readyz").status_code == 200
        assert http.get("/livez", headers={"host": "10.1.2.3"}).status_code == 200
        assert http.get("/metrics").status_code == 401
        metrics = http.get("/metrics", headers={"authorization": f"Bearer {KEY}"})
        assert metrics.status_code == 200 and "counterfeit_images_generated_total" in metrics.text
        assert http.get("/models").status_code == 401

        r = http.post("/sample", json={"n": 1},
                      headers={"x-api-key": KEY, "host": "evil.example"})
        assert r.status_code == 400 and r.json()["field"] == "host"
        r = http.post("/jobs/submit", content=b"{}",
                      headers={"x-api-key": KEY, "content-type": "text/plain"})
        assert r.status_code == 415 and r.json()["field"] == "content-type"
        log = server.log.read_text()
    assert KEY not in log and "Traceback" not in log


def test_a_short_key_stops_start_up_without_showing_it(served_models: Path,
                                                      tmp_path: Path) -> None:
    short = "s3cr3t-" + "x" * 8
    proc = subprocess.run(serve_command(free_port()), cwd=REPO, capture_output=True, text=True,
                          env=serve_env(served_models, tmp_path, COUNTERFEIT_API_KEY=short),
                          timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "COUNTERFEIT_API_KEY: an API key must be at least 16 characters" in output
    assert short not in output and "Traceback" not in output
