"""Calibration data: preprocessing on hand-checkable images, array files, held-out split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeops.converters import calibration as cal
from edgeops.errors import ConfigError


def _png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)
    return path


def test_letterbox_pads_with_114_and_scales_to_unit_range(tmp_path: Path) -> None:
    # A 20x10 (w x h) white image into 8x8: ratio 0.4 -> 8x4 image centred, rows 2..5.
    white = np.full((10, 20, 3), 255, dtype=np.uint8)
    x = cal.preprocess_image(white, cal.YOLOV8, (1, 3, 8, 8))
    assert x.shape == (1, 3, 8, 8)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 2:6, :], 1.0, atol=1e-6)
    np.testing.assert_allclose(x[0, :, :2, :], 114 / 255, atol=1e-6)
    np.testing.assert_allclose(x[0, :, 6:, :], 114 / 255, atol=1e-6)


def test_imagenet_crop_normalizes_with_mean_and_std() -> None:
    grey = np.full((40, 60, 3), 128, dtype=np.uint8)
    x = cal.preprocess_image(grey, cal.IMAGENET, (1, 3, 16, 16))
    expected = (128 / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(x[0, :, 5, 5], expected, rtol=1e-5)


def test_bgr_and_nhwc_reorder_channels() -> None:
    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    pixels[..., 0] = 255  # pure red
    spec = cal.Preprocess(channel_order="BGR", layout="NHWC")
    x = cal.preprocess_image(pixels, spec, (1, 4, 4, 3))
    assert x.shape == (1, 4, 4, 3)
    np.testing.assert_allclose(x[0, 0, 0], [0.0, 0.0, 1.0], atol=1e-6)


def test_grayscale_and_rgba_files_become_rgb(tmp_path: Path) -> None:
    _png(tmp_path / "a_gray.png", np.full((6, 6), 51, dtype=np.uint8))
    _png(tmp_path / "b_rgba.png", np.full((6, 6, 4), 102, dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    samples = cal.load_samples(tmp_path, {"images": (1, 3, 6, 6)}, preprocess=cal.PLAIN)
    assert len(samples) == 2
    np.testing.assert_allclose(samples[0]["images"], 0.2, atol=1e-6)
    np.testing.assert_allclose(samples[1]["images"], 0.4, atol=1e-6)


def test_npy_and_npz_are_split_into_samples(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.save(tmp_path / "x.npy", data)
    samples = cal.load_samples(tmp_path / "x.npy", {"x": (1, 3, 4)})
    assert len(samples) == 2
    assert samples[1]["x"].shape == (1, 3, 4)
    np.testing.assert_array_equal(samples[1]["x"][0], data[1])

    np.savez(tmp_path / "xy.npz", a=np.zeros((5, 1, 2)), b=np.ones((5, 1, 3)))
    pairs = cal.load_samples(tmp_path / "xy.npz", {"a": (1, 2), "b": (1, 3)})
    assert len(pairs) == 5
    assert pairs[0]["b"].shape == (1, 3)


def test_array_errors_say_what_was_expected(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", a=np.zeros((5, 7)))
    with pytest.raises(ConfigError, match=r"expected arrays for inputs \['b'\]"):
        cal.load_samples(tmp_path / "bad.npz", {"a": (1, 7), "b": (1, 3)})
    with pytest.raises(ConfigError, match="stacked along a first axis"):
        cal.load_samples(tmp_path / "bad.npz", {"a": (1, 6)})
    with pytest.raises(ConfigError, match="found none"):
        cal.load_samples(tmp_path, {"a": (1, 3, 4, 4)})
    _png(tmp_path / "a.png", np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ConfigError, match="one 4-D image input"):
        cal.load_samples(tmp_path, {"a": (1, 6)})


def test_split_never_evaluates_on_calibration_samples() -> None:
    samples = [{"x": np.full((1,), i, dtype=np.float32)} for i in range(23)]
    split = cal.split_holdout(samples, calibration_count=16)
    assert len(split.calibration) == 16
    assert len(split.evaluation) == 7
    assert not set(split.calibration_indices) & set(split.evaluation_indices)
    calib_values = {float(s["x"][0]) for s in split.calibration}
    eval_values = {float(s["x"][0]) for s in split.evaluation}
    assert not calib_values & eval_values
    # Default: a quarter held out, rounded up; reproducible.
    default = cal.split_holdout(samples)
    assert len(default.evaluation) == 6
    assert default.evaluation_indices == cal.split_holdout(samples).evaluation_indices
    single = cal.split_holdout(samples[:1])
    assert len(single.calibration) == 1
    assert single.evaluation == []


def test_preprocess_spec_is_validated() -> None:
    with pytest.raises(ConfigError, match="pad value"):
        cal.Preprocess(pad_value=300)
    with pytest.raises(ConfigError, match="preset"):
        cal.preset("resnet")
    with pytest.raises(ConfigError, match="3 channels"):
        cal.YOLOV8.resolved((1, 1, 8, 8))
