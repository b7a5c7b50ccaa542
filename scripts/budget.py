"""What the training budget and the gold mix do to a distilled student: the measurement behind
the recipes' `min_steps`, `eval_steps`, `patience_steps` and `gold_mix_below`.

    make budget        # make demo, then python scripts/budget.py: results/budget.md from data/sst2-demo

Stands on a data directory that `make distill` (or `make demo`) prepared: its transfer set's
id files and the GloVe vocabulary. For each student and seed it trains, then evaluates on
test.txt:

- `gold`: gold labels, the recipe's `gold_epochs`, no budget (as before), and with the budget;
- `distill`: the transfer set's teacher logits, the recipe's `epochs`, no budget, alpha 0
  (as before), and with the budget at alpha 0 and 0.5, for transfer sets of several sizes:
  the training sentences alone (`--transfer unlabeled`, which has no unlabeled lines here:
  what a scores file for train.txt gives), and the first N lines of the whole set (training
  sentences, then their augmentations).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config import default_criterion, load_recipe  # noqa: E402
from util import UserError, atomic_write_text, cpu_model, run_main  # noqa: E402

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_dir", default="data/sst2-demo", help="a data directory `make demo`/`make distill` made")
    p.add_argument("--recipe", default="configs/recipe-demo.json", help="the epochs and learning rates")
    p.add_argument("--models", default="cnn,bilstm,bow")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--sizes", default="9000", help="transfer-set sizes (first N lines) beside the training "
                                                   "sentences alone and the whole set")
    p.add_argument("--min_steps", type=int, default=3000)
    p.add_argument("--eval_steps", type=int, default=250)
    p.add_argument("--patience_steps", type=int, default=1500)
    p.add_argument("--out_dir", default="checkpoints/budget")
    p.add_argument("--results", default="results/budget.md")
    return p


def run(cmd: list[str]) -> None:
    logger.info("$ %s", " ".join(cmd))
    subprocess.run([sys.executable, *cmd], cwd=ROOT, check=True, capture_output=True)


def train_and_test(args: argparse.Namespace, name: str, recipe, model: str, seed: int, flags: list[str]) -> dict:
    """One run (skipped when its results exist): test accuracy, best valid, steps."""
    s, cfg = recipe.students[model], recipe.student_config(model)
    ckpt = Path(args.out_dir) / f"{model}-{name}-seed{seed}.pt"
    if not Path(f"{ckpt}.results.json").exists():
        optimizer = (["--optimizer=sgd", "--warmup_epoch=0"] if s.optimizer == "sgd" else
                     ["--use_transformers_optimizer", "--warmup_epoch=0", "--weight_decay=0.0"])
        run(["train.py", f"--config={cfg}", f"--data_dir={args.data_dir}", f"--save_path={ckpt}", f"--lr={s.lr}",
             f"--batch_size={s.batch_size}", *optimizer, f"--seed={seed}", "--device=cpu",
             f"--log_dir={Path(args.out_dir) / 'runs' / ckpt.stem}", *[f"--set={o}" for o in s.set], *flags])
        run(["evaluate.py", f"--config={cfg}", f"--data_dir={args.data_dir}", f"--model_path={ckpt}",
             "--device=cpu", "--latency_sample=1"])
    test = json.loads(Path(f"{ckpt}.results.json").read_text())
    trained = json.loads(Path(f"{ckpt}.train_results.json").read_text())
    return {"test": 100 * test["accuracy"], "valid": 100 * trained["best_accuracy"], "steps": trained["steps"],
            "best_step": trained["best_step"], "stop": trained["stop"], "examples": trained["train_examples"]}


def cell(values: list[float]) -> str:
    mean = statistics.mean(values)
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        recipe = load_recipe(ROOT / args.recipe)
        data = Path(args.data_dir)
        if not (data / "transfer.txt.ids").exists():
            raise UserError(f"{data / 'transfer.txt.ids'}: not found (run `make demo` or `make distill` first)")
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        budget = [f"--min_steps={args.min_steps}", f"--eval_steps={args.eval_steps}",
                  f"--patience_steps={args.patience_steps}"]
        sizes = [("train sentences", ["--transfer=unlabeled"])]
        sizes += [(f"first {int(n):,} lines", [f"--train_limit={n}"]) for n in args.sizes.split(",") if n]
        sizes += [("whole set", [])]
        rows = []
        for model in args.models.split(","):
            s = recipe.students[model]
            settings = [("gold", "gold labels", "-", "epochs", [f"--epochs={s.gold_epochs}"]),
                        ("gold-budget", "gold labels", "-", "budget", [f"--epochs={s.gold_epochs}", *budget])]
            for i, (size, size_flags) in enumerate(sizes):
                criterion = default_criterion(s.criterion, recipe.multi_label)  # null: the data's default
                distill = ["--distill", f"--criterion={criterion}", *size_flags]
                distill += [f"--temperature={s.temperature}"] if criterion != "MSELoss" else []
                settings += [(f"distill{i}", size, "0", "epochs", [f"--epochs={s.epochs}", *distill]),
                             (f"distill{i}-budget", size, "0", "budget", [f"--epochs={s.epochs}", *budget, *distill]),
                             (f"distill{i}-budget-mix", size, "0.5", "budget",
                              [f"--epochs={s.epochs}", *budget, *distill, "--alpha=0.5"])]
            for name, trained_on, alpha, how, flags in settings:
                runs = [train_and_test(args, name, recipe, model, 42 + k, flags) for k in range(args.seeds)]
                rows.append(f"| {model} | {trained_on} | {runs[0]['examples']:,} | {how} | {alpha} | "
                            f"{cell([r['valid'] for r in runs])} | {cell([r['test'] for r in runs])} | "
                            + ", ".join(f"{r['best_step']:,}/{r['steps']:,} ({r['stop']})" for r in runs) + " |")
                logger.info(rows[-1])
        lines = [
            "# The training budget and the gold mix", "",
            f"`python scripts/budget.py --data_dir={args.data_dir} --recipe={args.recipe} --models={args.models} "
            f"--seeds={args.seeds} --sizes={args.sizes}` on {cpu_model()} ({os.cpu_count()} cores). Teacher logits and data: the transfer "
            f"set of `{data}` (`make demo`). *epochs*: the recipe's epochs, validated after each; *budget*: the same "
            f"epochs but at least {args.min_steps:,} steps, validated every {args.eval_steps} steps, stopped after "
            f"{args.patience_steps:,} steps without a better valid accuracy. The best valid point is kept. "
            f"Accuracy: mean ± standard deviation over seeds 42, 43, ...", "",
            "| student | trained on | lines | budget | alpha | valid % | test % | best step / steps (stop), per seed |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |", *rows, "",
        ]
        atomic_write_text(args.results, "\n".join(lines))
        logger.info("[Written] %s", args.results)
        return 0

    return run_main(body, logger)


if __name__ == "__main__":
    sys.exit(main())
