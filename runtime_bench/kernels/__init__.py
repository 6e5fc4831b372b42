"""slimpack's own CPU sparse kernels: ``y = x Wᵀ`` with ``W`` in the sparse format (`export.sparse_format`).

- decode (≤ 8 rows of ``x``): a GEMV that reads the packed bytes once for all rows, parallel over output rows in
  torch's thread pool (``torch.set_num_threads``);
- prefill (> 8 rows): up to a density of ``spmm_density`` (0.55) an SpMM that multiplies the nonzeros only (each
  weight row's nonzeros listed once, multiplied with x transposed in panels of 64 rows); denser, a GEMM of 16
  decompressed weight rows at a time with slimpack's 6 × 16 micro-kernel. The portable path takes tiles of
  decompressed rows through torch's BLAS at every density (its plain-C++ SpMM runs only when asked for);
- ISA paths chosen at run time: ``avx512``, ``avx2`` (AVX2 + FMA + F16C), ``portable`` (plain C++); ``isa="auto"``
  takes the first of them that this CPU runs (`isas`).

The C++ sources (``csrc/``) are compiled once with torch's extension builder into ``<venv>/share/slimpack-kernels``
(`build`, ``python -m runtime_bench.kernels``; ``scripts/setup.sh`` runs it); `load` imports the compiled module
and builds it first when its sources changed. Layouts: ``bitmask`` and ``2:4`` as stored by the format, and
``dense`` (no mask: the full row-major matrix, for a dense head kept in bf16/fp16).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import logging
import os
import shutil
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch

from export.sparse_format import PAD_BYTES, VALUE_DTYPES, Layout
from prune.errors import SlimpackError

log = logging.getLogger(__name__)

NAME = "slimpack_sparse_kernels"
CSRC = Path(__file__).parent / "csrc"
SOURCES = ("ops.cpp", "portable.cpp", "avx2.cpp", "avx512.cpp")
CFLAGS = ("-O3", "-fopenmp")  # at::parallel_for is OpenMP in torch's CPU build; it resolves to torch's libgomp
LDFLAGS = ("-fopenmp",)
LAYOUTS = {"bitmask": 0, "2:4": 1, "dense": 2}
KINDS = {"fp32": 0, "bf16": 1, "fp16": 2, "int8": 3, "gptq": 4}
ISAS = ("auto", "avx512", "avx2", "portable")
PREFILLS = {"auto": 0, "spmm": 1, "gemm": 2}  # the prefill path of `linear` (ops.cpp's numbers)
# At most this fraction of nonzeros, a bitmask weight of fp32/bf16/fp16/int8 values also gets a column index (2
# bytes per nonzero) that its GEMV reads instead of the mask: expanding mask bytes costs a few cycles per 8
# columns however empty they are, the index costs per nonzero (scripts/kernel_bench.py measures both).
INDEX_DENSITY = 0.2
SETUP = "bash scripts/setup.sh"


def build_dir() -> Path:
    return Path(sys.prefix) / "share" / "slimpack-kernels"


def _stamp() -> str:
    """What the compiled module was built from: the sources, the flags, torch and Python."""
    digest = hashlib.sha256()
    for name in (*SOURCES, "kernels.h"):
        digest.update((CSRC / name).read_bytes())
    digest.update(repr((CFLAGS, LDFLAGS, torch.__version__, sys.version_info[:2])).encode())
    return digest.hexdigest()


def _missing() -> tuple[str, str] | None:
    """The first tool the build needs and this machine lacks, and how to get it; None when nothing is missing."""
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        return f"the C++ compiler {cxx} not found", "install g++ (apt-get install g++)"
    if _ninja_dir() is None:
        return "ninja not found", f"install it ({sys.executable} -m pip install ninja)"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "Python.h not found", "install the Python headers (apt-get install python3-dev)"
    return None


def _ninja_dir() -> str | None:
    for folder in (str(Path(sys.executable).parent), *os.environ.get("PATH", "").split(os.pathsep)):
        if folder and shutil.which("ninja", path=folder):
            return folder
    return None


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """One build at a time across processes. An flock dies with its process, unlike torch's own ``lock`` file,
    which a build killed half-way leaves behind (every later build would wait on it forever): under the flock
    no build of ours is running, so a ``lock`` found there is stale and removed."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "build.flock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            (folder / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _import(folder: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(NAME, folder / f"{NAME}.so")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build() -> Path:
    """Compile the kernels into `build_dir` (a no-op when up to date); the folder. One line if it cannot."""
    folder = build_dir()
    stamp = _stamp()
    try:
        return _build(folder, stamp)
    except OSError as err:  # the folder cannot be made or written
        raise SlimpackError(f"the sparse kernels cannot be built in {folder} ({err}); run `{SETUP}` as the owner of .venv") from None


def _build(folder: Path, stamp: str) -> Path:
    with _build_lock(folder):
        stamp_file = folder / f"{NAME}.stamp"
        if (folder / f"{NAME}.so").is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp:
            return folder
        missing = _missing()
        if missing:
            raise SlimpackError(f"the sparse kernels are not built ({missing[0]}); {missing[1]} and run `{SETUP}`")
        from torch.utils import cpp_extension

        log.info("building the sparse kernels in %s (about a minute)", folder)
        path = os.environ.get("PATH", "")
        os.environ["PATH"] = os.pathsep.join([_ninja_dir() or "", path])  # torch runs `ninja` from PATH
        try:
            cpp_extension.load(
                NAME, [str(CSRC / name) for name in SOURCES], extra_cflags=list(CFLAGS), extra_ldflags=list(LDFLAGS),
                build_directory=str(folder), verbose=False, is_python_module=True,
            )  # fmt: skip
        except (RuntimeError, OSError, ImportError) as err:
            lines = [line.strip() for line in str(err).splitlines() if line.strip()] or ["?"]
            first = next((line for line in lines if " error: " in f" {line} "), lines[-1])  # the compiler's first error
            raise SlimpackError(
                f"the sparse kernels failed to build in {folder} ({first[:200]}); fix the compiler setup and run `{SETUP}`"
            ) from None
        finally:
            os.environ["PATH"] = path
        stamp_file.write_text(stamp)
    return folder


@functools.cache
def load() -> ModuleType:
    """The compiled kernels (built first when missing or out of date); one line if they cannot be."""
    folder = build()
    try:
        return _import(folder)
    except ImportError as err:
        raise SlimpackError(f"the sparse kernels in {folder} do not load ({err}); run `{SETUP}` again") from None


def spmm_density() -> float:
    """The density (nonzeros / weights) up to which a prefill takes the SpMM (`linear`)."""
    return float(load().spmm_density)


def isas() -> list[str]:
    """The ISA paths this CPU runs, best first (a subset of avx512, avx2, portable)."""
    return list(_isas())


@functools.cache
def _isas() -> tuple[str, ...]:
    return tuple(load().isas())


def _check_isa(isa: str) -> None:
    if isa not in ISAS:
        raise SlimpackError(f"unknown kernel ISA {isa!r}; use one of {', '.join(ISAS)}")
    if isa != "auto" and isa not in _isas():
        raise SlimpackError(f"this CPU cannot run the {isa} kernels; it runs {', '.join(isas())} (or auto)")


_EMPTY = torch.empty(0)


@dataclass(frozen=True, eq=False)
class PackedWeight:
    """One linear's weight ``W [out, in]`` as the kernels read it (`from_stored`: the sparse format's tensors;
    `dense`: a plain matrix). ``data`` is the flat values tensor with its padding; ``mask`` the bitmask (or the
    2:4 positions); ``perm`` (gptq act-order): stored column ``c`` is dense column ``perm[c]``. Checked when built:
    every tensor's dtype and shape, and that the offsets count the mask's bits (one line if not)."""

    shape: tuple[int, int]
    layout: str  # bitmask | 2:4 | dense
    values: str  # fp32 | bf16 | fp16 | int8 | gptq
    data: torch.Tensor
    mask: torch.Tensor = field(default=_EMPTY, repr=False)
    row_offsets: torch.Tensor = field(default=_EMPTY, repr=False)
    scales: torch.Tensor = field(default=_EMPTY, repr=False)
    zeros: torch.Tensor = field(default=_EMPTY, repr=False)
    perm: torch.Tensor | None = field(default=None, repr=False)
    group_size: int = 0
    column_index: bool | None = None  # build the column index: None = when the density is ≤ INDEX_DENSITY
    index: torch.Tensor = field(default=_EMPTY, init=False, repr=False)
    argv: tuple[object, ...] = field(default=(), init=False, repr=False)  # the kernels' arguments, made once

    def __post_init__(self) -> None:
        out, inp = self.shape
        bad = f"a packed {self.layout} {self.values} weight {[out, inp]}"
        if self.layout not in LAYOUTS or self.values not in KINDS or (self.layout == "dense" and self.values == "gptq"):
            raise SlimpackError(f"{bad}: unknown layout or values kind (layouts {', '.join(LAYOUTS)}; values {', '.join(KINDS)})")
        groups = -(-inp // self.group_size) if self.values == "gptq" and self.group_size > 0 else 0
        pad = PAD_BYTES if self.values == "gptq" else PAD_BYTES // VALUE_DTYPES[self.values].itemsize
        want: dict[str, tuple[torch.Tensor, torch.dtype, list[int] | None]] = {
            "values": (self.data, VALUE_DTYPES[self.values], [out * inp + pad] if self.layout == "dense" else None),
        }
        if self.layout == "bitmask":
            want["mask"] = (self.mask, torch.uint8, [out, -(-inp // 8)])
            want["row_offsets"] = (self.row_offsets, torch.int64, [out + 1])
        elif self.layout == "2:4":
            if inp % 8:
                raise SlimpackError(f"{bad}: the 2:4 layout needs in % 8 == 0")
            want["positions"] = (self.mask, torch.uint8, [out, inp // 8])
            n = out * inp // 2
            want["values"] = (self.data, torch.uint8, [(n + 1) // 2 + pad]) if self.values == "gptq" else (
                self.data, VALUE_DTYPES[self.values], [n + pad])  # fmt: skip
        if self.values == "int8":
            want["scales"] = (self.scales, torch.float32, [out])
        if self.values == "gptq":
            if self.group_size <= 0:
                raise SlimpackError(f"{bad}: gptq values need group_size > 0")
            want["scales"] = (self.scales, torch.float16, [out, groups])
            want["zeros"] = (self.zeros, torch.uint8, [out, groups])
        if self.perm is not None:
            if self.values != "gptq":
                raise SlimpackError(f"{bad}: only gptq values carry a column permutation")
            want["perm"] = (self.perm, torch.int64, [inp])
        for suffix, (t, dtype, shape) in want.items():
            if not isinstance(t, torch.Tensor) or t.dtype != dtype or t.device.type != "cpu" or not t.is_contiguous() or (
                list(t.shape) != shape if shape is not None else t.dim() != 1
            ):  # fmt: skip
                got = f"{t.dtype} {list(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
                raise SlimpackError(f"{bad}: {suffix} is {got}, needs a contiguous CPU {dtype} {shape or '[n]'}; the weight is damaged")
        if self.perm is not None and not torch.equal(self.perm.sort().values, torch.arange(inp)):
            raise SlimpackError(f"{bad}: perm is not a permutation of the {inp} columns; the weight is damaged")
        problem = _call("validate", *self._args()[:2], *self._args()[3:])
        if problem:
            raise SlimpackError(f"{bad}: {problem}; the weight is damaged")
        indexable = self.layout == "bitmask" and self.values != "gptq" and inp <= 65536
        if self.column_index and not indexable:
            raise SlimpackError(f"{bad}: only bitmask weights of fp32/bf16/fp16/int8 values with in ≤ 65536 take a column index")
        density = int(self.row_offsets[-1]) / max(1, out * inp) if self.layout == "bitmask" else 1.0
        if indexable and (self.column_index or (self.column_index is None and density <= INDEX_DENSITY)):
            object.__setattr__(self, "index", _call("column_index", self.mask, self.row_offsets, inp))
        object.__setattr__(self, "argv", self._args())

    def _args(self) -> tuple[object, ...]:
        return (self.mask, self.row_offsets, self.index, self.data, self.scales, self.zeros, LAYOUTS[self.layout],
                KINDS[self.values], self.shape[1], self.group_size)  # fmt: skip

    @classmethod
    def from_stored(
        cls, layout: Layout, tensors: dict[str, torch.Tensor], column_index: bool | None = None
    ) -> PackedWeight:
        """The weight of `Layout` ``layout`` from its stored tensors by suffix (``mask``/``positions``,
        ``row_offsets``, ``values``, ``scales``, ``zeros``, ``perm``); ``column_index``: see the field."""
        known = {"mask", "positions", "row_offsets", "values", "scales", "zeros", "perm"}
        if not set(tensors) <= known or "values" not in tensors:
            raise SlimpackError(f"a packed weight stores {sorted(tensors)}; expected values and some of {sorted(known)}")
        get = {k: v.contiguous() for k, v in tensors.items()}
        return cls(
            shape=(int(layout.shape[0]), int(layout.shape[1])), layout=layout.layout, values=layout.values,
            data=get["values"], mask=get.get("mask", get.get("positions", _EMPTY)),
            row_offsets=get.get("row_offsets", _EMPTY), scales=get.get("scales", _EMPTY), zeros=get.get("zeros", _EMPTY),
            perm=get.get("perm"), group_size=layout.group_size, column_index=column_index,
        )  # fmt: skip

    @classmethod
    def dense(cls, weight: torch.Tensor, values: str | None = None) -> PackedWeight:
        """A plain ``[out, in]`` weight in the dense layout: its own dtype (fp32/bf16/fp16) or, with ``values``,
        converted (``int8``: per-row symmetric, the format's scales)."""
        kinds = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
        if weight.dim() != 2 or weight.dtype not in kinds:
            raise SlimpackError(f"a dense kernel weight must be a 2-D fp32/bf16/fp16 tensor, not {weight.dtype} {list(weight.shape)}")
        kind = values or kinds[weight.dtype]
        if kind not in ("fp32", "bf16", "fp16", "int8"):
            raise SlimpackError(f"the dense layout holds fp32, bf16, fp16 or int8 values, not {kind!r}")
        weight = weight.detach().cpu()
        scales = _EMPTY
        if kind == "int8":
            scales = weight.float().abs().amax(1) / 127
            scales = torch.where(scales > 0, scales, torch.ones_like(scales)).contiguous()
            flat = (weight.float() / scales[:, None]).round().clamp(-127, 127).to(torch.int8).reshape(-1)
        else:
            flat = weight.to(VALUE_DTYPES[kind]).reshape(-1)
        data = torch.cat([flat, flat.new_zeros(PAD_BYTES // flat.element_size())])
        return cls(shape=(weight.shape[0], weight.shape[1]), layout="dense", values=kind, data=data, scales=scales)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored tensors (perm aside, which permutes x): the format's size of this weight."""
        return sum(t.numel() * t.element_size() for t in (self.data, self.mask, self.row_offsets, self.scales, self.zeros))

    @property
    def gemv_bytes(self) -> int:
        """Bytes a decode GEMV reads: the stored tensors, with the column index in place of the mask if built."""
        return self.nbytes + (self.index.numel() * 2 - self.mask.numel() if self.index.numel() else 0)


def linear(
    x: torch.Tensor, packed: PackedWeight, bias: torch.Tensor | None = None, isa: str = "auto", prefill: str = "auto"
) -> torch.Tensor:
    """``x Wᵀ + bias``: ``x`` fp32 ``[..., in]`` → fp32 ``[..., out]``. ``prefill`` (more than 8 rows of x): ``auto``
    (the SpMM up to `spmm_density`, else the GEMM), ``spmm`` or ``gemm`` (benchmarks and tests)."""
    out, inp = packed.shape
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() < 1 or x.shape[-1] != inp:
        got = f"{x.dtype} {list(x.shape)} on {x.device}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise SlimpackError(f"the sparse kernels multiply fp32 CPU x [..., {inp}], not {got}")
    if bias is not None and (bias.dtype != torch.float32 or list(bias.shape) != [out] or bias.device.type != "cpu"):
        raise SlimpackError(f"the bias of a [{out}, {inp}] kernel weight must be fp32 [{out}], not {bias.dtype} {list(bias.shape)}")
    if isa != "auto":
        _check_isa(isa)
    if prefill not in PREFILLS:
        raise SlimpackError(f"unknown prefill path {prefill!r}; use one of {', '.join(PREFILLS)}")
    x2 = x if x.dim() == 2 else x.reshape(-1, inp)
    x2 = x2.index_select(1, packed.perm) if packed.perm is not None else x2.contiguous()
    y = _call("linear", x2, *packed.argv, isa, PREFILLS[prefill])
    if bias is not None:
        y += bias
    return y if x.dim() == 2 else y.reshape(*x.shape[:-1], out)


def decompress(packed: PackedWeight, isa: str = "auto") -> torch.Tensor:
    """The dense fp32 ``[out, in]`` weight (`export.sparse_format.decode`'s, act-order columns put back)."""
    _check_isa(isa)
    stored = _call("decompress", *packed.argv, isa)
    if packed.perm is None:
        return stored
    dense = torch.empty_like(stored)
    dense[:, packed.perm] = stored
    return dense


def _call(function: str, *args: object) -> object:
    """A kernel entry point; its own checks (which the wrapper's make unreachable) as one line."""
    try:
        return getattr(load(), function)(*args)
    except RuntimeError as err:
        raise SlimpackError(f"sparse kernel {function}: {str(err).splitlines()[0]}") from None
