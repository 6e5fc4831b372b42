"""The export results table: per artifact, export time, size, perplexity through its runtime vs torch,
greedy parity, and (from a `slimpack bench NAME=PATH … --json` report) prefill and decode latency.

``.venv/bin/python scripts/export_report.py RUN_DIR`` reads each artifact ``RUN_DIR/*/`` (through `Artifact.open`),
``RUN_DIR/NAME.verify.json`` and ``RUN_DIR/latency.json`` (as written by ``scripts/export_table.sh``) and prints
a markdown table (docs/results/export.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from export.artifact import EXPORT_MANIFEST, Artifact
from runtime_bench.latency import TimingReport
from runtime_bench.verify import VerifyReport


def export_table(run_dir: Path) -> str:
    timed = TimingReport.read(run_dir / "latency.json") if (run_dir / "latency.json").is_file() else None
    latency = {lab: a.timing(timed.threads[0]) for lab, a in timed.artifacts.items()} if timed else {}
    header = (
        "| artifact | engine | export s | MiB | ppl runtime | ppl torch | Δ abs | Δ rel | greedy equal | zeros kept "
        "| prefill 512 ms | decode ms/token |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for manifest_path in sorted(run_dir.glob(f"*/{EXPORT_MANIFEST}")):
        name = manifest_path.parent.name
        artifact = Artifact.open(manifest_path.parent)
        record = artifact.record
        verified = run_dir / f"{name}.verify.json"
        v = VerifyReport.read(verified) if verified.is_file() else None
        t = latency.get(name)
        zeros = record.zeros
        kept = f"{zeros.exported_zeros}/{zeros.source_zeros}" if zeros is not None and zeros.source_zeros else "–"
        if v is not None and v.perplexity is not None and v.greedy is not None:
            art, ref = v.perplexity.artifact.perplexity, v.perplexity.reference.perplexity
            g = v.greedy
            ppl = [
                f"{art:.3f}",
                f"{ref:.3f}",
                f"{art - ref:+.4f}",
                f"{100 * (art - ref) / ref:+.3f} %",
                f"{g.equal}/{g.new_tokens}",
            ]
        else:
            ppl = ["–"] * 5
        timing = [f"{t.prefill_ms.median:.0f}", f"{t.decode_ms_per_token.median:.1f}"] if t else ["–", "–"]
        row = [name, artifact.engine, f"{record.export_seconds:.0f}", f"{artifact.bytes / 2**20:.1f}", *ppl, kept, *timing]
        lines.append("| " + " | ".join(row) + " |")
    for name, lat in latency.items():
        if not (run_dir / name / EXPORT_MANIFEST).is_file():
            row = [
                name,
                "reference",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                f"{lat.prefill_ms.median:.0f}",
                f"{lat.decode_ms_per_token.median:.1f}",
            ]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    print(export_table(args.run_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
