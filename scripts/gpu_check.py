"""GPU check, with no download and nothing brought along: the students are built from their
configs (random weights, a 20,000-word vocabulary) and the teacher from the MiniLM-L6 shape
(BertConfig, random weights); speed does not depend on the weights.

    python scripts/gpu_check.py              # `make gpu-check` on a machine with CUDA
    python scripts/gpu_check.py --device cpu # a dry run of the same script
    python scripts/gpu_check.py --render results/gpu_check.json  # only redo the table

Prints, and writes to results/gpu_check.json and results/gpu_check.md: per-example latency at
batch 1 (CUDA-synchronised, median and p90 over 1,000 sentence lengths drawn like SST-2's,
after one untimed pass over them) for each student, and the teacher's labeling throughput at
batch 128 in float32 and bf16/fp16 autocast. Took about a minute on an H100.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config import STUDENT_KINDS, load_config  # noqa: E402
from model import TransformerClassifier, build_student  # noqa: E402
from util import atomic_write_text, resolve_device, write_json  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def lengths_like_sst2(n: int, seed: int) -> list[int]:
    """Sentence lengths with SST-2 test's mean (about 19 words), clipped to 2..60."""
    rng = np.random.default_rng(seed)
    return [int(x) for x in np.clip(rng.gamma(4.0, 19.2 / 4.0, n).round(), 2, 60)]


def time_students(device: torch.device, n: int) -> list[dict]:
    records = []
    for name, kind in STUDENT_KINDS.items():
        torch.manual_seed(0)
        model = build_student(load_config(ROOT / kind.config_path), 20000, 2).to(device).eval()
        inputs = [(torch.randint(2, 20000, (1, L), device=device), torch.tensor([L], device=device))
                  for L in lengths_like_sst2(n, 0)]
        times = []
        with torch.inference_mode():
            # one untimed pass over every input first: each new shape costs kernel loading and
            # algorithm selection once, which is not the per-example latency we are after
            for ids, lengths in inputs:
                model(ids, lengths)
            sync(device)
            for ids, lengths in inputs:
                sync(device)
                start = time.perf_counter()
                model(ids, lengths)
                sync(device)
                times.append((time.perf_counter() - start) * 1000)
        records.append({"model": name, "batch_size": 1, "ms_p50": float(np.median(times)),
                        "ms_p90": float(np.percentile(times, 90)), "sentences": n})
        print(f"{name}: batch 1 median {records[-1]['ms_p50']:.3f} ms, p90 {records[-1]['ms_p90']:.3f} ms", flush=True)
    return records


def time_teacher(device: torch.device, n: int) -> list[dict]:
    from transformers import BertConfig

    # all-MiniLM-L6-v2's shape
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512)
    torch.manual_seed(0)
    model = TransformerClassifier(config, 2, 0.0, head="mean").to(device).eval()
    lengths = sorted(lengths_like_sst2(n, 1), reverse=True)
    batches = [lengths[i:i + 128] for i in range(0, n, 128)]
    records = []
    amps = [None] + ([torch.bfloat16, torch.float16] if device.type == "cuda" else [torch.bfloat16])
    for dtype in amps:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            data = [(torch.randint(1000, 30000, (len(b), b[0]), device=device), torch.tensor(b, device=device))
                    for b in batches]
            for ids, lens in data:  # untimed pass: every batch shape loaded and selected once
                model(ids, lens)
            sync(device)
            start = time.perf_counter()
            for ids, lens in data:
                model(ids, lens)
            sync(device)
            seconds = time.perf_counter() - start
        name = "float32" if dtype is None else str(dtype).replace("torch.", "")
        records.append({"model": "teacher (MiniLM-L6 shape)", "batch_size": 128, "precision": name,
                        "sentences_per_s": n / seconds, "sentences": n})
        print(f"teacher labeling {name}: {n / seconds:.0f} sentences/s", flush=True)
    return records


def markdown(report: dict) -> str:
    """results/gpu_check.md from the report."""
    lines = [f"# GPU check on {report['device']}", "",
             f"Command: `{report['command']}` (`python scripts/gpu_check.py`), torch {report['torch']}; "
             "random weights (speed does not depend on them).", "",
             "| model | batch | precision | median ms | p90 ms | sentences/s |", "| --- | --- | --- | --- | --- | --- |"]
    for r in report["students"]:
        lines.append(f"| {r['model']} | 1 | float32 | {r['ms_p50']:.3f} | {r['ms_p90']:.3f} | |")
    for r in report["teacher"]:
        lines.append(f"| {r['model']} | {r['batch_size']} | {r['precision']} | | | {r['sentences_per_s']:,.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--n", type=int, default=1000, help="sentences for latency")
    p.add_argument("--label_n", type=int, default=20000, help="sentences for labeling throughput")
    p.add_argument("--out", default="results/gpu_check.json")
    p.add_argument("--render", metavar="JSON", help="only write the markdown table of an earlier run's JSON")
    args = p.parse_args(argv)
    md_path = (ROOT / args.out).with_suffix(".md")
    if args.render:
        atomic_write_text(md_path, markdown(json.loads(Path(args.render).read_text())))
        print(md_path.read_text())
        return 0
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}, cudnn.benchmark {torch.backends.cudnn.benchmark}", flush=True)
    report = {"device": name, "torch": torch.__version__, "command": "make gpu-check",
              "students": time_students(device, args.n), "teacher": time_teacher(device, args.label_n)}
    write_json(ROOT / args.out, report)
    atomic_write_text(md_path, markdown(report))
    print(json.dumps(report, indent=1)[:200] + " ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
