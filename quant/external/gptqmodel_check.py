"""The external check that a slimpack GPTQ checkpoint is the real format: GPTQModel (PyPI ``gptqmodel``
7.6.0, CPU) loads it in its own environment (``scripts/setup-gptqmodel.sh`` → ``.venv-gptqmodel``), and
its logits and dequantized weights are compared with our loader's.

``slimpack check gptqmodel CHECKPOINT [--tokens N] [--dtype float32]`` prints the comparison (`GPTQMODEL_CHECK`).
The machinery (`Runtime`, `compare_in`, `RuntimeCheck`) is shared with the other runtimes' checks
(`quant.external.autogptq_check`): a probe script run by the runtime's own interpreter writes its logits and
dequantized weights to a safetensors file, and they are compared here with ours.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from prune.architecture import adapter_for
from prune.cli import Reads, Writes
from prune.data import load_texts, tokenize
from prune.errors import SlimpackError
from prune.io import atomic_output_dir, external_python, write_json_atomic
from prune.model_config import check_context, read_config
from prune.models import load_model

log = logging.getLogger(__name__)
PROBE = Path(__file__).with_name("gptqmodel_probe.py")


def gptqmodel_python() -> Path:
    """The interpreter of the GPTQModel environment: ``$SLIMPACK_GPTQMODEL_PYTHON`` or ``.venv-gptqmodel``."""
    return external_python("GPTQModel", "SLIMPACK_GPTQMODEL_PYTHON", ".venv-gptqmodel")


@dataclass(frozen=True)
class Runtime:
    """An external GPTQ runtime: its name, its environment's interpreter, the probe script that interpreter runs
    (``probe CHECKPOINT IDS.safetensors OUT.safetensors DTYPE``) and environment defaults (ours win)."""

    name: str
    python: Callable[[], Path]
    probe: Path
    env_defaults: dict[str, str] = field(default_factory=dict)

    def available(self) -> bool:
        """Whether its environment exists (the tests that need it skip otherwise)."""
        try:
            self.python()
        except SlimpackError:
            return False
        return True


GPTQMODEL = Runtime("GPTQModel", gptqmodel_python, PROBE, {"GPTQMODEL_CPU_WORKERS": "2"})


@dataclass
class Comparison:
    kernels: str
    dtype: str
    tokens: int
    max_abs_logit_diff: float
    max_abs_logit: float
    rel_logit_diff: float  # ‖Δ‖ / ‖ours‖
    argmax_agreement: float
    max_abs_weight_diff: float
    weights_compared: int


def compare_in(
    runtime: Runtime,
    checkpoint: Path,
    input_ids: torch.Tensor,
    dtype: str = "float32",
    timeout: int = 900,
    reference: Path | None = None,
) -> Comparison:
    """Logits and dequantized weights of ``runtime`` on ``checkpoint`` vs `prune.models.load_model` on
    ``reference`` (default: the same checkpoint), on ``input_ids [1, T]``."""
    python = runtime.python()
    ours = load_model(reference or checkpoint).model
    with torch.inference_mode():
        mine = ours(input_ids=input_ids).logits.float()
    linears = adapter_for(ours).named_linears(ours)
    with tempfile.TemporaryDirectory() as tmp:
        ids_path, out_path = Path(tmp) / "ids.safetensors", Path(tmp) / "out.safetensors"
        save_file({"input_ids": input_ids.contiguous()}, str(ids_path))
        env = {**runtime.env_defaults, **os.environ}
        run = subprocess.run(
            [str(python), str(runtime.probe), str(checkpoint), str(ids_path), str(out_path), dtype],
            capture_output=True, text=True, env=env, timeout=timeout,
        )  # fmt: skip
        if run.returncode != 0:
            tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no output"]
            raise SlimpackError(f"{runtime.name} could not load {checkpoint}: {tail[0]}")
        theirs = load_file(str(out_path))
        with safe_open(str(out_path), "pt") as fh:
            meta = fh.metadata()
    logits = theirs.pop("logits")
    diff = (logits - mine).abs()
    weight_diff = 0.0
    for key, w in theirs.items():
        weight_diff = max(weight_diff, float((w - linears[key.removeprefix("weight:")].weight.data).abs().max()))
    return Comparison(
        kernels=meta.get("kernels", "?"),
        dtype=dtype,
        tokens=int(input_ids.numel()),
        max_abs_logit_diff=float(diff.max()),
        max_abs_logit=float(mine.abs().max()),
        rel_logit_diff=float((logits - mine).norm() / mine.norm()),
        argmax_agreement=float((logits.argmax(-1) == mine.argmax(-1)).float().mean()),
        max_abs_weight_diff=weight_diff,
        weights_compared=len(theirs),
    )


def compare(checkpoint: Path, input_ids: torch.Tensor, dtype: str = "float32", timeout: int = 900) -> Comparison:
    """Logits and dequantized weights of GPTQModel vs `prune.models.load_model` on ``input_ids [1, T]``."""
    return compare_in(GPTQMODEL, checkpoint, input_ids, dtype, timeout)


@dataclass(frozen=True)
class RuntimeCheck:
    """``slimpack check NAME CHECKPOINT``: offline text → ``compare`` → a Markdown table (and ``--json``).

    Checked before any work, each in one line (exit 2): the checkpoint's config, ``--tokens`` (1 … the model's
    context), the paths written (the command line's `prune.paths.check_writes`: nothing in the checkpoint;
    ``--copy-to`` new) and the runtime's environment (``ready``). With ``copy`` (a writer of a checkpoint copy the
    runtime reads right, into an empty directory), ``--copy-to DIR`` writes it beside DIR, compares the runtime on
    the copy with ours on the checkpoint (``compare(copy, ids, dtype, reference=…)``), and renames it to DIR only
    when the check succeeds: a check that fails leaves nothing."""

    name: str  # the runtime, as shown: GPTQModel
    help: str
    compare: Callable[..., Comparison]
    ready: Callable[[], object]  # raises a one-line `SlimpackError` when the runtime's environment is missing
    default_dtype: str = "float32"
    copy: Callable[[Path, Path], Path] | None = None

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Its arguments, paths declared as read or written (`prune.cli.Reads` / `Writes`)."""
        parser.add_argument("checkpoint", action=Reads, type=Path, help="a GPTQ checkpoint (slimpack quantize)")
        parser.add_argument("--tokens", type=int, default=128, help="tokens of offline text to run (default 128)")
        parser.add_argument("--dtype", default=self.default_dtype, choices=["float32", "bfloat16", "float16"],
                            help=f"{self.name}'s compute dtype (default {self.default_dtype})")  # fmt: skip
        parser.add_argument("--json", action=Writes, default=None, help="also write the comparison as JSON")
        if self.copy is not None:
            parser.add_argument("--copy-to", action=Writes, kind="dir", default=None, metavar="DIR",
                                help=f"first write a copy {self.name} reads right here, and check that")  # fmt: skip

    def run(self, args: argparse.Namespace) -> int:
        copy_to = getattr(args, "copy_to", None)
        read_config(args.checkpoint)  # not a model directory: one line
        if args.tokens < 1:
            raise SlimpackError(
                f"--tokens {args.tokens} is not a token count; pass --tokens N with N ≥ 1 (default 128)"
            )
        check_context(args.checkpoint, {"--tokens": args.tokens})
        if copy_to is not None and copy_to.exists():
            raise SlimpackError(f"--copy-to {str(copy_to)!r} already exists; choose a new directory")
        self.ready()  # a missing environment: before anything is loaded or copied
        loaded = load_model(args.checkpoint)
        ids = tokenize(loaded.tokenizer, load_texts("offline").evaluation)[: args.tokens].unsqueeze(0)
        if self.copy is None or copy_to is None:
            result = self.compare(args.checkpoint, ids, args.dtype)
        else:
            with atomic_output_dir(copy_to, False, [args.checkpoint]) as tmp:  # renamed into place on success only
                self.copy(args.checkpoint, tmp)
                try:
                    result = self.compare(tmp, ids, args.dtype, reference=args.checkpoint)
                except SlimpackError as err:  # named by --copy-to, not by the temporary directory
                    raise SlimpackError(
                        str(err).replace(str(tmp), f"the copy for --copy-to {str(copy_to)!r}")
                    ) from None
        rows = "\n".join(
            f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in asdict(result).items()
        )
        print(f"| {self.name} vs slimpack | value |\n|---|---|\n{rows}")
        if args.json:
            write_json_atomic(args.json, asdict(result))
        return 0


GPTQMODEL_CHECK = RuntimeCheck(
    "GPTQModel", "GPTQModel (.venv-gptqmodel) loads a GPTQ checkpoint: its logits and weights vs ours", compare,
    GPTQMODEL.python,
)  # fmt: skip
