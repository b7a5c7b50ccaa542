"""Choose a cascade's threshold: the student answers a sentence whose top (calibrated)
probability is at least t, the teacher the others (runtime.Cascade). Sweeps t on valid,
keeps the cheapest t whose valid accuracy is within `--margin` points of the teacher's, and
reports it on test, with each model's calibration (NLL and ECE before and after its
temperature) and a reliability plot.

    python scripts/cascade.py --teacher=checkpoints/sst2/teacher --students=checkpoints/sst2/bilstm-distill.pt \\
        --data_dir=data/sst2          # results/cascade.{md,json}, results/reliability.png

Models are bundles (checkpoints are exported to bundles under `--work_dir` first), each in
its fastest backend on one thread. Latency is per sentence from its text at batch 1 (the
timing of `scripts/timing.py`): a sentence costs its student time, plus its teacher time
when it is deferred; the curve gives the mean and p90 over the sentences.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from dataset import data_labels, read_examples  # noqa: E402
from metrics import calibration, log_softmax, reliability  # noqa: E402
from runtime import Bundle  # noqa: E402
from timing import time_calls  # noqa: E402
from util import UserError, atomic_write_text, cpu_model, run_main, write_json  # noqa: E402

logger = logging.getLogger(__name__)
THRESHOLDS = [0.0, *np.round(np.arange(0.5, 1.0, 0.01), 2).tolist(), 0.995, 0.999, 1.0]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", required=True, help="the teacher: a bundle, or a teacher directory to export")
    p.add_argument("--students", required=True, help="comma-separated bundles or student checkpoints")
    p.add_argument("--data_dir", required=True, help="valid.txt and test.txt")
    p.add_argument("--margin", type=float, default=0.3, help="accuracy points below the teacher's allowed on valid")
    p.add_argument("--work_dir", default="checkpoints/cascade", help="where checkpoints are exported to bundles")
    p.add_argument("--repeats", type=int, default=1, help="timings per sentence (the best is kept)")
    p.add_argument("--results", default="results/cascade", help="<results>.md and <results>.json")
    p.add_argument("--plot", default="results/reliability.png")
    return p


def as_bundle(path: str, work: Path) -> Bundle:
    """A bundle as it is, or a checkpoint exported to one (torch only then), on one thread."""
    if (Path(path) / "bundle.json").is_file():
        return Bundle.load(path, num_threads=1)
    from inference import Predictor

    out = work / Path(path).name.replace(".pt", "")
    if not (out / "bundle.json").is_file():
        Predictor.load(path).export_bundle(out)
    return Bundle.load(out, num_threads=1)


class Scored:
    """One model on one split: calibrated probabilities `[n, K]` in the data's label order,
    correctness `[n]`, and per-sentence milliseconds `[n]`."""

    def __init__(self, bundle: Bundle, sentences: list[str], gold: np.ndarray, labels: list[str], repeats: int):
        columns = [bundle.labels.index(label) for label in labels]  # by name: a teacher's order may differ
        self.logits = bundle.logits(sentences)[:, columns].astype(np.float64)  # [n, K]
        self.probs = np.exp(log_softmax(self.logits / bundle.temperature))
        self.gold = gold
        self.correct = self.probs.argmax(1) == gold
        self.calibration = calibration(self.logits, gold, bundle.temperature)
        self.ms = time_calls(lambda s: bundle.logits_for_ids([bundle.encode(s)]), sentences, repeats, warmup=20)


def curve(student: Scored, teacher: Scored) -> list[dict]:
    """Deferred share, accuracy and latency of the cascade at each threshold."""
    confidence = student.probs.max(1)
    points = []
    for t in THRESHOLDS:
        deferred = confidence < t
        correct = np.where(deferred, teacher.correct, student.correct)
        ms = student.ms + np.where(deferred, teacher.ms, 0.0)
        points.append({"threshold": t, "deferred_share": float(deferred.mean()), "accuracy": float(correct.mean()),
                       "mean_ms": float(ms.mean()), "p90_ms": float(np.percentile(ms, 90))})
    return points


def plot(models: dict[str, Scored], path: str) -> None:
    """Reliability diagrams on test: accuracy against mean top probability in each bin
    (`metrics.reliability`), before and after each model's temperature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 4), squeeze=False)
    for ax, (name, m) in zip(axes[0], models.items()):
        for label, probs in (("T = 1", np.exp(log_softmax(m.logits))), (f"T = {m.calibration['temperature']:.2f}",
                                                                        m.probs)):
            points = reliability(probs, m.gold)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
        ax.set(title=name, xlabel="top probability", ylabel="accuracy", xlim=(0.45, 1.0), ylim=(0.3, 1.0))
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        data = Path(args.data_dir)
        work = Path(args.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        splits = {s: read_examples(data / f"{s}.txt") for s in ("valid", "test")}
        teacher_bundle = as_bundle(args.teacher, work)
        if teacher_bundle.multi_label:
            raise UserError(f"{args.teacher}: a multi-label model; this study measures single-label accuracy "
                            "(runtime.Cascade itself serves multi-label bundles)")
        labels = data_labels(data)
        if sorted(teacher_bundle.labels) != sorted(labels):
            raise UserError(f"{args.teacher}: labels {teacher_bundle.labels}, but {data} has {labels}")

        def score(bundle: Bundle) -> dict[str, Scored]:
            return {s: Scored(bundle, [e.sentence for e in ex], np.array([labels.index(e.label) for e in ex]),
                              labels, args.repeats) for s, ex in splits.items()}

        teacher = score(teacher_bundle)
        records, lines, reliability = [], [], {"teacher": teacher["test"]}
        t_test = teacher["test"]
        for path in args.students.split(","):
            name = Path(path).name.replace(".pt", "")
            student = score(as_bundle(path, work))
            reliability[name] = student["test"]
            valid, test = curve(student["valid"], teacher["valid"]), curve(student["test"], teacher["test"])
            target = teacher["valid"].correct.mean() - args.margin / 100
            chosen = min((v for v in valid if v["accuracy"] >= target), key=lambda v: v["deferred_share"],
                         default=valid[-1])
            for v, t in zip(valid, test):
                records.append({"student": name, "threshold": t["threshold"], "deferred_share": t["deferred_share"],
                                "test_accuracy": t["accuracy"], "mean_ms": t["mean_ms"], "p90_ms": t["p90_ms"],
                                "valid_accuracy": v["accuracy"], "valid_deferred_share": v["deferred_share"],
                                "chosen": v is chosen, "teacher_test_accuracy": float(t_test.correct.mean()),
                                "teacher_mean_ms": float(t_test.ms.mean())})
            t = test[valid.index(chosen)]
            lines.append(f"| {name} | {100 * student['test'].correct.mean():.2f} | {student['test'].ms.mean():.3f} | "
                         f"{chosen['threshold']:g} | {100 * chosen['accuracy']:.2f} | {100 * t['deferred_share']:.1f} | "
                         f"{100 * t['accuracy']:.2f} | {t['mean_ms']:.3f} | {t['p90_ms']:.3f} | "
                         f"{100 * t['mean_ms'] / t_test.ms.mean():.0f} |")
        calib = [f"| {name} | {m.calibration['temperature']:.3f} | {m.calibration['nll']:.4f} | "
                 f"{m.calibration['nll_calibrated']:.4f} | {m.calibration['ece']:.4f} | "
                 f"{m.calibration['ece_calibrated']:.4f} |" for name, m in reliability.items()]
        cmd = " ".join(["python scripts/cascade.py", *(argv if argv is not None else sys.argv[1:])])
        text = [
            "# Cascade: the student answers, the teacher takes the sentences it is unsure of", "",
            f"`{cmd}` on {cpu_model()} ({os.cpu_count()} cores). Bundles in their default backend, one thread, batch "
            f"1, from the text. The threshold is the cheapest (fewest deferred) whose valid accuracy is within "
            f"{args.margin:g} points of the teacher's valid accuracy ({100 * teacher['valid'].correct.mean():.2f} %); "
            f"the teacher alone on test: {100 * t_test.correct.mean():.2f} %, {t_test.ms.mean():.3f} ms per sentence.",
            "", "| student | alone test % | alone ms | threshold | valid % | deferred % (test) | cascade test % | "
            "mean ms | p90 ms | % of the teacher's mean ms |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", *lines, "",
            "Calibration on test (temperature fitted on valid in training; ECE with 15 equal-width bins):", "",
            "| model | temperature | NLL | NLL calibrated | ECE | ECE calibrated |", "| --- | --- | --- | --- | --- | --- |",
            *calib, "", f"Every threshold: `{args.results}.json`; reliability diagrams: `{args.plot}`.", ""]
        atomic_write_text(f"{args.results}.md", "\n".join(text))
        write_json(f"{args.results}.json", records)
        plot(reliability, args.plot)
        logger.info("[Written] %s.md, %s.json, %s", args.results, args.results, args.plot)
        return 0

    return run_main(body, logger)


if __name__ == "__main__":
    sys.exit(main())
