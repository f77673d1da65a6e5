"""Request checks beyond pydantic's: the memory a request may take follows the card."""

from __future__ import annotations

import pytest

from service.contract.card import parse_card
from service.errors import RequestError
from service.runtime import Model
from service.validation import MAX_JOB_BYTES, MAX_REQUEST_BYTES, within_memory


def _model(shape: list[int], dim: int = 100) -> Model:
    card = parse_card({"name": "big", "latent": {"dim": dim, "distribution": "normal"},
                       "image": {"shape": shape}, "files": {"generator.onnx": {
                           "sha256": "0" * 64}}})
    return Model(card, {}, "CPUExecutionProvider")  # no session: nothing is run


def test_the_shipped_shapes_fit_every_field_limit() -> None:
    mnist = _model([28, 28])
    assert within_memory(mnist, "n", 1024) == 1024
    assert within_memory(mnist, "n", 100_000, job=True) == 100_000


@pytest.mark.parametrize(("job", "budget"), [(False, MAX_REQUEST_BYTES), (True, MAX_JOB_BYTES)])
def test_large_images_are_limited_by_the_budget(job: bool, budget: int) -> None:
    big = _model([3, 4096, 4096])
    per_row = 100 * 4 + 3 * 4096 * 4096 * (1 if job else 4)
    most = budget // per_row
    assert within_memory(big, "n", most, job=job) == most
    with pytest.raises(RequestError) as err:
        within_memory(big, "n", most + 1, job=job)
    assert err.value.field == "n" and err.value.status == 400
    assert f"at most {most} for model big (images of [3, 4096, 4096])" in err.value.message
