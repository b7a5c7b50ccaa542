"""Checkpoint formats, written and read here, and loaded safely.

- A **student checkpoint** is one `torch.save` file of plain types and tensors, so it loads
  with `weights_only=True`: `format`, the model `config` (with its tokenization: `tokenizer`,
  `lowercase`, `n_ctx`), the `vocab` (line i is token id i), the sorted `labels`, the
  weights (`model`), `multi_label` (label sets: one sigmoid per label), and `state`: epoch,
  global step, best metric and epoch, the temperature or (multi-label) the per-label
  `thresholds` chosen on valid, and, in the resumable `<path>.last`, the optimizer,
  scheduler, history and RNG states.
- A **teacher directory** from train.py holds its tokenizer files, `distil_config.json`
  (`format`, our `config`, `labels`, `lowercase`, `mask_token`, `temperature`, `pairs`,
  `multi_label` and its `thresholds`), and either (head `hf`) a
  Hugging Face `*ForSequenceClassification` model as `save_pretrained` writes it (its
  `config.json` with `id2label`, `model.safetensors`), which `transformers` loads unchanged,
  or (the seed's heads `cls`/`mean`) the encoder's `config.json` and `model.safetensors`
  with our weight names. Its resumable `last/` copy adds `training_state.pt` (optimizer,
  scheduler, counters, RNG; weights_only).
- **Anyone's fine-tuned classifier**, a directory or hub name that
  `AutoModelForSequenceClassification` loads, is a teacher as it is: its head, its
  `id2label`, its tokenizer's lower-casing and mask token; multi-label when its config's
  `problem_type` is `multi_label_classification` (thresholds 0.5).

Nothing here unpickles a file a user hands in: `torch.load(weights_only=True)` refuses
pickles that would run code, teacher weights are safetensors (or, from the hub, whatever
`from_pretrained` reads with weights_only), and no remote code is run.
"""
from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from config import STUDENT_ONLY_KEYS, Config, config_from_dict, config_to_dict
from model import GloveStudent, SequenceClassifier, SiameseStudent, TransformerClassifier, build_student
from teachers import (CHECKPOINT_FORMAT, TEACHER_META, is_teacher, load_hf_tokenizer, read_teacher_meta,
                      segment_sep_id, tokenizer_lowercases)
from util import UserError, atomic_path, current_umask, write_json

logger = logging.getLogger(__name__)



def _torch_load(path: Path, what: str) -> Any:
    """`torch.load` with `weights_only=True`: a pickle that would run code is refused."""
    if path.is_file():
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":  # torch.save writes a zip archive
                raise UserError(f"{path}: not a loadable {what} (not a torch.save archive)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise UserError(f"{path}: file not found (expected {what})") from e
    except IsADirectoryError as e:
        raise UserError(f"{path}: is a directory (expected {what})") from e
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, KeyError) as e:
        # weights_only refusals (UnpicklingError) and truncated zips (RuntimeError) land here
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a loadable {what} ({first[:200]})") from e


# ---------------------------------------------------------------------------
# Students
# ---------------------------------------------------------------------------

def save_student(path: str | Path, model: GloveStudent, vocab: list[str], labels: list[str],
                 state: dict | None = None, multi_label: bool = False) -> None:
    """Write a self-describing student checkpoint atomically."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": config_to_dict(model.config),
        "vocab": list(vocab),
        "labels": list(labels),
        "multi_label": multi_label,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "state": state or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


@dataclass
class StudentCheckpoint:
    """A loaded student checkpoint."""

    model: GloveStudent | SiameseStudent
    vocab: list[str]
    labels: list[str]
    state: dict
    multi_label: bool = False  # label sets; the per-label thresholds are in state["thresholds"]

    @property
    def thresholds(self) -> list[float] | None:
        """A multi-label student's decision thresholds (None: 0.5 each, or single-label)."""
        return self.state.get("thresholds") if self.multi_label else None


def load_student(path: str | Path, device: torch.device | str = "cpu") -> StudentCheckpoint:
    """Rebuild a student from its checkpoint alone (model in eval mode)."""
    path = Path(path)
    payload = _torch_load(path, "student checkpoint from train.py")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not a distil-glove student checkpoint")
    config = config_from_dict(payload["config"], f"{path} (config)")
    if config.is_transformer:
        raise UserError(f"{path}: holds a transformer config; teachers are directories (--bert_output_dir)")
    vocab, labels = payload["vocab"], payload["labels"]
    model = build_student(config, len(vocab), len(labels), config.sep_id(vocab))
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not fit the stored config: {str(e).splitlines()[0]}") from e
    model.to(device).eval()
    return StudentCheckpoint(model, vocab, labels, payload.get("state", {}), bool(payload.get("multi_label", False)))


# ---------------------------------------------------------------------------
# Teachers
# ---------------------------------------------------------------------------

def save_teacher(out_dir: str | Path, model: TransformerClassifier | SequenceClassifier, config: Config,
                 tokenizer: Any, labels: list[str], lowercase: bool, state: dict | None = None,
                 temperature: float = 1.0, pairs: bool = False, multi_label: bool = False,
                 thresholds: list[float] | None = None) -> None:
    """Write a teacher directory; the weights last, so their presence marks a complete save.

    The `hf` head is written by the library itself (`save_pretrained`: config with
    `id2label`, `model.safetensors`), so `transformers` loads the directory unchanged; the
    seed's heads write the encoder's config and our own weight names."""
    import tempfile

    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    write_json(out_dir / TEACHER_META, {
        "format": CHECKPOINT_FORMAT, "config": config_to_dict(config), "labels": list(labels),
        "lowercase": lowercase, "mask_token": tokenizer.mask_token, "temperature": temperature, "pairs": pairs,
        "multi_label": multi_label, "thresholds": thresholds,
    })
    if state is not None:
        with atomic_path(out_dir / "training_state.pt") as tmp:
            torch.save(state, tmp)
    if isinstance(model, SequenceClassifier):
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            model.hf.save_pretrained(tmp)
            written = sorted(Path(tmp).iterdir(), key=lambda f: f.suffix == ".safetensors")  # weights last
            for f in written:
                os.chmod(f, 0o666 & ~current_umask())
                os.replace(f, out_dir / f.name)
        return
    model.encoder.config.save_pretrained(out_dir)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(tensors, str(tmp))


@dataclass
class TeacherCheckpoint:
    """A loaded teacher: `model(ids, lengths)` gives logits in the order of `labels` (the
    teacher's own, e.g. a classifier's `id2label`; map them to a data set's labels by name
    with `teachers.teacher_columns`)."""

    model: TransformerClassifier | SequenceClassifier
    config: Config
    tokenizer: Any
    labels: list[str]
    lowercase: bool
    temperature: float = 1.0  # fitted on valid by train.py; 1: anyone's classifier, or older teachers
    pairs: bool | None = None  # trained here on sentence pairs or not; None: anyone's classifier (either)
    multi_label: bool = False  # label sets: a sigmoid per label
    thresholds: list[float] | None = None  # multi-label: per label, chosen on valid (None: 0.5 each)


def load_teacher(path: str | Path, device: torch.device | str = "cpu") -> TeacherCheckpoint:
    """Rebuild a teacher (model in eval mode): a directory from train.py, or any Hugging Face
    sequence classifier (directory or hub name), used as is with its own head and labels."""
    meta = read_teacher_meta(path) if (Path(path) / TEACHER_META).is_file() else None
    if meta is not None and meta["config"].get("enc_class") != "hf":
        return _load_seed_head_teacher(Path(path), meta, device)
    model = load_sequence_classifier(path)
    tokenizer = load_hf_tokenizer(path)
    id2label = model.config.id2label
    labels = [str(id2label[i]) for i in range(model.config.num_labels)]
    if len(set(labels)) != len(labels):
        raise UserError(f"{path}: its id2label has duplicate names {labels}")
    if meta is not None:  # trained here with the hf head: our record of its tokenization
        config = config_from_dict(meta["config"], f"{Path(path) / TEACHER_META} (config)")
        lowercase = bool(meta.get("lowercase", False))
    else:  # anyone's classifier: its tokenizer decides, up to the model's own length limit
        n_ctx = min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512,
                    int(getattr(model.config, "max_position_embeddings", 512) or 512))
        config = config_from_dict({"emb_class": "auto", "enc_class": "hf", "n_ctx": n_ctx}, f"{path}")
        lowercase = tokenizer_lowercases(tokenizer)
    classifier = SequenceClassifier(model, segment_sep_id(tokenizer, model.config))
    classifier.to(device).eval()
    temperature = float(meta.get("temperature", 1.0)) if meta is not None else 1.0
    multi_label = model.config.problem_type == "multi_label_classification"  # ours set it too
    return TeacherCheckpoint(classifier, config, tokenizer, labels, lowercase, temperature,
                             meta.get("pairs", False) if meta is not None else None, multi_label,
                             meta.get("thresholds") if meta is not None else None)


def load_sequence_classifier(path: str | Path, **kwargs: Any) -> nn.Module:
    """`AutoModelForSequenceClassification.from_pretrained` (weights read with weights_only, no
    remote code); a failure is one UserError line."""
    from transformers import AutoModelForSequenceClassification

    if Path(path).is_dir() and not (Path(path) / "config.json").is_file():
        raise UserError(f"{path}: not a Hugging Face model directory (no config.json)")
    try:
        return AutoModelForSequenceClassification.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{path}: cannot load a Hugging Face sequence classifier: {str(e).splitlines()[0]}") from e


def _load_seed_head_teacher(out_dir: Path, meta: dict, device: torch.device | str) -> TeacherCheckpoint:
    """A teacher with the seed's `cls` or `mean` head (encoder + our linear layer)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoConfig

    # versions before 2026-12 also stored the students' keys with their defaults; they mean nothing here
    stored = {k: v for k, v in meta["config"].items() if k not in STUDENT_ONLY_KEYS}
    config = config_from_dict(stored, f"{out_dir / TEACHER_META} (config)")
    labels = list(meta["labels"])
    weights_path = out_dir / "model.safetensors"
    if not weights_path.is_file():
        raise UserError(f"{out_dir}: no model.safetensors (an unfinished save?)")
    try:
        encoder_config = AutoConfig.from_pretrained(out_dir)
    except (OSError, ValueError) as e:
        raise UserError(f"{out_dir}: cannot read the encoder config: {str(e).splitlines()[0]}") from e
    tokenizer = load_hf_tokenizer(out_dir)
    model = TransformerClassifier(encoder_config, len(labels), config.dropout, head=config.enc_class,
                                  sep_id=segment_sep_id(tokenizer, encoder_config))
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{weights_path}: not a readable safetensors file ({e})") from e
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise UserError(f"{weights_path}: weights do not fit the stored config: {str(e).splitlines()[0]}") from e
    model.to(device).eval()
    return TeacherCheckpoint(model, config, tokenizer, labels, bool(meta.get("lowercase", False)),
                             float(meta.get("temperature", 1.0)), bool(meta.get("pairs", False)),
                             bool(meta.get("multi_label", False)), meta.get("thresholds"))


def load_pretrained_teacher(path: str | Path, labels: list[str], config: Config, multi_label: bool = False
                            ) -> TransformerClassifier | SequenceClassifier:
    """A teacher to fine-tune: the encoder read from a Hugging Face model directory (or hub
    name) with a new head, the seed's (`cls`, `mean`) or the library's own (`hf`, whose
    `id2label` is `labels`, and whose `problem_type` is `multi_label_classification` for label
    sets, so `transformers` knows it as a sigmoid classifier)."""
    from transformers import AutoConfig, AutoModel

    path = str(path)
    if Path(path).is_dir() and not (Path(path) / "config.json").exists():
        raise UserError(f"{path}: not a Hugging Face model directory (no config.json)")
    tokenizer = load_hf_tokenizer(path)
    if config.enc_class == "hf":
        if is_teacher(path):
            raise UserError(f"{path}: is already a fine-tuned classifier; distill it as it is (TEACHER=, "
                            "--bert_output_dir) or fine-tune its encoder")
        hf = load_sequence_classifier(path, num_labels=len(labels), id2label=dict(enumerate(labels)),
                                      label2id={label: i for i, label in enumerate(labels)},
                                      problem_type="multi_label_classification" if multi_label else None)
        return SequenceClassifier(hf, segment_sep_id(tokenizer, hf.config))
    try:
        encoder_config = AutoConfig.from_pretrained(path)
        encoder = AutoModel.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot load a Hugging Face encoder: {str(e).splitlines()[0]}") from e
    return TransformerClassifier(encoder_config, len(labels), config.dropout, head=config.enc_class, encoder=encoder,
                                 sep_id=segment_sep_id(tokenizer, encoder_config))


def load_training_state(path: str | Path) -> dict:
    """Read a `training_state.pt` (weights_only)."""
    return _torch_load(Path(path), "training state from train.py")
