"""Write the README's summary tables from the runs' own files, then copy every
`results/NAME.md` into README.md between its markers (`<!-- results:NAME -->` ...
`<!-- /results:NAME -->`), so the README's figures are what the runs wrote, never typed.

    python scripts/update_readme.py

Summaries written here: `results/frontier.md` (each model's fastest runtime and every peer,
from results/bench.json and results/peers.json) and `results/seed_comparison.md` (the SST-2
run's students next to the seed's published table, from checkpoints/sst2's results files).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import fastest, runtime_name  # noqa: E402
from config import STUDENT_KINDS  # noqa: E402
from util import atomic_write_text  # noqa: E402

# The seed's published SST-2 figures (BERT-large teacher, GloVe 6B 300d, batch 1 on a V100,
# inputs padded to 100 tokens; shared/REFERENCES.md), and Tang et al. 2019's BiLSTM.
SEED = {
    "teacher": {"distill": 94.12, "ms": 22.38},
    "cnn": {"gold": 83.09, "distill": 86.16, "ms": 1.79},
    "densenet-cnn": {"gold": 86.38, "distill": 88.52, "ms": 3.68},
    "densenet-dsa": {"gold": 85.34, "distill": 88.14, "ms": 8.46},
    "bilstm": {"gold": 86.7, "distill": 90.7, "ms": None},  # Tang et al., no latency given
}


def read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def frontier(bench: dict, peers: dict | None) -> str:
    """Each model's fastest runtime (one thread, batch 1, from text) and every peer, by latency."""
    rows = []
    for model in dict.fromkeys(r["model"] for r in bench["records"]):
        r = fastest(bench["records"], model)
        rows.append((r["text_ms_p50"], model, runtime_name(r), r["test_accuracy"], r["weights"]))
    for p in (peers or {}).get("records", []):
        rows.append((p["ms_p50"], f"{p['peer']}: {p['setting']}", "peer", p["test_accuracy"], "trained"))
    lines = [f"# Accuracy and latency on {bench['machine']['cpu']}", "",
             f"From `{bench['command']}` and `make peers`: one thread, batch 1, from the raw sentence to its label, "
             "median over the same test sentences; each model in its fastest runtime (of those within 0.3 points "
             "of its PyTorch accuracy).", "",
             "| model | runtime | ms per sentence | test accuracy % |", "| --- | --- | --- | --- |"]
    for ms, name, runtime, acc, weights in sorted(rows):
        lines.append(f"| {name}{' (random weights)' if weights == 'random' else ''} | {runtime} | {ms:.4f} | "
                     f"{100 * acc:.2f} |")
    return "\n".join(lines) + "\n"


def seed_comparison(ckpt: Path) -> str | None:
    """Our SST-2 students next to the seed's table (None before `make distill` has run)."""
    teacher = read(ckpt / "teacher.results.json")
    if teacher is None:
        return None

    def pct(res: dict | None) -> str:
        return "" if res is None else f"{100 * res['accuracy']:.2f}"

    def ms(res: dict | None) -> str:
        return "" if res is None else f"{res['ms_per_example']:.2f}"

    lines = ["# SST-2 against the seed", "",
             "The seed: BERT-large teacher, GloVe 6B 300d, batch 1 on an NVIDIA V100, inputs padded to 100 tokens "
             "(its published table; the BiLSTM row is Tang et al. 2019's). Ours: `make distill` (the MiniLM-L6 teacher, "
             "GloVe 6B 50d), `evaluate.py --pad_to_n_ctx --num_threads=1` for the same padded timing on one CPU "
             "thread, and from the raw sentence.", "",
             "| model | seed gold % | ours gold % | seed distilled % | ours distilled % | seed ms (V100, padded) | "
             "ours ms (1 CPU thread, padded) | ours ms (from text) |", "| --- | --- | --- | --- | --- | --- | --- | --- |",
             f"| teacher | | | {SEED['teacher']['distill']:.2f} | {pct(teacher)} | {SEED['teacher']['ms']:.2f} | "
             f"{ms(read(ckpt / 'teacher.padded.results.json'))} | {ms(teacher)} |"]
    for m in STUDENT_KINDS:
        distill = read(ckpt / f"{m}-distill.pt.results.json")
        if distill is None:
            continue
        seed = SEED.get(m, {})
        gold = read(ckpt / f"{m}-gold.pt.results.json")
        padded = read(ckpt / f"{m}-distill.pt.padded.results.json")
        lines.append(f"| {STUDENT_KINDS[m].title} | {seed.get('gold', '')} | {pct(gold)} | {seed.get('distill', '')} | "
                     f"{pct(distill)} | {seed.get('ms') or ''} | {ms(padded)} | {ms(distill)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoints", default="checkpoints/sst2")
    args = p.parse_args(argv)
    results = ROOT / "results"
    bench = read(results / "bench.json")
    if bench is not None:
        atomic_write_text(results / "frontier.md", frontier(bench, read(results / "peers.json")))
    comparison = seed_comparison(ROOT / args.checkpoints)
    if comparison is not None:
        atomic_write_text(results / "seed_comparison.md", comparison)
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")

    def fill(match: re.Match) -> str:
        name = match.group(1)
        table = results / f"{name}.md"
        body = table.read_text(encoding="utf-8").strip() if table.exists() else "(not run yet)"
        body = re.sub(r"^# .*\n+", "", body)  # the README's own heading names the table
        return f"<!-- results:{name} -->\n{body}\n<!-- /results:{name} -->"

    new = re.sub(r"<!-- results:([\w-]+) -->.*?<!-- /results:\1 -->", fill, text, flags=re.S)
    if new != text:
        atomic_write_text(readme, new)
        print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
