"""The model card (`models/<name>/model.json`): the one contract between training and the
service (docs/model-card.md). numpy only, so that both halves import it: training writes a
card with `write_card`, the service reads one with `read_card`.

Besides the card's schema this module owns what both halves must compute the same way:
the seed contract (`Latent.sample`), a file's sha256 and the model-name rule.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import random
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.contract.masks import FAMILIES

CARD_FILE = "model.json"
# a model name is a folder name and a URL-safe word
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# the networks a model folder may hold, by role; the generator is required. The encoder
# E(x) ~ z is §7.2's learned approximate inference.
NETWORK_FILES = {"generator": "generator.onnx", "discriminator": "discriminator.onnx",
                 "encoder": "encoder.onnx"}
LATENT_DISTRIBUTIONS = ("uniform", "normal")
MAX_LATENT_DIM = 65_536
MAX_IMAGE_SIDE = 4096
CONDITIONING_KINDS = ("class",)
MAX_CLASSES = 10_000
SEED_MAX = 2**63 - 1


class CardError(ValueError):
    """A model folder that cannot be served; the message names the file and the reason."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_model_name(name: object) -> str:
    """`name` if it is a valid model name, else ValueError saying the rule."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"model name {name!r}: use 1-64 lower-case letters, digits, '.', "
                         "'_', '-', starting with a letter or digit")
    return name


def random_seed() -> int:
    """A seed for a request that gave none (returned to the client, so it can repeat it).
    Python's own generator: seeded from the OS once, reseeded in a forked child, 0.1 µs a
    draw (numpy's default_rng() read the OS's entropy on every request: 7% of a worker's
    time at n = 1)."""
    return random.getrandbits(31)


@dataclass(frozen=True)
class Latent:
    """The prior p(z): `dim` numbers, uniform on [low, high] or standard normal."""

    dim: int
    distribution: str = "uniform"
    low: float | None = None
    high: float | None = None

    def sample(self, n: int, seed: int) -> np.ndarray:
        """The seed contract: z = default_rng(seed).uniform(low, high, (n, dim)) (or
        .standard_normal((n, dim))) as float32. `/sample` with a seed, the evaluation and
        the benchmarks all draw z here, so a seed means the same images everywhere."""
        rng = np.random.default_rng(seed)
        if self.distribution == "uniform":
            z = rng.uniform(self.low, self.high, (n, self.dim))
        else:
            z = rng.standard_normal((n, self.dim))
        return z.astype(np.float32)

    def chunks(self, n: int, seed: int, rows: int) -> Iterator[np.ndarray]:
        """`sample(n, seed)` in successive pieces of `rows` (the last may be shorter), with
        memory bounded by a piece: numpy's Generator fills arrays from one stream, so
        drawing in pieces gives the same numbers as drawing at once."""
        rng = np.random.default_rng(seed)
        for start in range(0, n, rows):
            shape = (min(rows, n - start), self.dim)
            z = (rng.uniform(self.low, self.high, shape) if self.distribution == "uniform"
                 else rng.standard_normal(shape))
            yield z.astype(np.float32)

    def to_card(self) -> dict[str, Any]:
        card: dict[str, Any] = {"dim": self.dim, "distribution": self.distribution}
        if self.distribution == "uniform":
            card.update(low=self.low, high=self.high)
        return card


@dataclass(frozen=True)
class ImageSpec:
    """One image as G outputs it, channels first; the card's `shape` as written there."""

    shape: tuple[int, int, int]  # (channels, height, width)
    card_shape: tuple[int, ...]  # [H, W] (grey) or [C, H, W]
    range: tuple[float, float] = (0.0, 1.0)

    @classmethod
    def of(cls, chw: tuple[int, int, int]) -> ImageSpec:
        """The spec of G's (C, H, W) output; a grey image is written [H, W] in the card."""
        return cls(tuple(chw), tuple(chw[1:]) if chw[0] == 1 else tuple(chw))

    @property
    def pixels(self) -> int:
        """Numbers per image (C * H * W)."""
        return math.prod(self.shape)

    def to_card(self) -> dict[str, Any]:
        return {"shape": list(self.card_shape), "range": list(self.range)}


@dataclass(frozen=True)
class Conditioning:
    """An extra input of G and D (§7.1 of the paper): for `kind` "class", a label in
    0..classes-1, fed to the networks' input `input` as a one-hot float32 (n, classes)."""

    kind: str
    input: str
    classes: int
    names: tuple[str, ...]

    def one_hot(self, labels: np.ndarray) -> np.ndarray:
        out = np.zeros((len(labels), self.classes), np.float32)
        out[np.arange(len(labels)), labels] = 1.0
        return out


@dataclass(frozen=True)
class Inpainting:
    """§7.3's p(x_S | x_not S): G completes the hidden pixels of an image. G reads z, the
    image (`visible_input`: pixels under the mask are ignored) and the mask (`mask_input`:
    float32 (n, H, W), 1 where hidden), and returns the whole image with the visible pixels
    kept; D reads the image and the mask. `families` are the named masks it was trained on
    (service/contract/masks.py)."""

    visible_input: str
    mask_input: str
    families: tuple[str, ...]

    def mask_shape(self, image: ImageSpec) -> tuple[int, int]:
        return image.shape[1:]


@dataclass(frozen=True)
class Network:
    """One ONNX file of the model: its name in the folder, sha256, and the graph's input
    and output names with their shapes after the (symbolic) batch axis."""

    file: str
    sha256: str
    inputs: dict[str, tuple[int, ...]]
    outputs: dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class ModelCard:
    name: str
    latent: Latent
    image: ImageSpec
    networks: dict[str, Network]  # role -> network; "generator" always present
    conditioning: Conditioning | None
    raw: dict[str, Any]  # the whole card as read, for /models and anything not modelled
    inpainting: Inpainting | None = None

    @property
    def version(self) -> str:
        return str(self.raw.get("version", "unknown"))

    @property
    def generator(self) -> Network:
        return self.networks["generator"]

    @property
    def discriminator(self) -> Network | None:
        return self.networks.get("discriminator")

    @property
    def encoder(self) -> Network | None:
        return self.networks.get("encoder")


def _image_spec(value: Any, where: str) -> ImageSpec:
    if not isinstance(value, dict):
        raise CardError(f"{where}: 'image' must be an object with 'shape'")
    shape = value.get("shape")
    if not (isinstance(shape, list) and len(shape) in (2, 3)
            and all(isinstance(s, int) and not isinstance(s, bool) for s in shape)):
        raise CardError(f"{where}: image.shape must be [height, width] (grey) or "
                        f"[channels, height, width], got {shape!r}")
    if len(shape) == 3 and shape[0] not in (1, 3):
        raise CardError(f"{where}: image.shape has {shape[0]} channels; 1 (grey) or 3 (RGB)")
    if not all(1 <= s <= MAX_IMAGE_SIDE for s in shape[-2:]):
        raise CardError(f"{where}: image height and width must be in [1, {MAX_IMAGE_SIDE}], "
                        f"got {shape}")
    if value.get("range", [0, 1]) != [0, 1]:
        raise CardError(f"{where}: image.range must be [0, 1] (G's output is a sigmoid)")
    return ImageSpec(tuple(shape) if len(shape) == 3 else (1, *shape), tuple(shape))


def _latent(value: Any, where: str) -> Latent:
    if not isinstance(value, dict):
        raise CardError(f"{where}: 'latent' must be an object with dim and distribution")
    dim, dist = value.get("dim"), value.get("distribution")
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_LATENT_DIM:
        raise CardError(f"{where}: latent.dim must be an integer in [1, {MAX_LATENT_DIM}], "
                        f"got {dim!r}")
    if dist not in LATENT_DISTRIBUTIONS:
        raise CardError(f"{where}: latent.distribution must be one of "
                        f"{list(LATENT_DISTRIBUTIONS)}, got {dist!r}")
    if dist == "normal":
        return Latent(dim, dist)
    low, high = value.get("low"), value.get("high")
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                  and abs(v) <= 1e6 for v in (low, high))
    if not numbers or not low < high:
        raise CardError(f"{where}: a uniform latent needs finite numbers low < high within "
                        f"±1e6, got low={low!r}, high={high!r}")
    return Latent(dim, dist, float(low), float(high))


def _conditioning(value: Any, where: str) -> Conditioning | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("kind") not in CONDITIONING_KINDS:
        raise CardError(f"{where}: conditioning.kind must be one of {list(CONDITIONING_KINDS)}")
    classes, name = value.get("classes"), value.get("input", "c")
    if isinstance(classes, bool) or not isinstance(classes, int) or \
            not 2 <= classes <= MAX_CLASSES:
        raise CardError(f"{where}: conditioning.classes must be an integer in "
                        f"[2, {MAX_CLASSES}], got {classes!r}")
    if not isinstance(name, str) or name in ("z", "x"):
        raise CardError(f"{where}: conditioning.input must name the networks' label input "
                        "(not 'z' or 'x')")
    names = value.get("names", [str(i) for i in range(classes)])
    if not (isinstance(names, list) and len(names) == classes
            and all(isinstance(n, str) for n in names)):
        raise CardError(f"{where}: conditioning.names must be {classes} strings")
    return Conditioning("class", name, classes, tuple(names))


def _inpainting(value: Any, where: str) -> Inpainting | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CardError(f"{where}: 'inpainting' must be an object")
    visible, mask = value.get("visible_input", "visible"), value.get("mask_input", "mask")
    for key, name in (("visible_input", visible), ("mask_input", mask)):
        if not isinstance(name, str) or name in ("z", "x") or not name:
            raise CardError(f"{where}: inpainting.{key} must name a network input (not 'z' "
                            "or 'x')")
    if visible == mask:
        raise CardError(f"{where}: inpainting.visible_input and mask_input must differ")
    families = value.get("families", list(FAMILIES))
    if not (isinstance(families, list) and families and all(f in FAMILIES for f in families)):
        raise CardError(f"{where}: inpainting.families must be a non-empty list of "
                        f"{list(FAMILIES)}")
    return Inpainting(visible, mask, tuple(families))


def _networks(files: Any, latent: Latent, image: ImageSpec,
              conditioning: Conditioning | None, inpainting: Inpainting | None,
              where: str) -> dict[str, Network]:
    if not isinstance(files, dict):
        raise CardError(f"{where}: 'files' must map file names to their sha256")
    extra = {conditioning.input: (conditioning.classes,)} if conditioning else {}
    g_extra = dict(extra)
    if inpainting:
        mask = {inpainting.mask_input: inpainting.mask_shape(image)}
        g_extra.update({inpainting.visible_input: image.shape, **mask})
        extra.update(mask)
    # the graphs' inputs and outputs, after the batch axis: what the service will feed
    expected = {
        "generator": ({"z": (latent.dim,), **g_extra}, {"x": image.shape}),
        "discriminator": ({"x": image.shape, **extra}, {"logit": (1,)}),
        "encoder": ({"x": image.shape}, {"z": (latent.dim,)}),
    }
    networks = {}
    for role, filename in NETWORK_FILES.items():
        entry = files.get(filename)
        if entry is None:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or \
                not re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]):
            raise CardError(f"{where}: files.{filename} needs a 64-digit hex sha256")
        inputs, outputs = expected[role]
        networks[role] = Network(filename, entry["sha256"], inputs, outputs)
    if "generator" not in networks:
        raise CardError(f"{where}: files lists no {NETWORK_FILES['generator']}")
    return networks


def parse_card(card: Any, where: str = CARD_FILE) -> ModelCard:
    """A card's dict, validated, as a ModelCard; CardError names `where` and the field."""
    if not isinstance(card, dict):
        raise CardError(f"{where}: the card must be a JSON object")
    for key in ("name", "latent", "image", "files"):
        if key not in card:
            raise CardError(f"{where}: the card has no '{key}'")
    try:
        name = check_model_name(card["name"])
    except ValueError as err:
        raise CardError(f"{where}: {err}") from None
    latent = _latent(card["latent"], where)
    image = _image_spec(card["image"], where)
    conditioning = _conditioning(card.get("conditioning"), where)
    inpainting = _inpainting(card.get("inpainting"), where)
    if conditioning and inpainting:
        raise CardError(f"{where}: a card has 'conditioning' or 'inpainting', not both")
    networks = _networks(card["files"], latent, image, conditioning, inpainting, where)
    if "encoder" in networks and (conditioning or inpainting):
        raise CardError(f"{where}: an encoder.onnx is served for unconditional models only")
    return ModelCard(name, latent, image, networks, conditioning, card, inpainting)


def _read_regular_file(path: Path) -> bytes:
    """A regular file's bytes; OSError for anything else (a directory, a symlink loop, a
    FIFO: opened without blocking, where a plain read would wait for a writer for ever)."""
    with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return f.read()


def read_card(folder: Path) -> ModelCard:
    """`folder/model.json`, validated; its name must be the folder's."""
    path = folder / CARD_FILE
    try:
        raw = json.loads(_read_regular_file(path).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise CardError(f"{path}: not a readable JSON model card ({reason})") from None
    card = parse_card(raw, str(path))
    if card.name != folder.name:
        raise CardError(f"{path}: name '{card.name}' is not the folder's name '{folder.name}'")
    return card


def verify_files(folder: Path, card: ModelCard) -> None:
    """Every network the card lists exists in `folder` with the card's sha256."""
    for network in card.networks.values():
        path = folder / network.file
        if not path.is_file():
            what = "not a regular file" if path.exists() else "missing"
            raise CardError(f"{path}: {what} (the card lists it)")
        try:
            digest = sha256_file(path)
        except OSError as err:
            raise CardError(f"{path}: unreadable ({err.strerror or err})") from None
        if digest != network.sha256:
            raise CardError(f"{path}: sha256 {digest} does not match the card's "
                            f"{network.sha256} (corrupt or replaced)")


def card_files(folder: Path, roles: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The card's `files` section for the networks written into `folder`: role -> the
    extra facts to record (input/output names, opset), with each file's sha256 added."""
    return {NETWORK_FILES[role]: {"sha256": sha256_file(folder / NETWORK_FILES[role]), **facts}
            for role, facts in roles.items()}


def write_card(folder: Path, card: dict[str, Any]) -> ModelCard:
    """Validate `card` against the files in `folder`, then write `folder/model.json`
    atomically. What is written is what the service will accept."""
    parsed = parse_card(card, str(folder / CARD_FILE))
    verify_files(folder, parsed)
    _atomic_write(folder / CARD_FILE, json.dumps(card, indent=2) + "\n")
    return parsed


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextmanager
def replacing(target: Path, replace: bool = False) -> Iterator[Path]:
    """A new empty folder beside `target` (same file system) to write a model into. When the
    block succeeds it takes `target`'s place whole, so no file of an old folder survives
    beside the new ones; an existing `target` is replaced only if `replace` (checked again
    at the swap: another writer may have made it meanwhile). When anything fails the new
    folder is removed and `target` is left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    umask = os.umask(0)  # an ordinary folder's permissions, not mkdtemp's 0700
    os.umask(umask)
    staged.chmod(0o777 & ~umask)
    try:
        yield staged
        if not target.exists():
            os.replace(staged, target)
            return
        if not replace:
            raise FileExistsError(f"{target} exists; replace it with --force")
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)  # two renames: the name is never half-written
        try:
            os.replace(staged, target)
        except OSError:
            os.replace(old / target.name, target)
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
