"""Fine-tune a transformer teacher, or train a GloVe student on gold labels or on teacher logits.

    # teacher (writes a Hugging Face-style directory)
    python train.py --config=configs/config-bert-mean.json --data_dir=data/sst2 \
        --bert_model_name_or_path=./embeddings/all-MiniLM-L6-v2 --bert_do_lower_case \
        --bert_output_dir=bert-checkpoint --lr=1e-4 --epoch=3 --batch_size=32 \
        --use_transformers_optimizer --warmup_epoch=0.1
    # student on gold labels / on teacher logits (augmented.txt.ids)
    python train.py --config=configs/config-glove-cnn.json --data_dir=data/sst2 --save_path=pytorch-model-cnn.pt
    python train.py --config=configs/config-glove-cnn.json --data_dir=data/sst2 --lr=1e-3 \
        --use_transformers_optimizer --warmup_epoch=0 --weight_decay=0.0 --save_path=pytorch-model-cnn.pt --augmented

Validates on `valid.txt` every epoch and keeps the best checkpoint; a full training state
(`<save_path>.last`, or `<bert_output_dir>/last/`) is saved every epoch and every
`--save_steps` steps, and `--resume` continues from it. The optimizer flags mean what they
mean in the seed (training.py's docstring).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from cli import common_parser
from config import CRITERIA, Config, TrainConfig, config_to_dict, load_config
from inference import predict_logits
from model import count_parameters
from training import (
    StudentTask,
    TeacherTask,
    TrainState,
    epoch_rule,
    epoch_batches,
    make_optimizer,
    restore,
    resume_payload,
    steps_per_epoch,
    train_config,
)
from util import (DistContext, UserError, amp_dtype, barrier, bounded, init_distributed, library_versions, non_negative,
                  positive, resolve_device, run_in_group, run_main, set_seed, set_threads, setup_logging, write_json)

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
    p.add_argument("--weight_decay", type=non_negative(float), default=0.01,
                   help="AdamW weight decay: on every parameter, or with --use_transformers_optimizer on all but "
                        "biases and LayerNorm weights")
    p.add_argument("--max_grad_norm", type=non_negative(float), default=1.0, help="gradient clipping (0: off)")
    p.add_argument("--criterion", choices=CRITERIA,
                   help="loss; default CrossEntropyLoss on gold labels, MSELoss on teacher logits")
    p.add_argument("--temperature", type=positive(float), help="softmax temperature, KLDivLoss/CrossEntropyLoss "
                                                               "on logits only (default 1)")
    p.add_argument("--alpha", type=bounded(float, 0, low_inclusive=True, high=1), default=0.0,
                   help="with --augmented, students: L = alpha * CE(gold, original sentences) + (1 - alpha) * KD")
    p.add_argument("--measure", choices=("accuracy", "loss"), default="accuracy",
                   help="validation measure for the best checkpoint, early stopping and lr decay")
    p.add_argument("--augmented", action="store_true", help="train on teacher logits (augmented.txt.ids)")
    p.add_argument("--augmented_filename", help="augmented file in data_dir (default augmented.txt)")
    p.add_argument("--save_steps", type=non_negative(int), default=0,
                   help="also save the resumable state every N steps (0: only per epoch)")
    p.add_argument("--resume", action="store_true", help="continue from the last saved training state")
    p.add_argument("--log_dir", help="TensorBoard directory (default: runs/<output name>)")
    p.add_argument("--train_limit", type=non_negative(int), default=0,
                   help="use only the first N training lines (0: all)")
    return p


def run_training(args: argparse.Namespace, config: Config, cfg: TrainConfig, dist: DistContext) -> int:
    """The loop: epochs of shuffled, length-bucketed batches; validate, keep the best, save."""
    device = resolve_device(args.device, dist.local_rank)
    set_seed(cfg.seed + dist.rank)  # ranks draw different dropout masks; batch order is seeded alike
    set_threads(args.num_threads)
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: data directory not found (run `make data`)")
    task = (TeacherTask(cfg, config, data_dir, args.bert_model_name_or_path, args.bert_do_lower_case,
                        Path(args.bert_output_dir)) if config.is_transformer
            else StudentTask(cfg, config, data_dir, Path(args.save_path)))
    if cfg.train_limit:
        task.limit(cfg.train_limit)
    model = task.model.to(device)
    forward = model
    if dist.enabled:  # gradients averaged across ranks; `model` stays the plain module for saving
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                          find_unused_parameters=config.is_transformer)  # BERT's pooler is unused
    steps = steps_per_epoch(len(task.train_data), cfg.batch_size, dist.world_size)
    optimizer, scheduler = make_optimizer(model, cfg, steps)
    state, rule = TrainState(), epoch_rule(cfg)
    if cfg.resume:
        state, rule = restore(task.load_last(device), optimizer, scheduler)
        logger.info("[Resume] from %s: epoch %d, step %d in epoch, best %s", task.last_path, state.epoch,
                    state.step_in_epoch, rule.best)
    amp = amp_dtype(cfg.amp, device)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(args.log_dir or str(Path("runs") / task.output.name)) if dist.is_main else None
    logger.info("[Train] %d examples, %d steps/epoch, batch %d per process x %d process(es) = %d global, %s, device %s",
                len(task.train_data), steps, cfg.batch_size, dist.world_size, cfg.batch_size * dist.world_size,
                f"teacher logits ({cfg.criterion})" if cfg.augmented else "gold labels", device)
    lengths = [len(s) for s in task.train_data.ids]
    start, seen, train_seconds = time.time(), 0, 0.0
    for epoch in range(state.epoch, cfg.epoch):
        model.train()
        batches = epoch_batches(lengths, cfg.batch_size, cfg.seed, epoch, dist.rank, dist.world_size)
        epoch_start = time.time()
        bar = tqdm(batches[state.step_in_epoch:], desc=f"epoch {epoch + 1}/{cfg.epoch}", initial=state.step_in_epoch,
                   total=len(batches), disable=not dist.is_main)
        for batch in bar:
            loss = task.loss(forward, batch, device, amp)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            state.global_step += 1
            state.step_in_epoch += 1
            seen += len(batch)
            if writer is not None and state.global_step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
                writer.add_scalar("train/loss", loss.item(), state.global_step)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], state.global_step)
            if cfg.save_steps and state.global_step % cfg.save_steps == 0 and dist.is_main:
                task.save(task.last_path, resume_payload(state, rule, optimizer, scheduler, cfg.seed))
        train_seconds += time.time() - epoch_start
        state.epoch, state.step_in_epoch = epoch + 1, 0
        if not dist.is_main:
            barrier(dist)  # rank 0 validates and saves
            continue
        logits = predict_logits(model, task.valid_data.ids, cfg.eval_batch_size, task.pad_id, device, "valid",
                                amp)
        gold = torch.tensor(task.valid_data.labels)
        metrics = {"accuracy": (logits.argmax(-1) == gold).float().mean().item(),
                   "loss": torch.nn.functional.cross_entropy(logits, gold).item()}
        improved, decay, stop = rule.after_epoch(epoch, metrics[cfg.measure])
        for name, value in metrics.items():
            writer.add_scalar(f"valid/{name}", value, state.global_step)
        state.history.append({"epoch": epoch + 1, **metrics, "lr": optimizer.param_groups[0]["lr"]})
        logger.info("[Epoch %d] valid accuracy %.4f, valid loss %.4f, lr %.3g%s", epoch + 1, metrics["accuracy"],
                    metrics["loss"], optimizer.param_groups[0]["lr"], " (best)" if improved else "")
        if improved:
            state.best_epoch = epoch + 1
            task.save(task.output, {"epoch": state.epoch, "global_step": state.global_step,
                                    "best_metric": rule.best, "best_epoch": state.best_epoch})
        if decay:
            for group in optimizer.param_groups:
                group["lr"] *= cfg.lr_decay_rate
            logger.info("[Decay] lr x %g after %d epoch(s) without improvement", cfg.lr_decay_rate, cfg.lr_decay_steps)
        task.save(task.last_path, resume_payload(state, rule, optimizer, scheduler, cfg.seed))
        barrier(dist)
        if stop:
            logger.info("[Early stop] validation below its best for more than %d epochs", cfg.patience)
            break
    if writer is not None:
        writer.close()
    if not dist.is_main:
        return 0
    results = {"best_" + cfg.measure: rule.best, "best_epoch": state.best_epoch, "history": state.history,
               "train_examples": len(task.train_data), "processes": dist.world_size,
               "train_sentences_per_s": round(seen * dist.world_size / train_seconds, 1) if train_seconds else None,
               "seconds": round(time.time() - start, 1), **count_parameters(model)}
    out_dir = task.output if config.is_transformer else task.output.parent
    stem = "" if config.is_transformer else f"{task.output.name}."
    write_json(out_dir / f"{stem}train_config.json", {"args": vars(args), "train": dataclasses.asdict(cfg),
                                                      "config": config_to_dict(config), "versions": library_versions()})
    write_json(out_dir / f"{stem}train_results.json", results)
    logger.info("[Best] valid %s %.4f at epoch %d; saved to %s", cfg.measure, rule.best, state.best_epoch, task.output)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging()

    def body() -> int:
        config = load_config(args.config, args.set)
        cfg = train_config(args, config)
        resolve_device(args.device)  # refuse --device cuda without a GPU before joining a group
        dist = init_distributed(args.device)
        if not dist.is_main:
            logging.getLogger().setLevel(logging.WARNING)  # one process logs
        return run_in_group(dist, lambda: run_training(args, config, cfg, dist))

    return run_main(body, logger)


if __name__ == "__main__":
    sys.exit(main())
