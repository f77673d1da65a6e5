"""wrk, the C load generator, driven from Python: one `Load` (a route, a body, a number of
connections) against one URL for some seconds, pinned to one core, read back as a
`WrkResult`. A load generator written in C spends a few microseconds per request, so the
figures measure the server, not the client (locust, in Python, took a core's worth itself).

The body goes into a Lua script as a string literal: JSON bodies and binary multipart
uploads alike. The script's `done()` prints one JSON line that `run` parses; status
errors (non-2xx answers) and socket errors are counted there, never hidden.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

WRK_PACKAGE = "wrk"  # Debian's
RESULT_MARK = "WRK_RESULT "

_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests": %.0f, "duration_us": %.0f, "bytes": %.0f, "p50_us": %.0f, ' ..
    '"p90_us": %.0f, "p99_us": %.0f, "socket_errors": %.0f, "status_errors": %.0f}\\n',
    "{mark}", summary.requests, summary.duration, summary.bytes, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), e.connect + e.read + e.write + e.timeout,
    e.status))
end
"""


@dataclass(frozen=True)
class Load:
    """What one wrk run sends: `connections` clients POSTing `body` to `path` back to
    back, each request worth `images` images."""

    name: str
    path: str
    body: bytes
    content_type: str
    connections: int
    images: int


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    status_errors: int  # non-2xx answers
    socket_errors: int  # connect, read, write and timeout errors

    @property
    def errors(self) -> int:
        return self.status_errors + self.socket_errors

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds


def wrk_path() -> str:
    """wrk's path; installed from Debian's package when missing (as root, as in CI)."""
    found = shutil.which("wrk")
    if found is None:
        subprocess.run(["apt-get", "install", "-y", "-q", WRK_PACKAGE], check=False,
                       stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
    if found is None:
        raise SystemExit(f"wrk is not installed and `apt-get install {WRK_PACKAGE}` failed: "
                         f"install Debian's {WRK_PACKAGE} package")
    return found


def lua_string(data: bytes) -> str:
    """`data` as a Lua string literal, any byte included (Lua's decimal escapes)."""
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\{b:03d}"
                         for b in data) + '"'


def lua_script(load: Load) -> str:
    return (f"wrk.method = \"POST\"\nwrk.body = {lua_string(load.body)}\n"
            f"wrk.headers[\"Content-Type\"] = {lua_string(load.content_type.encode())}\n"
            + _DONE.replace("{mark}", RESULT_MARK))


def parse(stdout: str) -> WrkResult:
    """The result line of `done()` in wrk's output; ValueError, with the output, without."""
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARK):
            r = json.loads(line[len(RESULT_MARK):])
            return WrkResult(int(r["requests"]), r["duration_us"] / 1e6, r["p50_us"] / 1e3,
                             r["p90_us"] / 1e3, r["p99_us"] / 1e3, int(r["status_errors"]),
                             int(r["socket_errors"]))
    raise ValueError(f"wrk printed no result line:\n{stdout[-2000:]}")


def run(url: str, load: Load, seconds: float, core: int | None = None,
        timeout_s: float = 10.0) -> WrkResult:
    """`load` against `url` for `seconds` with one wrk thread, pinned to `core` (taskset)
    when given."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(lua_script(load))
        script.flush()
        command = [wrk_path(), "-t1", f"-c{load.connections}", f"-d{seconds:g}s",
                   f"--timeout={timeout_s:g}s", "-s", script.name, url + load.path]
        if core is not None:
            command = ["taskset", "-c", str(core), *command]
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=seconds + timeout_s + 30)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-2000:]}")
    return parse(done.stdout)


def json_load(name: str, path: str, body: dict, connections: int, images: int) -> Load:
    return Load(name, path, json.dumps(body).encode(), "application/json", connections, images)


def multipart_load(name: str, path: str, field: str, filename: str, content: bytes,
                   connections: int, images: int) -> Load:
    """A multipart/form-data upload of one file, as a browser or curl -F sends it."""
    boundary = "counterfeit-bench-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return Load(name, path, body, f"multipart/form-data; boundary={boundary}", connections,
                images)

