"""Run the whole distillation recipe on a data set and write its results table.

    python scripts/distill.py                                   # `make distill`: SST-2, the offline default
    python scripts/distill.py --demo                            # `make demo`: a 3,000-sentence subset
    python scripts/distill.py --data_dir /data/snips --models cnn,bilstm
    python scripts/distill.py --data_dir /data/snips --teacher embeddings/roberta-base \
        --teacher_config configs/config-roberta-cls.json --recipe configs/recipe-sst2.json

DATA is any directory with `train.txt`, `valid.txt` and `test.txt` (`sentence<TAB>label`,
any string labels). Its name names the run: the stages work in `data/<name>/` (the splits
are copied there when DATA is elsewhere), checkpoints go to `checkpoints/<name>/` and the
table to `results/<name>.md`. The teacher's own tokenizer decides the mask token and the
lower-casing. Each stage is one of the toolkit's command lines, printed before it runs, and
reruns only when its command or the content of its inputs changed (pipeline.py).
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from checkpoint import load_hf_tokenizer  # noqa: E402
from config import STUDENT_KINDS, Recipe, config_to_dict, load_config, load_recipe  # noqa: E402
from dataset import read_examples, read_labels, tokenizer_lowercases  # noqa: E402
from pipeline import (  # noqa: E402
    SPLITS,
    Pipeline,
    augment_steps,
    student_data_step,
    student_steps,
    teacher_steps,
)
from util import UserError, atomic_write_text, cpu_model, read_json, run_main, setup_logging, write_json  # noqa: E402

logger = logging.getLogger(__name__)
# Keys every student of one run must share: they read the same id files.
SHARED_KEYS = ("tokenizer", "lowercase", "token_emb_dim", "n_ctx", "pad_token", "unk_token")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_dir", default="data/sst2", help="train/valid/test.txt (default: SST-2 from `make data`)")
    p.add_argument("--teacher", default="embeddings/all-MiniLM-L6-v2", help="the teacher's Hugging Face model dir")
    p.add_argument("--teacher_config", help="teacher config (default: the recipe's)")
    p.add_argument("--recipe", help="recipe JSON (default configs/recipe-sst2.json, or recipe-demo.json with --demo)")
    p.add_argument("--models", default=os.environ.get("MODELS") or None,
                   help="comma-separated students (default $MODELS, else the recipe's)")
    p.add_argument("--embedding_path", help="GloVe text file (default embeddings/glove.6B.<dim>d.txt)")
    p.add_argument("--demo", action="store_true", help="a seeded subset of the training set (the recipe's size)")
    p.add_argument("--name", help="the run's name (default: DATA's directory name, plus -demo)")
    p.add_argument("--work_dir", help="where the stages work (default data/<name>)")
    p.add_argument("--out_dir", help="checkpoints (default checkpoints/<name>)")
    p.add_argument("--results", help="the table (default results/<name>.md)")
    p.add_argument("--force", action="store_true", help="rerun every stage")
    return p


def check_data(source: Path) -> None:
    """Each split is there and parses (a bad line is named by read_examples)."""
    for split in SPLITS:
        path = source / f"{split}.txt"
        if not path.is_file():
            raise UserError(f"{path}: missing; DATA needs train.txt, valid.txt and test.txt (sentence<TAB>label)")
        read_examples(path)


def prepare_work_dir(source: Path, work: Path, subset: int, seed: int = 42) -> None:
    """The splits in `work`, written only when their bytes change (so later stages stay up to
    date); with `subset`, a seeded subset of that many training lines."""
    work.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        text = (source / f"{split}.txt").read_text(encoding="utf-8")
        if split == "train" and subset:
            lines = text.splitlines(keepends=True)
            chosen = sorted(random.Random(seed).sample(range(len(lines)), min(subset, len(lines))))
            text = "".join(lines[i] if lines[i].endswith("\n") else lines[i] + "\n" for i in chosen)
        target = work / f"{split}.txt"
        if source.resolve() != work.resolve() or split == "train" and subset:
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                atomic_write_text(target, text)


def teacher_tokenization(teacher: str, recipe: Recipe) -> tuple[bool, str]:
    """The teacher tokenizer's own lower-casing and mask token (the recipe's mask_token wins)."""
    path = Path(teacher)
    if path.exists() and not (path / "config.json").is_file():
        raise UserError(f"{path}: not a Hugging Face model directory (no config.json)")
    tokenizer = load_hf_tokenizer(teacher)
    mask = recipe.mask_token or tokenizer.mask_token
    if not mask:
        raise UserError(f"{teacher}: its tokenizer has no mask token; set mask_token in the recipe")
    return tokenizer_lowercases(tokenizer), mask


def student_config_for_data(recipe: Recipe, models: list[str]) -> str:
    """The config preprocess builds the shared vocabulary with; all students must agree on
    the keys that shape the id files."""
    for m in models:
        for item in recipe.students[m].set:
            if item.split("=", 1)[0] in SHARED_KEYS:
                raise UserError(f"students.{m}.set: {item!r} changes the id files the students share; change the "
                                "config file of every student instead")
    configs = {m: config_to_dict(load_config(ROOT / recipe.student_config(m))) for m in models}
    first = models[0]
    for m in models[1:]:
        for key in SHARED_KEYS:
            if configs[m].get(key) != configs[first].get(key):
                raise UserError(f"{recipe.student_config(m)}: {key} {configs[m].get(key)!r} differs from "
                                f"{recipe.student_config(first)}'s {configs[first].get(key)!r}; the students of one "
                                "run share their id files")
    return recipe.student_config(first)


def read_results(path: Path) -> dict | None:
    return read_json(path) if path.exists() else None


def write_table(path: Path, title: str, out: Path, data: Path, teacher_name: str, recipe: Recipe, models: list[str],
                record: dict, recipe_path: str) -> None:
    """The results table, from the runs' results files (nothing typed by hand)."""
    teacher = read_results(out / "teacher" / "results.json")

    def row(name: str, trained_on: str, res: dict | None, train_results: Path, padded: Path | None = None) -> str:
        if res is None:
            return f"| {name} | {trained_on} | (not run yet) | | | | | |"
        train_s = (read_results(train_results) or {}).get("seconds")
        pad = read_results(padded) if padded else None
        pad_ms = "" if pad is None else f"{pad['ms_per_example']:.3f}"
        return (f"| {name} | {trained_on} | {100 * res['accuracy']:.2f} ({res['correct']}/{res['total']}) | "
                f"{res['ms_per_example']:.3f} | {pad_ms} | "
                f"{res['parameters']:,} | {res['parameters_without_embeddings']:,} | "
                f"{'' if train_s is None else f'{train_s / 60:.1f}'} |")

    rows = [row(f"{teacher_name} teacher", "gold labels (fine-tuned)", teacher, out / "teacher" / "train_results.json",
                out / "teacher" / "padded.results.json")]
    for m in models:
        kinds = (("gold", "gold labels"),) if recipe.students[m].gold_epochs else ()
        for kind, trained_on in (*kinds, ("distill", "teacher logits (distilled)")):
            ckpt = out / f"{m}-{kind}.pt"
            rows.append(row(STUDENT_KINDS[m].title, trained_on, read_results(Path(f"{ckpt}.results.json")),
                            Path(f"{ckpt}.train_results.json"), Path(f"{ckpt}.padded.results.json")))
    n_test = len(read_examples(data / "test.txt"))
    n_labels = len(read_labels(data / "label.txt")) if (data / "label.txt").exists() else "?"
    stages = ", ".join(f"{k} {v['seconds'] / 60:.1f}" for k, v in record.items())
    total = sum(v["seconds"] for v in record.values())
    lines = [
        f"# {title}", "",
        f"Test set: `{data.name}/test.txt` ({n_test:,} sentences, {n_labels} labels). Latency: `evaluate.py` at batch "
        f"size 1, 1 CPU thread, PyTorch eager, after 10 warm-up sentences, on {cpu_model()} ({os.cpu_count()} "
        "cores): *ms/example* from the raw sentence (tokenization included), *padded* from ids padded to n_ctx "
        "(`--pad_to_n_ctx`, the seed's method).",
        f"Recipe: `{recipe_path}`, teacher `{recipe.teacher.config}` ({recipe.teacher.epochs} epochs at lr "
        f"{recipe.teacher.lr:g}), augmentation n_iter {recipe.n_iter}"
        + (f", training subset {recipe.train_subset:,} sentences" if recipe.train_subset else "")
        + "; the students' epochs and learning rates are in the recipe.", "",
        "| model | trained on | test accuracy % | ms/example | padded ms/example | parameters | without embeddings "
        "| train min |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |", *rows, "",
        f"Wall time of the stages that ran: {total / 60:.1f} min ({stages}).", "",
    ]
    atomic_write_text(path, "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()

    def body() -> int:
        recipe_path = args.recipe or ("configs/recipe-demo.json" if args.demo else "configs/recipe-sst2.json")
        recipe = load_recipe(ROOT / recipe_path if not Path(recipe_path).is_absolute() else recipe_path)
        if args.teacher_config:
            recipe.teacher.config = args.teacher_config
        models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else recipe.models
        for m in models:
            if m not in recipe.students:
                raise UserError(f"unknown student {m!r} in --models/MODELS; {recipe_path} has "
                                f"{sorted(recipe.students)}")
        source = Path(args.data_dir)
        check_data(source)
        name = args.name or (source.resolve().name + ("-demo" if args.demo else ""))
        work = Path(args.work_dir) if args.work_dir else ROOT / "data" / name
        out = Path(args.out_dir) if args.out_dir else ROOT / "checkpoints" / name
        results = Path(args.results) if args.results else ROOT / "results" / f"{name}.md"
        lowercase, mask = teacher_tokenization(args.teacher, recipe)
        student_config = student_config_for_data(recipe, models)
        dim = load_config(ROOT / student_config).token_emb_dim
        embedding = args.embedding_path or f"embeddings/glove.6B.{dim}d.txt"
        tokenizer = load_config(ROOT / student_config).tokenizer
        prepare_work_dir(source, work, recipe.train_subset if args.demo or recipe.train_subset else 0)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "recipe.json", {"recipe": config_to_dict(recipe), "path": recipe_path, "models": models,
                                         "teacher": args.teacher, "lowercase": lowercase, "mask_token": mask})
        pipeline = Pipeline(out / "pipeline.json", sys.executable, ROOT, args.force)
        teacher, runs = out / "teacher", out / "runs"
        steps = [*teacher_steps(recipe, work, args.teacher, teacher, lowercase, runs),
                 *augment_steps(recipe, work, teacher, lowercase, mask, tokenizer),
                 student_data_step(work, student_config, embedding)]
        for m in models:
            if recipe.students[m].gold_epochs:
                steps += student_steps(recipe, m, "gold", work, out / f"{m}-gold.pt", runs)
            steps += student_steps(recipe, m, "distill", work, out / f"{m}-distill.pt", runs)
        title = f"{name}: distillation from {Path(args.teacher).name}"
        start = time.time()
        for step in steps:
            pipeline.run(step)
            write_table(results, title, out, work, Path(args.teacher).name, recipe, models, pipeline.record,
                        recipe_path)
        logger.info("[Pipeline] finished in %.1f min; table: %s", (time.time() - start) / 60, results)
        print(results.read_text(encoding="utf-8"))
        return 0

    return run_main(body, logger)


if __name__ == "__main__":
    sys.exit(main())
