"""Checkpoint formats, written and read here, and loaded safely.

- A **student checkpoint** is one `torch.save` file of plain types and tensors, so it loads
  with `weights_only=True`: `format`, the model `config` (with its tokenization: `tokenizer`,
  `lowercase`, `n_ctx`), the `vocab` (line i is token id i), the sorted `labels`, the
  weights (`model`), and `state`: epoch, global step, best metric and epoch, and, in the
  resumable `<path>.last`, the optimizer, scheduler, history and RNG states.
- A **teacher directory** holds the encoder's Hugging Face `config.json`, its tokenizer
  files, `model.safetensors` (the whole classifier: encoder and head), `distil_config.json`
  (`format`, our `config`, `labels`, `lowercase`, `mask_token`) and, in its resumable
  `last/` copy, `training_state.pt` (optimizer, scheduler, counters, RNG; weights_only).

Nothing here unpickles a file a user hands in: `torch.load(weights_only=True)` refuses
pickles that would run code, and teacher weights are safetensors.
"""
from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from config import STUDENT_ONLY_KEYS, Config, config_from_dict, config_to_dict
from model import GloveStudent, TransformerClassifier, build_student
from util import UserError, atomic_path, read_json, write_json

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "distil-glove/1"


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
                 state: dict | None = None) -> None:
    """Write a self-describing student checkpoint atomically."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": config_to_dict(model.config),
        "vocab": list(vocab),
        "labels": list(labels),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "state": state or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


@dataclass
class StudentCheckpoint:
    """A loaded student checkpoint."""

    model: GloveStudent
    vocab: list[str]
    labels: list[str]
    state: dict


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
    model = build_student(config, len(vocab), len(labels))
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not fit the stored config: {str(e).splitlines()[0]}") from e
    model.to(device).eval()
    return StudentCheckpoint(model, vocab, labels, payload.get("state", {}))


# ---------------------------------------------------------------------------
# Teachers
# ---------------------------------------------------------------------------

def is_teacher_dir(path: str | Path) -> bool:
    """Whether `path` is a teacher directory written by train.py."""
    return (Path(path) / "distil_config.json").is_file()


def save_teacher(out_dir: str | Path, model: TransformerClassifier, config: Config, tokenizer: Any,
                 labels: list[str], lowercase: bool, state: dict | None = None) -> None:
    """Write a teacher directory; `model.safetensors` last, so its presence marks a complete save."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.encoder.config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    write_json(out_dir / "distil_config.json", {
        "format": CHECKPOINT_FORMAT, "config": config_to_dict(config), "labels": list(labels),
        "lowercase": lowercase, "mask_token": tokenizer.mask_token,
    })
    if state is not None:
        with atomic_path(out_dir / "training_state.pt") as tmp:
            torch.save(state, tmp)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(tensors, str(tmp))


@dataclass
class TeacherCheckpoint:
    """A loaded teacher directory."""

    model: TransformerClassifier
    config: Config
    tokenizer: Any
    labels: list[str]
    lowercase: bool


def load_hf_tokenizer(path: str | Path) -> Any:
    """A Hugging Face tokenizer from a local model directory (or a hub name when online)."""
    from transformers import AutoTokenizer

    path = str(path)
    if Path(path).is_dir() and not any((Path(path) / f).exists() for f in ("tokenizer.json", "vocab.txt",
                                                                           "tokenizer_config.json")):
        raise UserError(f"{path}: not a Hugging Face model directory (no tokenizer files)")
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot load a tokenizer: {str(e).splitlines()[0]}") from e


def read_teacher_meta(out_dir: str | Path) -> dict:
    """A teacher directory's `distil_config.json` (config, labels, lower-casing, mask token)."""
    meta_path = Path(out_dir) / "distil_config.json"
    if not meta_path.exists() or not (Path(out_dir) / "model.safetensors").exists():
        raise UserError(f"{out_dir}: not a teacher directory from train.py (needs distil_config.json and "
                        "model.safetensors)")
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{meta_path}: not a distil-glove teacher description")
    return meta


def load_teacher(out_dir: str | Path, device: torch.device | str = "cpu") -> TeacherCheckpoint:
    """Rebuild a fine-tuned teacher from its directory alone (model in eval mode)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoConfig

    out_dir = Path(out_dir)
    meta = read_teacher_meta(out_dir)
    # versions before 2026-12 also stored the students' keys with their defaults; they mean nothing here
    stored = {k: v for k, v in meta["config"].items() if k not in STUDENT_ONLY_KEYS}
    config = config_from_dict(stored, f"{out_dir / 'distil_config.json'} (config)")
    labels = list(meta["labels"])
    try:
        encoder_config = AutoConfig.from_pretrained(out_dir)
    except (OSError, ValueError) as e:
        raise UserError(f"{out_dir}: cannot read the encoder config: {str(e).splitlines()[0]}") from e
    tokenizer = load_hf_tokenizer(out_dir)
    model = TransformerClassifier(encoder_config, len(labels), config.dropout, head=config.enc_class)
    weights_path = out_dir / "model.safetensors"
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{weights_path}: not a readable safetensors file ({e})") from e
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise UserError(f"{weights_path}: weights do not fit the stored config: {str(e).splitlines()[0]}") from e
    model.to(device).eval()
    return TeacherCheckpoint(model, config, tokenizer, labels, bool(meta.get("lowercase", False)))


def load_pretrained_teacher(path: str | Path, num_labels: int, dropout: float, head: str) -> TransformerClassifier:
    """A teacher whose encoder is read from a Hugging Face model directory (or hub name)."""
    from transformers import AutoConfig, AutoModel

    path = str(path)
    if Path(path).is_dir() and not (Path(path) / "config.json").exists():
        raise UserError(f"{path}: not a Hugging Face model directory (no config.json)")
    try:
        encoder_config = AutoConfig.from_pretrained(path)
        encoder = AutoModel.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot load a Hugging Face encoder: {str(e).splitlines()[0]}") from e
    return TransformerClassifier(encoder_config, num_labels, dropout, head=head, encoder=encoder)


def load_training_state(path: str | Path) -> dict:
    """Read a `training_state.pt` (weights_only)."""
    return _torch_load(Path(path), "training state from train.py")
