"""Speed benchmark: per-example latency at batch 1 (median, p90) and throughput at batch 128,
with one thread and with all cores, for the teacher and each student, in PyTorch eager and
ONNX Runtime; peak resident memory per model and runtime (each runs in its own process).

    python scripts/bench.py            # `make bench`: 1,000 SST-2 test sentences
    QUICK=1 python scripts/bench.py    # 200 sentences, fewer repetitions

Writes results/bench.json (records + machine + versions), results/bench.md and, from
bench.json and the models' evaluation results, results/accuracy_latency.png.
Trained checkpoints from `make distill` (checkpoints/sst2) are used when present; otherwise
a student is built from its config with random weights (speed does not depend on weights)
and the record says so.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from util import (  # noqa: E402
    UserError,
    atomic_write_text,
    cpu_model,
    library_versions,
    run_main,
    setup_logging,
    write_json,
)

logger = logging.getLogger(__name__)

STUDENTS = {"cnn": "configs/config-glove-cnn.json", "densenet-cnn": "configs/config-densenet-cnn.json",
            "densenet-dsa": "configs/config-densenet-dsa.json", "bilstm": "configs/config-glove-bilstm.json"}
# onnxruntime-int8: weights quantized to int8 after export, activations at run time
RUNTIMES = ("pytorch", "onnxruntime", "onnxruntime-int8")


def load(model_name: str, args: argparse.Namespace):
    """A Predictor for the teacher or a student: the trained checkpoint, else random weights."""
    import torch

    from dataset import read_labels, read_vocab
    from model import Predictor, build_student, load_predictor
    from util import load_config

    ckpt = Path(args.checkpoints)
    device = torch.device("cpu")
    if model_name == "teacher":
        if not (ckpt / "teacher" / "model.safetensors").exists():
            raise UserError(f"{ckpt / 'teacher'}: no trained teacher (run `make distill` first)")
        return load_predictor(True, ckpt / "teacher", "", device), "trained"
    path = ckpt / f"{model_name}-distill.pt"
    if path.exists():
        return load_predictor(False, "", path, device), "trained"
    config = load_config(STUDENTS[model_name])
    vocab, _ = read_vocab(Path(args.data_dir))
    labels = read_labels(Path(args.data_dir) / "label.txt")
    torch.manual_seed(0)
    model = build_student(config, len(vocab), len(labels)).eval()
    return Predictor.for_student(model, vocab, labels, str(path)), "random"


def time_batches(model, batches: list, repeats: int) -> list[float]:
    """Seconds per call for each batch (best of `repeats` passes over them)."""
    import torch

    best = [float("inf")] * len(batches)
    with torch.inference_mode():
        for _ in range(repeats):
            for i, (ids, lengths) in enumerate(batches):
                start = time.perf_counter()
                model(ids, lengths)
                best[i] = min(best[i], time.perf_counter() - start)
    return best


def worker(args: argparse.Namespace) -> int:
    """Measure one (model, runtime) in this process and print its records as JSON."""
    import numpy as np
    import torch

    from dataset import label_ids, length_sorted_batches, pad_batch, read_examples
    from model import export_onnx, predict_logits, quantize_onnx

    predictor, weights = load(args.model, args)
    test_path = Path(args.data_dir) / "test.txt"
    examples = read_examples(test_path)
    all_ids = predictor.encode([e.sentence for e in examples])
    gold = torch.tensor(label_ids(examples, predictor.labels, test_path))
    ids = all_ids[: args.n]
    onnx_path = Path(args.onnx_dir) / f"{args.model}.onnx"
    if args.runtime.startswith("onnxruntime"):
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(predictor.model, onnx_path, torch.tensor(ids[:1]))
        if args.runtime == "onnxruntime-int8":
            quantize_onnx(onnx_path, onnx_path.with_name(f"{args.model}.int8.onnx"))
            onnx_path = onnx_path.with_name(f"{args.model}.int8.onnx")

    singles = [pad_batch([s], predictor.pad_id) for s in ids]
    big = [pad_batch([ids[i] for i in batch], predictor.pad_id) for batch in length_sorted_batches(
        [len(s) for s in ids], 128)]
    records = []
    accuracy = None
    for threads in (1, os.cpu_count() or 1):
        torch.set_num_threads(threads)
        if args.runtime.startswith("onnxruntime"):
            from model import OrtModel

            model = OrtModel(onnx_path, threads)
        else:
            model = predictor.model
        if accuracy is None:  # this runtime's accuracy on the whole test set (int8 changes it)
            logits = predict_logits(model, all_ids, 128, predictor.pad_id, torch.device("cpu"), progress=False)
            accuracy = float((logits.argmax(-1) == gold).float().mean())
        time_batches(model, singles[: args.warmup], 1)  # warm-up
        per_example = np.array(time_batches(model, singles, args.repeats)) * 1000
        batch_seconds = sum(time_batches(model, big, max(1, args.repeats // 2)))
        common = {"model": args.model, "weights": weights, "runtime": args.runtime, "threads": threads,
                  "sentences": len(ids), "test_accuracy": accuracy}
        records.append({**common, "batch_size": 1, "ms_p50": float(np.median(per_example)),
                        "ms_p90": float(np.percentile(per_example, 90)),
                        "sentences_per_s": float(1000 / per_example.mean())})
        records.append({**common, "batch_size": 128, "ms_p50": None, "ms_p90": None,
                        "sentences_per_s": len(ids) / batch_seconds})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for r in records:
        r["peak_rss_mb"] = round(peak, 1)
    print("BENCH_JSON " + json.dumps(records), flush=True)
    return 0


def markdown(report: dict, ckpt: Path) -> str:
    """bench.md: latency and throughput tables, speed-ups against the teacher, training throughput."""
    recs = report["records"]
    lines = [f"# Speed on {report['machine']['cpu']} ({report['machine']['cores']} cores)", "",
             f"Command: `{report['command']}`; {recs[0]['sentences']} SST-2 test sentences, best of "
             f"{report['repeats']} passes per sentence after {report['warmup']} warm-up sentences. "
             "Accuracy: each runtime's predictions on the whole test set (1,821 sentences) in length-sorted "
             "batches of 128; dynamic int8 quantization scales activations per batch, so its accuracy "
             "depends on the batching.", "",
             "| model | weights | runtime | threads | batch 1 p50 ms | batch 1 p90 ms | batch 128 sentences/s | "
             "peak RSS MB | test accuracy % (batch 128) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    keyed = {}
    for r in recs:
        keyed.setdefault((r["model"], r["runtime"], r["threads"]), {})[r["batch_size"]] = r
    for (model, runtime, threads), by_bs in keyed.items():
        one, many = by_bs[1], by_bs[128]
        lines.append(f"| {model} | {one['weights']} | {runtime} | {threads} | {one['ms_p50']:.3f} | "
                     f"{one['ms_p90']:.3f} | {many['sentences_per_s']:.0f} | {one['peak_rss_mb']:.0f} | "
                     f"{100 * one['test_accuracy']:.2f} |")
    teacher = keyed.get(("teacher", "pytorch", 1), {}).get(1)
    if teacher:
        lines += ["", "Speed-up over the PyTorch teacher at batch 1, one thread (median):", ""]
        for (model, runtime, threads), by_bs in keyed.items():
            if model != "teacher" and threads == 1:
                lines.append(f"- {model} ({runtime}): {teacher['ms_p50'] / by_bs[1]['ms_p50']:.1f}x")
    train_rows = []
    for m in STUDENTS:
        for kind in ("distill", "gold"):
            res = ckpt / f"{m}-{kind}.pt.train_results.json"
            if res.exists():
                r = json.loads(res.read_text())
                train_rows.append(f"| {m} | {kind} | {r['train_examples']:,} | {r.get('train_sentences_per_s')} |")
    if train_rows:
        lines += ["", "Student training throughput (from `make distill`'s train_results.json):", "",
                  "| model | targets | training sentences | sentences/s |", "| --- | --- | --- | --- |", *train_rows]
    label = Path("data/sst2/augmented.raw.pred.results.json")
    if (ROOT / label).exists():
        r = json.loads((ROOT / label).read_text())
        lines += ["", f"Teacher labeling (`evaluate.py --augmented`, batch {r['batch_size']}, {r['threads']} threads): "
                  f"{r['labeled']:,} sentences at {r['sentences_per_s']:.0f} sentences/s."]
    return "\n".join(lines) + "\n"


def plot(report: dict, ckpt: Path, path: Path) -> bool:
    """Accuracy against batch-1 one-thread latency, one point per model and runtime (bench.json)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib not installed: no plot")
        return False
    points = []  # (ms, accuracy %, model, runtime)
    for r in report["records"]:
        if r["batch_size"] != 1 or r["threads"] != 1:
            continue
        if r.get("test_accuracy") is not None:  # this runtime's own accuracy (int8 differs)
            points.append((r["ms_p50"], 100 * r["test_accuracy"], r["model"], r["runtime"]))
            continue
        res = ckpt / "teacher" / "results.json" if r["model"] == "teacher" else ckpt / f"{r['model']}-distill.pt.results.json"
        if res.exists():
            points.append((r["ms_p50"], 100 * json.loads(res.read_text())["accuracy"], r["model"], r["runtime"]))
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    models = list(dict.fromkeys(p[2] for p in points))
    markers = {"pytorch": "o", "onnxruntime": "s", "onnxruntime-int8": "^"}
    colors = {m: f"C{i}" for i, m in enumerate(models)}
    for ms, acc, model, runtime in points:
        ax.scatter(ms, acc, color=colors[model], marker=markers.get(runtime, "x"), s=40)
    for model in models:  # one label per model, at its fastest point
        ms, acc, *_ = min(p for p in points if p[2] == model)
        ax.annotate(model, (ms, acc), textcoords="offset points", xytext=(6, 4), fontsize=8, color=colors[model])
    for runtime, marker in markers.items():
        ax.scatter([], [], color="gray", marker=marker, label=runtime)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel("ms per sentence (batch 1, 1 thread, median; log scale)")
    ax.set_ylabel("SST-2 test accuracy %")
    ax.set_title(f"Accuracy vs latency on {report['machine']['cpu']}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", default=bool(os.environ.get("QUICK")))
    p.add_argument("--data_dir", default="data/sst2")
    p.add_argument("--checkpoints", default="checkpoints/sst2")
    p.add_argument("--out_dir", default="results")
    p.add_argument("--onnx_dir", default="checkpoints/bench-onnx")
    p.add_argument("--models", default="teacher," + ",".join(STUDENTS))
    p.add_argument("--runtimes", default=",".join(RUNTIMES))
    # worker mode (one model and runtime in a fresh process)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--runtime", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, default=20, help=argparse.SUPPRESS)
    p.add_argument("--plot_only", action="store_true", help="rewrite bench.md and the plot from an existing bench.json")
    args = p.parse_args(argv)
    setup_logging()
    if not args.n:
        args.n = 200 if args.quick else 1000
    if not args.repeats:
        args.repeats = 1 if args.quick else 3

    def body() -> int:
        if args.worker:
            return worker(args)
        if args.plot_only:
            report = json.loads((ROOT / args.out_dir / "bench.json").read_text())
            atomic_write_text(ROOT / args.out_dir / "bench.md", markdown(report, ROOT / args.checkpoints))
            return 0 if plot(report, ROOT / args.checkpoints, ROOT / args.out_dir / "accuracy_latency.png") else 1
        records = []
        for model in args.models.split(","):
            for runtime in args.runtimes.split(","):
                cmd = [sys.executable, __file__, "--worker", f"--model={model}", f"--runtime={runtime}",
                       f"--n={args.n}", f"--repeats={args.repeats}", f"--warmup={args.warmup}",
                       f"--data_dir={args.data_dir}", f"--checkpoints={args.checkpoints}", f"--onnx_dir={args.onnx_dir}"]
                logger.info("[Bench] %s / %s", model, runtime)
                out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
                found = [line for line in out.stdout.splitlines() if line.startswith("BENCH_JSON ")]
                if out.returncode != 0 or not found:
                    tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
                    raise UserError(f"benchmark of {model}/{runtime} failed: {tail}")
                records.extend(json.loads(found[0][len("BENCH_JSON "):]))
        report = {
            "command": "QUICK=1 make bench" if args.quick else "make bench",
            "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()},
            "versions": {**library_versions(), **_ort_version()},
            "repeats": args.repeats, "warmup": args.warmup, "records": records,
        }
        out_dir = ROOT / args.out_dir
        write_json(out_dir / "bench.json", report)
        ckpt = ROOT / args.checkpoints
        atomic_write_text(out_dir / "bench.md", markdown(report, ckpt))
        if plot(report, ckpt, out_dir / "accuracy_latency.png"):
            logger.info("[Plot] %s", out_dir / "accuracy_latency.png")
        print((out_dir / "bench.md").read_text())
        return 0

    return run_main(body, logger)


def _ort_version() -> dict:
    try:
        import onnxruntime

        return {"onnxruntime": onnxruntime.__version__}
    except ImportError:
        return {}


if __name__ == "__main__":
    sys.exit(main())
