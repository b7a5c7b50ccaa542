"""Run the whole distillation recipe on SST-2 and write the results table.

    python scripts/distill.py                 # `make distill`: full SST-2, offline default
    python scripts/distill.py --demo          # `make demo`: a 3,000-sentence subset, minutes
    MODELS=cnn python scripts/distill.py      # only some students

Each stage is one of the toolkit's own command lines, printed before it runs. A stage is
skipped when its outputs exist and are newer than its inputs (`--force` reruns all).
Stage wall times go to `<out_dir>/pipeline.json`; the table (`results/sst2.md`, or
`results/demo.md`) is rebuilt from the runs' `results.json` files after every stage.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from util import UserError, atomic_write_text, cpu_model, run_main, setup_logging, write_json  # noqa: E402

logger = logging.getLogger(__name__)

STUDENT_CONFIGS = {
    "cnn": "configs/config-glove-cnn.json",
    "densenet-cnn": "configs/config-densenet-cnn.json",
    "densenet-dsa": "configs/config-densenet-dsa.json",
    "bilstm": "configs/config-glove-bilstm.json",
}
MODEL_NAMES = {"cnn": "GloVe CNN", "densenet-cnn": "GloVe DenseNet-CNN", "densenet-dsa": "GloVe DenseNet-DSA",
               "bilstm": "GloVe BiLSTM"}


@dataclass
class Recipe:
    """Sizes that differ between the full run and the demo."""

    train_subset: int = 0  # 0: all of train.txt
    # Mean pooling: all-MiniLM-L6-v2 was trained to give sentence vectors that way (README, teacher)
    teacher_config: str = "configs/config-bert-mean.json"
    teacher_epochs: int = 3
    teacher_lr: float = 1e-4
    n_iter: int = 8
    student_epochs: dict = field(default_factory=lambda: {"cnn": 4, "densenet-cnn": 2, "densenet-dsa": 1,
                                                          "bilstm": 3})
    gold_epochs: dict = field(default_factory=lambda: {"cnn": 5, "densenet-cnn": 3, "densenet-dsa": 3,
                                                       "bilstm": 5})
    student_lr: dict = field(default_factory=lambda: {"cnn": 1e-3, "densenet-cnn": 5e-4, "densenet-dsa": 5e-4,
                                                      "bilstm": 1e-3})
    # bf16 autocast where this CPU gains from it (the DenseNets' convolutions); weights stay float32
    student_amp: dict = field(default_factory=lambda: {"cnn": "none", "densenet-cnn": "bf16", "densenet-dsa": "bf16",
                                                       "bilstm": "none"})
    label_amp: str = "bf16"


FULL = Recipe()
DEMO = Recipe(train_subset=3000, teacher_epochs=1, n_iter=4,
              student_epochs={"cnn": 3, "densenet-cnn": 2, "densenet-dsa": 2, "bilstm": 2},
              gold_epochs={"cnn": 5, "densenet-cnn": 3, "densenet-dsa": 3, "bilstm": 3})


@dataclass
class Step:
    """One command line with the files it reads and writes."""

    name: str
    argv: list[str]
    inputs: list[Path]
    outputs: list[Path]


class Pipeline:
    """Runs steps in order, skipping those whose outputs are up to date. A training step's
    output is its `train_results.json`, written only when training ends, so a run killed
    mid-training is redone (or resumed by hand with `train.py --resume`)."""

    def __init__(self, out_dir: Path, force: bool, python: str):
        self.out_dir = out_dir
        self.force = force
        self.python = python
        self.record_path = out_dir / "pipeline.json"
        self.record = json.loads(self.record_path.read_text()) if self.record_path.exists() else {}
        self.lock = threading.Lock()  # steps may run from several threads (scripts/ablation.py --jobs)

    def up_to_date(self, step: Step) -> bool:
        if self.force or not all(p.exists() for p in step.outputs):
            return False
        newest_input = max((p.stat().st_mtime for p in step.inputs if p.exists()), default=0.0)
        return min(p.stat().st_mtime for p in step.outputs) >= newest_input

    def run(self, step: Step) -> None:
        if self.up_to_date(step):
            logger.info("[Skip] %s (outputs up to date)", step.name)
            return
        argv = [self.python, *step.argv] if step.argv[0].endswith(".py") else step.argv
        print("$ " + " ".join(shlex.quote(a) for a in argv), flush=True)
        start = time.time()
        result = subprocess.run(argv, cwd=ROOT)
        if result.returncode != 0:
            raise UserError(f"stage {step.name!r} failed with exit code {result.returncode}")
        seconds = time.time() - start
        with self.lock:
            self.record[step.name] = {"seconds": round(seconds, 1), "command": " ".join(argv[1:]),
                                      "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
            write_json(self.record_path, self.record)
        logger.info("[Done] %s in %.1fs", step.name, seconds)


def make_subset(source: Path, target: Path, n: int, seed: int) -> None:
    """A random `n`-line train subset (seeded) with the full valid and test files."""
    target.mkdir(parents=True, exist_ok=True)
    lines = (source / "train.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(len(lines)), min(n, len(lines))))
    text = "".join(lines[i] if lines[i].endswith("\n") else lines[i] + "\n" for i in chosen)
    if not (target / "train.txt").exists() or (target / "train.txt").read_text(encoding="utf-8") != text:
        atomic_write_text(target / "train.txt", text)
    for split in ("valid", "test"):
        if not (target / f"{split}.txt").exists():
            shutil.copyfile(source / f"{split}.txt", target / f"{split}.txt")


def read_results(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def write_table(path: Path, out_dir: Path, models: list[str], title: str, recipe: Recipe, record: dict) -> None:
    """The results table, from the runs' results files (nothing typed by hand)."""
    rows = []
    teacher = read_results(out_dir / "teacher" / "results.json")

    def fmt_row(name: str, trained_on: str, res: dict | None, train_results: Path) -> str:
        if res is None:
            return f"| {name} | {trained_on} | (not run yet) | | | | |"
        train_s = (read_results(train_results) or {}).get("seconds")
        return (f"| {name} | {trained_on} | {100 * res['accuracy']:.2f} ({res['correct']}/{res['total']}) | "
                f"{res['ms_per_example']:.2f} | {res['parameters']:,} | {res['parameters_without_embeddings']:,} | "
                f"{'' if train_s is None else f'{train_s / 60:.1f}'} |")

    rows.append(fmt_row("MiniLM-L6 teacher", "gold labels (fine-tuned)", teacher,
                        out_dir / "teacher" / "train_results.json"))
    # the selected students, and any other whose runs are already there (MODELS=bilstm adds a row)
    shown = [m for m in STUDENT_CONFIGS if m in models or any(
        (out_dir / f"{m}-{kind}.pt.results.json").exists() for kind in ("gold", "distill"))]
    for m in shown:
        for kind, trained_on in (("gold", "gold labels"), ("distill", "teacher logits (distilled)")):
            ckpt = out_dir / f"{m}-{kind}.pt"
            rows.append(fmt_row(MODEL_NAMES[m], trained_on, read_results(Path(f"{ckpt}.results.json")),
                                Path(f"{ckpt}.train_results.json")))
    total = sum(v["seconds"] for v in record.values())
    stages = ", ".join(f"{k} {v['seconds'] / 60:.1f}" for k, v in record.items())
    threads = (teacher or {}).get("threads")
    lines = [
        f"# {title}",
        "",
        "SST-2 test set (1,821 sentences). Latency: `evaluate.py` at batch size 1, "
        f"{threads if threads else 1} CPU thread(s), after 10 warm-up sentences, "
        f"on {cpu_model()} ({os.cpu_count()} cores).",
        f"Recipe: teacher {recipe.teacher_config}, {recipe.teacher_epochs} epoch(s) at lr {recipe.teacher_lr}, "
        f"augmentation n_iter {recipe.n_iter}, teacher labeling autocast {recipe.label_amp}, "
        f"students' epochs {recipe.student_epochs} "
        f"(logits) and {recipe.gold_epochs} (gold), autocast {recipe.student_amp}"
        + (f", train subset {recipe.train_subset} sentences" if recipe.train_subset else "") + ".",
        "",
        "| model | trained on | test accuracy % | ms/example | parameters | without embeddings | train min |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"Wall time of the stages that ran: {total / 60:.1f} min ({stages}).",
        "",
    ]
    atomic_write_text(path, "\n".join(lines))


def build_steps(args: argparse.Namespace, recipe: Recipe, data: Path, out: Path, models: list[str]) -> list:
    """The recipe as command lines (the README's per-stage commands)."""
    teacher_cfg = recipe.teacher_config
    bert = str(args.teacher_model)
    teacher = out / "teacher"
    splits = [data / f"{s}.txt" for s in ("train", "valid", "test")]
    glove_cfg = STUDENT_CONFIGS["cnn"]
    runs = out / "runs"
    steps: list = [
        Step("preprocess teacher", ["preprocess.py", f"--config={teacher_cfg}", f"--data_dir={data}",
                                    f"--bert_model_name_or_path={bert}", "--bert_do_lower_case"],
             splits, [data / "train.txt.fs", data / "valid.txt.fs", data / "test.txt.fs"]),
        Step("train teacher", ["train.py", f"--config={teacher_cfg}", f"--data_dir={data}",
                               f"--bert_model_name_or_path={bert}", "--bert_do_lower_case",
                               f"--bert_output_dir={teacher}", f"--lr={recipe.teacher_lr}",
                               f"--epoch={recipe.teacher_epochs}", "--batch_size=32", "--use_transformers_optimizer",
                               "--warmup_epoch=0.1", "--weight_decay=0.01", f"--log_dir={runs / 'teacher'}"],
             [data / "train.txt.fs"], [teacher / "train_results.json"]),
        Step("evaluate teacher", ["evaluate.py", f"--config={teacher_cfg}", f"--data_dir={data}",
                                  f"--bert_output_dir={teacher}", "--num_threads=1"],
             [teacher / "model.safetensors"], [teacher / "results.json"]),
        Step("augment", ["augment_data.py", "--input", str(data / "train.txt"), "--output",
                         str(data / "augmented.raw"), f"--n_iter={recipe.n_iter}", "--parallel", "--seed=42"],
             [data / "train.txt"], [data / "augmented.raw"]),
        Step("preprocess augmented (teacher)", ["preprocess.py", f"--config={teacher_cfg}", f"--data_dir={data}",
                                                f"--bert_model_name_or_path={bert}", "--bert_do_lower_case",
                                                "--augmented"],
             [data / "augmented.raw"], [data / "augmented.raw.fs"]),
        Step("label augmented", ["evaluate.py", f"--config={teacher_cfg}", f"--data_dir={data}",
                                 f"--bert_output_dir={teacher}", "--batch_size=128", "--augmented",
                                 f"--amp={recipe.label_amp}"],
             [data / "augmented.raw.fs", teacher / "model.safetensors"], [data / "augmented.raw.pred"]),
        Step("copy logits", ["cp", str(data / "augmented.raw.pred"), str(data / "augmented.txt")],
             [data / "augmented.raw.pred"], [data / "augmented.txt"]),
        Step("preprocess students", ["preprocess.py", f"--config={glove_cfg}", f"--data_dir={data}",
                                     f"--embedding_path={args.embedding_path}", "--augmented"],
             [data / "augmented.txt", *splits], [data / "augmented.txt.ids", data / "train.txt.ids"]),
    ]
    for m in models:
        cfg = STUDENT_CONFIGS[m]
        for kind in ("gold", "distill"):
            ckpt = out / f"{m}-{kind}.pt"
            epochs = recipe.gold_epochs[m] if kind == "gold" else recipe.student_epochs[m]
            extra = ["--augmented", "--criterion=MSELoss"] if kind == "distill" else []
            train_input = data / ("augmented.txt.ids" if kind == "distill" else "train.txt.ids")
            steps.append(Step(f"train {m} {kind}", [
                "train.py", f"--config={cfg}", f"--data_dir={data}", f"--save_path={ckpt}",
                f"--lr={recipe.student_lr[m]}", f"--epoch={epochs}", "--batch_size=128",
                "--use_transformers_optimizer", "--warmup_epoch=0", "--weight_decay=0.0",
                f"--amp={recipe.student_amp[m]}",
                f"--log_dir={runs / f'{m}-{kind}'}", *extra], [train_input], [Path(f"{ckpt}.train_results.json")]))
            steps.append(Step(f"evaluate {m} {kind}", [
                "evaluate.py", f"--config={cfg}", f"--data_dir={data}", f"--model_path={ckpt}", "--num_threads=1"],
                [ckpt], [Path(f"{ckpt}.results.json")]))
    return steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", action="store_true", help="a small subset, for a first look in minutes")
    p.add_argument("--data_dir", default="data/sst2", help="full SST-2 (from `make data`)")
    p.add_argument("--out_dir", help="checkpoints (default checkpoints/sst2 or checkpoints/demo)")
    p.add_argument("--results", help="table path (default results/sst2.md or results/demo.md)")
    p.add_argument("--models", default=os.environ.get("MODELS", ",".join(STUDENT_CONFIGS)),
                   help="comma-separated students (default $MODELS, else all: " + ",".join(STUDENT_CONFIGS) + ")")
    p.add_argument("--teacher_model", default="embeddings/all-MiniLM-L6-v2")
    p.add_argument("--embedding_path", default="embeddings/glove.6B.50d.txt")
    p.add_argument("--force", action="store_true", help="rerun every stage")
    args = p.parse_args(argv)
    setup_logging()

    def body() -> int:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = [m for m in models if m not in STUDENT_CONFIGS]
        if unknown:
            raise UserError(f"unknown model {unknown[0]!r} in MODELS; expected some of {sorted(STUDENT_CONFIGS)}")
        recipe = DEMO if args.demo else FULL
        source = ROOT / args.data_dir
        if not (source / "train.txt").exists():
            raise UserError(f"{source / 'train.txt'}: not found (run `make data`)")
        data = ROOT / "data" / "sst2-demo" if args.demo else source
        if args.demo:
            make_subset(source, data, recipe.train_subset, seed=42)
        out = ROOT / (args.out_dir or ("checkpoints/demo" if args.demo else "checkpoints/sst2"))
        out.mkdir(parents=True, exist_ok=True)
        results = ROOT / (args.results or ("results/demo.md" if args.demo else "results/sst2.md"))
        title = "SST-2 distillation, demo subset" if args.demo else "SST-2 distillation"
        pipeline = Pipeline(out, args.force, sys.executable)
        start = time.time()
        for step in build_steps(args, recipe, data.relative_to(ROOT), out.relative_to(ROOT), models):
            pipeline.run(step)
            write_table(results, out, models, title, recipe, pipeline.record)
        logger.info("[Pipeline] finished in %.1f min; table: %s", (time.time() - start) / 60, results)
        print(results.read_text())
        return 0

    return run_main(body, logger)


if __name__ == "__main__":
    sys.exit(main())
