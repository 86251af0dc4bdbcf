"""Calibration and evaluation data: images with a preprocessing spec, or arrays from .npy/.npz.

A sample is one feed of the ONNX model: ``{input name: float32 array in the ONNX model's own
layout and shape}`` (batch 1 for images). The same samples drive two things that must never
mix: int8 calibration (activation ranges) and validation (accuracy against onnxruntime).
:func:`split_holdout` separates them: by default a seeded shuffle puts a quarter of the
samples (at least one) aside for evaluation and calibrates on the rest, so the report never
scores the model on a sample it was calibrated on.

Sources:

* a folder of images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.webp``), decoded with Pillow,
  read in file-name order, preprocessed by a :class:`Preprocess` spec (presets ``yolov8`` and
  ``imagenet``); only for models with exactly one 4-D image input;
* a ``.npy`` file for a single-input model, ``[N, ...]`` stacked samples (or one sample of
  exactly the input shape);
* a ``.npz`` file whose keys are the model's input names, each ``[N, ...]``.

Every source is capped (:data:`MAX_SAMPLES`, :data:`MAX_FILE_BYTES`, :data:`MAX_IMAGE_PIXELS`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from edgeops.errors import ConfigError

#: At most this many samples are read from one source.
MAX_SAMPLES = 10_000
#: No single calibration file (image or array file) larger than this is read.
MAX_FILE_BYTES = 1 << 30
#: Decompression-bomb guard for images (Pillow's own default is ~89 Mpx).
MAX_IMAGE_PIXELS = 64_000_000
#: Image file suffixes read from a calibration folder.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
#: Default share of the samples put aside for evaluation (at least one sample).
DEFAULT_HOLDOUT_FRACTION = 0.25
#: Seed of the shuffle that picks the held-out samples, so a split is reproducible.
SPLIT_SEED = 0

Sample = dict[str, npt.NDArray[np.float32]]
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Preprocess:
    """How an image becomes a model input.

    ``resize``: ``"letterbox"`` keeps the aspect ratio and pads with ``pad_value`` (YOLO),
    ``"crop"`` resizes the shorter side to ``size / crop_fraction`` and takes the centre crop
    (ImageNet), ``"stretch"`` resizes to the target size ignoring the aspect ratio.
    The pixel value ``p`` (0..255, in ``channel_order``) becomes ``(p * scale - mean) / std``.
    ``size`` is ``(height, width)``; ``None`` takes it from the model's input shape, and so does
    ``layout=None`` (``NCHW`` when the second dimension is 1 or 3, else ``NHWC``).
    Grayscale and RGBA images are converted to RGB first.
    """

    size: tuple[int, int] | None = None
    layout: Literal["NCHW", "NHWC"] | None = None
    resize: Literal["letterbox", "crop", "stretch"] = "stretch"
    pad_value: int = 114
    crop_fraction: float = 0.875
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_order: Literal["RGB", "BGR"] = "RGB"

    def __post_init__(self) -> None:
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ConfigError(
                f"expected a preprocessing size (height, width) >= 1, got {self.size}"
            )
        if self.layout not in (None, "NCHW", "NHWC"):
            raise ConfigError(f"expected layout NCHW or NHWC, got {self.layout!r}")
        if self.resize not in ("letterbox", "crop", "stretch"):
            raise ConfigError(f"expected resize letterbox, crop or stretch, got {self.resize!r}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ConfigError(f"expected channel order RGB or BGR, got {self.channel_order!r}")
        if not 0 <= self.pad_value <= 255:
            raise ConfigError(f"expected a pad value in 0..255, got {self.pad_value}")
        if not 0 < self.crop_fraction <= 1:
            raise ConfigError(f"expected a crop fraction in (0, 1], got {self.crop_fraction}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"expected 3 means and 3 positive stds, got {self.mean} {self.std}")
        if not self.scale > 0:
            raise ConfigError(f"expected a positive pixel scale, got {self.scale}")

    def resolved(self, input_shape: Sequence[int]) -> Preprocess:
        """This spec with ``size`` and ``layout`` filled in from a 4-D model input shape."""
        if len(input_shape) != 4:
            raise ConfigError(
                f"images need a 4-D model input (NCHW or NHWC), got shape {tuple(input_shape)}"
            )
        layout = self.layout or ("NCHW" if input_shape[1] in (1, 3) else "NHWC")
        height, width = (
            (input_shape[2], input_shape[3])
            if layout == "NCHW"
            else (input_shape[1], input_shape[2])
        )
        size = self.size or (int(height), int(width))
        channels = input_shape[1] if layout == "NCHW" else input_shape[3]
        if channels != 3:
            raise ConfigError(f"images give 3 channels; the model input has {channels}")
        return replace(self, size=size, layout=layout)


#: Ultralytics YOLOv8: letterbox to the input size with grey 114 padding, RGB, pixels / 255.
YOLOV8 = Preprocess(resize="letterbox", pad_value=114, scale=1.0 / 255.0)
#: torchvision ImageNet: shorter side to size / 0.875, centre crop, RGB, ImageNet mean/std.
IMAGENET = Preprocess(
    resize="crop",
    crop_fraction=0.875,
    scale=1.0 / 255.0,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)
#: Resize to the input size, RGB, pixels / 255.
PLAIN = Preprocess(resize="stretch", scale=1.0 / 255.0)

PRESETS: Mapping[str, Preprocess] = {"yolov8": YOLOV8, "imagenet": IMAGENET, "none": PLAIN}


def preset(name: str) -> Preprocess:
    """The preprocessing preset called ``name`` (``yolov8``, ``imagenet`` or ``none``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"expected a preprocessing preset among {sorted(PRESETS)}, got {name!r}"
        ) from None


def preprocess_image(
    pixels: npt.NDArray[np.uint8], spec: Preprocess, input_shape: Sequence[int]
) -> npt.NDArray[np.float32]:
    """One RGB ``[H, W, 3]`` uint8 image as a float32 model input of ``input_shape``."""
    from PIL import Image

    spec = spec.resolved(input_shape)
    assert spec.size is not None
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ConfigError(f"expected an [H, W, 3] image, got shape {pixels.shape}")
    image = Image.fromarray(np.ascontiguousarray(pixels[:, :, :3]), mode="RGB")
    target_h, target_w = spec.size
    if spec.resize == "letterbox":
        # Ultralytics LetterBox: scale to fit, round the new size, centre with pad_value.
        ratio = min(target_h / image.height, target_w / image.width)
        new_w = max(1, round(image.width * ratio))
        new_h = max(1, round(image.height * ratio))
        resized = np.asarray(image.resize((new_w, new_h), Image.Resampling.BILINEAR))
        canvas = np.full((target_h, target_w, 3), spec.pad_value, dtype=np.uint8)
        top = round((target_h - new_h) / 2 - 0.1)
        left = round((target_w - new_w) / 2 - 0.1)
        canvas[top : top + new_h, left : left + new_w] = resized
        array = canvas
    elif spec.resize == "crop":
        short = min(target_h, target_w) / spec.crop_fraction
        ratio = short / min(image.height, image.width)
        new_w = max(target_w, round(image.width * ratio))
        new_h = max(target_h, round(image.height * ratio))
        resized = np.asarray(image.resize((new_w, new_h), Image.Resampling.BILINEAR))
        top = (new_h - target_h) // 2
        left = (new_w - target_w) // 2
        array = resized[top : top + target_h, left : left + target_w]
    else:
        array = np.asarray(image.resize((target_w, target_h), Image.Resampling.BILINEAR))
    values = array.astype(np.float32)
    if spec.channel_order == "BGR":
        values = values[:, :, ::-1]
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    values = (values * np.float32(spec.scale) - mean) / std
    if spec.layout == "NCHW":
        values = values.transpose(2, 0, 1)
    return np.ascontiguousarray(values[None], dtype=np.float32)


def read_image(path: Path) -> npt.NDArray[np.uint8]:
    """Decode an image file to RGB ``[H, W, 3]`` uint8 (grayscale and RGBA become RGB)."""
    from PIL import Image, UnidentifiedImageError

    _check_file_size(path)
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise ConfigError(
                    f"{path}: expected at most {MAX_IMAGE_PIXELS} pixels, got "
                    f"{image.width}x{image.height}"
                )
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise ConfigError(f"{path}: not a readable image ({exc})") from exc


def image_files(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name."""
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise ConfigError(
            f"{folder}: expected image files ({', '.join(sorted(IMAGE_SUFFIXES))}), found none"
        )
    return files[:MAX_SAMPLES]


def load_samples(
    source: Path | Sequence[Path],
    input_shapes: Mapping[str, Sequence[int]],
    *,
    preprocess: Preprocess | None = None,
) -> list[Sample]:
    """Read calibration/evaluation samples for a model whose inputs have ``input_shapes``.

    ``source`` is a folder of images, a list of image files, a ``.npy`` or a ``.npz`` file.
    ``input_shapes`` maps each ONNX input name to its fixed shape. Images use ``preprocess``
    (default: the ``none`` preset, plain resize and /255).
    """
    if not isinstance(source, Path):
        return _image_samples(list(source)[:MAX_SAMPLES], input_shapes, preprocess)
    if source.is_dir():
        return _image_samples(image_files(source), input_shapes, preprocess)
    if not source.is_file():
        raise ConfigError(f"calibration data {source}: no such file or folder")
    suffix = source.suffix.lower()
    if suffix == ".npy":
        if len(input_shapes) != 1:
            raise ConfigError(
                f"{source}: a .npy file feeds a single-input model; this one has inputs "
                f"{sorted(input_shapes)} (use a .npz keyed by input name)"
            )
        (name,) = input_shapes
        return _array_samples({name: _load_array(source)}, input_shapes, source)
    if suffix == ".npz":
        _check_file_size(source)
        try:
            with np.load(source, allow_pickle=False) as archive:
                arrays = {key: np.asarray(archive[key]) for key in archive.files}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{source}: not a readable .npz file ({exc})") from exc
        return _array_samples(arrays, input_shapes, source)
    if suffix in IMAGE_SUFFIXES:
        return _image_samples([source], input_shapes, preprocess)
    raise ConfigError(
        f"calibration data {source}: expected a folder of images, a .npy or a .npz file"
    )


def _check_file_size(path: Path) -> None:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: expected at most {MAX_FILE_BYTES} bytes, got {size}")


def _load_array(path: Path) -> npt.NDArray[Any]:
    _check_file_size(path)
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable .npy file ({exc})") from exc


def _image_samples(
    files: list[Path], input_shapes: Mapping[str, Sequence[int]], preprocess: Preprocess | None
) -> list[Sample]:
    image_inputs = [name for name, shape in input_shapes.items() if len(shape) == 4]
    if len(input_shapes) != 1 or len(image_inputs) != 1:
        raise ConfigError(
            f"images feed a model with one 4-D image input; this one has inputs "
            f"{ {name: tuple(shape) for name, shape in input_shapes.items()} } "
            f"(give a .npz keyed by input name instead)"
        )
    (name,) = image_inputs
    shape = input_shapes[name]
    if shape[0] != 1:
        raise ConfigError(f"images feed a batch-1 input; {name!r} has shape {tuple(shape)}")
    spec = (preprocess or PLAIN).resolved(shape)
    return [{name: preprocess_image(read_image(path), spec, shape)} for path in files]


def _array_samples(
    arrays: Mapping[str, npt.NDArray[Any]],
    input_shapes: Mapping[str, Sequence[int]],
    source: Path,
) -> list[Sample]:
    missing = sorted(set(input_shapes) - set(arrays))
    if missing:
        raise ConfigError(f"{source}: expected arrays for inputs {missing}, found {sorted(arrays)}")
    per_input: dict[str, npt.NDArray[np.float32]] = {}
    count: int | None = None
    for name, shape in input_shapes.items():
        array = arrays[name]
        if not np.issubdtype(array.dtype, np.number):
            raise ConfigError(f"{source}: {name!r} expected numbers, got dtype {array.dtype}")
        expected = tuple(int(d) for d in shape)
        if array.shape == expected:
            stacked = array[None]
        elif array.shape[1:] == expected[1:] and expected[0] == 1:
            stacked = array[:, None]
        elif array.ndim == len(expected) + 1 and array.shape[1:] == expected:
            stacked = array
        else:
            raise ConfigError(
                f"{source}: {name!r} expected samples of shape {expected} stacked along a "
                f"first axis, got {array.shape}"
            )
        if count is not None and stacked.shape[0] != count:
            raise ConfigError(
                f"{source}: expected the same number of samples for every input, got "
                f"{count} and {stacked.shape[0]} ({name!r})"
            )
        count = stacked.shape[0]
        per_input[name] = stacked[:MAX_SAMPLES].astype(np.float32)
    return [
        {name: np.ascontiguousarray(per_input[name][index]) for name in input_shapes}
        for index in range(min(count or 0, MAX_SAMPLES))
    ]


@dataclass(frozen=True)
class Split:
    """Samples for calibration and the disjoint held-out samples for evaluation."""

    calibration: list[Sample]
    evaluation: list[Sample]
    calibration_indices: tuple[int, ...]
    evaluation_indices: tuple[int, ...]


def split_holdout(
    samples: Sequence[Sample],
    *,
    calibration_count: int | None = None,
    max_evaluation: int = 64,
) -> Split:
    """Split ``samples`` into calibration and held-out evaluation sets that never overlap.

    A shuffle seeded with :data:`SPLIT_SEED` picks the held-out samples, so the result
    depends only on the samples and their order. Without ``calibration_count``, a quarter of
    the samples (rounded up, at least one) is held out. With a single sample there is nothing
    to hold out: it is used for calibration and the evaluation set is empty (validation then
    falls back to random inputs and the report says so).
    """
    total = len(samples)
    if calibration_count is None:
        held_out = max(1, math.ceil(total * DEFAULT_HOLDOUT_FRACTION)) if total >= 2 else 0
        calibration_count = total - held_out
    if not 1 <= calibration_count <= total:
        raise ConfigError(
            f"expected a calibration count in 1..{total} (the samples given), "
            f"got {calibration_count}"
        )
    order = np.random.default_rng(SPLIT_SEED).permutation(total)
    calibration_idx = tuple(sorted(int(i) for i in order[:calibration_count]))
    evaluation_idx = tuple(sorted(int(i) for i in order[calibration_count:]))[:max_evaluation]
    return Split(
        calibration=[samples[i] for i in calibration_idx],
        evaluation=[samples[i] for i in evaluation_idx],
        calibration_indices=calibration_idx,
        evaluation_indices=evaluation_idx,
    )


def random_samples(
    input_shapes: Mapping[str, Sequence[int]], count: int, *, seed: int = 0
) -> list[Sample]:
    """``count`` samples of uniform noise in [0, 1), for when the user gives no data."""
    rng = np.random.default_rng(seed)
    return [
        {
            name: rng.random(tuple(int(d) for d in shape), dtype=np.float32)
            for name, shape in input_shapes.items()
        }
        for _ in range(count)
    ]


def track(items: Iterable[T], *, total: int, description: str) -> Iterator[T]:
    """Iterate ``items`` with a progress bar on a terminal (rich), quietly otherwise."""
    if not sys.stderr.isatty():
        yield from items
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)


__all__ = [
    "IMAGENET",
    "MAX_SAMPLES",
    "PLAIN",
    "PRESETS",
    "YOLOV8",
    "Preprocess",
    "Sample",
    "Split",
    "image_files",
    "load_samples",
    "preprocess_image",
    "preset",
    "random_samples",
    "read_image",
    "split_holdout",
    "track",
]
