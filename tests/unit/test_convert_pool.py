"""Conformance: MaxPool (incl. ceil_mode), AveragePool (count_include_pad), global pools."""

from __future__ import annotations

from typing import Any

import pytest
from convert_helpers import check_op


@pytest.mark.parametrize(
    ("size", "attrs"),
    [
        (8, {"kernel_shape": [2, 2], "strides": [2, 2]}),
        (9, {"kernel_shape": [3, 3], "strides": [2, 2]}),
        (9, {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
        (8, {"kernel_shape": [5, 5], "pads": [2, 2, 2, 2]}),  # YOLOv8 SPPF
        (8, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        (10, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
        (7, {"kernel_shape": [2, 3], "strides": [1, 2], "auto_pad": "SAME_UPPER"}),
    ],
)
def test_max_pool(size: int, attrs: dict[str, Any]) -> None:
    comparison = check_op("MaxPool", {"x": [1, 3, size, size]}, attrs=attrs)
    assert comparison.count("MAX_POOL_2D") == 1


@pytest.mark.parametrize("include_pad", [0, 1])
@pytest.mark.parametrize(
    ("size", "attrs"),
    [
        (8, {"kernel_shape": [2, 2], "strides": [2, 2]}),
        (8, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
        (9, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        (8, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        (9, {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
        (10, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 0], "ceil_mode": 1}),
    ],
)
def test_average_pool(size: int, attrs: dict[str, Any], include_pad: int) -> None:
    comparison = check_op(
        "AveragePool", {"x": [1, 2, size, size]}, attrs={**attrs, "count_include_pad": include_pad}
    )
    assert comparison.count("AVERAGE_POOL_2D") == 1


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", [[1, 8, 7, 5], [2, 3, 1, 1], [1, 4, 6]])
def test_global_pool(op: str, shape: list[int]) -> None:
    check_op(op, {"x": shape})


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [3], "strides": [2]},
        {"kernel_shape": [3], "strides": [2], "pads": [1, 1]},
        {"kernel_shape": [2], "ceil_mode": 1, "strides": [2]},
    ],
)
def test_pool_1d(op: str, attrs: dict[str, Any]) -> None:
    check_op(op, {"x": [2, 4, 11]}, attrs=attrs)
