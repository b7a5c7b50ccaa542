"""Fine-tune a transformer teacher, or train a GloVe student on gold labels or on teacher logits.

    # teacher (writes a Hugging Face-style directory)
    python train.py --config=configs/config-bert-cls.json --data_dir=data/sst2 \
        --bert_model_name_or_path=./embeddings/all-MiniLM-L6-v2 --bert_do_lower_case \
        --bert_output_dir=bert-checkpoint --lr=5e-5 --epoch=3 --batch_size=32
    # student on gold labels / on teacher logits (augmented.txt.ids)
    python train.py --config=configs/config-glove-cnn.json --data_dir=data/sst2 --save_path=pytorch-model-cnn.pt
    python train.py --config=configs/config-glove-cnn.json --data_dir=data/sst2 --save_path=pytorch-model-cnn.pt \
        --augmented --criterion MSELoss

Validates on `valid.txt` every epoch and keeps the best checkpoint; a full training state
(`<save_path>.last`, or `<bert_output_dir>/last/`) is saved every epoch and every
`--save_steps` steps, and `--resume` continues from it.
"""
from __future__ import annotations

import argparse
import logging
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from dataset import (
    bucketed_batches,
    glove_tokenize,
    label_ids,
    pad_batch,
    read_examples,
    read_ids,
    read_labels,
    read_predictions,
    read_vocab,
)
from model import (
    CRITERIA,
    TEACHER_HEADS,
    build_student,
    count_parameters,
    distillation_loss,
    init_embeddings,
    load_pretrained_teacher,
    load_student_checkpoint,
    load_teacher,
    load_training_state,
    predict_logits,
    save_student_checkpoint,
    save_teacher,
)
from preprocess import default_augmented_filename
from util import (
    Config,
    DistContext,
    UserError,
    amp_dtype,
    config_to_dict,
    init_distributed,
    library_versions,
    load_config,
    positive,
    resolve_device,
    run_in_group,
    run_main,
    set_seed,
    set_threads,
    setup_logging,
    write_json,
)

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="model config JSON (configs/...)")
    p.add_argument("--data_dir", required=True, help="directory with the preprocessed files")
    p.add_argument("--bert_model_name_or_path", help="pretrained Hugging Face encoder (teacher configs)")
    p.add_argument("--bert_do_lower_case", action="store_true", help="lower-case text (stored with the teacher)")
    p.add_argument("--bert_output_dir", default="bert-checkpoint", help="teacher output directory")
    p.add_argument("--save_path", default="pytorch-model.pt", help="student checkpoint path")
    p.add_argument("--lr", type=positive(float), default=1e-3, help="peak learning rate")
    p.add_argument("--epoch", type=positive(int), default=5, help="number of epochs")
    p.add_argument("--batch_size", type=positive(int), default=128, help="training batch size")
    p.add_argument("--eval_batch_size", type=positive(int), default=256, help="validation batch size")
    p.add_argument("--lr_decay_rate", type=positive(float), default=1.0,
                   help="Adam only: learning rate multiplied by this after each epoch")
    p.add_argument("--use_transformers_optimizer", action="store_true",
                   help="AdamW with linear warm-up and linear decay (instead of Adam with --lr_decay_rate)")
    p.add_argument("--warmup_epoch", type=float, default=0.0, help="warm-up length in epochs (AdamW schedule)")
    p.add_argument("--weight_decay", type=float, default=0.0, help="AdamW weight decay (not on biases and norms)")
    p.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping (0: off)")
    p.add_argument("--criterion", choices=CRITERIA,
                   help="loss; default CrossEntropyLoss on gold labels, MSELoss on teacher logits")
    p.add_argument("--temperature", type=positive(float), default=1.0, help="softmax temperature for KL/CE on logits")
    p.add_argument("--alpha", type=float, default=0.0,
                   help="with --augmented: L = alpha * CE(gold, original sentences) + (1 - alpha) * distillation loss")
    p.add_argument("--measure", choices=("accuracy", "loss"), default="accuracy",
                   help="validation measure that picks the best checkpoint")
    p.add_argument("--augmented", action="store_true", help="train on teacher logits (augmented.txt.ids)")
    p.add_argument("--augmented_filename", help="augmented file in data_dir (default augmented.txt)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--num_threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none",
                   help="autocast dtype (fp16 needs CUDA; bf16 also works on recent CPUs)")
    p.add_argument("--save_steps", type=int, default=0, help="also save the resumable state every N steps (0: per epoch)")
    p.add_argument("--resume", action="store_true", help="continue from the last saved training state")
    p.add_argument("--log_dir", help="TensorBoard directory (default: runs/<output name>)")
    p.add_argument("--train_limit", type=int, default=0, help="use only the first N training lines (0: all)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    return p


@dataclass
class TrainState:
    """Where training is: restored by --resume."""

    epoch: int = 0  # epochs fully done
    step_in_epoch: int = 0  # batches done in the current epoch
    global_step: int = 0
    best_metric: float | None = None
    best_epoch: int = 0
    history: list | None = None


def is_better(metric: float, best: float | None, measure: str) -> bool:
    """Accuracy: higher is better; loss: lower is better."""
    if best is None:
        return True
    return metric > best if measure == "accuracy" else metric < best


def make_optimizer(model: torch.nn.Module, args: argparse.Namespace, steps_per_epoch: int
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam with per-epoch exponential decay (the default), or AdamW with linear warm-up
    and decay (`--use_transformers_optimizer`). Both schedules step once per batch."""
    params = [p for p in model.parameters() if p.requires_grad]
    # fused=True: one kernel for the whole update instead of a Python loop over the tensors
    # (resolve_device only gives CPU or CUDA, which both have it). The loop was about a
    # quarter of a batch-32 step of the MiniLM teacher (22.7M parameters) on 2 CPU cores; its
    # fine-tuning went from 82 to 110 sentences/s (README). Same update rule, same state
    # dict, so --resume reads checkpoints from before.
    if args.use_transformers_optimizer:
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            # biases and normalisation weights are not decayed (as in BERT's recipe)
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=args.lr, fused=True,
        )
        total = max(1, steps_per_epoch * args.epoch)
        warmup = int(args.warmup_epoch * steps_per_epoch)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total - step) / max(1, total - warmup))
    else:
        optimizer = torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay, fused=True)
        rate = args.lr_decay_rate

        def factor(step: int) -> float:
            return rate ** (step // max(1, steps_per_epoch))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def rng_state() -> dict:
    """Python, NumPy, torch CPU and CUDA RNG states as plain types (loadable with weights_only).
    Dropout on a GPU draws from the CUDA generators, so a resumed GPU run needs them too."""
    py_version, py_state, py_gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` saved."""
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state(("MT19937", np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []  # absent in states saved before CUDA states were kept
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class Trainer:
    """Owns the model, data, optimizer and the epoch loop, for teachers and students alike."""

    def __init__(self, args: argparse.Namespace, config: Config, device: torch.device,
                 dist_ctx: DistContext | None = None):
        self.args, self.config, self.device = args, config, device
        self.dist = dist_ctx or DistContext()
        self.data_dir = Path(args.data_dir)
        self.labels = read_labels(self.data_dir / "label.txt")
        self.num_labels = len(self.labels)
        self.soft = bool(args.augmented)
        if args.criterion is None:
            args.criterion = "MSELoss" if self.soft else "CrossEntropyLoss"
        if not self.soft and args.criterion != "CrossEntropyLoss":
            raise UserError(f"--criterion {args.criterion} needs teacher logits: add --augmented")
        if not 0.0 <= args.alpha <= 1.0 or (args.alpha > 0 and not self.soft):
            raise UserError(f"--alpha {args.alpha}: expected a value in [0, 1], used with --augmented")
        self.train_gold: np.ndarray | None = None
        self.amp_dtype = amp_dtype(args.amp, device)
        if config.is_transformer:
            self._setup_teacher()
        else:
            self._setup_student()
        if args.train_limit:
            self.train_data.ids = self.train_data.ids[: args.train_limit]
            if self.train_data.labels is not None:
                self.train_data.labels = self.train_data.labels[: args.train_limit]
            if self.train_data.logits is not None:
                self.train_data.logits = self.train_data.logits[: args.train_limit]
            if self.train_gold is not None:
                self.train_gold = self.train_gold[: args.train_limit]
        self.model.to(device)
        # Under torchrun, gradients are averaged across ranks by DistributedDataParallel;
        # `self.model` stays the plain module (saving, validation), `self.forward_model` syncs.
        self.forward_model: torch.nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            # a BERT/RoBERTa encoder's pooler is unused by the first-token head
            self.forward_model = DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=config.is_transformer)
        self.lengths = [len(s) for s in self.train_data.ids]
        # each rank takes every world_size-th batch; the remainder is dropped so all ranks step together
        self.steps_per_epoch = math.ceil(len(self.train_data) / args.batch_size) // self.dist.world_size
        if self.steps_per_epoch == 0:
            raise UserError(f"{len(self.train_data)} training examples are fewer than one batch per process")
        self.optimizer, self.scheduler = make_optimizer(self.model, args, self.steps_per_epoch)
        self.state = TrainState(history=[])

    # -- set-up ------------------------------------------------------------
    def _setup_teacher(self) -> None:
        from transformers import AutoTokenizer

        args = self.args
        if not args.bert_model_name_or_path:
            raise UserError(f"{args.config}: a transformer config needs --bert_model_name_or_path")
        self.output = Path(args.bert_output_dir)
        self.last_path = self.output / "last"
        suffix = ".fs"
        name = (args.augmented_filename or default_augmented_filename(self.config)) if self.soft else "train.txt"
        self.train_data = read_ids(self.data_dir / f"{name}{suffix}", self.num_labels, self.soft)
        self.valid_data = read_ids(self.data_dir / f"valid.txt{suffix}", self.num_labels, False)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(args.bert_model_name_or_path)
        except (OSError, ValueError) as e:
            raise UserError(f"{args.bert_model_name_or_path}: cannot load a tokenizer: "
                            f"{str(e).splitlines()[0]}") from e
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.model = load_pretrained_teacher(args.bert_model_name_or_path, self.num_labels, self.config.dropout,
                                             pooling=TEACHER_HEADS[self.config.enc_class])

    def _setup_student(self) -> None:
        args = self.args
        self.output = Path(args.save_path)
        self.last_path = Path(f"{args.save_path}.last")
        name = (args.augmented_filename or default_augmented_filename(self.config)) if self.soft else "train.txt"
        self.vocab, matrix = read_vocab(self.data_dir)
        if matrix.shape[1] != self.config.token_emb_dim:
            raise UserError(
                f"{self.data_dir / 'embedding.npy'}: vectors of dimension {matrix.shape[1]}, but {args.config} has "
                f"token_emb_dim {self.config.token_emb_dim}; rerun preprocess.py with matching vectors"
            )
        self.train_data = read_ids(self.data_dir / f"{name}.ids", self.num_labels, self.soft)
        self.valid_data = read_ids(self.data_dir / "valid.txt.ids", self.num_labels, False)
        if self.soft and args.alpha > 0:
            self.train_gold = self._gold_for_augmented(name)
        for data, fname in ((self.train_data, f"{name}.ids"), (self.valid_data, "valid.txt.ids")):
            top = max((max(s) for s in data.ids if s), default=0)
            if top >= len(self.vocab):
                raise UserError(f"{self.data_dir / fname}: token id {top} is outside vocab.txt ({len(self.vocab)} "
                                "words); rerun preprocess.py")
        self.pad_id = self.config.pad_token_id
        self.model = build_student(self.config, len(self.vocab), self.num_labels)
        init_embeddings(self.model, torch.from_numpy(matrix))

    def _gold_for_augmented(self, name: str) -> np.ndarray:
        """Gold label ids for augmented lines that are original training sentences, -1 for the rest."""
        def key(sentence: str) -> str:
            return " ".join(glove_tokenize(sentence, self.config.lowercase))

        train_path = self.data_dir / "train.txt"
        examples = read_examples(train_path)
        gold = {key(e.sentence): i for e, i in zip(examples, label_ids(examples, self.labels, train_path))}
        sentences, _ = read_predictions(self.data_dir / name, self.num_labels)
        if len(sentences) != len(self.train_data):
            raise UserError(f"{self.data_dir / name}: {len(sentences)} lines but {name}.ids has "
                            f"{len(self.train_data)}; rerun preprocess.py --augmented")
        ids = np.array([gold.get(key(s), -1) for s in sentences], dtype=np.int64)
        logger.info("[Alpha] %d of %d augmented lines are training sentences with gold labels",
                    int((ids >= 0).sum()), len(ids))
        return ids

    # -- checkpoints ---------------------------------------------------------
    def _resume_state(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.state.epoch,
            "step_in_epoch": self.state.step_in_epoch,
            "global_step": self.state.global_step,
            "best_metric": self.state.best_metric,
            "best_epoch": self.state.best_epoch,
            "history": self.state.history,
            "rng": rng_state(),
            "seed": self.args.seed,
        }

    def save(self, path: Path, with_training_state: bool) -> None:
        """Save the model (and for resuming, the optimizer, scheduler, counters, RNG)."""
        state = self._resume_state() if with_training_state else {
            "epoch": self.state.epoch, "global_step": self.state.global_step,
            "best_metric": self.state.best_metric, "best_epoch": self.state.best_epoch,
        }
        if self.config.is_transformer:
            save_teacher(path, self.model, self.config, self.tokenizer, self.labels,
                         self.args.bert_do_lower_case, state if with_training_state else None)
        else:
            save_student_checkpoint(path, self.model, self.vocab, self.labels, state)

    def resume(self) -> None:
        """Load the last saved training state (model, optimizer, scheduler, counters, RNG)."""
        if self.config.is_transformer:
            if not (self.last_path / "model.safetensors").exists():
                raise UserError(f"{self.last_path}: nothing to resume from")
            model, *_ = load_teacher(self.last_path, self.device)
            state = load_training_state(self.last_path / "training_state.pt")
        else:
            if not self.last_path.exists():
                raise UserError(f"{self.last_path}: nothing to resume from")
            model, vocab, labels, state = load_student_checkpoint(self.last_path, self.device)
            if vocab != self.vocab or labels != self.labels:
                raise UserError(f"{self.last_path}: made with another vocabulary or label set than {self.data_dir}")
        try:
            self.model.load_state_dict(model.state_dict())
        except RuntimeError as e:
            raise UserError(f"{self.last_path}: made for another config: {str(e).splitlines()[0]}") from e
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.state = TrainState(state["epoch"], state["step_in_epoch"], state["global_step"], state["best_metric"],
                                state["best_epoch"], list(state["history"]))
        set_rng_state(state["rng"])
        logger.info("[Resume] from %s: epoch %d, step %d in epoch, best %s", self.last_path, self.state.epoch,
                    self.state.step_in_epoch, self.state.best_metric)

    # -- loop ----------------------------------------------------------------
    def loss(self, batch: list[int]) -> torch.Tensor:
        x, lengths = pad_batch([self.train_data.ids[i] for i in batch], self.pad_id)
        x, lengths = x.to(self.device), lengths.to(self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            logits = self.forward_model(x, lengths).float()  # [B, K]
        if self.soft:
            teacher = torch.from_numpy(self.train_data.logits[batch]).to(self.device)  # [B, K]
            loss = distillation_loss(logits, teacher, self.args.criterion, self.args.temperature)
            if self.train_gold is None:
                return loss
            gold = torch.from_numpy(self.train_gold[batch]).to(self.device)  # [B], -1: no gold label
            if not bool((gold >= 0).any()):
                return (1 - self.args.alpha) * loss
            ce = F.cross_entropy(logits, gold, ignore_index=-1)
            return self.args.alpha * ce + (1 - self.args.alpha) * loss
        gold = torch.tensor([self.train_data.labels[i] for i in batch], device=self.device)
        return F.cross_entropy(logits, gold)

    def barrier(self) -> None:
        if self.dist.enabled:
            import torch.distributed as dist

            dist.barrier()

    def validate(self) -> dict:
        logits = predict_logits(self.model, self.valid_data.ids, self.args.eval_batch_size, self.pad_id,
                                self.device, desc="valid", amp_dtype=self.amp_dtype)
        gold = torch.tensor(self.valid_data.labels)
        return {
            "accuracy": (logits.argmax(-1) == gold).float().mean().item(),
            "loss": F.cross_entropy(logits, gold).item(),
        }

    def train(self) -> dict:
        args = self.args
        if args.resume:
            self.resume()
        from torch.utils.tensorboard import SummaryWriter

        main_rank = self.dist.is_main
        writer = SummaryWriter(args.log_dir or str(Path("runs") / self.output.name)) if main_rank else None
        logger.info("[Train] %d examples, %d steps/epoch, batch %d per process x %d process(es) = %d global, %s, "
                    "device %s", len(self.train_data), self.steps_per_epoch, args.batch_size, self.dist.world_size,
                    args.batch_size * self.dist.world_size,
                    "teacher logits (" + args.criterion + ")" if self.soft else "gold labels", self.device)
        start = time.time()
        seen = 0
        train_seconds = 0.0
        for epoch in range(self.state.epoch, args.epoch):
            self.model.train()
            # The batch order depends only on (seed, epoch), so a resumed epoch replays it.
            batches = bucketed_batches(self.lengths, args.batch_size, random.Random(args.seed * 1000 + epoch))
            if self.dist.enabled:
                from torch.utils.data import DistributedSampler

                # batches are already shuffled (seeded); the sampler only deals them out to ranks
                shard = DistributedSampler(range(len(batches)), num_replicas=self.dist.world_size,
                                           rank=self.dist.rank, shuffle=False, drop_last=True)
                batches = [batches[i] for i in shard]
            skip = self.state.step_in_epoch
            epoch_start = time.time()
            bar = tqdm(batches[skip:], desc=f"epoch {epoch + 1}/{args.epoch}", initial=skip, total=len(batches),
                       disable=not main_rank)
            for batch in bar:
                loss = self.loss(batch)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if args.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.state.global_step += 1
                self.state.step_in_epoch += 1
                seen += len(batch)
                if self.state.global_step % 20 == 0 and writer is not None:
                    bar.set_postfix(loss=f"{loss.item():.4f}")
                    writer.add_scalar("train/loss", loss.item(), self.state.global_step)
                    writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], self.state.global_step)
                if args.save_steps and self.state.global_step % args.save_steps == 0 and main_rank:
                    self.save(self.last_path, with_training_state=True)
            train_seconds += time.time() - epoch_start
            self.state.epoch = epoch + 1
            self.state.step_in_epoch = 0
            if not main_rank:
                self.barrier()  # rank 0 validates and saves
                continue
            metrics = self.validate()
            for name, value in metrics.items():
                writer.add_scalar(f"valid/{name}", value, self.state.global_step)
            improved = is_better(metrics[args.measure], self.state.best_metric, args.measure)
            if improved:
                self.state.best_metric = metrics[args.measure]
                self.state.best_epoch = epoch + 1
            self.state.history.append({"epoch": epoch + 1, **metrics})
            logger.info("[Epoch %d] valid accuracy %.4f, valid loss %.4f%s", epoch + 1, metrics["accuracy"],
                        metrics["loss"], " (best)" if improved else "")
            if improved:
                self.save(self.output, with_training_state=False)
            self.save(self.last_path, with_training_state=True)
            self.barrier()
        if writer is not None:
            writer.close()
        elapsed = time.time() - start
        return {
            "best_" + args.measure: self.state.best_metric,
            "best_epoch": self.state.best_epoch,
            "history": self.state.history,
            "train_examples": len(self.train_data),
            "train_sentences_per_s": round(seen * self.dist.world_size / train_seconds, 1) if train_seconds > 0
            else None,
            "processes": self.dist.world_size,
            "seconds": round(elapsed, 1),
            **count_parameters(self.model),
        }


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging()

    def body() -> int:
        config = load_config(args.config, args.set)
        resolve_device(args.device)  # refuse --device cuda without a GPU before joining a group
        dist_ctx = init_distributed(args.device)
        if not dist_ctx.is_main:
            logging.getLogger().setLevel(logging.WARNING)  # one process logs
        return run_in_group(dist_ctx, lambda: run_training(args, config, dist_ctx))

    return run_main(body, logger)


def run_training(args: argparse.Namespace, config: Config, dist_ctx: DistContext) -> int:
    """Train (under torchrun: this rank's part) and write the results files on rank 0."""
    device = resolve_device(args.device, dist_ctx.local_rank)
    # ranks draw different dropout masks; the batch order is seeded identically on all
    set_seed(args.seed + dist_ctx.rank)
    set_threads(args.num_threads)
    if not Path(args.data_dir).is_dir():
        raise UserError(f"{args.data_dir}: data directory not found (run `make data`)")
    trainer = Trainer(args, config, device, dist_ctx)
    results = trainer.train()
    if not dist_ctx.is_main:
        return 0
    out = trainer.output
    out_dir = out if config.is_transformer else out.parent
    stem = "" if config.is_transformer else f"{out.name}."
    resolved = {"args": vars(args), "config": config_to_dict(config), "versions": library_versions()}
    write_json(out_dir / f"{stem}train_config.json", resolved)
    write_json(out_dir / f"{stem}train_results.json", results)
    logger.info("[Best] valid %s %.4f at epoch %d; saved to %s", args.measure, results["best_" + args.measure],
                results["best_epoch"], out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
