"""Training, as train.py runs it: the optimizer and the seed's learning-rate rules, the
early-stopping rule, resumable state, one adaptor per model kind (`TeacherTask`,
`StudentTask`) that reads the data, builds the model, computes a batch's loss and saves, and
the loop over a step budget (`run_training`).

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
  `patience` validations in a row (early stopping; with `patience_steps`, more than that
  many steps). Validation runs after every epoch, or every `eval_steps` steps.

The budget: `epochs` passes over the training set, raised to at least `min_steps` optimizer
steps. Epochs fit one set size; users bring transfer sets from a thousand sentences to ten
million, and a student that sees a small set for four epochs stops long before it has
learned the teacher's scores (on the demo's 3,000 training sentences, 96 steps left a
distilled CNN 3 points below its gold twin; results/budget.md). A minimum in steps rescues
the small set and leaves a big one as it was; the best validation point is kept, so extra
steps cost time, not accuracy.
"""
from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from checkpoint import (
    load_pretrained_teacher,
    load_student,
    load_teacher,
    load_training_state,
    save_student,
    save_teacher,
)
from config import GOLD_MIX_ALPHAS, Config, TrainConfig, check_student_data, config_to_dict
from dataset import (
    TRANSFER_CHOICES,
    TRANSFER_FILE,
    IdsData,
    is_pair_data,
    bucketed_batches,
    count_transfer_ids,
    read_ids,
    read_labels,
    read_transfer_ids,
    read_vocab,
)
from inference import pad_batch, predict_logits
from metrics import choose_thresholds, fit_temperature, multilabel_metrics
from model import build_student, count_parameters, distillation_loss, init_embeddings
from runtime import multilabel_decisions
from teachers import load_hf_tokenizer, read_tokenization_record
from util import DistContext, UserError, amp_dtype, barrier, set_seed

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Optimizer and learning-rate rules
# ---------------------------------------------------------------------------

def make_optimizer(model: torch.nn.Module, train_config: TrainConfig, steps_per_epoch: int, total_steps: int
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR | None]:
    """The optimizer `train_config` names, and on the linear paths (`use_transformers_optimizer`,
    `sgd`) its per-step schedule: warm-up over `warmup_epoch` epochs, then linear decay to 0
    at `total_steps` (the budget). The default path has no per-step schedule: `EpochRule`
    decays it per epoch."""
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
    total = max(1, total_steps)
    warmup = int(tc.warmup_epoch * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def better(metric: float, than: float, measure: str) -> bool:
    """Accuracy (micro-F1 for multi-label): higher is better; loss: lower is better (strictly)."""
    return metric < than if measure == "loss" else metric > than


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
    best_step: int = 0


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
                       list(payload["history"]), int(payload.get("best_step", 0)))
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

    @property
    def multi_label(self) -> bool:
        """Label sets: K sigmoid outputs, labels `[n, K]` 0/1 (IdsData), thresholds chosen on valid."""
        return self.train_config.multi_label

    def train_name(self) -> str:
        """The training file's name, before its `.ids`/`.fs` suffix."""
        if not self.train_config.distill:
            return "train.txt"
        return self.train_config.transfer_file or TRANSFER_FILE

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
        # [B], -1: no gold label; multi-label [B, K] 0/1, a row of -1: none
        gold = torch.from_numpy(data.labels[batch]).to(device)
        if not tc.distill:
            return gold_loss(logits, gold, self.multi_label)
        teacher = torch.from_numpy(data.scores[batch]).to(device)  # [B, K]
        loss = distillation_loss(logits, teacher, tc.criterion, tc.temperature)
        if not tc.alpha:
            return loss
        has_gold = gold[:, 0] >= 0 if self.multi_label else gold >= 0  # [B]
        ce = gold_loss(logits[has_gold], gold[has_gold], self.multi_label) if bool(has_gold.any()) else \
            logits.sum() * 0
        return tc.alpha * ce + (1 - tc.alpha) * loss

    def save(self, path: Path, state: dict) -> None:
        raise NotImplementedError

    def load_last(self, device: torch.device) -> dict:
        """The resumable payload; loads its weights into `self.model`."""
        raise NotImplementedError


def gold_loss(logits: torch.Tensor, gold: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """The loss on gold labels: cross-entropy on label ids `[B]`, or for label sets `[B, K]`
    0/1 the binary cross-entropy of each label's sigmoid, averaged over batch and labels."""
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, gold.float())
    return F.cross_entropy(logits, gold)


def valid_metrics(logits: torch.Tensor, gold: np.ndarray, labels: list[str], multi_label: bool) -> dict:
    """Validation scores of `[n, K]` logits: accuracy and cross-entropy, or for label sets
    (`gold` `[n, K]` 0/1) micro- and macro-F1 of the decisions at 0.5 (`runtime.multilabel_decisions`)
    and the binary cross-entropy."""
    if not multi_label:
        target = torch.from_numpy(gold)
        return {"accuracy": (logits.argmax(-1) == target).float().mean().item(),
                "loss": F.cross_entropy(logits, target).item()}
    scores = multilabel_metrics(multilabel_decisions(torch.sigmoid(logits).numpy(), None), gold, labels)
    return {"micro_f1": scores["micro_f1"], "macro_f1": scores["macro_f1"],
            "loss": F.binary_cross_entropy_with_logits(logits, torch.from_numpy(gold)).item()}


class TeacherTask(Task):
    """Fine-tune a Hugging Face encoder with a new head; writes a teacher directory."""

    def __init__(self, train_config: TrainConfig, model_config: Config, data_dir: Path, bert_model: str,
                 lowercase: bool, output: Path):
        super().__init__(train_config, model_config, data_dir)
        if train_config.distill:
            raise UserError("--distill/--augmented train a student on teacher logits; a teacher trains on gold labels")
        record = read_tokenization_record(data_dir)
        if record is not None and record["lowercase"] != lowercase:
            raise UserError(f"--bert_do_lower_case is {'on' if lowercase else 'off'}, but the .fs files in {data_dir} "
                            f"were made with it {'on' if record['lowercase'] else 'off'} "
                            f"({data_dir / 'preprocess.transformer.json'}); use the same setting")
        self.lowercase = lowercase
        self.pairs = is_pair_data(data_dir / "train.txt")
        self.output, self.last_path = output, output / "last"
        self.train_data = read_ids(data_dir / "train.txt.fs", len(self.labels), self.multi_label)
        self.valid_data = read_ids(data_dir / "valid.txt.fs", len(self.labels), self.multi_label)
        self.tokenizer = load_hf_tokenizer(bert_model)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.model = load_pretrained_teacher(bert_model, self.labels, model_config, self.multi_label)

    def save(self, path: Path, state: dict) -> None:
        with_state = "optimizer" in state
        save_teacher(path, self.model, self.model_config, self.tokenizer, self.labels, self.lowercase,
                     state if with_state else None, state.get("temperature", 1.0), self.pairs, self.multi_label,
                     state.get("thresholds"))

    def load_last(self, device: torch.device) -> dict:
        if not (self.last_path / "model.safetensors").exists():
            raise UserError(f"{self.last_path}: nothing to resume from")
        last = load_teacher(self.last_path, device)
        if last.multi_label != self.multi_label:
            raise UserError(f"{self.last_path}: {'multi' if last.multi_label else 'single'}-label, but {self.data_dir} "
                            f"is {'multi' if self.multi_label else 'single'}-label")
        self.model.load_state_dict(last.model.state_dict())
        return load_training_state(self.last_path / "training_state.pt")


class StudentTask(Task):
    """Train a GloVe student on gold labels or on a transfer set's teacher logits; writes one
    checkpoint file."""

    def __init__(self, train_config: TrainConfig, model_config: Config, data_dir: Path, output: Path):
        super().__init__(train_config, model_config, data_dir)
        self.output, self.last_path = output, Path(f"{output}.last")
        name = self.train_name()
        self.vocab, matrix = read_vocab(data_dir)
        uniform = model_config.bow is not None and model_config.bow.word_init == "uniform"  # GloVe unused
        if matrix.shape[1] != model_config.token_emb_dim and not uniform:
            raise UserError(f"{data_dir / 'embedding.npy'}: vectors of dimension {matrix.shape[1]}, but the config "
                            f"has token_emb_dim {model_config.token_emb_dim}; rerun preprocess.py with matching vectors")
        if train_config.distill:
            self.train_data = self.transfer_lines(read_transfer_ids(data_dir / f"{name}.ids", len(self.labels),
                                                                    self.multi_label))
        else:
            self.train_data = read_ids(data_dir / f"{name}.ids", len(self.labels), self.multi_label)
        self.valid_data = read_ids(data_dir / "valid.txt.ids", len(self.labels), self.multi_label)
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
        sep_id = model_config.sep_id(self.vocab)
        check_student_data(model_config.enc_class, sep_id is not None, f"{data_dir / 'vocab.txt'}")
        self.model = build_student(model_config, len(self.vocab), len(self.labels), sep_id)
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
        with_gold = int(data.has_gold.sum())
        logger.info("[Transfer] %d lines (%s), %d with gold labels", len(data),
                    ", ".join(f"{s} {int((data.sources == s).sum())}" for s in sources if (data.sources == s).any()),
                    with_gold)
        if tc.alpha and not with_gold:
            raise UserError(f"--alpha mixes in gold labels, but {self.train_name()} has none (write it with label.py, "
                            "which keeps the training sentences' labels)")
        return data

    def save(self, path: Path, state: dict) -> None:
        save_student(path, self.model, self.vocab, self.labels, state, self.multi_label)

    def load_last(self, device: torch.device) -> dict:
        if not self.last_path.exists():
            raise UserError(f"{self.last_path}: nothing to resume from")
        last = load_student(self.last_path, device)
        if last.vocab != self.vocab or last.labels != self.labels or last.multi_label != self.multi_label:
            raise UserError(f"{self.last_path}: made with another vocabulary or label set than {self.data_dir} (or "
                            f"{'multi' if last.multi_label else 'single'}-label, the data not)")
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


# ---------------------------------------------------------------------------
# The budget and the loop (train.py runs `run_training`)
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Budget:
    """How long a run trains, whatever the size of its training set: `epochs` of it, but never
    fewer than `min_steps` optimizer steps (a transfer set of a few thousand sentences gets
    more passes, a big one is unchanged). The last epoch stops at `total_steps`."""

    steps_per_epoch: int
    total_steps: int
    epochs: int


def make_budget(train_config: TrainConfig, steps_in_epoch: int) -> Budget:
    """The budget of `train_config` for epochs of `steps_in_epoch` steps."""
    total = max(train_config.epochs * steps_in_epoch, train_config.min_steps)
    return Budget(steps_in_epoch, total, math.ceil(total / steps_in_epoch))


@dataclass
class Setup:
    """Where a run reads and writes, and on what it runs (train.py's flags, resolved)."""

    data_dir: Path
    output: Path  # a teacher directory, or a student checkpoint file
    device: torch.device
    backbone: str | None = None  # teachers: the Hugging Face encoder to fine-tune
    lowercase: bool = False  # teachers: lower-case text outside special tokens
    log_dir: str | None = None  # TensorBoard (default runs/<output name>)


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
    budget: Budget
    device: torch.device
    amp: torch.dtype | None
    writer: Any  # TensorBoard SummaryWriter on rank 0, else None
    stop_reason: str = "budget"  # or "early stop"


def prepare(setup: Setup, model_config: Config, train_config: TrainConfig, dist: DistContext) -> Run:
    """Data and model (the task), DDP, optimizer and schedule over the budget, and the state
    to resume."""
    tc, device = train_config, setup.device
    if not setup.data_dir.is_dir():
        raise UserError(f"{setup.data_dir}: data directory not found (run `make data`)")
    task: Task = (TeacherTask(tc, model_config, setup.data_dir, setup.backbone, setup.lowercase, setup.output)
                  if model_config.is_transformer else StudentTask(tc, model_config, setup.data_dir, setup.output))
    if tc.train_limit:
        task.limit(tc.train_limit)
    model = task.model.to(device)
    forward = model
    if dist.enabled:  # gradients averaged across ranks; `model` stays the plain module for saving
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                          find_unused_parameters=model_config.is_transformer)  # a pooler may be unused
    budget = make_budget(tc, steps_per_epoch(len(task.train_data), tc.batch_size, dist.world_size))
    optimizer, scheduler = make_optimizer(model, tc, budget.steps_per_epoch, budget.total_steps)
    state, rule = TrainState(), epoch_rule(tc)
    if tc.resume:
        state, rule = restore(task.load_last(device), optimizer, scheduler)
        logger.info("[Resume] from %s: epoch %d, step %d in epoch, best %s", task.last_path, state.epoch,
                    state.step_in_epoch, rule.best)
    writer = None
    if dist.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(setup.log_dir or str(Path("runs") / task.output.name))
    logger.info("[Train] %d examples, batch %d per process x %d process(es) = %d global, %s, device %s",
                len(task.train_data), tc.batch_size, dist.world_size, tc.batch_size * dist.world_size,
                f"teacher logits ({tc.criterion})" if tc.distill else "gold labels", device)
    logger.info("[Budget] %d steps: %d epoch(s) of %d steps%s; validation %s", budget.total_steps, budget.epochs,
                budget.steps_per_epoch, f" (at least {tc.min_steps} steps)" if tc.min_steps else "",
                f"every {tc.eval_steps} steps" if tc.eval_steps else "after every epoch")
    return Run(task, model, forward, optimizer, scheduler, state, rule, budget, device,
               amp_dtype(tc.amp, device), writer)


def train_step(run: Run, train_config: TrainConfig, batch: list[int]) -> torch.Tensor:
    """One optimizer step on `batch`; returns its loss (a tensor: reading it waits for the
    device, so the loop reads it only when it logs)."""
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
    return loss.detach()


def train_epoch(run: Run, train_config: TrainConfig, epoch: int, dist: DistContext) -> tuple[int, bool]:
    """One epoch of seeded, length-bucketed batches (from where a resumed run stopped), cut at
    the budget, validating every `eval_steps` steps or at its end; returns the sentences seen
    and whether training is over (budget spent or stopped early)."""
    run.model.train()
    tc, state, seen = train_config, run.state, 0
    batches = epoch_batches(run.task.train_data.lengths.tolist(), tc.batch_size, tc.seed, epoch, dist.rank,
                            dist.world_size)
    bar = tqdm(batches[state.step_in_epoch:], desc=f"epoch {epoch + 1}/{run.budget.epochs}",
               initial=state.step_in_epoch, total=len(batches), disable=not dist.is_main)
    for batch in bar:
        loss = train_step(run, tc, batch)
        state.global_step += 1
        state.step_in_epoch += 1
        seen += len(batch)
        if run.writer is not None and state.global_step % 20 == 0:
            value = loss.item()
            bar.set_postfix(loss=f"{value:.4f}")
            run.writer.add_scalar("train/loss", value, state.global_step)
            run.writer.add_scalar("train/lr", run.optimizer.param_groups[0]["lr"], state.global_step)
        spent = state.global_step >= run.budget.total_steps
        if spent or state.step_in_epoch == len(batches):
            state.epoch, state.step_in_epoch = epoch + 1, 0
        if tc.eval_steps and (spent or state.global_step % tc.eval_steps == 0):
            if validate(run, tc, dist, epoch) or spent:
                return seen, True
            run.model.train()
        elif tc.save_steps and state.global_step % tc.save_steps == 0 and dist.is_main:
            run.task.save(run.task.last_path, resume_payload(state, run.rule, run.optimizer, run.scheduler, tc.seed))
        if spent:
            break
    state.epoch, state.step_in_epoch = epoch + 1, 0  # also when a resumed epoch had no batch left
    stop = validate(run, tc, dist, epoch) if not tc.eval_steps else False
    return seen, stop or state.global_step >= run.budget.total_steps


def validate(run: Run, train_config: TrainConfig, dist: DistContext, epoch: int) -> bool:
    """Rank 0 validates, keeps the best, decays the learning rate (the seed's rule, per
    epoch), and saves the resumable state; every rank learns whether to stop early."""
    stop = end_of_period(run, train_config, epoch) if dist.is_main else False
    barrier(dist)  # rank 0 validates and saves
    if dist.enabled:
        import torch.distributed as torch_dist

        shared = [stop]
        torch_dist.broadcast_object_list(shared, src=0)
        stop = shared[0]
    if stop:
        run.stop_reason = "early stop"
    return stop


def end_of_period(run: Run, train_config: TrainConfig, epoch: int) -> bool:
    """Rank 0's validation after an epoch (or `eval_steps` steps). Returns whether to stop."""
    task, state, tc = run.task, run.state, train_config
    logits = predict_logits(run.model, task.valid_data.seqs(range(len(task.valid_data))), tc.eval_batch_size,
                            task.pad_id, run.device, "valid", run.amp)
    gold = task.valid_data.labels  # [n] label ids, or multi-label [n, K] 0/1
    metrics = valid_metrics(logits, gold, task.labels, task.multi_label)
    improved, decay, stop = run.rule.after_epoch(epoch, metrics[tc.measure])
    for name, value in metrics.items():
        run.writer.add_scalar(f"valid/{name}", value, state.global_step)
    lr = run.optimizer.param_groups[0]["lr"]
    state.history.append({"epoch": epoch + 1, "step": state.global_step, **metrics, "lr": lr})
    logger.info("[Valid] epoch %d, step %d: %s, lr %.3g%s", epoch + 1, state.global_step,
                ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), lr, " (best)" if improved else "")
    if improved:
        state.best_epoch, state.best_step = epoch + 1, state.global_step
        best = {"epoch": state.epoch, "global_step": state.global_step, "best_metric": run.rule.best,
                "best_epoch": state.best_epoch, "best_step": state.best_step}
        if task.multi_label:
            # each label's decision threshold on its sigmoid probability, chosen on valid, saved with it
            thresholds, global_threshold = choose_thresholds(torch.sigmoid(logits).numpy(), gold)
            best.update(thresholds=thresholds, global_threshold=global_threshold)
        else:
            # the temperature that calibrates this model's probabilities on valid, saved with it
            best["temperature"] = fit_temperature(logits.numpy(), gold)
        task.save(task.output, best)
    if decay:
        for group in run.optimizer.param_groups:
            group["lr"] *= tc.lr_decay_rate
        logger.info("[Decay] lr x %g after %d epoch(s) without improvement", tc.lr_decay_rate, tc.lr_decay_steps)
    task.save(task.last_path, resume_payload(state, run.rule, run.optimizer, run.scheduler, tc.seed))
    if stop:
        patience = f"{tc.patience_steps} steps" if tc.patience_steps else \
            f"{tc.patience} validation(s)" if tc.eval_steps else f"{tc.patience} epochs"
        logger.info("[Early stop] validation below its best for more than %s", patience)
    return stop


def run_training(setup: Setup, model_config: Config, train_config: TrainConfig, dist: DistContext) -> dict | None:
    """Prepare, train within the budget (validating and saving on rank 0), and return rank 0's
    results (history, best, budget used, speed)."""
    run = prepare(setup, model_config, train_config, dist)
    start, seen, train_seconds = time.time(), 0, 0.0
    for epoch in range(run.state.epoch, run.budget.epochs):
        epoch_start = time.time()
        n, over = train_epoch(run, train_config, epoch, dist)
        seen += n
        train_seconds += time.time() - epoch_start
        if over:
            break
    if run.writer is not None:
        run.writer.close()
    if not dist.is_main:
        return None
    state = run.state
    logger.info("[Best] valid %s %.4f at step %d (epoch %d) of %d; %s; saved to %s", train_config.measure,
                run.rule.best, state.best_step, state.best_epoch, state.global_step, run.stop_reason, run.task.output)
    return {"best_" + train_config.measure: run.rule.best, "best_epoch": state.best_epoch,
            "best_step": state.best_step, "steps": state.global_step, "budget_steps": run.budget.total_steps,
            "steps_per_epoch": run.budget.steps_per_epoch, "stop": run.stop_reason, "history": state.history,
            "train_examples": len(run.task.train_data), "processes": dist.world_size,
            "train_sentences_per_s": round(seen * dist.world_size / train_seconds, 1) if train_seconds else None,
            "seconds": round(time.time() - start, 1), **count_parameters(run.model)}


def gold_mix_alphas(setup: Setup, train_config: TrainConfig) -> tuple[float, ...]:
    """The alphas to train with: the one given, or with --alpha auto every GOLD_MIX_ALPHAS
    value when the transfer set's chosen lines are fewer than gold_mix_below and some carry
    a gold label (else 0: a big transfer set teaches more than the gold labels)."""
    tc = train_config
    if not tc.alpha_auto:
        return (tc.alpha,)
    path = setup.data_dir / f"{tc.transfer_file}.ids"
    lines, gold = count_transfer_ids(path, TRANSFER_CHOICES[tc.transfer], tc.gold_mix_below)
    small = lines < tc.gold_mix_below
    logger.info("[Gold mix] %s: %s lines (%d with gold labels): %s", path, f"{lines:,}" if small else
                f">= {lines:,}", gold, f"alpha chosen on valid among {list(GOLD_MIX_ALPHAS)}" if small and gold
                else "alpha 0 (the transfer set is big enough)" if gold else "alpha 0 (no gold labels)")
    return GOLD_MIX_ALPHAS if small and gold else (0.0,)


def choose_alpha(setup: Setup, model_config: Config, train_config: TrainConfig, dist: DistContext,
                 alphas: tuple[float, ...]) -> dict | None:
    """One run per alpha, each to `<output>.alpha<a>` from the same seed; rank 0 keeps the one
    best on valid under the output's name and removes the others. Returns its results, with
    every trial's best validation score."""
    trials = []
    for alpha in alphas:
        set_seed(train_config.seed + dist.rank)
        out = setup.output.with_name(f"{setup.output.name}.alpha{alpha:g}")
        logs = f"{setup.log_dir}.alpha{alpha:g}" if setup.log_dir else None
        results = run_training(replace(setup, output=out, log_dir=logs), model_config,
                               replace(train_config, alpha=alpha), dist)
        trials.append((alpha, out, results))
    if not dist.is_main:
        return None
    key = "best_" + train_config.measure
    best = trials[0]
    for trial in trials[1:]:
        if better(trial[2][key], best[2][key], train_config.measure):
            best = trial
    for alpha, out, _ in trials:
        for suffix in ("", ".last"):
            path = Path(f"{out}{suffix}")
            if alpha == best[0]:
                os.replace(path, f"{setup.output}{suffix}")
            else:
                path.unlink(missing_ok=True)
    logger.info("[Gold mix] alpha %g kept: valid %s %s", best[0], train_config.measure,
                ", ".join(f"{r[key]:.4f} (alpha {a:g})" for a, _, r in trials))
    return {**best[2], "alpha": best[0], "alpha_trials": [{"alpha": a, key: r[key]} for a, _, r in trials],
            "seconds": round(sum(r["seconds"] for _, _, r in trials), 1)}  # every trial's time
