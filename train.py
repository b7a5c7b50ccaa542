"""Fine-tune a transformer teacher, or train a GloVe student on gold labels or on teacher logits.

    # teacher: a directory; with configs/config-bert-hf.json (the library's own head) one that
    # transformers.pipeline("text-classification") loads unchanged
    python train.py --config=configs/config-bert-hf.json --data_dir=data/sst2 \
        --bert_model_name_or_path=./embeddings/all-MiniLM-L6-v2 --bert_do_lower_case \
        --bert_output_dir=bert-checkpoint --lr=1e-4 --epoch=3 --batch_size=32 \
        --use_transformers_optimizer --warmup_epoch=0.1
    # student on gold labels / on a transfer set's teacher logits (its .ids from preprocess.py)
    python train.py --config=configs/config-glove-cnn.json --data_dir=data/sst2 --save_path=pytorch-model-cnn.pt
    python train.py --config=configs/config-glove-cnn.json --data_dir=data/sst2 --lr=1e-3 \
        --use_transformers_optimizer --warmup_epoch=0 --weight_decay=0.0 --save_path=pytorch-model-cnn.pt \
        --augmented --augmented_filename=transfer.txt --transfer=both

Validates on `valid.txt` every epoch and keeps the best checkpoint; a full training state
(`<save_path>.last`, or `<bert_output_dir>/last/`) is saved every epoch and every
`--save_steps` steps, and `--resume` continues from it. The optimizer flags mean what they
mean in the seed (training.py's docstring).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cli import common_parser
from config import CRITERIA, Config, TrainConfig, config_to_dict, load_config
from dataset import TRANSFER_CHOICES
from inference import predict_logits
from model import count_parameters
from training import (
    EpochRule,
    StudentTask,
    Task,
    TeacherTask,
    TrainState,
    epoch_batches,
    epoch_rule,
    make_optimizer,
    restore,
    resume_payload,
    steps_per_epoch,
)
from util import (DistContext, UserError, amp_dtype, barrier, bounded, exit_stage, init_distributed, library_versions,
                  non_negative, positive, resolve_device, run_in_group, run_main, set_seed, set_threads, write_json)

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                parents=[common_parser(teacher=True, amp=True)])
    p.add_argument("--bert_output_dir", default="bert-checkpoint", help="teacher output directory")
    p.add_argument("--save_path", default="pytorch-model.pt", help="student checkpoint path")
    p.add_argument("--lr", type=positive(float), help="peak learning rate (teacher 2e-5, student 1e-3)")
    p.add_argument("--epoch", type=positive(int), help="epochs (teacher 3, student 5)")
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
                   help="stop once validation has been below its best for more than this many epochs")
    p.add_argument("--weight_decay", type=non_negative(float),
                   help="AdamW weight decay (default 0.01): on every parameter, or with --use_transformers_optimizer on "
                        "all but biases and LayerNorm weights")
    p.add_argument("--max_grad_norm", type=non_negative(float), default=1.0, help="gradient clipping (0: off)")
    p.add_argument("--criterion", choices=CRITERIA,
                   help="loss; default CrossEntropyLoss on gold labels, MSELoss on teacher logits")
    p.add_argument("--temperature", type=positive(float), help="softmax temperature, KLDivLoss/CrossEntropyLoss "
                                                               "on logits only (default 1)")
    p.add_argument("--alpha", type=bounded(float, 0, low_inclusive=True, high=1), default=0.0,
                   help="with --augmented, students: L = alpha * CE(gold, original sentences) + (1 - alpha) * KD")
    p.add_argument("--measure", choices=("accuracy", "loss"), default="accuracy",
                   help="validation measure for the best checkpoint, early stopping and lr decay")
    p.add_argument("--augmented", action="store_true",
                   help="train a student on a transfer set's teacher logits (<augmented_filename>.ids)")
    p.add_argument("--augmented_filename", help="the transfer set in data_dir (default augmented.txt; label.py "
                                                "writes transfer.txt)")
    p.add_argument("--transfer", choices=sorted(TRANSFER_CHOICES),
                   help="with --augmented: learn from the training sentences and their augmentations (augmented), "
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


# Defaults that differ by kind: a teacher is fine-tuned gently, a student trained from GloVe.
TEACHER_DEFAULTS = {"lr": 2e-5, "epoch": 3, "batch_size": 32}
STUDENT_DEFAULTS = {"lr": 1e-3, "epoch": 5, "batch_size": 128}


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
    if not args.augmented and (args.criterion not in (None, "CrossEntropyLoss") or args.alpha
                               or args.augmented_filename or args.transfer):
        raise UserError("--criterion MSELoss/KLDivLoss, --alpha, --augmented_filename and --transfer need teacher "
                        "logits: add --augmented")
    criterion = args.criterion or ("MSELoss" if args.augmented else "CrossEntropyLoss")
    if args.temperature is not None and (criterion == "MSELoss" or not args.augmented):
        raise UserError(f"--temperature is not used by {criterion}" + ("" if args.augmented else " on gold labels"))
    if args.alpha and model_config.is_transformer:
        raise UserError("--alpha mixes gold labels into a student's distillation; teachers train on one target")
    if sgd and model_config.is_transformer:
        raise UserError("--optimizer sgd is for students (fastText's training of bags of n-grams)")
    train_config = TrainConfig(
        lr=args.lr or defaults["lr"], epoch=args.epoch or defaults["epoch"],
        batch_size=args.batch_size or defaults["batch_size"], eval_batch_size=args.eval_batch_size,
        use_transformers_optimizer=args.use_transformers_optimizer, lr_decay_rate=args.lr_decay_rate,
        lr_decay_steps=args.lr_decay_steps or 2,
        warmup_epoch=args.warmup_epoch if args.warmup_epoch is not None else (0.0 if linear else 4.0),
        patience=args.patience,
        weight_decay=0.0 if sgd else (0.01 if args.weight_decay is None else args.weight_decay), max_grad_norm=args.max_grad_norm,
        criterion=criterion, temperature=args.temperature or 1.0, alpha=args.alpha, measure=args.measure,
        augmented=args.augmented, augmented_filename=args.augmented_filename, transfer=args.transfer or "both",
        optimizer=args.optimizer, seed=args.seed, amp=args.amp, save_steps=args.save_steps, resume=args.resume,
        train_limit=args.train_limit)
    if linear and train_config.warmup_epoch >= train_config.epoch:
        raise UserError(f"--warmup_epoch {train_config.warmup_epoch:g} >= --epoch {train_config.epoch}: the learning "
                        "rate would never reach --lr")
    if model_config.is_transformer and not args.bert_model_name_or_path:
        raise UserError(f"{args.config}: a transformer config needs --bert_model_name_or_path")
    if not model_config.is_transformer and (args.bert_model_name_or_path or args.bert_do_lower_case):
        raise UserError("--bert_model_name_or_path/--bert_do_lower_case are for teacher configs")
    return train_config


@dataclass
class Run:
    """One training run's parts, built by `prepare`."""

    task: Task
    model: torch.nn.Module  # the plain module (saved, validated)
    forward: torch.nn.Module  # what trains: the module, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any
    state: TrainState
    rule: EpochRule
    device: torch.device
    amp: torch.dtype | None
    writer: Any  # TensorBoard SummaryWriter on rank 0, else None


def prepare(args: argparse.Namespace, model_config: Config, train_config: TrainConfig, dist: DistContext) -> Run:
    """Device, data and model (the task), DDP, optimizer and schedule, and the state to resume."""
    device = resolve_device(args.device, dist.local_rank)
    set_seed(train_config.seed + dist.rank)  # ranks draw different dropout masks; batch order is seeded alike
    set_threads(args.num_threads)
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: data directory not found (run `make data`)")
    task: Task = (TeacherTask(train_config, model_config, data_dir, args.bert_model_name_or_path,
                              args.bert_do_lower_case, Path(args.bert_output_dir)) if model_config.is_transformer
                  else StudentTask(train_config, model_config, data_dir, Path(args.save_path)))
    if train_config.train_limit:
        task.limit(train_config.train_limit)
    model = task.model.to(device)
    forward = model
    if dist.enabled:  # gradients averaged across ranks; `model` stays the plain module for saving
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                          find_unused_parameters=model_config.is_transformer)  # a pooler may be unused
    steps = steps_per_epoch(len(task.train_data), train_config.batch_size, dist.world_size)
    optimizer, scheduler = make_optimizer(model, train_config, steps)
    state, rule = TrainState(), epoch_rule(train_config)
    if train_config.resume:
        state, rule = restore(task.load_last(device), optimizer, scheduler)
        logger.info("[Resume] from %s: epoch %d, step %d in epoch, best %s", task.last_path, state.epoch,
                    state.step_in_epoch, rule.best)
    writer = None
    if dist.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(args.log_dir or str(Path("runs") / task.output.name))
    logger.info("[Train] %d examples, %d steps/epoch, batch %d per process x %d process(es) = %d global, %s, device %s",
                len(task.train_data), steps, train_config.batch_size, dist.world_size,
                train_config.batch_size * dist.world_size,
                f"teacher logits ({train_config.criterion})" if train_config.augmented else "gold labels", device)
    return Run(task, model, forward, optimizer, scheduler, state, rule, device,
               amp_dtype(train_config.amp, device), writer)


def train_epoch(run: Run, train_config: TrainConfig, epoch: int, dist: DistContext) -> int:
    """One epoch of seeded, length-bucketed batches (from where a resumed run stopped);
    returns the sentences seen."""
    run.model.train()
    batches = epoch_batches(run.task.train_data.lengths.tolist(), train_config.batch_size, train_config.seed, epoch,
                            dist.rank, dist.world_size)
    state, seen = run.state, 0
    bar = tqdm(batches[state.step_in_epoch:], desc=f"epoch {epoch + 1}/{train_config.epoch}",
               initial=state.step_in_epoch, total=len(batches), disable=not dist.is_main)
    for batch in bar:
        loss = run.task.loss(run.forward, batch, run.device, run.amp)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if train_config.max_grad_norm > 0:
            # sparse gradients (SGD's embedding tables) are fastText's plain updates: not clipped
            dense = [p for p in run.model.parameters() if p.grad is not None and not p.grad.is_sparse]
            torch.nn.utils.clip_grad_norm_(dense, train_config.max_grad_norm)
        run.optimizer.step()
        if run.scheduler is not None:
            run.scheduler.step()
        state.global_step += 1
        state.step_in_epoch += 1
        seen += len(batch)
        if run.writer is not None and state.global_step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
            run.writer.add_scalar("train/loss", loss.item(), state.global_step)
            run.writer.add_scalar("train/lr", run.optimizer.param_groups[0]["lr"], state.global_step)
        if train_config.save_steps and state.global_step % train_config.save_steps == 0 and dist.is_main:
            run.task.save(run.task.last_path, resume_payload(state, run.rule, run.optimizer, run.scheduler,
                                                             train_config.seed))
    state.epoch, state.step_in_epoch = epoch + 1, 0
    return seen


def end_epoch(run: Run, train_config: TrainConfig, epoch: int) -> bool:
    """Rank 0's end of an epoch: validate, keep the best, decay the learning rate, save the
    resumable state. Returns whether to stop early."""
    task, state = run.task, run.state
    logits = predict_logits(run.model, task.valid_data.seqs(range(len(task.valid_data))),
                            train_config.eval_batch_size, task.pad_id, run.device, "valid", run.amp)
    gold = torch.from_numpy(task.valid_data.labels)
    metrics = {"accuracy": (logits.argmax(-1) == gold).float().mean().item(),
               "loss": torch.nn.functional.cross_entropy(logits, gold).item()}
    improved, decay, stop = run.rule.after_epoch(epoch, metrics[train_config.measure])
    for name, value in metrics.items():
        run.writer.add_scalar(f"valid/{name}", value, state.global_step)
    lr = run.optimizer.param_groups[0]["lr"]
    state.history.append({"epoch": epoch + 1, **metrics, "lr": lr})
    logger.info("[Epoch %d] valid accuracy %.4f, valid loss %.4f, lr %.3g%s", epoch + 1, metrics["accuracy"],
                metrics["loss"], lr, " (best)" if improved else "")
    if improved:
        state.best_epoch = epoch + 1
        task.save(task.output, {"epoch": state.epoch, "global_step": state.global_step, "best_metric": run.rule.best,
                                "best_epoch": state.best_epoch})
    if decay:
        for group in run.optimizer.param_groups:
            group["lr"] *= train_config.lr_decay_rate
        logger.info("[Decay] lr x %g after %d epoch(s) without improvement", train_config.lr_decay_rate,
                    train_config.lr_decay_steps)
    task.save(task.last_path, resume_payload(state, run.rule, run.optimizer, run.scheduler, train_config.seed))
    if stop:
        logger.info("[Early stop] validation below its best for more than %d epochs", train_config.patience)
    return stop


def write_results(run: Run, args: argparse.Namespace, model_config: Config, train_config: TrainConfig,
                  dist: DistContext, seen: int, train_seconds: float, seconds: float) -> None:
    """`train_results.json` (history, best, speed) and the resolved `train_config.json`."""
    task, rule = run.task, run.rule
    results = {"best_" + train_config.measure: rule.best, "best_epoch": run.state.best_epoch,
               "history": run.state.history, "train_examples": len(task.train_data), "processes": dist.world_size,
               "train_sentences_per_s": round(seen * dist.world_size / train_seconds, 1) if train_seconds else None,
               "seconds": round(seconds, 1), **count_parameters(run.model)}
    out_dir = task.output if model_config.is_transformer else task.output.parent
    stem = "" if model_config.is_transformer else f"{task.output.name}."
    write_json(out_dir / f"{stem}train_config.json", {"args": vars(args), "train": dataclasses.asdict(train_config),
                                                      "config": config_to_dict(model_config),
                                                      "versions": library_versions()})
    write_json(out_dir / f"{stem}train_results.json", results)
    logger.info("[Best] valid %s %.4f at epoch %d; saved to %s", train_config.measure, rule.best, run.state.best_epoch,
                task.output)


def run_training(args: argparse.Namespace, model_config: Config, train_config: TrainConfig,
                 dist: DistContext) -> int:
    """Prepare, then per epoch: train, and on rank 0 validate and save; then write the results."""
    run = prepare(args, model_config, train_config, dist)
    start, seen, train_seconds = time.time(), 0, 0.0
    for epoch in range(run.state.epoch, train_config.epoch):
        epoch_start = time.time()
        seen += train_epoch(run, train_config, epoch, dist)
        train_seconds += time.time() - epoch_start
        stop = end_epoch(run, train_config, epoch) if dist.is_main else False
        barrier(dist)  # rank 0 validates and saves
        if dist.enabled:
            import torch.distributed as torch_dist

            shared = [stop]
            torch_dist.broadcast_object_list(shared, src=0)
            stop = shared[0]
        if stop:
            break
    if run.writer is not None:
        run.writer.close()
    if dist.is_main:
        write_results(run, args, model_config, train_config, dist, seen, train_seconds, time.time() - start)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        model_config = load_config(args.config, args.set)
        train_config = resolve_train_config(args, model_config)
        resolve_device(args.device)  # refuse --device cuda without a GPU before joining a group
        dist = init_distributed(args.device)
        return run_in_group(dist, lambda: run_training(args, model_config, train_config, dist))

    return run_main(body, logger)


if __name__ == "__main__":
    exit_stage(main())
