"""Where the repository keeps what training reads and writes, defined once."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO_ROOT / "models"  # the served models: export's default target
# the shipped unconditional model of the paper: the reference beside a conditional model's
# FD, and the G whose latents the inpainting baseline searches
PAPER_MODEL = MODELS_DIR / "mnist-mlp"
