"""Pictures of learned approximate inference (§7.2, docs/inference.md), with labelled rows:

- reconstructions: test digits (two of each class) in the top row, below them G(z) for the
  z each method finds (E, E + refine, the nearest prior sample, nearest + refine);
- interpolation: per row, a test digit x_a, then G along the straight line from E(x_a) to
  E(x_b), then the test digit x_b.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from service.contract.card import Latent
from service.contract.latent_paths import lerp
from training.data.mnist import IMAGE_SHAPE, Split
from training.evaluation.inference import Encode, baseline_latents, generate
from training.figures.grid import tile
from training.inference.search import SearchBudget

H, W = IMAGE_SHAPE[1:]
PAD = 2  # tile's padding between cells
FONT_SIZE = 14  # pixels, whatever the scale
FIGURES = {"reconstructions": "inference_reconstructions.png",
           "interpolation": "inference_interpolation.png"}
# digit pairs of the interpolation's rows: pairs that share strokes, and one that does not
INTERPOLATION_PAIRS = ((1, 7), (3, 8), (4, 9), (0, 6), (2, 5))


def labelled_rows(path: Path, rows: list[np.ndarray], labels: list[str],
                  column_titles: dict[int, str] | None = None, scale: int = 2) -> Path:
    """Rows of images ((columns, 784) each) as one picture, each row's label on its left,
    and titles over some columns."""
    picture = Image.fromarray(tile(np.concatenate(rows).reshape(-1, H, W), len(rows[0])), "L")
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    font = ImageFont.load_default(size=FONT_SIZE)
    measure = ImageDraw.Draw(picture)
    left = max(measure.textlength(text, font=font) for text in labels) + FONT_SIZE
    top = 2 * FONT_SIZE if column_titles else 0
    canvas = Image.new("L", (int(left) + picture.width, top + picture.height), 255)
    canvas.paste(picture, (int(left), top))
    draw = ImageDraw.Draw(canvas)
    for r, text in enumerate(labels):
        draw.text((FONT_SIZE // 2, top + (PAD + r * (H + PAD) + H / 2) * scale), text, fill=0,
                  font=font, anchor="lm")
    for c, text in (column_titles or {}).items():
        draw.text((left + (PAD + c * (W + PAD) + W / 2) * scale, top / 2), text, fill=0,
                  font=font, anchor="mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def first_of_each_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first `per_class` images of each digit, digit by digit."""
    return np.concatenate([np.flatnonzero(labels == k)[:per_class] for k in range(10)])


def reconstructions(path: Path, encode: Encode, g: nn.Module, latent: Latent, test: Split,
                    budget: SearchBudget, per_class: int = 2) -> Path:
    """Test digits above G(z) of each method's z."""
    x = test.images[first_of_each_class(test.labels, per_class)]
    found = baseline_latents(encode, g, latent, x, budget)
    steps = f"{budget.steps} Adam steps"
    names = {"encoder": "G(E(x))", "encoder_refined": f"E(x) + {steps}",
             "nearest": f"nearest of {budget.candidates:,}",
             "nearest_refined": f"nearest + {steps}"}
    rows = [x] + [generate(g, z) for z, _ in found.values()]
    return labelled_rows(path, rows, ["test image x"] + [names[key] for key in found])


def interpolation(path: Path, encode: Encode, g: nn.Module, test: Split,
                  steps: int = 10) -> Path:
    """Per pair (a, b) of INTERPOLATION_PAIRS: the first test image of digit a, G on
    `steps` points from E(x_a) to E(x_b), the first test image of digit b."""
    first = {k: test.images[np.flatnonzero(test.labels == k)[0]] for k in range(10)}
    rows, labels = [], []
    for a, b in INTERPOLATION_PAIRS:
        z = encode(np.stack([first[a], first[b]]))
        path_images = generate(g, torch.from_numpy(lerp(z[0], z[1], steps)))
        rows.append(np.concatenate([first[a][None], path_images, first[b][None]]))
        labels.append(f"{a} to {b}")
    titles = {0: "test x_a", 1: "G(E(x_a))", steps: "G(E(x_b))", steps + 1: "test x_b"}
    return labelled_rows(path, rows, labels, titles, scale=3)


def inference_figures(encode: Encode, g: nn.Module, latent: Latent, test: Split,
                      out_dir: Path, budget: SearchBudget) -> dict[str, Path]:
    """Both figures into `out_dir` (names in FIGURES), by kind."""
    return {"reconstructions": reconstructions(out_dir / FIGURES["reconstructions"], encode,
                                               g, latent, test, budget),
            "interpolation": interpolation(out_dir / FIGURES["interpolation"], encode, g,
                                           test)}
