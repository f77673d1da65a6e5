"""Pictures of a conditional generator p(x | c) (§7.1, docs/conditional.md), drawn from any
GeneratorSource (a snapshot, a checkpoint, an exported model):

- class_grid: one row per class, each image on its own z;
- class_interpolation: one row per class, a straight line between two latents, the label
  fixed along it;
- fixed_z_across_classes: one row per z, the same z under each label in turn (the "style"
  that z carries, every digit drawn in it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.contract.latent_paths import lerp
from training.evaluation.generators import GeneratorSource
from training.figures.paper import image_rows

FIGURES = {"grid": "conditional_class_grid.png",
           "interpolation": "conditional_interpolation.png",
           "fixed_z": "conditional_fixed_z_across_classes.png"}


def _check(source: GeneratorSource) -> int:
    if not source.conditional:
        raise ValueError(f"{source.description} is unconditional: these figures need labels")
    return source.classes


def class_grid(path: Path, source: GeneratorSource, seed: int = 0, per_class: int = 10
               ) -> Path:
    """Row k: `per_class` samples asked for class k, each with its own latent."""
    classes = _check(source)
    labels = np.repeat(np.arange(classes), per_class)
    images = source.sample(len(labels), seed, labels)
    return image_rows(path, images.reshape(classes, per_class, -1))


def class_interpolation(path: Path, source: GeneratorSource, seed: int = 0,
                        steps: int = 10) -> Path:
    """Row k: G(z, k) for z on the straight line between the row's two latents."""
    classes = _check(source)
    ends = source.latents(2 * classes, seed)
    rows = [source.images(lerp(ends[2 * k], ends[2 * k + 1], steps), k)
            for k in range(classes)]
    return image_rows(path, np.stack(rows))


def fixed_z_across_classes(path: Path, source: GeneratorSource, seed: int = 0,
                           rows: int = 10) -> Path:
    """Row r: one latent z_r under every label 0 ... classes - 1."""
    classes = _check(source)
    z = source.latents(rows, seed)
    images = source.images(np.repeat(z, classes, axis=0), np.tile(np.arange(classes), rows))
    return image_rows(path, images.reshape(rows, classes, -1))


def conditional_figures(source: GeneratorSource, out_dir: Path, seed: int = 0
                        ) -> dict[str, Path]:
    """The three figures into `out_dir` (names in FIGURES), by kind."""
    return {"grid": class_grid(out_dir / FIGURES["grid"], source, seed),
            "interpolation": class_interpolation(out_dir / FIGURES["interpolation"], source,
                                                 seed),
            "fixed_z": fixed_z_across_classes(out_dir / FIGURES["fixed_z"], source, seed)}
