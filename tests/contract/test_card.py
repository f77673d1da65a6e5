"""The contract module: the card's schema, the seed contract, sha256, the name rule and
the atomic writes that export relies on."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import pytest

from service.contract.card import (
    CardError,
    ImageSpec,
    Latent,
    check_model_name,
    parse_card,
    read_card,
    replacing,
    sha256_file,
    write_card,
)

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "mnist-mlp"
GOOD = {"name": "m", "latent": {"dim": 4, "distribution": "uniform", "low": -1, "high": 2},
        "image": {"shape": [8, 8], "range": [0, 1]},
        "files": {"generator.onnx": {"sha256": "0" * 64}}}


def test_the_seed_contract_is_default_rng_uniform_or_normal_as_float32() -> None:
    z = Latent(100, "uniform", -math.sqrt(3), math.sqrt(3)).sample(5, 7)
    expected = np.random.default_rng(7).uniform(-math.sqrt(3), math.sqrt(3), (5, 100))
    np.testing.assert_array_equal(z, expected.astype(np.float32))
    assert z.dtype == np.float32
    normal = Latent(3, "normal").sample(4, 11)
    np.testing.assert_array_equal(
        normal, np.random.default_rng(11).standard_normal((4, 3)).astype(np.float32))


def test_the_shipped_card_reads_with_the_papers_prior() -> None:
    card = read_card(SHIPPED)
    assert card.latent == Latent(100, "uniform", -math.sqrt(3), math.sqrt(3))
    assert card.image.shape == (1, 28, 28) and card.image.card_shape == (28, 28)
    assert set(card.networks) == {"generator", "discriminator", "encoder"}
    assert card.encoder.inputs == {"x": (1, 28, 28)} and card.encoder.outputs == {"z": (100,)}
    assert card.generator.inputs == {"z": (100,)} and card.generator.outputs == {
        "x": (1, 28, 28)}
    assert card.conditioning is None


def test_sha256_file_is_hashlibs(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * 9000)  # over one 1 MiB block
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["mnist-mlp", "a", "v1.2_x"])
def test_model_names_that_are_accepted(name: str) -> None:
    assert check_model_name(name) == name


@pytest.mark.parametrize("name", ["", "Upper", "../x", "-x", "a" * 65, "a/b", 5, None])
def test_model_names_that_are_refused(name: object) -> None:
    with pytest.raises(ValueError, match="model name"):
        check_model_name(name)


def _with(path: str, value: object) -> dict:
    card = copy.deepcopy(GOOD)
    *parents, key = path.split("/")
    target = card
    for part in parents:
        target = target[part]
    if value is KeyError:
        del target[key]
    else:
        target[key] = value
    return card


BAD = {
    "not an object": ([], "must be a JSON object"),
    "no latent": (_with("latent", KeyError), "no 'latent'"),
    "dim 0": (_with("latent/dim", 0), "latent.dim must be an integer"),
    "dim bool": (_with("latent/dim", True), "latent.dim must be an integer"),
    "prior": (_with("latent/distribution", "cauchy"), "latent.distribution"),
    "low >= high": (_with("latent/high", -1), "low < high"),
    "infinite bound": (_with("latent/low", float("-inf")), "finite numbers"),
    "shape 1-d": (_with("image/shape", [784]), "image.shape"),
    "4 channels": (_with("image/shape", [4, 8, 8]), "1 (grey) or 3 (RGB)"),
    "huge side": (_with("image/shape", [1, 8, 100_000]), "height and width"),
    "range": (_with("image/range", [-1, 1]), "image.range"),
    "bad name": (_with("name", "../m"), "model name"),
    "no generator": (_with("files", {"discriminator.onnx": {"sha256": "0" * 64}}),
                     "no generator.onnx"),
    "short sha": (_with("files/generator.onnx", {"sha256": "abc"}), "64-digit hex"),
    "conditioning kind": (_with("conditioning", {"kind": "text"}), "conditioning.kind"),
    "one class": (_with("conditioning", {"kind": "class", "classes": 1}),
                  "conditioning.classes"),
    "names count": (_with("conditioning", {"kind": "class", "classes": 3, "names": ["a"]}),
                    "3 strings"),
    "inpainting not an object": (_with("inpainting", ["half"]), "'inpainting' must be"),
    "inpainting input z": (_with("inpainting", {"mask_input": "z"}), "inpainting.mask_input"),
    "inpainting same inputs": (_with("inpainting", {"visible_input": "m", "mask_input": "m"}),
                               "must differ"),
    "unknown family": (_with("inpainting", {"families": ["stripes"]}), "inpainting.families"),
    "no families": (_with("inpainting", {"families": []}), "inpainting.families"),
    "labels and masks": (_with("conditioning", {"kind": "class", "classes": 3})
                         | {"inpainting": {}}, "not both"),
    "conditional encoder": (_with("conditioning", {"kind": "class", "classes": 3})
                            | {"files": {"generator.onnx": {"sha256": "0" * 64},
                                         "encoder.onnx": {"sha256": "2" * 64}}},
                            "unconditional models only"),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_a_bad_card_is_refused_naming_the_field(case) -> None:
    card, words = case
    with pytest.raises(CardError) as err:
        parse_card(card, "here/model.json")
    assert str(err.value).startswith("here/model.json: ") and words in str(err.value)


def test_conditioning_declares_an_input_of_both_networks() -> None:
    card = parse_card(_with("conditioning", {"kind": "class", "classes": 3}) | {
        "files": {"generator.onnx": {"sha256": "0" * 64},
                  "discriminator.onnx": {"sha256": "1" * 64}}})
    assert card.conditioning.names == ("0", "1", "2") and card.conditioning.input == "c"
    assert card.generator.inputs == {"z": (4,), "c": (3,)}
    assert card.discriminator.inputs == {"x": (1, 8, 8), "c": (3,)}
    np.testing.assert_array_equal(card.conditioning.one_hot(np.array([2, 0])),
                                  [[0, 0, 1], [1, 0, 0]])


def test_an_encoder_maps_images_to_latents() -> None:
    card = parse_card(_with("files/encoder.onnx", {"sha256": "2" * 64}))
    assert card.encoder.file == "encoder.onnx"
    assert card.encoder.inputs == {"x": (1, 8, 8)} and card.encoder.outputs == {"z": (4,)}
    assert parse_card(GOOD).encoder is None


def test_inpainting_declares_the_visible_image_and_mask_inputs() -> None:
    card = parse_card(_with("inpainting", {"families": ["half", "pixels"]}) | {
        "files": {"generator.onnx": {"sha256": "0" * 64},
                  "discriminator.onnx": {"sha256": "1" * 64}}})
    assert card.inpainting.families == ("half", "pixels")
    assert card.generator.inputs == {"z": (4,), "visible": (1, 8, 8), "mask": (8, 8)}
    assert card.generator.outputs == {"x": (1, 8, 8)}
    assert card.discriminator.inputs == {"x": (1, 8, 8), "mask": (8, 8)}
    assert card.conditioning is None


def test_write_card_checks_the_files_and_writes_what_read_card_reads(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "generator.onnx").write_bytes(b"graph")
    with pytest.raises(CardError, match="does not match the card"):
        write_card(folder, GOOD)
    assert not (folder / "model.json").exists()
    card = _with("files/generator.onnx", {"sha256": sha256_file(folder / "generator.onnx")})
    write_card(folder, card)
    assert json.loads((folder / "model.json").read_text()) == card
    assert read_card(folder).raw == card
    assert sorted(p.name for p in folder.iterdir()) == ["generator.onnx", "model.json"]


def test_replacing_leaves_nothing_of_the_old_folder(tmp_path: Path) -> None:
    target = tmp_path / "m"
    (target / "evaluation").mkdir(parents=True)
    (target / "evaluation" / "stale.png").write_bytes(b"old")
    with pytest.raises(FileExistsError, match="--force"), replacing(target) as staged:
        (staged / "model.json").write_text("new")
    assert (target / "evaluation" / "stale.png").is_file()  # not asked to replace it
    with replacing(target, replace=True) as staged:
        (staged / "model.json").write_text("new")
    assert [p.name for p in target.rglob("*")] == ["model.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert target.stat().st_mode & 0o777 != 0o700  # an ordinary folder, not mkdtemp's


def test_a_failed_replacement_leaves_the_old_folder_as_it_was(tmp_path: Path) -> None:
    target = tmp_path / "m"
    target.mkdir()
    (target / "model.json").write_text("old")
    with pytest.raises(RuntimeError, match="export failed"), \
            replacing(target, replace=True) as staged:
        (staged / "model.json").write_text("half")
        raise RuntimeError("export failed")
    assert (target / "model.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_the_image_spec_of_gs_output() -> None:
    assert ImageSpec.of((1, 28, 28)).card_shape == (28, 28)
    assert ImageSpec.of((3, 32, 32)).card_shape == (3, 32, 32)


def _not_a_regular_file(card: Path, kind: str) -> None:
    if kind == "symlink loop":
        card.symlink_to(card.name)
    elif kind == "dangling symlink":
        card.symlink_to("nowhere.json")
    elif kind == "FIFO":
        os.mkfifo(card)
    elif kind == "folder":
        card.mkdir()
    else:
        card.write_text(json.dumps(GOOD))
        card.chmod(0)


@pytest.mark.parametrize(("kind", "reason"), [
    ("symlink loop", "Too many levels of symbolic links"),
    ("dangling symlink", "No such file or directory"),
    ("FIFO", "not a regular file"),  # a plain read waits for a writer for ever
    ("folder", "Is a directory"),
    pytest.param("unreadable", "Permission denied", marks=pytest.mark.skipif(
        os.geteuid() == 0, reason="root reads a file of mode 000")),
])
def test_a_card_that_is_not_a_readable_regular_file_is_refused_at_once(
        tmp_path: Path, kind: str, reason: str) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    card = folder / "model.json"
    _not_a_regular_file(card, kind)
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(read_card, folder)
        if not wait([reading], timeout=5).done:
            os.close(os.open(card, os.O_WRONLY | os.O_NONBLOCK))  # a writer: EOF unblocks it
            pytest.fail(f"read_card blocked on a {kind}")
    with pytest.raises(CardError) as err:
        reading.result()
    assert str(err.value) == f"{card}: not a readable JSON model card ({reason})"
