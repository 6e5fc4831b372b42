"""ONNX int4: a GPTQ checkpoint's linears as onnxruntime ``MatMulNBits`` (com.microsoft), KV-cache layout.

The graph is `export.onnx_kv`'s, made from the dequantized model; every quantized linear's fp32 ``MatMul``
is then replaced by ``MatMulNBits(A, B, scales, zero_points)`` built from the checkpoint's own integers
(no re-quantization):

    B            uint8  [N, K/block, block/2]   4-bit codes q[n, k], two per byte, low nibble first
    scales       fp32   [N · K/block]           GPTQ's fp16 scales, repeated when block < group size
    zero_points  uint8  [N · ceil(K/block / 2)] GPTQ's integer zero points z (v1 stores z − 1; we store z)
    dequantized  W[n, k] = (q[n, k] − z[n, blk(k)]) · s[n, blk(k)],   blk(k) = k // block

(N = out_features, K = in_features.) GPTQ's act-order (``desc_act``) gives each input column a group
``g_idx[k]`` that is not ``k // group_size``. onnxruntime 1.32's optional ``g_idx`` input gave wrong results
on CPU in our test (max |err| 2.6 for outputs of max 3.9) and ran 20× slower, so we reorder instead: the
columns are sorted by ``g_idx`` (``perm = argsort(g_idx)``, which makes every group contiguous because
GPTQ assigns exactly ``group_size`` columns to each group), the codes are stored in that order, and a
``Gather(A, perm, axis=-1)`` reorders the activations. ``accuracy_level=0`` keeps fp32 arithmetic, so the
graph computes the dequantized model; a pruned weight is a code equal to its zero point, i.e. exactly 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.base import ZeroCounts
from export.onnx_kv import initializer_arrays
from prune.errors import SlimpackError
from quant.grid import QuantizedWeight
from quant.spec import QuantSpec

log = logging.getLogger(__name__)

MS_DOMAIN = "com.microsoft"
BITS = 4


def pack_nibbles(values: np.ndarray) -> np.ndarray:
    """``uint8 [..., L]`` (values < 16) → ``uint8 [..., ceil(L/2)]``, element 2i in the low nibble."""
    if values.shape[-1] % 2:
        values = np.concatenate([values, np.zeros(values.shape[:-1] + (1,), np.uint8)], axis=-1)
    return (values[..., 0::2] | (values[..., 1::2] << 4)).astype(np.uint8)


def unpack_nibbles(packed: np.ndarray, n: int) -> np.ndarray:
    """Inverse of `pack_nibbles`: ``uint8 [..., ceil(n/2)]`` → ``uint8 [..., n]``."""
    out = np.empty(packed.shape[:-1] + (2 * packed.shape[-1],), np.uint8)
    out[..., 0::2] = packed & 0x0F
    out[..., 1::2] = packed >> 4
    return out[..., :n]


def block_size_for(group: int) -> int:
    """The largest power of two in [16, 256] that divides ``group`` (MatMulNBits wants a power of two ≥ 16)."""
    for block in (256, 128, 64, 32, 16):
        if group % block == 0:
            return block
    raise SlimpackError(
        f"group size {group} is not a multiple of 16, which onnxruntime's MatMulNBits needs; "
        "quantize with --group-size 32, 64 or 128"
    )


def column_order(g_idx: np.ndarray, group: int) -> np.ndarray | None:
    """The permutation that makes each group's columns contiguous (``None`` when they already are)."""
    g_idx = g_idx.astype(np.int64)
    natural = np.arange(g_idx.size) // group
    if np.array_equal(g_idx, natural):
        return None
    order = np.argsort(g_idx, kind="stable")
    if not np.array_equal(g_idx[order], natural):
        raise SlimpackError(
            "a GPTQ layer's groups do not each hold group_size columns; cannot express it as MatMulNBits"
        )
    return order


@dataclass(frozen=True)
class NBitsLayout:
    """The shape of one linear as ``MatMulNBits``: K, N, block and the column order (from ``g_idx`` only)."""

    K: int
    N: int
    group: int
    block: int
    perm: np.ndarray | None

    @classmethod
    def of(cls, spec: QuantSpec, g_idx: np.ndarray, n_out: int) -> NBitsLayout:
        k_in = g_idx.size
        group = k_in if spec.group_size == -1 else spec.group_size
        return cls(k_in, n_out, group, block_size_for(group), column_order(g_idx, group))

    def shapes(self) -> dict[str, tuple[tuple[int, ...], Any]]:
        """``{input: (shape, numpy dtype)}`` of B, scales and zero_points."""
        blocks = self.K // self.block
        return {
            "B": ((self.N, blocks, self.block // 2), np.uint8),
            "scales": ((self.N * blocks,), np.float32),
            "zero_points": ((self.N * -(-blocks // 2),), np.uint8),
        }


def nbits_tensors(qw: QuantizedWeight, layout: NBitsLayout) -> dict[str, np.ndarray]:
    """MatMulNBits's B, scales and zero_points for one quantized linear."""
    codes = qw.codes.numpy()
    if layout.perm is not None:
        codes = codes[:, layout.perm]
    blocks = layout.K // layout.block
    block_group = (np.arange(blocks) * layout.block) // layout.group  # each block lies inside one (sorted) group
    zeros = qw.zeros.numpy()[:, block_group]
    if zeros.min() < 0 or zeros.max() > 15:
        raise SlimpackError(f"zero points outside 0..15 ({zeros.min()}..{zeros.max()}) cannot be stored as 4-bit")
    return {
        "B": pack_nibbles(codes).reshape(layout.N, blocks, layout.block // 2),
        "scales": qw.scales.numpy()[:, block_group].astype(np.float32).reshape(-1),
        "zero_points": pack_nibbles(zeros.astype(np.uint8)).reshape(-1),
    }


def swap_matmul(
    proto: Any, module: str, weight: str | None, layout: NBitsLayout, accuracy_level: int
) -> dict[str, Any]:
    """Replace ``module``'s fp32 ``MatMul`` (reading initializer ``weight``) with ``MatMulNBits``, and drop
    ``weight``. The B / scales / zero_points initializers are the caller's to add (inline or external); the
    column order (``perm``, when act-order needs one) is added inline. Returns where the module's tensors live."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    users = [n for n in graph.node if n.op_type == "MatMul" and len(n.input) == 2 and n.input[1] == weight]
    if weight is None or len(users) != 1:
        raise SlimpackError(f"cannot find the MatMul of {module} in the exported graph; please report this")
    node = users[0]
    names = {k: f"{module}.{k}" for k in ("B", "scales", "zero_points", "perm")}
    index = list(graph.node).index(node)
    graph.node.remove(node)
    activation = node.input[0]
    if layout.perm is not None:
        graph.initializer.append(numpy_helper.from_array(layout.perm.astype(np.int64), names["perm"]))
        reordered = f"{module}/reordered_input"
        graph.node.insert(index, helper.make_node("Gather", [activation, names["perm"]], [reordered], axis=-1))
        activation, index = reordered, index + 1
    graph.node.insert(
        index,
        helper.make_node(
            "MatMulNBits",
            [activation, names["B"], names["scales"], names["zero_points"]],
            list(node.output),
            domain=MS_DOMAIN,
            K=layout.K,
            N=layout.N,
            bits=BITS,
            block_size=layout.block,
            accuracy_level=accuracy_level,
        ),
    )
    graph.initializer.remove(next(t for t in graph.initializer if t.name == weight))
    if not any(o.domain == MS_DOMAIN for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return {"B": names["B"], "scales": names["scales"], "zero_points": names["zero_points"], "block": layout.block,
            "K": layout.K}  # fmt: skip


def replace_matmuls(
    proto: Any, weights: dict[str, str], quantized: dict[str, QuantizedWeight], accuracy_level: int
) -> dict[str, dict[str, Any]]:
    """Swap each quantized linear's ``MatMul`` for ``MatMulNBits`` with its tensors inline; returns where each
    module's tensors live."""
    from onnx import numpy_helper

    placed: dict[str, dict[str, Any]] = {}
    for module, qw in quantized.items():
        layout = NBitsLayout.of(qw.spec, qw.g_idx.numpy(), qw.codes.shape[0])
        placed[module] = swap_matmul(proto, module, weights.get(module), layout, accuracy_level)
        arrays = nbits_tensors(qw, layout)
        proto.graph.initializer.extend(numpy_helper.from_array(arrays[k], placed[module][k]) for k in arrays)
    return placed


def count_int4_zeros(path: Path, placed: dict[str, dict[str, Any]]) -> ZeroCounts:
    """Weights that dequantize to exactly 0 (code == zero point), read back from the ONNX file."""
    arrays = initializer_arrays(path)
    counts: ZeroCounts = {}
    for module, where in placed.items():
        b = np.asarray(arrays[where["B"]]())  # [N, blocks, block/2]
        n_out, blocks, _ = b.shape
        codes = unpack_nibbles(b, where["block"])  # [N, blocks, block]
        zp = unpack_nibbles(np.asarray(arrays[where["zero_points"]]()).reshape(n_out, -1), blocks)
        counts[module] = {"zeros": int((codes == zp[:, :, None]).sum()), "numel": int(codes.size)}
    return counts
