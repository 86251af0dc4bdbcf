"""Layout: how each ONNX value is laid out in its TFLite tensor, and the algebra of changing it.

ONNX image models are NCHW; TFLite's convolutions, pools and resizes are NHWC. Instead of
wrapping each such op in a pair of transposes, every ONNX value carries a *permutation*
``perm`` with ``tflite_tensor = numpy.transpose(onnx_value, perm)``:

* image inputs (4-D float inputs) enter as NHWC, ``perm = (0, 2, 3, 1)``; other inputs keep
  their layout (the identity permutation) — ``[N, T]`` audio, ``[N, F]`` tabular, 3-D
  sequences;
* layout-indifferent ops (element-wise arithmetic, activations) keep the perm of their input;
* axis-aware ops (Concat, Split, Slice, Reduce*, Softmax, Gather, Pad, Squeeze, Unsqueeze)
  keep it too and remap their axes through it (:func:`tflite_axis`);
* ``Transpose`` emits nothing: it composes its permutation into the perm of its output;
* ops that need a particular layout (Conv/Pool/Resize: NHWC; Reshape/Flatten/MatMul: the
  ONNX order) ask for it, and the lowering inserts one TRANSPOSE at that point — or a
  RESHAPE, or nothing, when the two layouts have the same memory order
  (:func:`same_memory_order`, e.g. NCHW and NHWC of a ``1×C×1×1`` tensor);
* model outputs are always returned in the ONNX layout and shape, so a report can compare
  them with onnxruntime element by element. This includes 4-D image outputs (a segmentation
  mask comes back NCHW, at the price of one TRANSPOSE at the end).
"""

from __future__ import annotations

from collections.abc import Sequence

from edgeops.errors import ConversionError

Perm = tuple[int, ...]

#: NCHW → NHWC: TFLite dim k holds ONNX dim NHWC[k].
NHWC: Perm = (0, 2, 3, 1)


def identity(rank: int) -> Perm:
    """The permutation that leaves a rank-``rank`` tensor as it is."""
    return tuple(range(rank))


def channels_last(rank: int) -> Perm:
    """N, spatial..., C for an ONNX N, C, spatial... tensor of any rank ≥ 3."""
    return (0, *range(2, rank), 1)


def tflite_shape(onnx_shape: Sequence[int], perm: Perm) -> tuple[int, ...]:
    """The TFLite tensor shape of an ONNX value of ``onnx_shape`` laid out by ``perm``."""
    if len(onnx_shape) != len(perm):
        # A rank that disagrees with the layout (found by fuzzing: IndexError).
        raise ConversionError(f"expected a rank-{len(perm)} value, got shape {list(onnx_shape)}")
    return tuple(int(onnx_shape[a]) for a in perm)


def tflite_axis(onnx_axis: int, perm: Perm) -> int:
    """Where ONNX axis ``onnx_axis`` (negative allowed) lives in the TFLite tensor."""
    rank = len(perm)
    axis = onnx_axis + rank if onnx_axis < 0 else onnx_axis
    if not 0 <= axis < rank:
        raise ConversionError(f"expected an axis in [{-rank}, {rank - 1}], got {onnx_axis}")
    return perm.index(axis)


def relative(current: Perm, wanted: Perm) -> Perm:
    """The TRANSPOSE permutation turning a tensor laid out by ``current`` into ``wanted``."""
    return tuple(current.index(a) for a in wanted)


def same_memory_order(onnx_shape: Sequence[int], a: Perm, b: Perm) -> bool:
    """True when layouts ``a`` and ``b`` store the elements in the same order.

    That holds when the dimensions larger than 1 appear in the same order in both; moving
    size-1 dimensions around is then a RESHAPE, not a TRANSPOSE.
    """
    big_a = [axis for axis in a if onnx_shape[axis] != 1]
    big_b = [axis for axis in b if onnx_shape[axis] != 1]
    return big_a == big_b


def drop_axes(perm: Perm, removed: Sequence[int]) -> Perm:
    """The perm of a value after the ONNX axes ``removed`` are reduced away (renumbered)."""
    gone = sorted(removed)
    return tuple(a - sum(1 for r in gone if r < a) for a in perm if a not in gone)


def insert_axes(perm: Perm, inserted: Sequence[int]) -> Perm:
    """The perm after size-1 ONNX axes are inserted at output positions ``inserted``.

    Existing axes keep their relative TFLite order; the new axes go last in TFLite order
    (size 1, so where they sit does not change the memory order).
    """
    new_rank = len(perm) + len(inserted)
    kept = [a for a in range(new_rank) if a not in set(inserted)]
    return tuple(kept[a] for a in perm) + tuple(sorted(inserted))


def compose_transpose(perm_in: Perm, onnx_perm: Sequence[int]) -> Perm:
    """The layout of ``Transpose(x, onnx_perm)`` that makes the transpose free.

    With ``y = transpose(x, q)`` and ``x`` laid out by ``p``, laying ``y`` out by
    ``q⁻¹ ∘ p`` gives the TFLite tensor of ``y`` the same data as that of ``x``.
    """
    inverse = [0] * len(onnx_perm)
    for position, axis in enumerate(onnx_perm):
        inverse[axis] = position
    return tuple(inverse[a] for a in perm_in)


def _reshape_groups(
    in_shape: Sequence[int], out_shape: Sequence[int]
) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of adjacent non-1 input axes with the runs of output axes they become."""
    big_in = [a for a, d in enumerate(in_shape) if d != 1]
    big_out = [a for a, d in enumerate(out_shape) if d != 1]
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(big_in) and j < len(big_out):
        gi, gj = [big_in[i]], [big_out[j]]
        pa, pb = in_shape[big_in[i]], out_shape[big_out[j]]
        i, j = i + 1, j + 1
        while pa != pb:
            if pa < pb and i < len(big_in):
                gi.append(big_in[i])
                pa *= in_shape[big_in[i]]
                i += 1
            elif pb < pa and j < len(big_out):
                gj.append(big_out[j])
                pb *= out_shape[big_out[j]]
                j += 1
            else:
                return None
        groups.append((gi, gj))
    if i != len(big_in) or j != len(big_out):
        return None
    return groups


def reshape_perm(in_shape: Sequence[int], out_shape: Sequence[int], perm_in: Perm) -> Perm | None:
    """A layout for ``Reshape(x)`` that makes the reshape a plain RESHAPE of x's tensor.

    A reshape splits and merges groups of adjacent dimensions. When, in ``x``'s TFLite
    tensor, the dimensions of each group sit next to each other and in ONNX order, the
    TFLite tensor can be reshaped group by group without moving data: the output is then
    laid out with the groups in the order they have in ``x``'s tensor. Returns that layout,
    or None when the groups are split up (the reshape needs the ONNX order).
    Size-1 dimensions do not affect memory order and are ignored (placed first).
    """
    groups = _reshape_groups(in_shape, out_shape)
    if groups is None:
        return None
    held = [a for a in perm_in if in_shape[a] != 1]
    order: list[int] = []
    position = 0
    while position < len(held):
        group = next((g for g in groups if g[0][0] == held[position]), None)
        if group is None or held[position : position + len(group[0])] != group[0]:
            return None
        order.extend(group[1])
        position += len(group[0])
    ones = [a for a, d in enumerate(out_shape) if d == 1]
    if order == sorted(order):
        return identity(len(out_shape))
    return (*ones, *order)


def regroup_perm(in_shape: Sequence[int], out_shape: Sequence[int], perm_in: Perm) -> Perm | None:
    """The input layout closest to ``perm_in`` for which :func:`reshape_perm` succeeds.

    Each group's axes are gathered, in ONNX order, where the group's first axis sits in
    ``perm_in``; other groups keep their places. For a channel shuffle held NHWC
    (``N×H×W×g×C/g`` read as ``N×C/g×g×H×W``) that is one swap of the last two axes,
    after which the RESHAPE back to ``N×C×H×W`` lands in NHWC again.
    """
    groups = _reshape_groups(in_shape, out_shape)
    if groups is None:
        return None
    held = [a for a in perm_in if in_shape[a] != 1]
    placed = sorted(groups, key=lambda g: min(held.index(a) for a in g[0]))
    ones = tuple(a for a, d in enumerate(in_shape) if d == 1)
    return (*ones, *(a for g in placed for a in g[0]))


__all__ = [
    "NHWC",
    "Perm",
    "channels_last",
    "compose_transpose",
    "drop_axes",
    "identity",
    "insert_axes",
    "regroup_perm",
    "relative",
    "reshape_perm",
    "same_memory_order",
    "tflite_axis",
    "tflite_shape",
]
