"""Fine-tune a transformer teacher, or train a GloVe student on gold labels or on teacher logits.

    # teacher: a directory; with configs/config-bert-hf.json (the library's own head) one that
    # transformers.pipeline("text-classification") loads unchanged
    python train.py --config=configs/config-bert-hf.json --data_dir=data/sst2 \
        --bert_model_name_or_path=./embeddings/all-MiniLM-L6-v2 --bert_do_lower_case \
        --teacher=bert-checkpoint --lr=1e-4 --epochs=3 --batch_size=32 \
        --use_transformers_optimizer --warmup_epoch=0.1
    # student on gold labels / on the transfer set's teacher logits (its .ids from preprocess.py)
    python train.py --config=configs/config-glove-cnn.json --data_dir=data/sst2 --save_path=pytorch-model-cnn.pt
    python train.py --config=configs/config-glove-cnn.json --data_dir=data/sst2 --lr=1e-3 \
        --use_transformers_optimizer --warmup_epoch=0 --weight_decay=0.0 --save_path=pytorch-model-cnn.pt \
        --distill --transfer=both --epochs=4 --min_steps=4000 --eval_steps=500 --patience_steps=2000

Trains for `--epochs`, at least `--min_steps` optimizer steps (training.py: the budget);
validates on `valid.txt` after every epoch or every `--eval_steps` steps, keeps the best
checkpoint and stops early on `--patience` validations (or `--patience_steps` steps) below
the best. A full training state (`<save_path>.last`, or `<teacher>/last/`) is saved at every
validation and every `--save_steps` steps, and `--resume` continues from it. The seed's
names work too (`--epoch`, `--bert_output_dir`, `--augmented`); the optimizer flags mean what
they mean in the seed (training.py's docstring).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from cli import add_teacher_flag, common_parser, transfer_file
from config import (CRITERIA, GOLD_MIX_ALPHAS, GOLD_MIX_BELOW, MULTI_LABEL_CRITERION, Config, TrainConfig,
                    check_criterion, config_to_dict, load_config)
from dataset import TRANSFER_CHOICES, data_multi_label
from training import Setup, choose_alpha, gold_mix_alphas, run_training
from util import (DistContext, UserError, bounded, exit_stage, init_distributed, library_versions, non_negative,
                  positive, resolve_device, run_in_group, run_main, set_seed, set_threads, write_json)

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                parents=[common_parser(encoder=True, amp=True, distill=True)])
    add_teacher_flag(p, "teacher output directory", default="bert-checkpoint")
    p.add_argument("--save_path", default="pytorch-model.pt", help="student checkpoint path")
    p.add_argument("--lr", type=positive(float), help="peak learning rate (teacher 2e-5, student 1e-3)")
    p.add_argument("--epochs", "--epoch", dest="epochs", type=positive(int), help="epochs (teacher 3, student 5)")
    p.add_argument("--min_steps", type=non_negative(int), default=0,
                   help="students: train at least this many optimizer steps, adding epochs on a small set (0: none)")
    p.add_argument("--eval_steps", type=non_negative(int), default=0,
                   help="validate every N optimizer steps (0: after every epoch)")
    p.add_argument("--batch_size", type=positive(int), help="training batch size per process (teacher 32, student 128)")
    p.add_argument("--eval_batch_size", type=positive(int), default=256, help="validation batch size")
    p.add_argument("--use_transformers_optimizer", action="store_true",
                   help="AdamW with linear warm-up over --warmup_epoch epochs, then linear decay to 0")
    p.add_argument("--lr_decay_rate", type=bounded(float, 0, high=1), default=1.0,
                   help="without --use_transformers_optimizer: multiply the lr by this on a validation plateau")
    p.add_argument("--lr_decay_steps", type=positive(int),
                   help="... after this many epochs without improvement (default 2)")
    p.add_argument("--warmup_epoch", type=non_negative(float),
                   help="with --use_transformers_optimizer: warm-up epochs (default 0); without: no lr decay "
                        "up to this epoch (default 4)")
    p.add_argument("--patience", type=non_negative(int), default=7,
                   help="stop once validation has been below its best for more than this many validations (epochs, "
                        "or with --eval_steps every N steps)")
    p.add_argument("--patience_steps", type=non_negative(int), default=0,
                   help="with --eval_steps: stop once validation has been below its best for more than this many "
                        "steps (0: use --patience)")
    p.add_argument("--weight_decay", type=non_negative(float),
                   help="AdamW weight decay (default 0.01): on every parameter, or with --use_transformers_optimizer on "
                        "all but biases and LayerNorm weights")
    p.add_argument("--max_grad_norm", type=non_negative(float), default=1.0, help="gradient clipping (0: off)")
    p.add_argument("--criterion", choices=CRITERIA,
                   help="loss; default CrossEntropyLoss on gold labels, MSELoss on teacher logits; multi-label: "
                        f"binary cross-entropy on gold label sets, {MULTI_LABEL_CRITERION} (or MSELoss) on teacher "
                        "logits")
    p.add_argument("--temperature", type=positive(float), help="softmax (sigmoid) temperature, KLDivLoss/"
                                                               "CrossEntropyLoss/BCEWithLogitsLoss only (default 1)")
    p.add_argument("--multi_label", action="store_true",
                   help="label sets (as preprocess.py recorded the data; need not be given again)")
    p.add_argument("--alpha", type=alpha_value, default=0.0,
                   help="with --distill, students: L = alpha * CE(gold, lines with a gold label) + (1 - alpha) * KD; "
                        f"auto: below --gold_mix_below transfer lines, one run per alpha in {list(GOLD_MIX_ALPHAS)} "
                        "and the best on valid kept (else 0)")
    p.add_argument("--gold_mix_below", type=positive(int), help=f"--alpha auto: the size (default {GOLD_MIX_BELOW:,})")
    p.add_argument("--measure", choices=("accuracy", "loss"), default="accuracy",
                   help="validation measure for the best checkpoint, early stopping and lr decay (multi-label: "
                        "accuracy is micro-F1 at 0.5)")
    p.add_argument("--transfer", choices=sorted(TRANSFER_CHOICES),
                   help="with --distill: learn from the training sentences and their augmentations (augmented), "
                        "the training sentences and unlabeled text or scores from a file (unlabeled), or every line "
                        "(both, the default)")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw",
                   help="adamw (the seed's), or sgd: fastText's plain SGD with sparse table updates and linear decay")
    p.add_argument("--save_steps", type=non_negative(int), default=0,
                   help="also save the resumable state every N steps (0: only per epoch)")
    p.add_argument("--resume", action="store_true", help="continue from the last saved training state")
    p.add_argument("--log_dir", help="TensorBoard directory (default: runs/<output name>)")
    p.add_argument("--train_limit", type=non_negative(int), default=0,
                   help="use only the first N training lines (0: all)")
    return p


def alpha_value(text: str) -> float | str:
    """`--alpha`: a weight in [0, 1], or `auto`."""
    return text if text == "auto" else bounded(float, 0, low_inclusive=True, high=1)(text)


# Defaults that differ by kind: a teacher is fine-tuned gently, a student trained from GloVe.
TEACHER_DEFAULTS = {"lr": 2e-5, "epochs": 3, "batch_size": 32}
STUDENT_DEFAULTS = {"lr": 1e-3, "epochs": 5, "batch_size": 128}


def resolve_train_config(args: argparse.Namespace, model_config: Config) -> TrainConfig:
    """The flags as one TrainConfig: defaults by kind, and every ignored combination refused."""
    defaults = TEACHER_DEFAULTS if model_config.is_transformer else STUDENT_DEFAULTS
    sgd = args.optimizer == "sgd"
    linear = args.use_transformers_optimizer or sgd
    if sgd and args.use_transformers_optimizer:
        raise UserError("--use_transformers_optimizer is AdamW on a linear schedule; --optimizer sgd has its own "
                        "(the same schedule): choose one")
    if linear and (args.lr_decay_rate != 1.0 or args.lr_decay_steps is not None):
        raise UserError("--lr_decay_rate/--lr_decay_steps decay the default optimizer's lr; "
                        "--use_transformers_optimizer and --optimizer sgd have their own linear schedule")
    if sgd and args.weight_decay is not None:
        raise UserError("--weight_decay is AdamW's; --optimizer sgd does not decay weights")
    distill = transfer_file(args)
    multi = data_multi_label(Path(args.data_dir), args.multi_label) if Path(args.data_dir).is_dir() else \
        args.multi_label
    gold_criterion = "BCEWithLogitsLoss" if multi else "CrossEntropyLoss"
    if not distill and (args.criterion not in (None, gold_criterion) or args.alpha
                        or args.transfer_file or args.transfer):
        raise UserError("--criterion MSELoss/KLDivLoss, --alpha, --transfer_file and --transfer need teacher "
                        "logits: add --distill")
    criterion = args.criterion or ((MULTI_LABEL_CRITERION if multi else "MSELoss") if distill else gold_criterion)
    check_criterion(criterion, multi, f"--criterion {criterion}")
    if args.temperature is not None and (criterion == "MSELoss" or not distill):
        raise UserError(f"--temperature is not used by {criterion}" + ("" if distill else " on gold labels"))
    if args.patience_steps and not args.eval_steps:
        raise UserError("--patience_steps counts steps between validations: add --eval_steps")
    if args.eval_steps and args.lr_decay_rate != 1.0:
        raise UserError("--lr_decay_rate decays on a plateau of epochs; with --eval_steps use "
                        "--use_transformers_optimizer or --optimizer sgd")
    if args.min_steps and model_config.is_transformer:
        raise UserError("--min_steps sizes a student's budget; a teacher is fine-tuned for --epochs")
    if args.gold_mix_below and args.alpha != "auto":
        raise UserError("--gold_mix_below is the size below which --alpha auto mixes gold labels in: add --alpha auto")
    if args.alpha == "auto" and args.resume:
        raise UserError("--resume continues one run; --alpha auto may make several: give --alpha a value")
    if args.alpha and model_config.is_transformer:
        raise UserError("--alpha mixes gold labels into a student's distillation; teachers train on one target")
    if sgd and model_config.is_transformer:
        raise UserError("--optimizer sgd is for students (fastText's training of bags of n-grams)")
    train_config = TrainConfig(
        lr=args.lr or defaults["lr"], epochs=args.epochs or defaults["epochs"],
        batch_size=args.batch_size or defaults["batch_size"], eval_batch_size=args.eval_batch_size,
        use_transformers_optimizer=args.use_transformers_optimizer, lr_decay_rate=args.lr_decay_rate,
        lr_decay_steps=args.lr_decay_steps or 2,
        warmup_epoch=args.warmup_epoch if args.warmup_epoch is not None else (0.0 if linear else 4.0),
        patience=args.patience_steps // args.eval_steps if args.patience_steps else args.patience,
        weight_decay=0.0 if sgd else (0.01 if args.weight_decay is None else args.weight_decay), max_grad_norm=args.max_grad_norm,
        criterion=criterion, temperature=args.temperature or 1.0, alpha=0.0 if args.alpha == "auto" else args.alpha,
        alpha_auto=args.alpha == "auto", gold_mix_below=args.gold_mix_below or GOLD_MIX_BELOW,
        measure="micro_f1" if multi and args.measure == "accuracy" else args.measure, multi_label=multi,
        distill=bool(distill), transfer_file=distill, transfer=args.transfer or "both",
        optimizer=args.optimizer, seed=args.seed, amp=args.amp, save_steps=args.save_steps, resume=args.resume,
        train_limit=args.train_limit, min_steps=args.min_steps, eval_steps=args.eval_steps,
        patience_steps=args.patience_steps)
    if linear and train_config.warmup_epoch >= train_config.epochs:
        raise UserError(f"--warmup_epoch {train_config.warmup_epoch:g} >= --epochs {train_config.epochs}: the "
                        "learning rate would never reach --lr")
    if model_config.is_transformer and not args.bert_model_name_or_path:
        raise UserError(f"{args.config}: a transformer config needs --bert_model_name_or_path")
    if not model_config.is_transformer and (args.bert_model_name_or_path or args.bert_do_lower_case):
        raise UserError("--bert_model_name_or_path/--bert_do_lower_case are for teacher configs")
    return train_config


def write_results(results: dict, args: argparse.Namespace, model_config: Config, train_config: TrainConfig,
                  output: Path) -> None:
    """`train_results.json` (history, best, budget used, speed) and the resolved `train_config.json`,
    beside the model."""
    out_dir = output if model_config.is_transformer else output.parent
    stem = "" if model_config.is_transformer else f"{output.name}."
    write_json(out_dir / f"{stem}train_config.json", {"args": vars(args), "train": dataclasses.asdict(train_config),
                                                      "config": config_to_dict(model_config),
                                                      "versions": library_versions()})
    write_json(out_dir / f"{stem}train_results.json", results)


def run(args: argparse.Namespace, model_config: Config, train_config: TrainConfig, dist: DistContext) -> int:
    """Seed, threads and device for this rank; train; rank 0 writes the results."""
    device = resolve_device(args.device, dist.local_rank)
    set_seed(train_config.seed + dist.rank)  # ranks draw different dropout masks; batch order is seeded alike
    set_threads(args.num_threads)
    output = Path(args.teacher if model_config.is_transformer else args.save_path)
    setup = Setup(Path(args.data_dir), output, device, args.bert_model_name_or_path, args.bert_do_lower_case,
                  args.log_dir)
    alphas = gold_mix_alphas(setup, train_config)
    if len(alphas) == 1:
        results = run_training(setup, model_config, dataclasses.replace(train_config, alpha=alphas[0]), dist)
    else:
        results = choose_alpha(setup, model_config, train_config, dist, alphas)
    if results is not None:
        write_results(results, args, model_config, train_config, output)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        model_config = load_config(args.config, args.set)
        train_config = resolve_train_config(args, model_config)
        resolve_device(args.device)  # refuse --device cuda without a GPU before joining a group
        dist = init_distributed(args.device)
        return run_in_group(dist, lambda: run(args, model_config, train_config, dist))

    return run_main(body, logger)


if __name__ == "__main__":
    exit_stage(main())
