"""Ablation on SST-2 with a student (the CNN by default): MSE against KL at T = 1, 2, 4;
alpha 0 against 0.5; n-gram masking against n-gram sampling. Every row is a training run; the
table is rebuilt from the runs' results files after each one.

    python scripts/ablation.py                              # `make ablation`: both stages
    python scripts/ablation.py --stage data                 # only the n-gram-sample data set
    python scripts/ablation.py --stage train --device cuda --jobs 6   # the runs, side by side on a GPU

It stands on `make distill` (its transfer set, data/sst2/transfer.txt, and its teacher, which
checkpoints/sst2/recipe.json records: the classifier it was given, as in the published run's
`make distill TEACHER=checkpoints/minilm-sst2-hf`, or the encoder it fine-tuned into
checkpoints/sst2/teacher). The `data` stage builds data/sst2-sample with the pipeline's own
augmentation and labeling stages (pipeline.py) and `ngram_mode` "sample", labeled by the same
teacher. The runs learn from the training and augmented sentences (transfer `augmented`). Each
run uses the student's recipe (configs/recipe-sst2.json); only the named setting changes.
Writes results/ablation.md.
"""
from __future__ import annotations

import argparse
import dataclasses
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

from config import STUDENT_KINDS, load_config, load_recipe  # noqa: E402
from pipeline import Pipeline, augment_step, label_step, local_files, student_data_step, student_steps  # noqa: E402,E501
from teachers import load_hf_tokenizer  # noqa: E402
from util import (  # noqa: E402
    UserError,
    atomic_write_text,
    cpu_model,
    read_json,
    resolve_device,
    run_main,
    write_json,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """One row: a name, its data set (n-gram mode) and the train.py options it changes."""

    name: str
    ngram_mode: str
    criterion: str
    temperature: float = 1.0
    alpha: float = 0.0

    def flags(self) -> list[str]:
        flags = [f"--criterion={self.criterion}"]
        if self.criterion != "MSELoss":
            flags.append(f"--temperature={self.temperature}")
        return flags + ([f"--alpha={self.alpha}"] if self.alpha else [])

    def setting(self) -> str:
        return (self.criterion + (f", T = {self.temperature:g}" if self.criterion == "KLDivLoss" else "")
                + f", α = {self.alpha:g}, n-gram {self.ngram_mode}")


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
        return path.resolve().relative_to(ROOT)
    except ValueError:
        return path


def distill_teacher(run: Path) -> str:
    """The teacher that `make distill` labeled with, from the run's `recipe.json` (scripts/distill.py
    writes it into checkpoints/<name>): the classifier it was given, or the one it fine-tuned into
    `run`/teacher."""
    plan = run / "recipe.json"
    if not plan.is_file():
        raise UserError(f"{plan}: not found (run `make distill` first, or give --teacher)")
    teacher = read_json(plan)["teacher"]
    if teacher["kind"] == "file":
        raise UserError(f"{plan}: that run brought scores, not a teacher; give --teacher")
    return teacher["source"] if teacher["kind"] == "ready" else str(run / "teacher")


def count_lines(path: Path) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


def write_table(path: Path, out: Path, data: dict[str, Path], student: str, recipe_path: str, epochs: int,
                lr: float) -> None:
    """results/ablation.md from the runs' results files."""
    rows = []
    for v in VARIANTS:
        ckpt = out / f"{student}-{v.name}.pt"
        res = read_json(Path(f"{ckpt}.results.json")) if Path(f"{ckpt}.results.json").exists() else None
        train = read_json(Path(f"{ckpt}.train_results.json")) if Path(f"{ckpt}.train_results.json").exists() else {}
        if res is None:
            rows.append(f"| {v.name} | {v.setting()} | (not run yet) | | | |")
            continue
        valid = train.get("best_accuracy")
        rows.append(f"| {v.name} | {v.setting()} | {100 * res['accuracy']:.2f} ({res['correct']}/{res['total']}) | "
                    f"{'' if valid is None else f'{100 * valid:.2f}'} | {train.get('train_examples', '')} | "
                    f"{train.get('seconds', 0) / 60:.1f} |")
    machine = read_json(out / "machine.json") if (out / "machine.json").exists() else {}
    counts = {mode: count_lines(d / "transfer.txt") if (d / "transfer.txt").exists() else 0
              for mode, d in data.items()}
    lines = [
        f"# SST-2 ablation: {STUDENT_KINDS[student].title} student, one setting changed per row", "",
        f"Every row: `train.py` with this student's recipe in `{recipe_path}` ({epochs} epochs, lr {lr:g}, AdamW "
        f"with linear decay) on the teacher's logits ({counts['mask']:,} training and augmented sentences with n-gram "
        f"masking, {counts['sample']:,} with n-gram sampling), then `evaluate.py` on the test set. α mixes gold "
        "cross-entropy on the original training sentences: L = α·CE + (1 − α)·KD; KL is scaled by T². The best "
        "epoch is chosen on valid accuracy.",
        f"Runs trained on: {machine.get('device', 'not recorded')}; command: `{machine.get('command', '')}`.", "",
        "| run | setting | test accuracy % | best valid accuracy % | training sentences | train min |",
        "| --- | --- | --- | --- | --- | --- |", *rows, "",
    ]
    atomic_write_text(path, "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", choices=("all", "data", "train"), default="all")
    p.add_argument("--student", choices=sorted(STUDENT_KINDS), default="cnn", help="whose recipe the runs use")
    p.add_argument("--config", help="student config (default: the recipe's)")
    p.add_argument("--recipe", default="configs/recipe-sst2.json")
    p.add_argument("--data_dir", default="data/sst2", help="the `make distill` data (n-gram masking)")
    p.add_argument("--sample_dir", default="data/sst2-sample", help="where the n-gram-sample data goes")
    p.add_argument("--teacher", help="default: the teacher of the `make distill` run (its recipe.json)")
    p.add_argument("--out_dir", default="checkpoints/sst2-ablation")
    p.add_argument("--results", default="results/ablation.md")
    p.add_argument("--embedding_path", default="embeddings/glove.6B.50d.txt")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="for the training runs")
    p.add_argument("--jobs", type=int, default=1, help="runs side by side (on a GPU; 1 on a small CPU)")
    p.add_argument("--only", help="comma-separated run names (default: all)")
    p.add_argument("--force", action="store_true", help="rerun every stage")
    args = p.parse_args(argv)

    def body() -> int:
        recipe = load_recipe(ROOT / args.recipe)
        if args.config:
            recipe.students[args.student].config = args.config
        variants = VARIANTS
        if args.only:
            names = {n.strip() for n in args.only.split(",")}
            unknown = names - {v.name for v in VARIANTS}
            if unknown:
                raise UserError(f"--only: unknown run {sorted(unknown)[0]!r}; expected some of "
                                f"{[v.name for v in VARIANTS]}")
            variants = tuple(v for v in VARIANTS if v.name in names)
        source, sample, out = Path(args.data_dir), Path(args.sample_dir), Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        pipeline = Pipeline(out / "pipeline.json", sys.executable, ROOT, args.force)
        rel = {"mask": relative(source), "sample": relative(sample)}
        student_cfg = recipe.student_config(args.student)
        if args.stage in ("all", "data"):
            if not (source / "transfer.txt.ids").exists():
                raise UserError(f"{source / 'transfer.txt.ids'}: not found (run `make distill` first)")
            sample.mkdir(parents=True, exist_ok=True)
            for name in ("train.txt", "valid.txt", "test.txt", "label.txt"):
                shutil.copyfile(source / name, sample / name)
            tokenizer = load_config(ROOT / student_cfg).tokenizer
            sampled = dataclasses.replace(recipe, ngram_mode="sample")
            teacher = args.teacher or distill_teacher(ROOT / "checkpoints" / source.resolve().name)
            mask = recipe.mask_token or load_hf_tokenizer(teacher).mask_token
            for step in [augment_step(sampled, rel["sample"], mask, tokenizer),
                         label_step(sampled, rel["sample"], student_cfg, teacher, local_files(teacher),
                                    augmented=True),
                         student_data_step(rel["sample"], student_cfg, args.embedding_path, tag=" (sample)")]:
                pipeline.run(step)
        s = recipe.students[args.student]
        results = Path(args.results)
        data = {m: ROOT / d for m, d in rel.items()}
        if args.stage in ("all", "train"):
            import torch

            device = resolve_device(args.device)
            name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu_model()} " \
                f"({os.cpu_count()} cores)"
            write_json(out / "machine.json", {"device": name, "command": "python scripts/ablation.py "
                                              + " ".join(argv if argv is not None else sys.argv[1:])})
            for d in {rel[v.ngram_mode] for v in variants}:
                if not (ROOT / d / "transfer.txt.ids").exists():
                    raise UserError(f"{ROOT / d / 'transfer.txt.ids'}: not found (run the data stage first)")

            def run_variant(v: Variant) -> None:
                steps = student_steps(recipe, args.student, v.name, rel[v.ngram_mode],
                                      relative(out) / f"{args.student}-{v.name}.pt", relative(out) / "runs",
                                      transfer="augmented", extra=v.flags(), device=args.device)
                for step in steps:
                    pipeline.run(step)
                write_table(results, out, data, args.student, args.recipe, s.epochs, s.lr)

            start = time.time()
            with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
                for future in [pool.submit(run_variant, v) for v in variants]:
                    future.result()
            logger.info("[Ablation] %d run(s) in %.1f min", len(variants), (time.time() - start) / 60)
        write_table(results, out, data, args.student, args.recipe, s.epochs, s.lr)
        print(results.read_text(encoding="utf-8"))
        return 0

    return run_main(body, logger)


if __name__ == "__main__":
    sys.exit(main())
