"""Ablation on SST-2 with a student (the CNN by default): MSE against KL at T = 1, 2, 4;
alpha 0 against 0.5; n-gram masking against n-gram sampling. Every row is a training run; the
table is rebuilt from the runs' results files after each one.

    python scripts/ablation.py                              # `make ablation`: both stages
    python scripts/ablation.py --stage data                 # only the n-gram-sample data set
    python scripts/ablation.py --stage train --device cuda --jobs 6   # the runs, side by side on a GPU

It stands on `make distill` (the teacher in checkpoints/sst2/teacher and the labeled
augmented set in data/sst2). The `data` stage builds data/sst2-sample: the same augmentation
with `--ngram_mode sample`, labeled by the same teacher in the same way. Each run uses the
CNN recipe of `make distill` (epochs, learning rate, batch size); only the named setting
changes. Writes results/ablation.md.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from distill import FULL, MODEL_NAMES, STUDENT_CONFIGS, Pipeline, Step, read_results  # noqa: E402
from util import (  # noqa: E402
    UserError,
    atomic_write_text,
    cpu_model,
    resolve_device,
    run_main,
    setup_logging,
    write_json,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """One row: a name, its data directory (n-gram mode) and the train.py options it changes."""

    name: str
    ngram_mode: str
    criterion: str
    temperature: float = 1.0
    alpha: float = 0.0


VARIANTS = (
    Variant("mse", "mask", "MSELoss"),
    Variant("kl-t1", "mask", "KLDivLoss", temperature=1.0),
    Variant("kl-t2", "mask", "KLDivLoss", temperature=2.0),
    Variant("kl-t4", "mask", "KLDivLoss", temperature=4.0),
    Variant("mse-alpha0.5", "mask", "MSELoss", alpha=0.5),
    Variant("mse-sample", "sample", "MSELoss"),
)


def relative(path: Path) -> Path:
    """`path` relative to the repository when inside it (shorter commands in pipeline.json)."""
    try:
        return path.relative_to(ROOT)
    except ValueError:
        return path


def data_steps(source: Path, sample: Path, teacher: Path, args: argparse.Namespace) -> list[Step]:
    """The n-gram-sample data set: the `make distill` data stages with `--ngram_mode sample`."""
    teacher_cfg = FULL.teacher_config
    return [
        Step("augment (sample)", ["augment_data.py", "--input", str(sample / "train.txt"), "--output",
                                  str(sample / "augmented.raw"), f"--n_iter={FULL.n_iter}", "--parallel",
                                  "--seed=42", "--ngram_mode=sample"],
             [sample / "train.txt"], [sample / "augmented.raw"]),
        Step("preprocess augmented (teacher, sample)", [
            "preprocess.py", f"--config={teacher_cfg}", f"--data_dir={sample}",
            f"--bert_model_name_or_path={teacher}", "--bert_do_lower_case", "--augmented"],
            [sample / "augmented.raw"], [sample / "augmented.raw.fs"]),
        Step("label augmented (sample)", [
            "evaluate.py", f"--config={teacher_cfg}", f"--data_dir={sample}", f"--bert_output_dir={teacher}",
            "--batch_size=128", "--augmented", f"--amp={FULL.label_amp}"],
            # a retrained teacher makes the sample's logits stale
            [sample / "augmented.raw.fs", teacher / "model.safetensors"], [sample / "augmented.raw.pred"]),
        Step("copy logits (sample)", ["cp", str(sample / "augmented.raw.pred"), str(sample / "augmented.txt")],
             [sample / "augmented.raw.pred"], [sample / "augmented.txt"]),
        Step("preprocess students (sample)", [
            "preprocess.py", f"--config={args.config or STUDENT_CONFIGS[args.student]}", f"--data_dir={sample}",
            f"--embedding_path={args.embedding_path}", "--augmented"],
            [sample / "augmented.txt"], [sample / "augmented.txt.ids"]),
    ]


def train_steps(v: Variant, data: Path, out: Path, args: argparse.Namespace) -> list[Step]:
    """Train and evaluate one variant with the student's `make distill` recipe."""
    m = args.student
    ckpt = out / f"{m}-{v.name}.pt"
    cfg = args.config or STUDENT_CONFIGS[m]
    device = args.device
    return [
        Step(f"train {v.name}", [
            "train.py", f"--config={cfg}", f"--data_dir={data}", f"--save_path={ckpt}",
            f"--lr={FULL.student_lr[m]}", f"--epoch={FULL.student_epochs[m]}", "--batch_size=128",
            "--use_transformers_optimizer", "--warmup_epoch=0", "--weight_decay=0.0",
            f"--amp={FULL.student_amp[m]}", f"--device={device}", f"--log_dir={out / 'runs' / v.name}",
            "--augmented", f"--criterion={v.criterion}", f"--temperature={v.temperature}", f"--alpha={v.alpha}",
            *([f"--train_limit={args.train_limit}"] if args.train_limit else [])],
            [data / "augmented.txt.ids"], [Path(f"{ckpt}.train_results.json")]),
        Step(f"evaluate {v.name}", [
            "evaluate.py", f"--config={cfg}", f"--data_dir={data}", f"--model_path={ckpt}", f"--device={device}"],
            [ckpt], [Path(f"{ckpt}.results.json")]),
    ]


def write_table(path: Path, out: Path, data: dict[str, Path], student: str) -> None:
    """results/ablation.md from the runs' results files."""
    rows = []
    for v in VARIANTS:
        ckpt = out / f"{student}-{v.name}.pt"
        res = read_results(Path(f"{ckpt}.results.json"))
        train = read_results(Path(f"{ckpt}.train_results.json")) or {}
        setting = (f"{v.criterion}" + (f", T = {v.temperature:g}" if v.criterion == "KLDivLoss" else "")
                   + f", α = {v.alpha:g}, n-gram {v.ngram_mode}")
        if res is None:
            rows.append(f"| {v.name} | {setting} | (not run yet) | | | |")
            continue
        valid = train.get("best_accuracy")
        rows.append(f"| {v.name} | {setting} | {100 * res['accuracy']:.2f} ({res['correct']}/{res['total']}) | "
                    f"{'' if valid is None else f'{100 * valid:.2f}'} | {train.get('train_examples', '')} | "
                    f"{train.get('seconds', 0) / 60:.1f} |")
    machine = read_results(out / "machine.json") or {}
    counts = {mode: sum(1 for _ in open(d / "augmented.txt", encoding="utf-8")) if (d / "augmented.txt").exists()
              else 0 for mode, d in data.items()}
    lines = [
        f"# SST-2 ablation: {MODEL_NAMES[student]} student, one setting changed per row",
        "",
        f"Every row: `train.py` with the `make distill` recipe for this student ({FULL.student_epochs[student]} "
        f"epochs, lr {FULL.student_lr[student]}, batch 128, AdamW with linear decay) on the MiniLM teacher's logits "
        f"(augmentation n_iter {FULL.n_iter}: {counts['mask']:,} sentences with n-gram masking, "
        f"{counts['sample']:,} with n-gram sampling), then `evaluate.py` on the SST-2 test set (1,821 sentences). "
        "α mixes gold cross-entropy on the original training sentences: L = α·CE + (1 − α)·KD; "
        "KL is scaled by T². The best epoch is chosen on valid accuracy.",
        f"Runs trained on: {machine.get('device', 'not recorded')}; command: `{machine.get('command', '')}`.",
        "",
        "| run | setting | test accuracy % | best valid accuracy % | training sentences | train min |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
    ]
    atomic_write_text(path, "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", choices=("all", "data", "train"), default="all")
    p.add_argument("--student", choices=sorted(STUDENT_CONFIGS), default="cnn", help="whose recipe the runs use")
    p.add_argument("--config", help="student config (default: the student's configs/ file)")
    p.add_argument("--data_dir", default="data/sst2", help="the `make distill` data (n-gram masking)")
    p.add_argument("--sample_dir", default="data/sst2-sample", help="where the n-gram-sample data goes")
    p.add_argument("--teacher", default="checkpoints/sst2/teacher", help="the `make distill` teacher")
    p.add_argument("--out_dir", default="checkpoints/sst2-ablation")
    p.add_argument("--results", default="results/ablation.md")
    p.add_argument("--embedding_path", default="embeddings/glove.6B.50d.txt")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda, for the training runs")
    p.add_argument("--jobs", type=int, default=1, help="runs side by side (on a GPU; 1 on a small CPU)")
    p.add_argument("--only", help="comma-separated run names (default: all)")
    p.add_argument("--train_limit", type=int, default=0, help="first N augmented lines only (a smoke test)")
    p.add_argument("--force", action="store_true", help="rerun every stage")
    args = p.parse_args(argv)
    setup_logging()

    def body() -> int:
        source, sample = ROOT / args.data_dir, ROOT / args.sample_dir
        out = ROOT / args.out_dir
        out.mkdir(parents=True, exist_ok=True)
        variants = VARIANTS
        if args.only:
            names = {n.strip() for n in args.only.split(",")}
            unknown = names - {v.name for v in VARIANTS}
            if unknown:
                raise UserError(f"--only: unknown run {sorted(unknown)[0]!r}; expected some of "
                                f"{[v.name for v in VARIANTS]}")
            variants = tuple(v for v in VARIANTS if v.name in names)
        pipeline = Pipeline(out, args.force, sys.executable)
        rel = {"mask": relative(source), "sample": relative(sample)}
        results = ROOT / args.results
        if args.stage in ("all", "data"):
            if not (source / "augmented.txt.ids").exists():
                raise UserError(f"{source / 'augmented.txt.ids'}: not found (run `make distill` first)")
            sample.mkdir(parents=True, exist_ok=True)
            for name in ("train.txt", "valid.txt", "test.txt", "label.txt"):
                if not (sample / name).exists():
                    shutil.copyfile(source / name, sample / name)
            for step in data_steps(rel["mask"], rel["sample"], Path(args.teacher), args):
                pipeline.run(step)
        if args.stage in ("all", "train"):
            import torch

            device = resolve_device(args.device)
            name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                    else f"{cpu_model()} ({os.cpu_count()} cores)")
            write_json(out / "machine.json", {"device": name, "command": "python scripts/ablation.py "
                                              + " ".join(argv if argv is not None else sys.argv[1:])})
            for d in {rel[v.ngram_mode] for v in variants}:
                if not (ROOT / d / "augmented.txt.ids").exists():
                    raise UserError(f"{ROOT / d / 'augmented.txt.ids'}: not found (run the data stage first)")

            def run_variant(v: Variant) -> None:
                for step in train_steps(v, rel[v.ngram_mode], relative(out), args):
                    pipeline.run(step)
                write_table(results, out, {m: ROOT / d for m, d in rel.items()}, args.student)

            start = time.time()
            with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
                for future in [pool.submit(run_variant, v) for v in variants]:
                    future.result()
            logger.info("[Ablation] %d run(s) in %.1f min", len(variants), (time.time() - start) / 60)
        write_table(results, out, {m: ROOT / d for m, d in rel.items()}, args.student)
        print(results.read_text())
        return 0

    return run_main(body, logger)


if __name__ == "__main__":
    sys.exit(main())
