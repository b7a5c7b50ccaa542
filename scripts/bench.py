"""Speed benchmark: every model in every runtime, at batch 1 from the raw sentence (what a user
waits for: tokenization, ids, the network, the argmax) and from ids (the network alone), and
at batch 128, with one thread and with all cores; peak resident memory; each runtime's own
test accuracy. Each (model, runtime) runs in a fresh process, and the ONNX Runtime and numpy
ones import no torch, so their memory is what a deployment uses.

    python scripts/bench.py            # `make bench`: 1,000 SST-2 test sentences
    QUICK=1 python scripts/bench.py    # 200 sentences, one pass

Runtimes: `pytorch` (eager), `onnxruntime`, `onnxruntime-int8` (static int8 for the cnn and the
DenseNets, calibrated on 300 training sentences; dynamic for the others),
`onnxruntime-int8-rescored` (the teacher only: the labeler, int8 with near-ties scored again in
fp32, margin `--rescore_margin`), `numpy` (the
bag of n-grams' folded tables). Models come from `make distill` (checkpoints/sst2) where they
exist; otherwise from their configs with random weights (a random head on the MiniLM backbone
for the teacher), marked `random` in every record: speed does not depend on the weights.
Writes results/bench.json, results/bench.md and results/accuracy_latency.png (with the peers of
results/peers.json, from `make peers`, when it exists).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataset import read_examples  # noqa: E402
from runtime import INT8_MAX_DROP, near_ties  # noqa: E402
from timing import summary, time_calls  # noqa: E402
from util import (  # noqa: E402
    UserError,
    atomic_write_text,
    cpu_model,
    library_versions,
    run_main,
    write_json,
)

logger = logging.getLogger(__name__)

# the teacher's labeling runtime as the recipes run it: int8 with near-ties rescored in fp32
RESCORED = "onnxruntime-int8-rescored"
RUNTIMES = ("pytorch", "onnxruntime", "onnxruntime-int8", RESCORED, "numpy")
MODELS = ("teacher", "cnn", "densenet-cnn", "densenet-dsa", "bilstm", "bow", "dan")


def prepare(args: argparse.Namespace) -> dict:
    """Load (or stand in for) one model, export its bundles, and say where they are."""
    import torch

    from checkpoint import load_pretrained_teacher, save_student, save_teacher
    from config import STUDENT_KINDS, load_config
    from dataset import build_labels, build_vocab, count_tokens, read_glove, read_vocab
    from inference import Predictor, calibration_sample
    from model import build_student, init_embeddings
    from runtime import WordTokenizer

    ckpt, work = Path(args.checkpoints), Path(args.onnx_dir) / args.model
    source = ckpt / "teacher" if args.model == "teacher" else ckpt / f"{args.model}-distill.pt"
    recipe = ckpt / "recipe.json"
    if args.model == "teacher" and not source.exists() and recipe.exists():
        # a teacher brought as it is (make distill TEACHER=...) stays where the user keeps it
        given = json.loads(recipe.read_text(encoding="utf-8"))["teacher"]
        if given.get("kind") == "ready" and Path(given["source"]).exists():
            source = Path(given["source"])
    weights = "trained"
    if not source.exists():
        weights = "random"
        data = Path(args.data_dir)
        labels = build_labels(read_examples(data / "test.txt"))
        torch.manual_seed(0)
        if args.model == "teacher":
            source = work / "random-teacher"
            config = load_config(ROOT / "configs/config-bert-mean.json")
            model = load_pretrained_teacher(args.teacher_model, labels, config)
            from teachers import load_hf_tokenizer

            save_teacher(source, model, config, load_hf_tokenizer(args.teacher_model), labels, lowercase=True)
        else:
            source = work / "random.pt"
            config = load_config(ROOT / STUDENT_KINDS[args.model].config_path)
            if (data / "vocab.txt").exists():
                vocab, matrix = read_vocab(data)
            else:  # the test sentences' words that GloVe knows
                tokenize = WordTokenizer(config.tokenizer, config.lowercase)
                tokens = tokenize.many(e.sentence for e in read_examples(data / "test.txt"))
                glove = read_glove(args.embedding_path, {t for s in tokens for t in s}, config.token_emb_dim)
                vocab, matrix = build_vocab(count_tokens(tokens), glove, config.pad_token, config.unk_token, config.token_emb_dim)
            model = build_student(config, len(vocab), len(labels))
            init_embeddings(model, torch.from_numpy(matrix))
            save_student(source, model, vocab, labels)
    predictor = Predictor.load(source)
    # int8: static for the convolutional students, calibrated on training sentences (the test
    # sentences stand in when there is no train.txt), dynamic for the others
    calibration: list[str] = []
    if predictor.int8_kind == "static":
        train = Path(args.data_dir) / "train.txt"
        source_file = train if train.exists() else Path(args.data_dir) / "test.txt"
        calibration = calibration_sample([e.sentence for e in read_examples(source_file)])
    predictor.export_bundle(work / "bundle", quantize=True, calibration=calibration)
    meta = json.loads((work / "bundle" / "bundle.json").read_text())
    return {"source": str(source), "weights": weights, "bundle": str(work / "bundle"), "int8": meta["int8"],
            "has_numpy": "numpy" in meta["backends"]}


def worker(args: argparse.Namespace) -> list[dict]:
    """Measure one (model, runtime) in this process; torch is imported only for `pytorch`."""
    import numpy as np

    info = json.loads(args.prepared)
    examples = read_examples(Path(args.data_dir) / "test.txt")  # dataset.py imports no torch
    sentences, gold = [e.sentence for e in examples], [e.label for e in examples]
    timed = sentences[: args.n]
    records = []
    for threads in (1, os.cpu_count() or 1):
        if args.runtime == "pytorch":
            import torch

            from inference import pad_batch
            from inference import Predictor

            torch.set_num_threads(threads)
            predictor = Predictor.load(info["source"])
            labels, model, pad = predictor.labels, predictor.model, predictor.pad_id

            def from_ids(ids: list[int]) -> int:
                with torch.inference_mode():
                    x, lengths = pad_batch([ids], pad)
                    return int(model(x, lengths).argmax())

            def from_text(s: str) -> int:
                return from_ids(predictor.encode(s))

            def batch_logits(batch: list[list[int]]) -> np.ndarray:
                with torch.inference_mode():
                    return model(*pad_batch(batch, pad)).numpy()
            encode = predictor.encode_batch
        else:
            from runtime import Bundle

            rescored = args.runtime == RESCORED
            bundle = Bundle.load(info["bundle"], "onnxruntime-int8" if rescored else args.runtime, num_threads=threads)
            labels = bundle.labels

            def from_ids(ids: list[int]) -> int:
                return int(bundle.logits_for_ids([ids])[0].argmax())

            def from_text(s: str) -> int:
                return from_ids(bundle.encode(s))

            batch_logits = bundle.logits_for_ids
            if rescored:  # the labeler's runtime: int8, near-ties scored again in fp32 (label.py)
                fp32 = Bundle.load(info["bundle"], "onnxruntime", num_threads=threads)

                def batch_logits(batch: list[list[int]]) -> np.ndarray:
                    logits = bundle.logits_for_ids(batch)
                    close = near_ties(logits, args.rescore_margin, bundle.multi_label)
                    if len(close):
                        logits[close] = fp32.logits_for_ids([batch[i] for i in close])
                    return logits

                def from_ids(ids: list[int]) -> int:
                    return int(batch_logits([ids])[0].argmax())

            encode = bundle.encode_batch
        ids = encode(sentences)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        batches = [[ids[i] for i in order[k:k + 128]] for k in range(0, len(order), 128)]
        predicted = np.concatenate([batch_logits(b).argmax(1) for b in batches])
        accuracy = float(np.mean([labels[p] == gold[i] for p, i in zip(predicted, order)]))
        text = summary(time_calls(from_text, timed, args.repeats, args.warmup))
        only_ids = summary(time_calls(from_ids, ids[: args.n], args.repeats, args.warmup))
        big = [b for b in batches if len(b) == 128] or batches
        seconds = time_calls(batch_logits, big, 1, 1).sum() / 1000
        records.append({"model": args.model, "weights": info["weights"], "runtime": args.runtime, "threads": threads,
                        **({"int8": info["int8"]} if "int8" in args.runtime else {}),
                        "sentences": len(timed), "test_accuracy": accuracy, "text_ms_p50": text["ms_p50"],
                        "text_ms_p90": text["ms_p90"], "ids_ms_p50": only_ids["ms_p50"],
                        "ids_ms_p90": only_ids["ms_p90"], "batch128_sentences_per_s": 128 * len(big) / seconds})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for r in records:
        r["peak_rss_mb"] = round(peak, 1)
        r["torch_loaded"] = "torch" in sys.modules
    return records


def runtime_name(record: dict) -> str:
    """`onnxruntime-int8 (static)` for int8 records, else the runtime."""
    return f"{record['runtime']} ({record['int8']})" if record.get("int8") else record["runtime"]


def fastest(records: list[dict], model: str) -> dict:
    """`model`'s fastest one-thread record from text among the runtimes whose test accuracy is
    within INT8_MAX_DROP of its PyTorch (fp32) accuracy."""
    own = [r for r in records if r["model"] == model and r["threads"] == 1]
    reference = next((r["test_accuracy"] for r in own if r["runtime"] == "pytorch"), None)
    kept = [r for r in own if reference is None or r["test_accuracy"] >= reference - INT8_MAX_DROP]
    return min(kept or own, key=lambda r: r["text_ms_p50"])


def markdown(report: dict, peers: dict | None) -> str:
    """bench.md: the records, speed-ups against the teacher, the peers side by side."""
    recs = report["records"]
    lines = [f"# Speed on {report['machine']['cpu']} ({report['machine']['cores']} cores)", "",
             f"Command: `{report['command']}`; {recs[0]['sentences']} test sentences of {report['data_dir']}, best of "
             f"{report['repeats']} passes per sentence after {report['warmup']} warm-up sentences; median (p50) and "
             "p90 per sentence. **From text**: raw sentence to label (tokenization included); **from ids**: the "
             "network alone. Accuracy: each runtime's own, on the whole test set in batches of 128 (dynamic int8 "
             "scales activations per batch; static int8 has fixed ranges). A model's *fastest* runtime below is "
             "the fastest whose accuracy is within 0.3 points of its PyTorch accuracy. Peak RSS: the whole "
             "process (torch is not loaded in the onnxruntime "
             "and numpy rows).", "",
             "| model | weights | runtime | threads | from text p50 ms | from text p90 ms | from ids p50 ms | "
             "batch 128 sentences/s | peak RSS MB | test accuracy % |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in recs:
        lines.append(f"| {r['model']} | {r['weights']} | {runtime_name(r)} | {r['threads']} | {r['text_ms_p50']:.3f} | "
                     f"{r['text_ms_p90']:.3f} | {r['ids_ms_p50']:.3f} | {r['batch128_sentences_per_s']:.0f} | "
                     f"{r['peak_rss_mb']:.0f} | {100 * r['test_accuracy']:.2f} |")
    one = [r for r in recs if r["threads"] == 1]
    teacher = next((r for r in one if r["model"] == "teacher" and r["runtime"] == "pytorch"), None)
    if teacher:
        lines += ["", "Speed-up over the PyTorch teacher, batch 1, one thread, from text (median):", ""]
        lines += [f"- {r['model']} ({r['runtime']}): {teacher['text_ms_p50'] / r['text_ms_p50']:.1f}x"
                  for r in one if r["model"] != "teacher"]
    if peers:
        lines += ["", *peer_comparison(one, peers)]
    label = ROOT / report["data_dir"] / "transfer.txt.results.json"
    if label.exists():
        r = json.loads(label.read_text())
        trials = "; ".join(f"{t['runtime']} {t['sentences_per_s']:.0f}/s, {100 * t['agreement']:.2f}% agreement"
                           for t in r.get("runtime_trials") or [])
        lines += ["", f"Teacher labeling (`label.py` in `make distill`, batch {r['args']['batch_size']}, "
                  f"{r['processes']} process(es)): {r['scored']:,} sentences at {r['sentences_per_s']:.0f} "
                  f"sentences/s in {r['runtime']}" + (f" (sample trials: {trials})" if trials else "") + "."]
    return "\n".join(lines) + "\n"


def peer_comparison(one_thread: list[dict], peers: dict) -> list[str]:
    """Each student's fastest runtime against fastText's most accurate setting (latency) and
    the most accurate peer (accuracy), all from text at batch 1 on one thread."""
    best_peer = max(peers["records"], key=lambda p: p["test_accuracy"])
    fasttext = [p for p in peers["records"] if p["peer"] == "fasttext"]
    best_ft = max(fasttext, key=lambda p: p["test_accuracy"]) if fasttext else None
    lines = [f"Against the peers (`make peers`, results/peers.md; same sentences and timing): the most accurate peer "
             f"is {best_peer['peer']} ({best_peer['setting']}), {100 * best_peer['test_accuracy']:.2f} %"
             + (f"; fastText's most accurate setting ({best_ft['setting']}) takes {best_ft['ms_p50']:.4f} ms."
                if best_ft else "."), "",
             "| student | fastest runtime | from text p50 ms | x fastText's latency | test accuracy % | "
             "points over the best peer |", "| --- | --- | --- | --- | --- | --- |"]
    for model in dict.fromkeys(r["model"] for r in one_thread if r["model"] != "teacher"):
        r = fastest(one_thread, model)
        ratio = f"{r['text_ms_p50'] / best_ft['ms_p50']:.1f}" if best_ft else ""
        lines.append(f"| {model} | {runtime_name(r)} | {r['text_ms_p50']:.4f} | {ratio} | {100 * r['test_accuracy']:.2f} "
                     f"| {100 * (r['test_accuracy'] - best_peer['test_accuracy']):+.2f} |")
    return lines


def plot(report: dict, peers: dict | None, path: Path) -> None:
    """Accuracy against batch-1 one-thread latency from text (log axis): every model and
    runtime, and every peer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(r["text_ms_p50"], 100 * r["test_accuracy"], r["model"], r["runtime"])
              for r in report["records"] if r["threads"] == 1]
    points += [(p["ms_p50"], 100 * p["test_accuracy"], f"{p['peer']}: {p['setting']}", "peer")
               for p in (peers or {}).get("records", [])]
    fig, ax = plt.subplots(figsize=(8, 5.2))
    markers = {"pytorch": "o", "onnxruntime": "s", "onnxruntime-int8": "^", RESCORED: "v", "numpy": "D", "peer": "x"}
    names = list(dict.fromkeys(p[2] for p in points))
    colors = {m: f"C{i % 10}" for i, m in enumerate(names)}
    for ms, acc, name, runtime in points:
        ax.scatter(ms, acc, color="gray" if runtime == "peer" else colors[name], marker=markers[runtime], s=36)
    for name in names:  # one label per model or peer, at its fastest point
        ms, acc, _, runtime = min(p for p in points if p[2] == name)
        ax.annotate(name, (ms, acc), textcoords="offset points", xytext=(5, 3), fontsize=7,
                    color="dimgray" if runtime == "peer" else colors[name])
    for runtime, marker in markers.items():
        ax.scatter([], [], color="gray", marker=marker, label=runtime)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel("ms per sentence from text (batch 1, 1 thread, median; log scale)")
    ax.set_ylabel("test accuracy %")
    weights = {r["weights"] for r in report["records"]}
    ax.set_title(f"Accuracy vs latency on {report['machine']['cpu']}" + (" (random weights)" if "random" in weights
                                                                         else ""), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def run_child(argv: list[str], what: str) -> dict | list:
    """Run this script in a fresh process and read the JSON it prints last."""
    out = subprocess.run([sys.executable, __file__, *argv], cwd=ROOT, capture_output=True, text=True)
    found = [line for line in out.stdout.splitlines() if line.startswith("BENCH_JSON ")]
    if out.returncode != 0 or not found:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"benchmark of {what} failed: {tail}")
    return json.loads(found[-1][len("BENCH_JSON "):])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", default=bool(os.environ.get("QUICK")))
    p.add_argument("--data_dir", default="data/sst2")
    p.add_argument("--checkpoints", default="checkpoints/sst2")
    p.add_argument("--out_dir", default="results")
    p.add_argument("--onnx_dir", default="checkpoints/bench")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--runtimes", default=",".join(RUNTIMES))
    p.add_argument("--teacher_model", default="embeddings/all-MiniLM-L6-v2", help="backbone of a random teacher")
    p.add_argument("--embedding_path", default="embeddings/glove.6B.50d.txt", help="vectors of random students")
    p.add_argument("--rescore_margin", type=float, default=2.0,
                   help=f"{RESCORED}: the top-two logit margin below which int8 is rescored in fp32 (the "
                        "single-label recipes' label_rescore_margin)")
    p.add_argument("--plot_only", action="store_true", help="rewrite bench.md and the plot from bench.json")
    # one (model, runtime) in a fresh process
    p.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--prepared", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--runtime", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, default=20, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.n = args.n or (200 if args.quick else 1000)
    args.repeats = args.repeats or (1 if args.quick else 3)

    def body() -> int:
        if args.prepare or args.worker:
            print("BENCH_JSON " + json.dumps(prepare(args) if args.prepare else worker(args)), flush=True)
            return 0
        out_dir = ROOT / args.out_dir
        peers_path = out_dir / "peers.json"
        peers = json.loads(peers_path.read_text()) if peers_path.exists() else None
        if args.plot_only:
            report = json.loads((out_dir / "bench.json").read_text())
        else:
            records = []
            common = [f"--data_dir={args.data_dir}", f"--checkpoints={args.checkpoints}", f"--onnx_dir={args.onnx_dir}",
                      f"--teacher_model={args.teacher_model}", f"--embedding_path={args.embedding_path}"]
            for model in args.models.split(","):
                logger.info("[Bench] %s: export", model)
                info = run_child(["--prepare", f"--model={model}", *common], f"{model} (export)")
                for runtime in args.runtimes.split(","):
                    if runtime == "numpy" and not info["has_numpy"]:
                        continue  # only bags of n-grams fold into numpy tables
                    if runtime == RESCORED and model != "teacher":
                        continue  # the labeler's runtime
                    logger.info("[Bench] %s / %s", model, runtime)
                    records += run_child(["--worker", f"--model={model}", f"--runtime={runtime}", f"--n={args.n}",
                                          f"--rescore_margin={args.rescore_margin}",
                                          f"--repeats={args.repeats}", f"--warmup={args.warmup}",
                                          f"--prepared={json.dumps(info)}", *common], f"{model}/{runtime}")
            report = {"command": "QUICK=1 make bench" if args.quick else "make bench", "data_dir": args.data_dir,
                      "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()},
                      "versions": library_versions(),
                      "repeats": args.repeats, "warmup": args.warmup, "records": records}
            write_json(out_dir / "bench.json", report)
        atomic_write_text(out_dir / "bench.md", markdown(report, peers))
        plot(report, peers, out_dir / "accuracy_latency.png")
        print((out_dir / "bench.md").read_text())
        return 0

    return run_main(body, logger)


if __name__ == "__main__":
    sys.exit(main())
