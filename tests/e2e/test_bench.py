"""`make bench`'s serving harness (loadtests/wrk.py, loadtests/serving_bench.py): wrk's
figures are read back with every error counted, and every contender the benchmark compares
starts and returns the seed's images, so that a row of docs/benchmarks.md can only compare
servers that answer right."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from loadtests import serving_bench, wrk
from loadtests.server import free_port, running

needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None,
                               reason="needs wrk (Debian package wrk)")


def test_wrks_result_line_is_read_back() -> None:
    line = ('noise\nWRK_RESULT {"requests": 1200, "duration_us": 2000000, "bytes": 9, '
            '"p50_us": 1500, "p90_us": 2500, "p99_us": 9000, "socket_errors": 2, '
            '"status_errors": 3}\n')
    result = wrk.parse(line)
    assert result.requests_per_s == 600 and result.p50_ms == 1.5 and result.p99_ms == 9.0
    assert (result.status_errors, result.socket_errors, result.errors) == (3, 2, 5)
    with pytest.raises(ValueError, match="no result line"):
        wrk.parse("Running 1s test @ http://127.0.0.1:1/sample\n")


def test_a_lua_string_carries_every_byte() -> None:
    literal = wrk.lua_string(bytes(range(256)))
    assert literal.startswith('"') and literal.endswith('"')
    assert literal.isascii() and "\n" not in literal
    # Lua's decimal escapes, decoded back: the bytes of the body wrk sends
    body, i = bytearray(), 1
    while i < len(literal) - 1:
        if literal[i] == "\\":
            body.append(int(literal[i + 1:i + 4]))
            i += 4
        else:
            body.append(ord(literal[i]))
            i += 1
    assert bytes(body) == bytes(range(256))


@pytest.fixture(scope="module")
def contenders(tmp_path_factory) -> dict[str, serving_bench.Contender]:
    state = tmp_path_factory.mktemp("bench")
    return {c.name: c for c in serving_bench.contenders(state)}, state


def _serving(contender: serving_bench.Contender, state: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    return url, running(contender.command(port), url, state / f"{port}.log", contender.env)


@needs_wrk
def test_wrk_counts_every_answer_and_every_refusal(contenders) -> None:
    by_name, state = contenders
    url, server = _serving(by_name["floor"], state)
    with server:
        good = wrk.run(url, serving_bench.LOADS["n1-32"], 1)
        bad = wrk.run(url, wrk.json_load("refused", "/sample", {"n": 5000}, 4, 1), 1)
    assert good.requests > 0 and good.errors == 0 and 0 < good.p50_ms <= good.p99_ms
    assert bad.requests > 0 and bad.errors == bad.requests  # every 400 counted


def test_every_contender_returns_the_seeds_images_and_counterfeits_jobs_too(contenders
                                                                          ) -> None:
    by_name, state = contenders
    for name, contender in by_name.items():
        url, server = _serving(contender, state)
        with server:
            assert serving_bench.check_images(url, contender.png) is None, name
            if contender.settle is not None:  # returns: nothing is in flight now
                contender.settle(url)
            if "jobs" in contender.loads:
                seconds, wrong = serving_bench.run_job(url, 500, seed=4)
                assert wrong is None and seconds > 0


def test_a_server_with_wrong_images_is_caught(contenders, monkeypatch) -> None:
    by_name, state = contenders
    url, server = _serving(by_name["floor"], state)
    real = serving_bench.reference_images
    monkeypatch.setattr(serving_bench, "reference_images",
                        lambda n, seed, threads=1: real(n, seed + 1, threads))
    with server:
        assert "not the seed's images" in serving_bench.check_images(url, png=True)



def test_gpu_check_without_a_gpu_says_so_and_writes_nothing(tmp_path, monkeypatch,
                                                          capsys) -> None:
    from loadtests import gpu_check

    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n")
    monkeypatch.setattr(gpu_check, "gpu_present", lambda: False)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--out", str(out)])
    assert gpu_check.main() == 2
    assert "no NVIDIA GPU" in capsys.readouterr().out
    assert out.read_text() == "# Benchmarks\n"


def test_the_gpu_section_is_replaced_in_place_and_the_analysis_kept(tmp_path) -> None:
    from loadtests.gpu_check import END, START, write_section

    out = tmp_path / "benchmarks.md"
    out.write_text("# B\n\n<!-- analysis: kept -->\nprose\n")
    write_section("## GPU\nfirst", out)
    write_section("## GPU\nsecond", out)
    text = out.read_text()
    assert text.count(START) == 1 and "first" not in text and "second" in text
    assert text.index(END) < text.index("<!-- analysis") and text.endswith("prose\n")


def test_the_in_process_baseline_is_measured_in_every_repetition_with_no_server_up(
        monkeypatch) -> None:
    """Measured once, the in-process figure was at the mercy of the machine's drift; now
    it alternates with the servers like every other run."""
    from contextlib import contextmanager

    events = []

    @contextmanager
    def fake_running(command, url, log, env, preexec_fn):
        events.append("server up")
        yield None
        events.append("server down")

    fake = serving_bench.Contender("fake", lambda port: ["true"], {}, frozenset())
    monkeypatch.setattr(serving_bench, "contenders", lambda state: [fake, fake])
    monkeypatch.setattr(serving_bench, "running", fake_running)
    monkeypatch.setattr(serving_bench, "score_load", lambda: (None, None))
    serving_bench.measure([], 3, 0.1, None, None, progress=lambda line: None,
                          each_repetition=lambda: events.append("in-process"))
    assert events == ["in-process", "server up", "server down", "server up",
                      "server down"] * 3
