"""What train.py's loop stands on: the optimizer and the seed's learning-rate rules, the
per-epoch early-stopping rule, resumable state, and one adaptor per model kind (`TeacherTask`,
`StudentTask`) that reads the data, builds the model, computes a batch's loss and saves.

The seed's optimizer flags, as `dsindex/iclassifier` defines them:

- default: AdamW at `lr` with `weight_decay` on every parameter; after each epoch e (from 0),
  once e > `warmup_epoch`, the learning rate is multiplied by `lr_decay_rate` when validation
  has not improved on the previous epoch for `lr_decay_steps` epochs in a row, or has been
  below its best for more than `lr_decay_steps` epochs (then the count starts again);
- `--use_transformers_optimizer`: AdamW with no decay on biases and LayerNorm weights, the
  learning rate warmed up linearly over `warmup_epoch` epochs, then decayed linearly to 0;
- both: training stops once validation has been below its best for more than `patience`
  epochs in a row (early stopping).
"""
from __future__ import annotations

import argparse
import logging
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from checkpoint import (
    load_hf_tokenizer,
    load_pretrained_teacher,
    load_student,
    load_teacher,
    load_training_state,
    save_student,
    save_teacher,
)
from config import Config, TrainConfig, config_to_dict
from dataset import (
    IdsData,
    bucketed_batches,
    label_ids,
    pad_batch,
    read_examples,
    read_ids,
    read_labels,
    read_predictions,
    read_tokenization_record,
    read_vocab,
)
from model import build_student, distillation_loss, init_embeddings
from tokenization import WordTokenizer
from util import UserError

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# The training config, from train.py's flags
# ---------------------------------------------------------------------------

# Defaults that differ by kind: a teacher is fine-tuned gently, a student trained from GloVe.
TEACHER_DEFAULTS = {"lr": 2e-5, "epoch": 3, "batch_size": 32}
STUDENT_DEFAULTS = {"lr": 1e-3, "epoch": 5, "batch_size": 128}


def train_config(args: argparse.Namespace, config: Config) -> TrainConfig:
    """The flags as one TrainConfig: defaults by kind, and every ignored combination refused."""
    defaults = TEACHER_DEFAULTS if config.is_transformer else STUDENT_DEFAULTS
    linear = args.use_transformers_optimizer
    if linear and (args.lr_decay_rate != 1.0 or args.lr_decay_steps is not None):
        raise UserError("--lr_decay_rate/--lr_decay_steps decay the default optimizer's lr; "
                        "--use_transformers_optimizer has its own linear schedule")
    if not args.augmented and (args.criterion not in (None, "CrossEntropyLoss") or args.alpha
                               or args.augmented_filename):
        raise UserError("--criterion MSELoss/KLDivLoss, --alpha and --augmented_filename need teacher logits: "
                        "add --augmented")
    criterion = args.criterion or ("MSELoss" if args.augmented else "CrossEntropyLoss")
    if args.temperature is not None and (criterion == "MSELoss" or not args.augmented):
        raise UserError(f"--temperature is not used by {criterion}" + ("" if args.augmented else " on gold labels"))
    if args.alpha and config.is_transformer:
        raise UserError("--alpha mixes gold labels into a student's distillation; teachers train on one target")
    cfg = TrainConfig(
        lr=args.lr or defaults["lr"], epoch=args.epoch or defaults["epoch"],
        batch_size=args.batch_size or defaults["batch_size"], eval_batch_size=args.eval_batch_size,
        use_transformers_optimizer=linear, lr_decay_rate=args.lr_decay_rate,
        lr_decay_steps=args.lr_decay_steps or 2,
        warmup_epoch=args.warmup_epoch if args.warmup_epoch is not None else (0.0 if linear else 4.0),
        patience=args.patience, weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm,
        criterion=criterion, temperature=args.temperature or 1.0, alpha=args.alpha, measure=args.measure,
        augmented=args.augmented, augmented_filename=args.augmented_filename, seed=args.seed, amp=args.amp,
        save_steps=args.save_steps, resume=args.resume, train_limit=args.train_limit)
    if linear and cfg.warmup_epoch >= cfg.epoch:
        raise UserError(f"--warmup_epoch {cfg.warmup_epoch:g} >= --epoch {cfg.epoch}: the learning rate would "
                        "never reach --lr")
    if config.is_transformer and not args.bert_model_name_or_path:
        raise UserError(f"{args.config}: a transformer config needs --bert_model_name_or_path")
    if not config.is_transformer and (args.bert_model_name_or_path or args.bert_do_lower_case):
        raise UserError("--bert_model_name_or_path/--bert_do_lower_case are for teacher configs")
    return cfg


# ---------------------------------------------------------------------------
# Optimizer and learning-rate rules
# ---------------------------------------------------------------------------

def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, steps_per_epoch: int
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR | None]:
    """AdamW, and with `use_transformers_optimizer` its per-step linear warm-up/decay schedule
    (the default path has no per-step schedule: `EpochRule` decays it per epoch)."""
    # fused=True: one kernel for the whole update instead of a Python loop over the tensors;
    # the loop was about a quarter of a batch-32 step of the MiniLM teacher on 2 CPU cores.
    if not cfg.use_transformers_optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True), None
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            # biases and normalisation weights are not decayed (BERT's recipe, and the seed's)
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, fused=True)
    total = max(1, steps_per_epoch * cfg.epoch)
    warmup = int(cfg.warmup_epoch * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def better(metric: float, than: float, measure: str) -> bool:
    """Accuracy: higher is better; loss: lower is better (strictly)."""
    return metric > than if measure == "accuracy" else metric < than


@dataclass
class EpochRule:
    """The seed's end-of-epoch rules: best checkpoint, early stopping, and (without
    `use_transformers_optimizer`) learning-rate decay on a plateau. See the module docstring."""

    measure: str
    patience: int
    decay_rate: float = 1.0  # 1.0: no decay (also on the linear-schedule path)
    decay_steps: int = 2
    warmup_epoch: float = 0.0
    best: float | None = None
    stale: int = 0  # epochs in a row below the best
    previous: float | None = None
    not_improving: int = 0  # epochs in a row not better than the one before

    def after_epoch(self, epoch: int, metric: float) -> tuple[bool, bool, bool]:
        """(new best, decay the learning rate now, stop) after epoch `epoch` (0-based)."""
        if self.best is not None and better(self.best, metric, self.measure):
            self.stale += 1
            if self.stale > self.patience:
                return False, False, True
        else:
            self.stale = 0
        improved = self.best is None or better(metric, self.best, self.measure)
        if improved:
            self.best = metric
        getting_worse = self.previous is not None and not better(metric, self.previous, self.measure)
        self.not_improving = self.not_improving + 1 if getting_worse else 0
        decay = (self.decay_rate != 1.0 and epoch > self.warmup_epoch
                 and (self.not_improving >= self.decay_steps or self.stale > self.decay_steps))
        if decay:
            self.not_improving = 0
        self.previous = metric
        return improved, decay, False


def epoch_rule(cfg: TrainConfig) -> EpochRule:
    """The rule `cfg` asks for (decay only on the default optimizer path)."""
    plateau = not cfg.use_transformers_optimizer
    return EpochRule(cfg.measure, cfg.patience, cfg.lr_decay_rate if plateau else 1.0, cfg.lr_decay_steps,
                     cfg.warmup_epoch)


# ---------------------------------------------------------------------------
# Resumable state
# ---------------------------------------------------------------------------

@dataclass
class TrainState:
    """Where training is: restored by --resume."""

    epoch: int = 0  # epochs fully done
    step_in_epoch: int = 0  # batches done in the current epoch
    global_step: int = 0
    best_epoch: int = 0
    history: list = field(default_factory=list)


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
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def resume_payload(state: TrainState, rule: EpochRule, optimizer: torch.optim.Optimizer,
                   scheduler: Any, seed: int) -> dict:
    """Everything `--resume` needs, as plain types and tensors."""
    return {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else None,
            **asdict(state), "rule": asdict(rule), "rng": rng_state(), "seed": seed,
            "best_metric": rule.best}


def restore(payload: dict, optimizer: torch.optim.Optimizer, scheduler: Any) -> tuple[TrainState, EpochRule]:
    """Load optimizer, scheduler and RNG states; return the counters and the epoch rule."""
    optimizer.load_state_dict(payload["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(payload["scheduler"])
    set_rng_state(payload["rng"])
    state = TrainState(payload["epoch"], payload["step_in_epoch"], payload["global_step"], payload["best_epoch"],
                       list(payload["history"]))
    return state, EpochRule(**payload["rule"])


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, rank: int, world: int) -> list:
    """This rank's training batches for `epoch`: length-bucketed and shuffled from (seed,
    epoch) alone, so a resumed epoch replays the same order; under torchrun every rank takes
    every world-th batch and the remainder is dropped so the ranks step together."""
    batches = bucketed_batches(lengths, batch_size, random.Random(seed * 1000 + epoch))
    usable = len(batches) // world * world
    return batches[rank:usable:world]


# ---------------------------------------------------------------------------
# Teacher and student adaptors
# ---------------------------------------------------------------------------

class Task:
    """One kind of model's part in training: data, model, loss on a batch, saving, resuming."""

    model: torch.nn.Module
    train_data: IdsData
    valid_data: IdsData
    labels: list[str]
    pad_id: int
    output: Path  # the best model
    last_path: Path  # the resumable state

    def __init__(self, cfg: TrainConfig, config: Config, data_dir: Path):
        self.cfg, self.config, self.data_dir = cfg, config, data_dir
        self.labels = read_labels(data_dir / "label.txt")
        self.train_gold: np.ndarray | None = None  # gold label ids for --alpha

    def train_name(self) -> str:
        """The training file's name, before its `.ids`/`.fs` suffix."""
        if not self.cfg.augmented:
            return "train.txt"
        return self.cfg.augmented_filename or ("augmented.raw" if self.config.is_transformer else "augmented.txt")

    def limit(self, n: int) -> None:
        """Keep the first `n` training examples (`--train_limit`)."""
        d = self.train_data
        d.ids = d.ids[:n]
        d.labels = d.labels[:n] if d.labels is not None else None
        d.logits = d.logits[:n] if d.logits is not None else None
        if self.train_gold is not None:
            self.train_gold = self.train_gold[:n]

    def loss(self, forward: torch.nn.Module, batch: list[int], device: torch.device,
             amp: torch.dtype | None) -> torch.Tensor:
        """The training loss of one batch (indices into the training data)."""
        x, lengths = pad_batch([self.train_data.ids[i] for i in batch], self.pad_id)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = forward(x.to(device), lengths.to(device)).float()  # [B, K]
        cfg = self.cfg
        if not cfg.augmented:
            return F.cross_entropy(logits, torch.tensor([self.train_data.labels[i] for i in batch], device=device))
        teacher = torch.from_numpy(self.train_data.logits[batch]).to(device)  # [B, K]
        loss = distillation_loss(logits, teacher, cfg.criterion, cfg.temperature)
        if self.train_gold is None:
            return loss
        gold = torch.from_numpy(self.train_gold[batch]).to(device)  # [B], -1: no gold label
        ce = F.cross_entropy(logits, gold, ignore_index=-1) if bool((gold >= 0).any()) else logits.sum() * 0
        return cfg.alpha * ce + (1 - cfg.alpha) * loss

    def save(self, path: Path, state: dict) -> None:
        raise NotImplementedError

    def load_last(self, device: torch.device) -> dict:
        """The resumable payload; loads its weights into `self.model`."""
        raise NotImplementedError


class TeacherTask(Task):
    """Fine-tune a Hugging Face encoder with a linear head; writes a teacher directory."""

    def __init__(self, cfg: TrainConfig, config: Config, data_dir: Path, bert_model: str, lowercase: bool,
                 output: Path):
        super().__init__(cfg, config, data_dir)
        record = read_tokenization_record(data_dir)
        if record is not None and record["lowercase"] != lowercase:
            raise UserError(f"--bert_do_lower_case is {'on' if lowercase else 'off'}, but the .fs files in {data_dir} "
                            f"were made with it {'on' if record['lowercase'] else 'off'} "
                            f"({data_dir / 'preprocess.transformer.json'}); use the same setting")
        self.lowercase = lowercase
        self.output, self.last_path = output, output / "last"
        self.train_data = read_ids(data_dir / f"{self.train_name()}.fs", len(self.labels), cfg.augmented)
        self.valid_data = read_ids(data_dir / "valid.txt.fs", len(self.labels), False)
        self.tokenizer = load_hf_tokenizer(bert_model)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.model = load_pretrained_teacher(bert_model, len(self.labels), config.dropout, config.enc_class)

    def save(self, path: Path, state: dict) -> None:
        with_state = "optimizer" in state
        save_teacher(path, self.model, self.config, self.tokenizer, self.labels, self.lowercase,
                     state if with_state else None)

    def load_last(self, device: torch.device) -> dict:
        if not (self.last_path / "model.safetensors").exists():
            raise UserError(f"{self.last_path}: nothing to resume from")
        self.model.load_state_dict(load_teacher(self.last_path, device).model.state_dict())
        return load_training_state(self.last_path / "training_state.pt")


class StudentTask(Task):
    """Train a GloVe student on gold labels or teacher logits; writes one checkpoint file."""

    def __init__(self, cfg: TrainConfig, config: Config, data_dir: Path, output: Path):
        super().__init__(cfg, config, data_dir)
        self.output, self.last_path = output, Path(f"{output}.last")
        name = self.train_name()
        self.vocab, matrix = read_vocab(data_dir)
        if matrix.shape[1] != config.token_emb_dim:
            raise UserError(f"{data_dir / 'embedding.npy'}: vectors of dimension {matrix.shape[1]}, but the config "
                            f"has token_emb_dim {config.token_emb_dim}; rerun preprocess.py with matching vectors")
        self.train_data = read_ids(data_dir / f"{name}.ids", len(self.labels), cfg.augmented)
        self.valid_data = read_ids(data_dir / "valid.txt.ids", len(self.labels), False)
        for data, fname in ((self.train_data, f"{name}.ids"), (self.valid_data, "valid.txt.ids")):
            top = max((max(s) for s in data.ids if s), default=0)
            if top >= len(self.vocab):
                raise UserError(f"{data_dir / fname}: token id {top} is outside vocab.txt ({len(self.vocab)} "
                                "words); rerun preprocess.py")
        if cfg.augmented and cfg.alpha > 0:
            self.train_gold = self.gold_for_augmented(name)
        self.pad_id = config.pad_token_id
        self.model = build_student(config, len(self.vocab), len(self.labels))
        init_embeddings(self.model, torch.from_numpy(matrix))

    def gold_for_augmented(self, name: str) -> np.ndarray:
        """Gold label ids for augmented lines that are original training sentences, -1 for the rest."""
        tokenize = WordTokenizer(self.config.tokenizer, self.config.lowercase)
        train_path = self.data_dir / "train.txt"
        examples = read_examples(train_path)
        gold = {" ".join(tokenize(e.sentence)): i for e, i in zip(examples, label_ids(examples, self.labels,
                                                                                         train_path))}
        sentences, _ = read_predictions(self.data_dir / name, len(self.labels))
        if len(sentences) != len(self.train_data):
            raise UserError(f"{self.data_dir / name}: {len(sentences)} lines but {name}.ids has "
                            f"{len(self.train_data)}; rerun preprocess.py --augmented")
        ids = np.array([gold.get(" ".join(tokenize(s)), -1) for s in sentences], dtype=np.int64)
        logger.info("[Alpha] %d of %d augmented lines are training sentences with gold labels",
                    int((ids >= 0).sum()), len(ids))
        return ids

    def save(self, path: Path, state: dict) -> None:
        save_student(path, self.model, self.vocab, self.labels, state)

    def load_last(self, device: torch.device) -> dict:
        if not self.last_path.exists():
            raise UserError(f"{self.last_path}: nothing to resume from")
        last = load_student(self.last_path, device)
        if last.vocab != self.vocab or last.labels != self.labels:
            raise UserError(f"{self.last_path}: made with another vocabulary or label set than {self.data_dir}")
        ours, theirs = config_to_dict(self.config), config_to_dict(last.model.config)
        differ = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
        if differ:
            raise UserError(f"{self.last_path}: made for another config ({differ[0]}: {theirs.get(differ[0])!r} there, "
                            f"{ours.get(differ[0])!r} here)")
        self.model.load_state_dict(last.model.state_dict())
        return last.state


def steps_per_epoch(n_examples: int, batch_size: int, world: int) -> int:
    """Optimizer steps per epoch and process (a remainder batch per rank is dropped)."""
    steps = math.ceil(n_examples / batch_size) // world
    if steps == 0:
        raise UserError(f"{n_examples} training examples are fewer than one batch per process")
    return steps
