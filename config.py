"""Typed configs: one dataclass per concern, read from JSON and overridden from the command line.

- `Config`: a model (one file per model in `configs/`), with its encoder sections.
- `TrainConfig`: `train.py`'s flags, resolved once (teacher or student defaults) and checked.
- `Recipe`: `scripts/distill.py`'s sizes (`configs/recipe-*.json`).

Loading refuses unknown keys, missing required keys and wrong types, naming the key and the
file; `validate` methods refuse values and combinations that would be ignored. This module is
plain data: of ours it imports only `util` and the torch-free `runtime` (to name the word
tokenizers and build a student's text-to-ids), and `model.py` reads it, not the other way.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime import WORD_TOKENIZERS, WordIds, WordTokenizer
from util import UserError, read_json

# Model families whose tokenizer and encoder come from a Hugging Face directory.
TRANSFORMER_FAMILIES = ("bert", "roberta", "electra", "auto")
GLOVE_FAMILY = "glove"
# Teacher heads: the seed's linear layer over the first token (`cls`) or over the mean of the
# real tokens (`mean`), or the Hugging Face library's own sequence-classification head (`hf`:
# the teacher is saved as a `*ForSequenceClassification` directory that `transformers` loads).
TEACHER_HEADS = ("cls", "mean", "hf")
AMP_CHOICES = ("none", "bf16", "fp16")
# the teacher's runtimes for labeling (label.py --runtime, recipe label_runtime); auto: the
# fastest of the others that agrees with fp32 PyTorch
LABEL_RUNTIMES = ("auto", "pytorch", "onnxruntime", "onnxruntime-int8")
CRITERIA = ("CrossEntropyLoss", "MSELoss", "KLDivLoss", "BCEWithLogitsLoss")
# the losses on teacher scores each kind of data takes (model.distillation_loss): softmax losses for
# one label an example, per-label sigmoid (binary cross-entropy) or logit MSE for label sets
SINGLE_LABEL_CRITERIA = ("CrossEntropyLoss", "MSELoss", "KLDivLoss")
MULTI_LABEL_CRITERIA = ("BCEWithLogitsLoss", "MSELoss")
# a multi-label student's default loss on teacher scores (results/multilabel.md)
MULTI_LABEL_CRITERION = "BCEWithLogitsLoss"


def default_criterion(criterion: str | None, multi_label: bool) -> str:
    """A student's loss on teacher scores: the one given, else MSELoss, or for label sets
    MULTI_LABEL_CRITERION (train.py's defaults)."""
    return criterion or (MULTI_LABEL_CRITERION if multi_label else "MSELoss")


def check_criterion(criterion: str, multi_label: bool, where: str) -> None:
    """Refuse a loss that does not fit the data's kind (softmax losses on label sets, or the
    reverse)."""
    allowed = MULTI_LABEL_CRITERIA if multi_label else SINGLE_LABEL_CRITERIA
    if criterion not in allowed:
        raise UserError(f"{where}: {criterion} is not for {'multi' if multi_label else 'single'}-label data; "
                        f"expected one of {list(allowed)}")
# train.py --alpha auto: the gold-label weights tried, each a full run, the best on valid kept.
# 1.0 is the gold labels alone: where the teacher's scores add nothing (a scores file for the
# training sentences alone, a bag of n-grams), the run falls back to gold instead of losing to it.
GOLD_MIX_ALPHAS = (0.0, 0.5, 1.0)
# ... when the transfer set's chosen lines number fewer than this (train.py --gold_mix_below): a
# set no bigger than a labeled set alone, where two runs cost little (results/budget.md: with the
# step budget the mix gained nothing for sure at 3k-20k lines, and valid chose it wrongly at 20k)
GOLD_MIX_BELOW = 10_000


@dataclass(frozen=True)
class StudentKind:
    """What the toolkit knows about one student `enc_class`."""

    sections: tuple[str, ...]  # config sections it needs
    config_path: str  # its config in configs/
    title: str  # its name in tables


# The student registry: model.py's STUDENTS has a network for each name (a test checks).
STUDENT_KINDS: dict[str, StudentKind] = {
    "cnn": StudentKind(("cnn",), "configs/config-glove-cnn.json", "GloVe CNN"),
    "densenet-cnn": StudentKind(("densenet", "cnn"), "configs/config-densenet-cnn.json", "GloVe DenseNet-CNN"),
    "densenet-dsa": StudentKind(("densenet", "dsa"), "configs/config-densenet-dsa.json", "GloVe DenseNet-DSA"),
    "bilstm": StudentKind(("lstm",), "configs/config-glove-bilstm.json", "GloVe BiLSTM"),
    "bow": StudentKind(("bow",), "configs/config-glove-bow.json", "GloVe bag of n-grams"),
    # a deep averaging network (Iyyer et al. 2015): the bag of n-grams with hidden ReLU layers
    "dan": StudentKind(("bow",), "configs/config-glove-dan.json", "GloVe deep averaging network"),
    # sentence pairs only: the words of each side attend to the other's (Parikh et al. 2016)
    "decomp-att": StudentKind(("decomp",), "configs/config-glove-decomp-att.json", "GloVe decomposable attention"),
}
SECTIONS = ("cnn", "densenet", "dsa", "lstm", "bow", "decomp")
# Which students take which data: a pair student encodes both sides with one shared encoder
# (siamese, Tang et al. 2019) or compares their words (decomposable attention); the DenseNets
# were built for single sentences and are not offered for pairs.
PAIR_STUDENTS = ("cnn", "bilstm", "bow", "dan", "decomp-att")
SINGLE_STUDENTS = ("cnn", "densenet-cnn", "densenet-dsa", "bilstm", "bow", "dan")
# Which students get static int8 (activation ranges fixed from calibration sentences, QDQ):
# convolutions, where quantizing activations once instead of at every call pays (the
# DenseNet-CNN ran at about a third of its fp32 time from ids). The others keep dynamic int8.
# Each maps to the layers it keeps in fp32 (ONNX node-name prefixes, from the module names):
# the DenseNet-DSA's last 1x1 convolution feeds the attention; quantized, it cost 0.77 points of
# SST-2 test accuracy, kept in fp32 0.28 (each other layer kept alone: 0.55-1.05; NOTES).
STATIC_INT8_STUDENTS: dict[str, tuple[str, ...]] = {
    "cnn": (), "densenet-cnn": (), "densenet-dsa": ("/densenet/last/",)}


def check_student_data(enc_class: str, pairs: bool, where: str) -> None:
    """Refuse a student for data it does not take (a DenseNet for pairs, decomposable
    attention for single sentences)."""
    allowed = PAIR_STUDENTS if pairs else SINGLE_STUDENTS
    if enc_class not in allowed:
        raise UserError(f"{where}: the {enc_class!r} student does not take "
                        f"{'sentence pairs' if pairs else 'single sentences'}; for this data use one of {list(allowed)}")


# ---------------------------------------------------------------------------
# Model configs
# ---------------------------------------------------------------------------

@dataclass
class CNNConfig:
    """A text CNN: `num_filters` filters per kernel size, ReLU, max over time."""

    num_filters: int = 256
    kernel_sizes: list[int] = field(default_factory=lambda: [2, 3, 4, 5, 6])


@dataclass
class DenseNetConfig:
    """A 1-D DenseNet (the seed's): `kernel_sizes` is a grid whose rows are depth and whose
    columns are parallel branches. In each branch the first conv maps the embeddings to
    `first_num_filters`; each later conv sees the concatenation of that branch's earlier
    outputs and adds `num_filters`. A final 1x1 conv maps the embeddings plus each branch's
    last output to `last_num_filters`."""

    first_num_filters: int = 200
    num_filters: int = 100
    last_num_filters: int = 400
    kernel_sizes: list[list[int]] = field(
        default_factory=lambda: [[1, 1], [3, 3], [3, 5], [3, 7], [3, 9]]
    )


@dataclass
class DSAConfig:
    """Dynamic Self-Attention (Yoon et al. 2018): `num_attentions` heads of size `dsa_dim`,
    `r` routing iterations."""

    num_attentions: int = 8
    dsa_dim: int = 300
    r: int = 2


@dataclass
class LSTMConfig:
    """A bidirectional LSTM encoder (Tang et al. 2019's student shape)."""

    hidden_size: int = 150
    num_layers: int = 1


@dataclass
class BowConfig:
    """A bag of n-grams: word vectors (from GloVe) and `buckets` hashed vectors of the 2- to
    `ngrams`-grams, averaged, then the ReLU layers `hidden` (none: fastText's linear model;
    some: a deep averaging network), then the output layer."""

    buckets: int = 2_000_003
    ngrams: int = 2
    hidden: list[int] = field(default_factory=list)
    # fastText's ways, each measured on SST-2 (results/NOTES.md): `eos` adds its end-of-sentence
    # token `</s>` as a feature of every sentence, which also enters the last n-grams;
    # `word_init` "uniform" starts the word rows uniform in +-1/dim instead of GloVe;
    # `zero_output` starts the output layer at zero
    eos: bool = False
    word_init: str = "glove"
    zero_output: bool = False


@dataclass
class DecompConfig:
    """Decomposable attention (Parikh et al. 2016): the GloVe vectors projected to `hidden`,
    then the attend, compare and aggregate feed-forward networks, each two ReLU layers of
    `hidden` units."""

    hidden: int = 200


@dataclass
class Config:
    """A model config, one per JSON file in `configs/`.

    `emb_class` is `glove` (a student over GloVe vectors) or a transformer family
    (`bert`, `roberta`, `electra`, `auto`: all load through `AutoModel`).
    `enc_class` is the encoder on top: a name in `STUDENT_KINDS` for students; `cls` or
    `mean` (see TEACHER_HEADS) for transformers. The keys after `n_ctx` and `dropout` are the
    students' own; `tokenizer` is how a student splits words (runtime.py).
    """

    emb_class: str
    enc_class: str
    n_ctx: int = 100
    dropout: float = 0.1
    lowercase: bool = True
    tokenizer: str = "glove"
    token_emb_dim: int = 50
    pad_token: str = "<pad>"
    unk_token: str = "<unk>"
    sep_token: str = "<sep>"
    pad_token_id: int = 0
    unk_token_id: int = 1
    freeze_emb: bool = False
    fc_hidden_size: int = 256
    cnn: CNNConfig | None = None
    densenet: DenseNetConfig | None = None
    dsa: DSAConfig | None = None
    lstm: LSTMConfig | None = None
    bow: BowConfig | None = None
    decomp: DecompConfig | None = None

    @property
    def is_transformer(self) -> bool:
        return self.emb_class in TRANSFORMER_FAMILIES

    def word_ids(self, vocab: list[str]) -> WordIds:
        """A GloVe student's text-to-ids over `vocab` (runtime.py), with its n-gram features
        when it is a bag of n-grams."""
        bow = self.bow
        return WordIds(vocab, WordTokenizer(self.tokenizer, self.lowercase), self.n_ctx, self.unk_token_id,
                       bow.ngrams if bow else 1, bow.buckets if bow else 0, sep_id=self.sep_id(vocab),
                       eos=bool(bow and bow.eos))

    def sep_id(self, vocab: list[str]) -> int | None:
        """`sep_token`'s id in a pair vocabulary (preprocess.py puts it there for pair data);
        None for a single-sentence vocabulary, which never has it (GloVe has no `<sep>`)."""
        return vocab.index(self.sep_token) if self.sep_token in vocab else None

    def validate(self, where: str, keys: set[str] | None = None) -> None:
        """Check what the types cannot: known classes, the right sections, sizes > 0, and no
        key (among `keys`, those the file set) that this kind of model would ignore."""
        families = (GLOVE_FAMILY, *TRANSFORMER_FAMILIES)
        if self.emb_class not in families:
            raise UserError(f"{where}: unknown emb_class {self.emb_class!r}; expected one of {list(families)}")
        encoders = TEACHER_HEADS if self.is_transformer else tuple(STUDENT_KINDS)
        if self.enc_class not in encoders:
            raise UserError(f"{where}: unknown enc_class {self.enc_class!r} for emb_class {self.emb_class!r}; "
                            f"expected one of {sorted(encoders)}")
        needed = () if self.is_transformer else STUDENT_KINDS[self.enc_class].sections
        if self.enc_class in ("bow", "dan") and self.bow is not None and bool(self.bow.hidden) != (self.enc_class == "dan"):
            raise UserError(f"{where}: enc_class {self.enc_class!r} " + ("needs hidden layers (bow.hidden)" if
                            self.enc_class == "dan" else "has no hidden layers; with bow.hidden it is enc_class 'dan'"))
        for name in SECTIONS:
            section = getattr(self, name)
            if name in needed and section is None:
                raise UserError(f"{where}: enc_class {self.enc_class!r} needs a {name!r} section")
            if name not in needed and section is not None:
                raise UserError(f"{where}: section {name!r} is not used by {self.emb_class}/{self.enc_class}; "
                                "remove it")
            for key, value in (dataclasses.asdict(section) if section is not None else {}).items():
                if isinstance(value, (bool, str)):  # switches and choices (bow.eos, bow.word_init)
                    continue
                # sizes are ints, lists of ints or lists of lists of ints: all must be > 0
                flat = [v for item in (value if isinstance(value, list) else [value])
                        for v in (item if isinstance(item, list) else [item])]
                if (not flat and key != "hidden") or any(v <= 0 for v in flat):
                    raise UserError(f"{where}: {name}.{key} must be positive, got {value!r}")
        if self.bow is not None and self.bow.word_init not in ("glove", "uniform"):
            raise UserError(f"{where}: bow.word_init must be 'glove' or 'uniform', got {self.bow.word_init!r}")
        if self.bow is not None and self.bow.eos and self.bow.ngrams < 2:
            raise UserError(f"{where}: bow.eos is an n-gram feature: it needs bow.ngrams >= 2")
        if self.is_transformer and self.enc_class == "hf" and "dropout" in (keys or set()):
            raise UserError(f"{where}: key 'dropout' is not used by the 'hf' head, which keeps its model config's "
                            "dropout; remove it")
        if self.is_transformer:
            ignored = sorted((keys or set()) & set(STUDENT_ONLY_KEYS))
            if ignored:
                raise UserError(f"{where}: key {ignored[0]!r} is a GloVe student's; a {self.emb_class} teacher "
                                "takes its tokenization from its tokenizer")
        if self.densenet is not None and len({len(row) for row in self.densenet.kernel_sizes}) != 1:
            raise UserError(f"{where}: densenet.kernel_sizes must be a grid (every row the same number of branches)")
        if self.densenet is not None and len(self.densenet.kernel_sizes) < 2:
            # depth 1 would have no growth layer: the final 1x1 conv's input width would not
            # be in_dim + num_filters * branches
            raise UserError(f"{where}: densenet.kernel_sizes needs at least 2 rows (depths), got "
                            f"{len(self.densenet.kernel_sizes)}")
        if self.tokenizer not in WORD_TOKENIZERS:
            raise UserError(f"{where}: unknown tokenizer {self.tokenizer!r}; expected one of {list(WORD_TOKENIZERS)}")
        if self.fc_hidden_size < 0:
            raise UserError(f"{where}: fc_hidden_size must be 0 (no hidden layer) or positive")
        if self.pad_token_id != 0 or self.unk_token_id != 1:
            raise UserError(f"{where}: pad_token_id must be 0 and unk_token_id 1")
        if self.n_ctx < 1 or self.token_emb_dim < 1:
            raise UserError(f"{where}: n_ctx and token_emb_dim must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"{where}: dropout must be in [0, 1), got {self.dropout}")


# The keys a transformer config must not set (they only mean something for GloVe students).
STUDENT_ONLY_KEYS = ("lowercase", "tokenizer", "token_emb_dim", "pad_token", "unk_token", "sep_token", "pad_token_id",
                     "unk_token_id", "freeze_emb", "fc_hidden_size", *SECTIONS)


# ---------------------------------------------------------------------------
# Training and recipe configs
# ---------------------------------------------------------------------------

@dataclass
class TrainConfig:
    """`train.py`'s settings, parsed from its flags once (see train.py's --help)."""

    lr: float
    epochs: int
    batch_size: int
    eval_batch_size: int = 256
    use_transformers_optimizer: bool = False
    lr_decay_rate: float = 1.0
    lr_decay_steps: int = 2
    warmup_epoch: float = 4.0
    patience: int = 7
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    criterion: str = "CrossEntropyLoss"
    temperature: float = 1.0
    multi_label: bool = False  # label sets: sigmoid outputs, BCE on gold, thresholds chosen on valid
    alpha: float = 0.0
    alpha_auto: bool = False  # choose alpha on valid among GOLD_MIX_ALPHAS below gold_mix_below lines
    gold_mix_below: int = GOLD_MIX_BELOW
    measure: str = "accuracy"  # or "loss"; multi-label: "micro_f1" (train.py --measure accuracy)
    distill: bool = False  # a student learning the teacher's scores in the transfer set
    transfer_file: str | None = None  # with distill: the transfer set's file in the data directory
    transfer: str = "both"  # with distill: the transfer set's sources to learn from (dataset.TRANSFER_CHOICES)
    optimizer: str = "adamw"  # or "sgd" (fastText's training)
    seed: int = 42
    amp: str = "none"
    save_steps: int = 0
    resume: bool = False
    train_limit: int = 0
    # The budget (training.Budget): at least `min_steps` optimizer steps, however small the
    # training set (epochs are added); validation every `eval_steps` steps (0: after every
    # epoch); stop once valid has not improved for `patience_steps` steps (0: `patience`
    # validations, the seed's epochs).
    min_steps: int = 0
    eval_steps: int = 0
    patience_steps: int = 0


@dataclass
class TeacherRecipe:
    """How the driver fine-tunes the teacher (train.py flags)."""

    config: str = "configs/config-bert-mean.json"
    epochs: int = 3
    lr: float = 1e-4
    batch_size: int = 32
    warmup_epoch: float = 0.1
    weight_decay: float = 0.01


@dataclass
class StudentRecipe:
    """How the driver trains one student: on teacher logits (`epochs`) and, for its baseline,
    on gold labels (`gold_epochs`; 0 skips the baseline)."""

    epochs: int
    gold_epochs: int
    lr: float
    batch_size: int = 128
    amp: str = "none"
    # on the teacher's logits (train.py --criterion); null: train.py's default, MSELoss, or for
    # multi-label data MULTI_LABEL_CRITERION
    criterion: str | None = None
    temperature: float = 1.0  # for KLDivLoss, CrossEntropyLoss and BCEWithLogitsLoss
    config: str | None = None  # None: the student's file in configs/
    set: list[str] = field(default_factory=list)  # config overrides for training (train.py --set)
    optimizer: str = "adamw"  # train.py --optimizer: adamw (linear schedule, no weight decay) or sgd
    seeds: int = 1  # runs with seeds 42, 43, ...: the table gives their mean and standard deviation
    # the budget, for the distilled run and its gold twin alike (train.py --min_steps,
    # --eval_steps, --patience_steps; training.Budget)
    min_steps: int = 0
    eval_steps: int = 0
    patience_steps: int = 0
    # the weight of gold labels in the distilled run's loss (train.py --alpha); null: chosen on
    # valid among GOLD_MIX_ALPHAS when the transfer set has fewer than the recipe's
    # gold_mix_below lines with gold labels among them, else 0
    alpha: float | None = None


@dataclass
class Recipe:
    """`scripts/distill.py`'s recipe (`configs/recipe-*.json`)."""

    students: dict[str, StudentRecipe]
    teacher: TeacherRecipe = field(default_factory=TeacherRecipe)
    models: list[str] = field(default_factory=lambda: ["cnn", "densenet-cnn", "densenet-dsa", "bilstm", "bow"])
    train_subset: int = 0  # 0: all of train.txt; else a seeded subset of that many lines
    n_iter: int = 8  # augmentation draws per sentence
    ngram_mode: str = "mask"
    pair_mode: str = "both"  # sentence pairs: augment_data.py --pair_mode (both sides changed per draw, or one)
    mask_token: str | None = None  # None: the teacher tokenizer's own
    label_batch_size: int = 128
    label_amp: str = "none"
    # the teacher's runtime for labeling (label.py --runtime): "auto" times PyTorch and ONNX Runtime
    # fp32/int8 on a sample and keeps the fastest that agrees with fp32 PyTorch on 99.5% of it
    label_runtime: str = "auto"
    # label.py --rescore_margin: near-ties (top-two logit margin below it; multi-label: a logit within it
    # of 0) scored again in fp32 PyTorch. The single-label recipes set 2.0: on SST-2's test sentences
    # it rescored 8 % of them and left int8 0.06 points below fp32, against 0.44 without (NOTES).
    label_rescore_margin: float = 0.0
    latency_sample: int = 0  # the teacher's batch-1 latency over the first N test sentences (0: all of them)
    # students whose alpha is null mix gold labels in (chosen on valid) below this transfer-set size
    gold_mix_below: int = GOLD_MIX_BELOW
    # what the students learn from: "augmented" (the training sentences and their augmentations),
    # "unlabeled" (the training sentences and the unlabeled text), "both"; None: "both" when
    # unlabeled text is given, else "augmented"
    transfer: str | None = None
    multi_label: bool = False  # a sentence carries any number of labels (preprocess.py --multi_label)

    def validate(self, where: str) -> None:
        """Known students, a recipe for each model, sizes and choices in range."""
        for name in [*self.students, *self.models]:
            if name not in STUDENT_KINDS:
                raise UserError(f"{where}: unknown student {name!r}; expected some of {sorted(STUDENT_KINDS)}")
        for name in self.models:
            if name not in self.students:
                raise UserError(f"{where}: models lists {name!r} but students has no entry for it")
        counts = {"train_subset": self.train_subset, "n_iter": self.n_iter, "latency_sample": self.latency_sample,
                  "gold_mix_below": self.gold_mix_below}
        for key, value in counts.items():
            if value < 0:
                raise UserError(f"{where}: {key} must be >= 0, got {value}")
        positives = {"teacher.epochs": self.teacher.epochs, "teacher.lr": self.teacher.lr,
                     "teacher.batch_size": self.teacher.batch_size, "label_batch_size": self.label_batch_size}
        for name, s in self.students.items():
            positives.update({f"students.{name}.epochs": s.epochs, f"students.{name}.lr": s.lr,
                              f"students.{name}.batch_size": s.batch_size})
            if s.gold_epochs < 0:
                raise UserError(f"{where}: students.{name}.gold_epochs must be >= 0")
            for key in ("min_steps", "eval_steps", "patience_steps"):
                if getattr(s, key) < 0:
                    raise UserError(f"{where}: students.{name}.{key} must be >= 0")
            if s.patience_steps and not s.eval_steps:
                raise UserError(f"{where}: students.{name}.patience_steps counts steps between validations: set "
                                "eval_steps")
            if s.alpha is not None and not 0.0 <= s.alpha <= 1.0:
                raise UserError(f"{where}: students.{name}.alpha must be in [0, 1] or null")
            if s.amp not in AMP_CHOICES:
                raise UserError(f"{where}: students.{name}.amp must be one of {list(AMP_CHOICES)}")
            if s.criterion is not None:
                check_criterion(s.criterion, self.multi_label, f"{where}: students.{name}.criterion")
            criterion = default_criterion(s.criterion, self.multi_label)
            if s.temperature != 1.0 and criterion == "MSELoss":
                raise UserError(f"{where}: students.{name}.temperature is not used by MSELoss")
            if s.optimizer not in ("adamw", "sgd"):
                raise UserError(f"{where}: students.{name}.optimizer must be 'adamw' or 'sgd'")
            positives[f"students.{name}.seeds"] = s.seeds
        for key, value in positives.items():
            if value <= 0:
                raise UserError(f"{where}: {key} must be positive, got {value}")
        if self.label_amp not in AMP_CHOICES:
            raise UserError(f"{where}: label_amp must be one of {list(AMP_CHOICES)}")
        if self.label_runtime not in LABEL_RUNTIMES:
            raise UserError(f"{where}: label_runtime must be one of {list(LABEL_RUNTIMES)}")
        if self.label_rescore_margin < 0 or (self.label_rescore_margin and self.label_runtime == "pytorch"):
            raise UserError(f"{where}: label_rescore_margin must be >= 0, and is for a label_runtime other than "
                            "\"pytorch\"")
        if self.label_runtime != "pytorch" and self.label_amp != "none":
            raise UserError(f"{where}: label_amp {self.label_amp!r} autocasts PyTorch; with label_runtime "
                            f"{self.label_runtime!r} set label_amp to \"none\" (or label_runtime to \"pytorch\")")
        if self.ngram_mode not in ("mask", "sample"):
            raise UserError(f"{where}: ngram_mode must be 'mask' or 'sample'")
        if self.pair_mode not in ("both", "one"):
            raise UserError(f"{where}: pair_mode must be 'both' or 'one'")
        if self.transfer not in (None, "augmented", "unlabeled", "both"):
            raise UserError(f"{where}: transfer must be 'augmented', 'unlabeled', 'both' or null")

    def student_config(self, name: str) -> str:
        """The config file the recipe trains student `name` with."""
        return self.students[name].config or STUDENT_KINDS[name].config_path


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check `value` (parsed JSON) against the type hint `tp`; return it, converting
    nested dicts to dataclasses. Raises UserError naming `key`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{where}: key {key!r} must be an object, got {type(value).__name__}")
        return from_dict(tp, value, where, prefix=f"{key}.")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise UserError(f"{where}: key {key!r} must be a list of {_type_name(item_tp)}, got {type(value).__name__}")
        return [_convert(v, item_tp, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        _, item_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise UserError(f"{where}: key {key!r} must be an object, got {type(value).__name__}")
        return {k: _convert(v, item_tp, f"{key}.{k}", where) for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: key {key!r} must be a number, got {value!r}")
        return float(value)
    expected = {int: "an integer", bool: "true or false", str: "a string"}
    if tp in expected:
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise UserError(f"{where}: key {key!r} must be {expected[tp]}, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r}")


def from_dict(cls: type, data: dict, where: str, prefix: str = "") -> Any:
    """Build dataclass `cls` from `data`, refusing unknown keys, missing required keys
    and wrong types with a message naming the key and `where`."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"{where}: unknown key {prefix}{unknown[0]!r}; expected one of {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(data[f.name], hints[f.name], prefix + f.name, where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UserError(f"{where}: missing required key {prefix}{f.name!r}")
    return cls(**kwargs)


def apply_overrides(data: dict, overrides: list[str], where: str) -> dict:
    """Apply `key=value` or `section.key=value` overrides (value parsed as JSON, else a string)."""
    data = json.loads(json.dumps(data))
    for item in overrides or []:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"{where}: --set {key}: {part!r} is not a section")
        node[parts[-1]] = value
    return data


def config_from_dict(data: Any, where: str) -> Config:
    """Validate a parsed model config (from a JSON file or a checkpoint) into a `Config`."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a JSON object at the top level")
    config = from_dict(Config, data, where)
    config.validate(where, set(data))
    return config


def load_json_object(path: str | Path, overrides: list[str] | None = None) -> dict:
    """A JSON file's top-level object with `--set` overrides applied."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object at the top level")
    return apply_overrides(data, overrides or [], str(path))


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a model config JSON file."""
    return config_from_dict(load_json_object(path, overrides), str(path))


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe JSON file."""
    recipe = from_dict(Recipe, load_json_object(path, overrides), str(path))
    recipe.validate(str(path))
    return recipe


def config_to_dict(config: Any) -> dict:
    """A dataclass as plain JSON-able dicts, `None` values dropped; a transformer config
    keeps only the keys that mean something for it."""
    data = {k: v for k, v in dataclasses.asdict(config).items() if v is not None}
    if isinstance(config, Config) and config.is_transformer:
        unused = (*STUDENT_ONLY_KEYS, "dropout") if config.enc_class == "hf" else STUDENT_ONLY_KEYS
        data = {k: v for k, v in data.items() if k not in unused}
    return data
