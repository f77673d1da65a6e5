"""The lean path of /sample and /interpolate (service/asgi/fast_routes.py): the same
answers as BentoML's own path, byte for byte, errors included, without BentoML's
per-request machinery."""

from __future__ import annotations

import pytest
from _bentoml_impl.server.app import ServiceAppFactory

from service.asgi import fast_routes

REQUESTS = [
    ("/sample", {"n": 3, "seed": 11, "format": "npy"}),
    ("/sample", {"n": 4, "seed": 12, "format": "png"}),
    ("/sample", {"n": 2, "seed": 13, "format": "npy", "dtype": "uint8"}),
    ("/sample", {}),  # every default; a random seed: compared by status and type only
    ("/interpolate", {"seed_start": 1, "seed_end": 2, "steps": 5, "format": "npy"}),
    ("/interpolate", {"seed_start": 1, "seed_end": 2, "method": "slerp", "format": "png"}),
    # refusals: pydantic's (limits, types, unknown fields) and the routes' own
    ("/sample", {"n": 5000}),
    ("/sample", {"n": "3"}),
    ("/sample", {"n": 2, "colour": "red"}),
    ("/sample", {"n": 2, "model": "nope"}),
    ("/sample", {"n": 2, "format": "png", "dtype": "uint8"}),
    ("/sample", {"n": 2, "label": 3}),
    ("/interpolate", {"seed_start": 1}),
    ("/interpolate", {"seed_start": 1, "seed_end": 2, "z_end": [0.0]}),
]


def _answers(client) -> list[tuple[int, str, bytes, str | None]]:
    out = []
    for path, body in REQUESTS:
        r = client.post(path, json=body)
        random_seed = path == "/sample" and "seed" not in body and r.status_code == 200
        out.append((r.status_code, r.headers["content-type"],
                    b"" if random_seed else r.content, r.headers.get("x-seed")
                    if not random_seed else None))
    return out


def test_the_lean_path_answers_as_bentoml_does_byte_for_byte(client, monkeypatch) -> None:
    assert set(fast_routes._ROUTES) == {"/sample", "/interpolate"}
    lean = _answers(client)
    with monkeypatch.context() as m:
        m.setattr(fast_routes, "_ROUTES", {})  # every request to BentoML's own path
        bentoml = _answers(client)
    assert lean == bentoml
    statuses = [status for status, *_ in lean]
    assert statuses[:6] == [200] * 6 and all(400 <= s < 500 for s in statuses[6:])


def test_the_lean_path_skips_bentomls_endpoint_and_other_routes_do_not(client,
                                                                       monkeypatch) -> None:
    reached: list[str] = []
    original = ServiceAppFactory.api_endpoint

    async def spy(self, name, request):
        reached.append(name)
        return await original(self, name, request)

    monkeypatch.setattr(ServiceAppFactory, "api_endpoint", spy)
    assert client.post("/sample", json={"n": 1, "seed": 1, "format": "npy"}).status_code == 200
    assert client.post("/interpolate", json={"seed_start": 1, "seed_end": 2}).status_code == 200
    assert client.get("/models").status_code == 200
    assert reached == ["list_models"]


def test_a_refusal_on_the_lean_path_names_its_field(client) -> None:
    r = client.post("/sample", json={"n": 5000})
    assert r.status_code == 400 and r.json()["field"] == "n" and "1024" in r.json()["error"]


def test_a_lean_route_must_not_take_bentomls_context() -> None:
    class WithContext:
        route, ctx_param = "/x", "ctx"

    with pytest.raises(TypeError, match="takes no ctx"):
        fast_routes.register(object(), WithContext())
