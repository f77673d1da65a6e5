"""Tiny model folders built with onnx.helper, so the service tier is tested without torch:
G is one affine layer and a sigmoid, D one affine layer; the card is written through the
contract module, as export writes it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service.contract.card import card_files, write_card

OPSET = 18


def _affine(name: str, inputs: list[str], weight: np.ndarray, bias: np.ndarray,
            nodes: list, inits: list) -> str:
    """`inputs` concatenated on axis 1, times weight, plus bias: the name of the result."""
    x = inputs[0]
    if len(inputs) > 1:
        x = f"{name}_cat"
        nodes.append(helper.make_node("Concat", inputs, [x], axis=1))
    inits += [numpy_helper.from_array(weight.astype(np.float32), f"{name}_w"),
              numpy_helper.from_array(bias.astype(np.float32), f"{name}_b")]
    nodes += [helper.make_node("MatMul", [x, f"{name}_w"], [f"{name}_mm"]),
              helper.make_node("Add", [f"{name}_mm", f"{name}_b"], [f"{name}_out"])]
    return f"{name}_out"


def _save(path: Path, nodes: list, inits: list, inputs: list, outputs: list) -> None:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9  # readable by every onnxruntime >= 1.18
    onnx.checker.check_model(model)
    onnx.save(model, path)


def _tensor(name: str, *shape: int | str) -> Any:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def build_model(models_dir: Path, name: str, shape: tuple[int, ...] = (28, 28),
                latent: dict | None = None, discriminator: bool = True,
                classes: int | None = None, seed: int = 0, encoder: bool = False,
                inpainting: bool = False) -> Path:
    """models_dir/name: generator.onnx (+ discriminator.onnx, encoder.onnx) and model.json.
    An inpainting model's G reads z, the visible image and the mask (not composited: the
    service keeps the visible pixels itself); its D reads the image and the mask."""
    latent = latent or {"dim": 100, "distribution": "uniform", "low": -math.sqrt(3),
                        "high": math.sqrt(3)}
    chw = shape if len(shape) == 3 else (1, *shape)
    pixels = math.prod(chw)
    rng = np.random.default_rng(seed)
    folder = models_dir / name
    folder.mkdir(parents=True)
    extra = ["c"] if classes else []
    extra_inputs = [_tensor("c", "batch", classes)] if classes else []
    width = latent["dim"] + (classes or 0)
    nodes: list = []
    inits: list = []
    g_inputs, g_extra = ["z", *extra], list(extra_inputs)
    if inpainting:
        extra, extra_inputs = ["mf"], [_tensor("mask", "batch", *chw[1:])]
        g_extra = [_tensor("visible", "batch", *chw), *extra_inputs]
        nodes += [helper.make_node("Flatten", ["visible"], ["vf"], axis=1),
                  helper.make_node("Flatten", ["mask"], ["mf"], axis=1)]
        g_inputs = ["z", "vf", "mf"]
        width = latent["dim"] + pixels + math.prod(chw[1:])
    out = _affine("g", g_inputs, rng.normal(0, 0.3, (width, pixels)),
                  rng.normal(0, 0.1, pixels), nodes, inits)
    inits.append(numpy_helper.from_array(np.array([-1, *chw], np.int64), "shape"))
    nodes += [helper.make_node("Sigmoid", [out], ["flat"]),
              helper.make_node("Reshape", ["flat", "shape"], ["x"])]
    _save(folder / "generator.onnx", nodes, inits,
          [_tensor("z", "batch", latent["dim"]), *g_extra], [_tensor("x", "batch", *chw)])
    roles = {"generator": {"input": "z", "output": "x", "opset": OPSET}}

    if discriminator:
        nodes, inits = [helper.make_node("Flatten", ["x"], ["xf"], axis=1)], []
        if inpainting:
            nodes.append(helper.make_node("Flatten", ["mask"], ["mf"], axis=1))
        width = pixels + (classes or 0) + (math.prod(chw[1:]) if inpainting else 0)
        out = _affine("d", ["xf", *extra], rng.normal(0, 0.05, (width, 1)),
                      np.zeros(1), nodes, inits)
        nodes.append(helper.make_node("Identity", [out], ["logit"]))
        _save(folder / "discriminator.onnx", nodes, inits,
              [_tensor("x", "batch", *chw), *extra_inputs], [_tensor("logit", "batch", 1)])
        roles["discriminator"] = {"input": "x", "outputs": ["logit"], "opset": OPSET}

    if encoder:
        nodes, inits = [helper.make_node("Flatten", ["x"], ["xf"], axis=1)], []
        out = _affine("e", ["xf"], rng.normal(0, 0.05, (pixels, latent["dim"])),
                      np.zeros(latent["dim"]), nodes, inits)
        nodes.append(helper.make_node("Identity", [out], ["z"]))
        _save(folder / "encoder.onnx", nodes, inits, [_tensor("x", "batch", *chw)],
              [_tensor("z", "batch", latent["dim"])])
        roles["encoder"] = {"input": "x", "output": "z", "opset": OPSET}

    card: dict[str, Any] = {"name": name, "version": f"synthetic-{name}", "latent": latent,
                            "image": {"shape": list(shape), "range": [0.0, 1.0]},
                            "files": card_files(folder, roles)}
    if classes:
        card["conditioning"] = {"kind": "class", "input": "c", "classes": classes,
                                "names": [f"class-{i}" for i in range(classes)]}
    if inpainting:
        card["inpainting"] = {"visible_input": "visible", "mask_input": "mask",
                              "families": ["half", "quarters", "centre", "pixels"]}
    write_card(folder, card)
    return folder


def build_models(models_dir: Path) -> Path:
    """The service tier's models: `tiny` (the shipped model's shapes: grey 28 x 28, uniform
    latent of 100; with an encoder), `rgb` (3 x 32 x 32, normal latent of 128), `gonly` (no
    D), `cond` (a class-conditional grey model with 10 classes) and `paint` (an inpainting
    grey 28 x 28 model)."""
    build_model(models_dir, "tiny", encoder=True)
    build_model(models_dir, "rgb", (3, 32, 32), {"dim": 128, "distribution": "normal"}, seed=1)
    build_model(models_dir, "gonly", (16, 16), discriminator=False, seed=2)
    build_model(models_dir, "cond", (28, 28), classes=10, seed=3)
    build_model(models_dir, "paint", (28, 28), seed=4, inpainting=True)
    return models_dir
