"""slimpack's CPU sparse kernels (`runtime_bench.kernels`) against a dense matmul of the format's own decode
(`export.sparse_format.decode`), on every ISA path this CPU runs: odd sizes, empty and full rows, fully empty and
fully dense weights, 2:4, every values kind, batch 1–8 (the GEMV) and prefill sizes (the tiled GEMM)."""

from __future__ import annotations

import pytest
import torch

from export.sparse_format import GPTQGrid, decode, encode
from prune.errors import SlimpackError

kernels = pytest.importorskip("runtime_bench.kernels")
try:
    PATHS = kernels.isas()
except SlimpackError as err:  # no compiler / ninja / headers: the one line says which
    pytest.skip(f"the sparse kernels cannot be built here: {err}", allow_module_level=True)

KINDS = ("fp32", "bf16", "fp16", "int8", "gptq")


def sparse_weight(out: int, inp: int, density: float, seed: int, layout: str = "bitmask") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g)
    if layout == "2:4":  # keep 2 of every 4 (some groups keep fewer: explicit zeros in the values)
        keep = torch.rand(out, inp // 4, 4, generator=g).argsort(-1).argsort(-1) < 2
        keep &= torch.rand(out, inp // 4, 4, generator=g) < 0.9
        return w * keep.view(out, inp)
    return w * (torch.rand(out, inp, generator=g) < density)


def gptq_grid(w: torch.Tensor, group_size: int, act_order: bool, seed: int) -> tuple[torch.Tensor, GPTQGrid]:
    """A GPTQ grid whose codes are zero exactly where ``w`` is (pruned weights sit at the zero point)."""
    g = torch.Generator().manual_seed(seed)
    out, inp = w.shape
    groups = -(-inp // group_size)
    g_idx = (torch.randperm(inp, generator=g) if act_order else torch.arange(inp)) // group_size
    scales = (torch.rand(out, groups, generator=g) * 0.1 + 0.01).half().float()
    zeros = torch.randint(0, 16, (out, groups), generator=g)
    codes = torch.randint(0, 16, (out, inp), generator=g)
    z = zeros.gather(1, g_idx.expand(out, inp))
    codes = torch.where(w != 0, codes, z)
    dense = (codes - z).float() * scales.gather(1, g_idx.expand(out, inp))
    return dense, GPTQGrid(codes.to(torch.uint8), scales, zeros, g_idx.int(), group_size)


def packed_of(w: torch.Tensor, values: str, layout: str = "auto", group_size: int = 32, act_order: bool = False,
              column_index: bool | None = False):  # fmt: skip
    """(PackedWeight, the dense fp32 weight decode gives) for a float weight ``w``."""
    grid = None
    if values == "gptq":
        w, grid = gptq_grid(w, group_size, act_order, seed=w.shape[0] * 1000 + w.shape[1])
    elif values in ("bf16", "fp16"):
        w = w.to(torch.bfloat16 if values == "bf16" else torch.float16)
    spec, tensors = encode(w, values, layout, grid)
    packed = kernels.PackedWeight.from_stored(spec, tensors, column_index if spec.layout == "bitmask" and values != "gptq" else None)
    return packed, decode("w", spec, tensors).float()


def index_modes(values: str) -> tuple[bool, ...]:
    """The GEMVs a weight of ``values`` can take: the mask expand, and the column index (not gptq)."""
    return (False,) if values == "gptq" else (False, True)


def assert_matches(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    """``y`` equals ``x wᵀ (+ bias)`` up to fp32 summation order: the tolerance is 1e-5 of Σ|x||w| (one missing or
    misplaced product is far larger)."""
    ref = x.double() @ w.double().T + (0 if bias is None else bias.double())
    scale = float((x.double().abs() @ w.double().abs().T).max()) + 1e-30
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5 * scale)


def batch(n: int, inp: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, inp, generator=torch.Generator().manual_seed(seed))


def test_isas_lists_the_portable_path_and_avx2_on_x86() -> None:
    assert PATHS[-1] == "portable" and set(PATHS) <= {"avx512", "avx2", "portable"}
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert "avx2" in PATHS


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("values", KINDS)
def test_odd_sizes_every_batch(isa: str, values: str) -> None:
    for out in (1, 3, 37):
        for inp in (1, 7, 13, 100, 129):
            for indexed in index_modes(values):
                weight = sparse_weight(out, inp, 0.1 if indexed else 0.5, seed=out * 7 + inp)
                packed, w = packed_of(weight, values, group_size=32, column_index=indexed)
                assert bool(packed.index.numel()) == indexed
                for n in (1, 2, 3, 4, 5, 8, 20):
                    x = batch(n, inp, seed=n)
                    assert_matches(x, w, kernels.linear(x, packed, isa=isa))


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("values", KINDS)
def test_two_four(isa: str, values: str) -> None:
    for out, inp in ((1, 8), (5, 24), (37, 136)):
        packed, w = packed_of(sparse_weight(out, inp, 0.5, seed=inp, layout="2:4"), values, layout="2:4", group_size=8)
        assert packed.layout == "2:4"
        for n in (1, 2, 3, 8, 20):
            x = batch(n, inp, seed=n)
            assert_matches(x, w, kernels.linear(x, packed, isa=isa))


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("values", KINDS)
def test_empty_full_rows_and_whole_matrices(isa: str, values: str) -> None:
    out, inp = 9, 70
    w = sparse_weight(out, inp, 0.4, seed=3)
    w[0] = 0  # empty rows
    w[4] = 0
    w[2] = torch.rand(inp) + 1  # full rows
    w[out - 1] = torch.rand(inp) + 1
    for weight in (w, torch.zeros(out, inp), torch.rand(out, inp) + 0.5):
        for indexed in index_modes(values):
            packed, dense = packed_of(weight, values, layout="bitmask", group_size=16, column_index=indexed)
            for n in (1, 4, 8, 33):
                x = batch(n, inp, seed=n)
                assert_matches(x, dense, kernels.linear(x, packed, isa=isa))


def test_the_column_index_is_built_for_sparse_weights_only() -> None:
    for density, built in ((0.05, True), (0.5, False)):
        spec, tensors = encode(sparse_weight(40, 300, density, seed=1), "fp32", "bitmask")
        packed = kernels.PackedWeight.from_stored(spec, tensors)
        assert bool(packed.index.numel()) == built and packed.nbytes == sum(t.numel() * t.element_size() for t in tensors.values())
        if built:
            nnz = int(tensors["row_offsets"][-1])
            cols = torch.nonzero(decode("w", spec, tensors))[:, 1]
            assert torch.equal(packed.index[:nnz].long() & 0xFFFF, cols) and packed.gemv_bytes == packed.nbytes - 40 * 38 + 2 * (nnz + 16)
    spec, tensors = encode(sparse_weight(4, 16, 0.5, seed=2, layout="2:4"), "fp32", "2:4")
    with pytest.raises(SlimpackError, match="column index"):
        kernels.PackedWeight.from_stored(spec, tensors, column_index=True)


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("group_size", [32, 64, 128, 12])
def test_gptq_groups_and_act_order(isa: str, group_size: int, act_order: bool) -> None:
    """Group boundaries every group_size stored columns (12: not a multiple of 8, a slower path); act-order
    weights multiply x[:, perm]."""
    for out, inp, layout in ((7, 300, "bitmask"), (6, 256, "2:4")):
        if layout == "2:4" and act_order:  # permuted columns are not 2:4 (encode refuses it)
            continue
        weight = sparse_weight(out, inp, 0.6, seed=group_size, layout=layout)
        packed, w = packed_of(weight, "gptq", layout=layout, group_size=group_size, act_order=act_order)
        assert (packed.perm is not None) == act_order
        for n in (1, 3, 8, 24):
            x = batch(n, inp, seed=n)
            assert_matches(x, w, kernels.linear(x, packed, isa=isa))


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("values", KINDS)
def test_decompress_is_decode_bit_for_bit(isa: str, values: str) -> None:
    for out, inp, layout in ((11, 37, "bitmask"), (5, 64, "2:4")):
        packed, w = packed_of(sparse_weight(out, inp, 0.5, seed=inp, layout=layout), values, layout=layout,
                              group_size=16, act_order=values == "gptq" and layout == "bitmask")  # fmt: skip
        assert torch.equal(kernels.decompress(packed, isa=isa), w)


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("values", ["fp32", "bf16", "fp16", "int8"])
def test_dense_layout(isa: str, values: str) -> None:
    for out, inp in ((3, 1), (17, 13), (40, 64)):
        weight = torch.randn(out, inp).to(torch.bfloat16 if values == "bf16" else torch.float16 if values == "fp16" else torch.float32)
        packed = kernels.PackedWeight.dense(weight, values if values == "int8" else None)
        assert packed.layout == "dense" and packed.values == values
        w = packed.scales[:, None] * packed.data[: out * inp].view(out, inp).float() if values == "int8" else weight.float()
        if values == "int8":
            assert (w - weight.float()).abs().max() <= packed.scales.max() / 2 + 1e-6
        assert torch.equal(kernels.decompress(packed, isa=isa), w)
        for n in (1, 2, 5, 8, 20):
            x = batch(n, inp, seed=n)
            assert_matches(x, w, kernels.linear(x, packed, isa=isa))


@pytest.mark.parametrize("isa", PATHS)
def test_many_rows_on_two_threads_prefill_bias_and_3d_x(isa: str) -> None:
    """Several row chunks of the GEMVs and of both prefill paths; rows of 300+ nonzeros (the column index works in
    blocks of 256)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    out, inp = 1000, 1040
    try:
        for values, indexed in (("fp32", False), ("int8", False), ("bf16", True), ("int8", True)):
            packed, w = packed_of(sparse_weight(out, inp, 0.3, seed=5), values, column_index=indexed)
            bias = torch.randn(out)
            for n in (1, 3, 8, 128):
                x = batch(n, inp, seed=n)
                for path in ("auto", "spmm", "gemm") if n > 8 else ("auto",):
                    assert_matches(x, w, kernels.linear(x, packed, bias, isa=isa, prefill=path), bias)
            x3 = torch.randn(2, 3, inp)
            y3 = kernels.linear(x3, packed, bias, isa=isa)
            assert y3.shape == (2, 3, out)
            assert_matches(x3.view(6, inp), w, y3.view(6, out), bias)
            assert kernels.linear(torch.randn(0, inp), packed, isa=isa).shape == (0, out)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("values", KINDS)
def test_both_prefill_paths_over_panels_strips_and_tiles(isa: str, values: str) -> None:
    """A prefill (N > 8) takes the SpMM up to `spmm_density` nonzeros (on the AVX2 and AVX-512 paths; the portable
    path always takes the GEMM) and the GEMM above it. Each path, forced, on a sparse and a dense weight, for batch
    sizes across its blocks (SpMM panels of 8–64 rows, GEMM strips of 1–6) and a width across its column tiles
    (SpMM K-tiles of 128, GEMM passes of 2048; 2100 is not a multiple of 8); ``auto`` is exactly the path it picks
    (each path's sums run in a fixed order, whatever the threads)."""
    out, inp = 21, 2100
    limit = kernels.spmm_density()
    assert 0.3 < limit < 0.8
    for density in (0.3, 0.8, 1.0):
        packed, w = packed_of(sparse_weight(out, inp, density, seed=9), values, group_size=64)
        picks = "spmm" if density < limit and isa != "portable" else "gemm"
        for n in (9, 32, 40, 48, 56, 64, 65, 133):
            x = batch(n, inp, seed=n)
            y = {path: kernels.linear(x, packed, isa=isa, prefill=path) for path in ("auto", "spmm", "gemm")}
            for path in ("spmm", "gemm"):
                assert_matches(x, w, y[path])
            assert torch.equal(y["auto"], y[picks]), (density, n, picks)
    with pytest.raises(SlimpackError, match="unknown prefill path"):
        kernels.linear(batch(9, inp), packed, prefill="blas")
    empty = kernels.PackedWeight.from_stored(*encode(torch.zeros(3, 0), "fp32", "bitmask"))
    assert torch.equal(kernels.linear(batch(9, 0), empty, isa=isa), torch.zeros(9, 3))


def test_bad_inputs_are_one_line_errors() -> None:
    spec, tensors = encode(sparse_weight(6, 20, 0.5, seed=1), "fp32", "bitmask")
    packed = kernels.PackedWeight.from_stored(spec, tensors)
    for x in (torch.randn(2, 21), torch.randn(2, 20).double(), torch.randn(2, 20).half()):
        with pytest.raises(SlimpackError, match="fp32 CPU x"):
            kernels.linear(x, packed)
    with pytest.raises(SlimpackError, match="bias"):
        kernels.linear(torch.randn(1, 20), packed, torch.randn(5))
    with pytest.raises(SlimpackError, match="unknown kernel ISA"):
        kernels.linear(torch.randn(1, 20), packed, isa="sse9")
    if "avx512" not in PATHS:
        with pytest.raises(SlimpackError, match="cannot run the avx512"):
            kernels.linear(torch.randn(1, 20), packed, isa="avx512")
    damaged = {
        "row_offsets": tensors["row_offsets"] + torch.cat([torch.zeros(5, dtype=torch.int64), torch.ones(2, dtype=torch.int64)]),
        "values": tensors["values"][:-20],  # truncated
        "mask": tensors["mask"].to(torch.int16),  # wrong dtype
    }
    for suffix, bad in damaged.items():
        with pytest.raises(SlimpackError, match="damaged") as err:
            kernels.PackedWeight.from_stored(spec, {**tensors, suffix: bad})
        assert "\n" not in str(err.value)
    swapped = tensors["mask"].clone()
    swapped[2, 0] ^= 1  # a bit the offsets do not count
    with pytest.raises(SlimpackError, match="row_offsets do not count"):
        kernels.PackedWeight.from_stored(spec, {**tensors, "mask": swapped})
    spec24, t24 = encode(sparse_weight(4, 16, 0.5, seed=2, layout="2:4"), "fp32", "2:4")
    positions = t24["positions"].clone()
    positions[1, 1] = 0  # a group whose two positions are equal
    with pytest.raises(SlimpackError, match="not ascending"):
        kernels.PackedWeight.from_stored(spec24, {**t24, "positions": positions})
    with pytest.raises(SlimpackError, match="2-D fp32/bf16/fp16"):
        kernels.PackedWeight.dense(torch.zeros(3, 4, dtype=torch.int32))


def test_a_missing_compiler_is_one_line(tmp_path, monkeypatch) -> None:
    """A build that cannot start says what is missing and the fix, in one line (the built kernels stay loaded)."""
    monkeypatch.setattr(kernels, "build_dir", lambda: tmp_path / "kernels")
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    with pytest.raises(SlimpackError, match="no-such-compiler-here not found.*install g\\+\\+.*scripts/setup.sh") as err:
        kernels.build()
    assert "\n" not in str(err.value)


def test_a_build_error_is_one_line(tmp_path, monkeypatch) -> None:
    csrc = tmp_path / "csrc"
    csrc.mkdir()
    for name in (*kernels.SOURCES, "kernels.h"):
        (csrc / name).write_text("" if name != "ops.cpp" else '#error "broken on purpose"\n')
    monkeypatch.setattr(kernels, "CSRC", csrc)
    monkeypatch.setattr(kernels, "build_dir", lambda: tmp_path / "build")
    with pytest.raises(SlimpackError, match="failed to build.*broken on purpose") as err:
        kernels.build()
    assert "\n" not in str(err.value)


def test_a_lock_left_by_a_killed_build_does_not_block(tmp_path, monkeypatch) -> None:
    """torch's builder waits while its ``lock`` file exists; one left by a killed build is removed under our flock."""
    import shutil

    folder = tmp_path / "kernels"
    folder.mkdir()
    for name in (f"{kernels.NAME}.so", f"{kernels.NAME}.stamp"):
        shutil.copy(kernels.build_dir() / name, folder / name)
    (folder / "lock").write_text("")
    monkeypatch.setattr(kernels, "build_dir", lambda: folder)
    assert kernels.build() == folder and not (folder / "lock").exists()


def test_slimpack_kernels_builds_and_names_the_isa_paths(capsys: pytest.CaptureFixture[str]) -> None:
    from runtime_bench.cli import main

    assert main(["kernels"]) == 0
    out = capsys.readouterr().out
    assert "ISA paths: " in out and "portable" in out
