"""What train.py's loop stands on: the optimizer and the seed's learning-rate rules, the
per-epoch early-stopping rule, resumable state, and one adaptor per model kind (`TeacherTask`,
`StudentTask`) that reads the data, builds the model, computes a batch's loss and saves.

The optimizer flags (the seed's, as `dsindex/iclassifier` defines them, and `sgd`):

- default: AdamW at `lr` with `weight_decay` on every parameter. After each epoch e (counted
  from 0) with e > `warmup_epoch`, the learning rate is multiplied by `lr_decay_rate` when
  (a) validation has been no better than the epoch before for `lr_decay_steps` epochs in a
  row (that count then restarts from zero), or (b) validation has been strictly below its
  best for more than `lr_decay_steps` epochs in a row (which decays it again after every
  such epoch, until validation is back at its best);
- `--use_transformers_optimizer`: AdamW with no decay on biases and LayerNorm weights, the
  learning rate warmed up linearly over `warmup_epoch` epochs, then decayed linearly to 0;
- `--optimizer sgd` (fastText's training, for bags of n-grams): plain SGD with sparse
  gradients for the embedding tables and the same linear warm-up and decay;
- all: training stops once validation has been strictly below its best for more than
  `patience` epochs in a row (early stopping).
"""
from __future__ import annotations

import logging
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

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
    TRANSFER_CHOICES,
    IdsData,
    bucketed_batches,
    pad_batch,
    read_ids,
    read_labels,
    read_tokenization_record,
    read_transfer_ids,
    read_vocab,
)
from model import build_student, distillation_loss, init_embeddings
from util import UserError

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Optimizer and learning-rate rules
# ---------------------------------------------------------------------------

def make_optimizer(model: torch.nn.Module, train_config: TrainConfig, steps_per_epoch: int
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR | None]:
    """The optimizer `train_config` names, and on the linear paths (`use_transformers_optimizer`,
    `sgd`) its per-step warm-up/decay schedule (the default path has no per-step schedule:
    `EpochRule` decays it per epoch)."""
    tc = train_config
    if tc.optimizer == "sgd":
        # fastText's training: sparse updates of the rows a batch touches, so a table of millions
        # of hashed n-grams costs only its batch's rows per step
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding):
                module.sparse = True
        optimizer: torch.optim.Optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                                           lr=tc.lr)
    elif not tc.use_transformers_optimizer:
        # fused=True: one kernel for the whole update instead of a Python loop over the tensors;
        # the loop was about a quarter of a batch-32 step of the MiniLM teacher on 2 CPU cores.
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay, fused=True), None
    else:
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if p.requires_grad:
                # biases and normalisation weights are not decayed (BERT's recipe, and the seed's)
                (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr, fused=True)
    total = max(1, steps_per_epoch * tc.epoch)
    warmup = int(tc.warmup_epoch * steps_per_epoch)

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


def epoch_rule(train_config: TrainConfig) -> EpochRule:
    """The rule `train_config` asks for (decay only on the default optimizer path)."""
    tc = train_config
    plateau = not tc.use_transformers_optimizer and tc.optimizer == "adamw"
    return EpochRule(tc.measure, tc.patience, tc.lr_decay_rate if plateau else 1.0, tc.lr_decay_steps,
                     tc.warmup_epoch)


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

    def __init__(self, train_config: TrainConfig, model_config: Config, data_dir: Path):
        self.train_config, self.model_config, self.data_dir = train_config, model_config, data_dir
        self.labels = read_labels(data_dir / "label.txt")

    def train_name(self) -> str:
        """The training file's name, before its `.ids`/`.fs` suffix."""
        if not self.train_config.augmented:
            return "train.txt"
        return self.train_config.augmented_filename or ("augmented.raw" if self.model_config.is_transformer
                                                        else "augmented.txt")

    def limit(self, n: int) -> None:
        """Keep the first `n` training examples (`--train_limit`)."""
        self.train_data = self.train_data.subset(np.arange(min(n, len(self.train_data))))

    def loss(self, forward: torch.nn.Module, batch: list[int], device: torch.device,
             amp: torch.dtype | None) -> torch.Tensor:
        """The training loss of one batch (indices into the training data)."""
        data, tc = self.train_data, self.train_config
        x, lengths = pad_batch(data.seqs(batch), self.pad_id)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = forward(x.to(device), lengths.to(device)).float()  # [B, K]
        gold = torch.from_numpy(data.labels[batch]).to(device)  # [B], -1: no gold label
        if not tc.augmented:
            return F.cross_entropy(logits, gold)
        teacher = torch.from_numpy(data.scores[batch]).to(device)  # [B, K]
        loss = distillation_loss(logits, teacher, tc.criterion, tc.temperature)
        if not tc.alpha:
            return loss
        ce = F.cross_entropy(logits, gold, ignore_index=-1) if bool((gold >= 0).any()) else logits.sum() * 0
        return tc.alpha * ce + (1 - tc.alpha) * loss

    def save(self, path: Path, state: dict) -> None:
        raise NotImplementedError

    def load_last(self, device: torch.device) -> dict:
        """The resumable payload; loads its weights into `self.model`."""
        raise NotImplementedError


class TeacherTask(Task):
    """Fine-tune a Hugging Face encoder with a new head; writes a teacher directory."""

    def __init__(self, train_config: TrainConfig, model_config: Config, data_dir: Path, bert_model: str,
                 lowercase: bool, output: Path):
        super().__init__(train_config, model_config, data_dir)
        if train_config.augmented:
            raise UserError("--augmented trains a student on teacher logits; a teacher trains on gold labels")
        record = read_tokenization_record(data_dir)
        if record is not None and record["lowercase"] != lowercase:
            raise UserError(f"--bert_do_lower_case is {'on' if lowercase else 'off'}, but the .fs files in {data_dir} "
                            f"were made with it {'on' if record['lowercase'] else 'off'} "
                            f"({data_dir / 'preprocess.transformer.json'}); use the same setting")
        self.lowercase = lowercase
        self.output, self.last_path = output, output / "last"
        self.train_data = read_ids(data_dir / "train.txt.fs", len(self.labels))
        self.valid_data = read_ids(data_dir / "valid.txt.fs", len(self.labels))
        self.tokenizer = load_hf_tokenizer(bert_model)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.model = load_pretrained_teacher(bert_model, self.labels, model_config)

    def save(self, path: Path, state: dict) -> None:
        with_state = "optimizer" in state
        save_teacher(path, self.model, self.model_config, self.tokenizer, self.labels, self.lowercase,
                     state if with_state else None)

    def load_last(self, device: torch.device) -> dict:
        if not (self.last_path / "model.safetensors").exists():
            raise UserError(f"{self.last_path}: nothing to resume from")
        self.model.load_state_dict(load_teacher(self.last_path, device).model.state_dict())
        return load_training_state(self.last_path / "training_state.pt")


class StudentTask(Task):
    """Train a GloVe student on gold labels or on a transfer set's teacher logits; writes one
    checkpoint file."""

    def __init__(self, train_config: TrainConfig, model_config: Config, data_dir: Path, output: Path):
        super().__init__(train_config, model_config, data_dir)
        self.output, self.last_path = output, Path(f"{output}.last")
        name = self.train_name()
        self.vocab, matrix = read_vocab(data_dir)
        if matrix.shape[1] != model_config.token_emb_dim:
            raise UserError(f"{data_dir / 'embedding.npy'}: vectors of dimension {matrix.shape[1]}, but the config "
                            f"has token_emb_dim {model_config.token_emb_dim}; rerun preprocess.py with matching vectors")
        if train_config.augmented:
            self.train_data = self.transfer_lines(read_transfer_ids(data_dir / f"{name}.ids", len(self.labels)))
        else:
            self.train_data = read_ids(data_dir / f"{name}.ids", len(self.labels))
        self.valid_data = read_ids(data_dir / "valid.txt.ids", len(self.labels))
        for data, fname in ((self.train_data, f"{name}.ids"), (self.valid_data, "valid.txt.ids")):
            top = int(data.tokens.max(initial=0))
            if top >= len(self.vocab):
                raise UserError(f"{data_dir / fname}: token id {top} is outside vocab.txt ({len(self.vocab)} "
                                "words); rerun preprocess.py")
        # what the model reads: the word ids, or a bag of n-grams' words and hashed n-grams
        ids = model_config.word_ids(self.vocab)
        if ids.ngrams > 1:
            self.train_data, self.valid_data = (with_features(d, ids.features) for d in (self.train_data,
                                                                                         self.valid_data))
        self.pad_id = model_config.pad_token_id
        self.model = build_student(model_config, len(self.vocab), len(self.labels))
        init_embeddings(self.model, torch.from_numpy(matrix))

    def transfer_lines(self, data: IdsData) -> IdsData:
        """The lines of the sources `--transfer` names; `--alpha` needs some gold labels."""
        tc = self.train_config
        sources = TRANSFER_CHOICES[tc.transfer]
        chosen = np.flatnonzero(np.isin(data.sources, sources))
        if not len(chosen):
            raise UserError(f"{self.data_dir / self.train_name()}: no lines from {list(sources)} (--transfer "
                            f"{tc.transfer}); it has {sorted(set(data.sources.tolist()))}")
        data = data.subset(chosen)
        with_gold = int((data.labels >= 0).sum())
        logger.info("[Transfer] %d lines (%s), %d with gold labels", len(data),
                    ", ".join(f"{s} {int((data.sources == s).sum())}" for s in sources if (data.sources == s).any()),
                    with_gold)
        if tc.alpha and not with_gold:
            raise UserError(f"--alpha mixes in gold labels, but {self.train_name()} has none (write it with label.py, "
                            "which keeps the training sentences' labels)")
        return data

    def save(self, path: Path, state: dict) -> None:
        save_student(path, self.model, self.vocab, self.labels, state)

    def load_last(self, device: torch.device) -> dict:
        if not self.last_path.exists():
            raise UserError(f"{self.last_path}: nothing to resume from")
        last = load_student(self.last_path, device)
        if last.vocab != self.vocab or last.labels != self.labels:
            raise UserError(f"{self.last_path}: made with another vocabulary or label set than {self.data_dir}")
        ours, theirs = config_to_dict(self.model_config), config_to_dict(last.model.config)
        differ = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
        if differ:
            raise UserError(f"{self.last_path}: made for another config ({differ[0]}: {theirs.get(differ[0])!r} there, "
                            f"{ours.get(differ[0])!r} here)")
        self.model.load_state_dict(last.model.state_dict())
        return last.state


def with_features(data: IdsData, features: Callable[[Sequence[int]], list[int]]) -> IdsData:
    """`data` with each word-id sequence replaced by the model's features of it."""
    return IdsData.from_seqs([features(seq.tolist()) for seq in data.seqs(range(len(data)))], data.labels,
                             data.scores, data.sources)


def steps_per_epoch(n_examples: int, batch_size: int, world: int) -> int:
    """Optimizer steps per epoch and process (a remainder batch per rank is dropped)."""
    steps = math.ceil(n_examples / batch_size) // world
    if steps == 0:
        raise UserError(f"{n_examples} training examples are fewer than one batch per process")
    return steps
