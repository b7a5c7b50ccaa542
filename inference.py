"""Inference: batched logits, the `Predictor` API, ONNX export, ONNX Runtime, and the
torch-free deployment bundle.

    from inference import Predictor
    predictor = Predictor.load("checkpoints/sst2/bilstm-distill.pt")   # or a teacher directory
    for p in predictor.predict(["a gorgeous , witty film", "a dull mess"]):
        print(p.label, p.probabilities)
    predictor.export_bundle("bundle/")    # then runtime.Bundle.load("bundle/"): numpy + onnxruntime only
"""
from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from checkpoint import is_teacher_dir, load_student, load_teacher
from config import Config, config_to_dict
from dataset import GloveEncoder, TransformerEncoder, length_sorted_batches, pad_batch
from model import GloveBow, GloveStudent, count_parameters
from runtime import BUNDLE_FORMAT, OrtSession
from tokenization import WordTokenizer
from util import UserError, atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

# forward(ids [B, T], lengths [B]) -> logits [B, K]: a torch module or an ONNX Runtime session
Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ROOT = Path(__file__).resolve().parent


def logits_for_batches(forward: Forward, ids: Sequence[Sequence[int]], batches: list[list[int]], pad_id: int,
                       device: torch.device, amp_dtype: torch.dtype | None = None, desc: str = "predict",
                       progress: bool = True, min_len: int = 1) -> torch.Tensor:
    """Logits (float32, CPU) for the given batches of indices into `ids`, rows in the order
    of the batches concatenated: `[sum of batch sizes, K]`."""
    if isinstance(forward, nn.Module):
        # logits are inference: no dropout (train.py validates the model it is training)
        forward.eval()
    parts = []
    with torch.inference_mode():
        for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
            x, lengths = pad_batch([ids[i] for i in batch], pad_id, min_len)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                parts.append(forward(x.to(device), lengths.to(device)).float().cpu())  # [B, K]
    return torch.cat(parts)


def predict_logits(forward: Forward, ids: Sequence[Sequence[int]], batch_size: int, pad_id: int,
                   device: torch.device, desc: str = "predict", amp_dtype: torch.dtype | None = None,
                   progress: bool = True) -> torch.Tensor:
    """Logits `[n, K]` (float32, CPU) for id lists, in input order. Batches are sorted by
    length so little time goes to padding."""
    batches = length_sorted_batches([len(s) for s in ids], batch_size)
    logits = logits_for_batches(forward, ids, batches, pad_id, device, amp_dtype, desc, progress)
    order = torch.tensor([i for batch in batches for i in batch])
    out = torch.empty_like(logits)
    out[order] = logits  # back to input order
    return out


class Prediction(NamedTuple):
    """One sentence's predicted label and the probability of every label."""

    label: str
    probabilities: dict[str, float]


def predictions(logits: np.ndarray, labels: Sequence[str]) -> list[Prediction]:
    """Softmax of `[n, K]` logits as `Prediction`s."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = z / z.sum(axis=1, keepdims=True)
    return [Prediction(labels[int(row.argmax())], dict(zip(labels, map(float, row)))) for row in probs]


class Predictor:
    """A trained student or teacher with its own tokenization: sentences in, predictions out."""

    def __init__(self, model: nn.Module, config: Config, labels: list[str], pad_id: int,
                 encode: Callable[[Sequence[str]], list[list[int]]], path: str, lowercase: bool,
                 vocab: list[str] | None = None, device: torch.device | str = "cpu"):
        self.model, self.config, self.labels, self.pad_id, self.path = model, config, labels, pad_id, path
        self.encode = encode  # list[str] -> list[list[int]], exactly as at training time
        self.lowercase = lowercase
        self.vocab = vocab  # students only
        self.device = torch.device(device)
        self.parameter_counts = count_parameters(model)
        self.runtime = "pytorch"
        self.forward: Forward = model  # replaced by an ONNX Runtime session by `use_onnxruntime`

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "Predictor":
        """A student checkpoint (`.pt` from train.py) or a teacher directory, ready to predict."""
        path = Path(path)
        if path.is_dir():
            if not is_teacher_dir(path):
                raise UserError(f"{path}: a directory but not a teacher from train.py (no distil_config.json)")
            teacher = load_teacher(path, device)
            encoder = TransformerEncoder(teacher.tokenizer, teacher.lowercase, teacher.config.n_ctx)
            pad_id = teacher.tokenizer.pad_token_id if teacher.tokenizer.pad_token_id is not None else 0
            return cls(teacher.model, teacher.config, teacher.labels, pad_id, encoder.encode_many, str(path),
                       teacher.lowercase, device=device)
        student = load_student(path, device)
        return cls.for_student(student.model, student.vocab, student.labels, str(path), device)

    @classmethod
    def for_student(cls, model: GloveStudent, vocab: list[str], labels: list[str], path: str,
                    device: torch.device | str = "cpu") -> "Predictor":
        """A student with the word tokenization its config stores."""
        c = model.config
        glove = GloveEncoder(vocab, WordTokenizer(c.tokenizer, c.lowercase), c.n_ctx, c.unk_token_id)
        return cls(model, c, labels, c.pad_token_id, glove.encode_many, path, c.lowercase, vocab, device)

    @property
    def is_teacher(self) -> bool:
        return self.config.is_transformer

    def logits(self, sentences: Sequence[str], batch_size: int = 64, progress: bool = False) -> torch.Tensor:
        """`[n, K]` logits in input order."""
        return predict_logits(self.forward, self.encode(list(sentences)), batch_size, self.pad_id, self.device,
                              progress=progress)

    def predict(self, sentences: Sequence[str], batch_size: int = 64) -> list[Prediction]:
        """The label and label probabilities of each sentence."""
        return predictions(self.logits(sentences, batch_size).numpy(), self.labels)

    # -- ONNX ------------------------------------------------------------------
    def onnx_path(self, quantized: bool = False) -> Path:
        """Where exports go by default: beside a student checkpoint, inside a teacher directory."""
        base = Path(self.path) / "model.onnx" if self.is_teacher else Path(f"{self.path}.onnx")
        return base.with_name(base.name.replace(".onnx", ".int8.onnx")) if quantized else base

    def export_onnx(self, path: str | Path | None = None, quantize: bool = False) -> list[Path]:
        """Export to ONNX (dynamic batch and length); with `quantize` also an int8-weight copy."""
        path = Path(path) if path else self.onnx_path()
        example = torch.tensor(self.encode(["a fine example sentence to trace the graph"]))
        export_onnx(self.model, path, example)
        written = [path]
        if quantize:
            written.append(path.with_name(path.name.replace(".onnx", "") + ".int8.onnx"))
            quantize_onnx(path, written[-1])
        self.model.to(self.device)
        return written

    def use_onnxruntime(self, onnx_path: str | Path | None, num_threads: int = 0) -> None:
        """Run an exported ONNX file in ONNX Runtime instead of PyTorch (CPU)."""
        path = Path(onnx_path) if onnx_path else self.onnx_path()
        if not path.exists():
            raise UserError(f"{path}: not found; export it first with evaluate.py --convert_onnx")
        session = OrtSession(path, num_threads)
        self.forward = lambda ids, lengths: torch.from_numpy(session(ids.cpu().numpy(), lengths.cpu().numpy()))
        self.runtime = "onnxruntime-int8" if ".int8." in path.name else "onnxruntime"

    # -- deployment --------------------------------------------------------------
    def export_bundle(self, out_dir: str | Path) -> Path:
        """A directory that `runtime.Bundle.load` serves without torch: `bundle.json` (labels,
        tokenization), `model.onnx`, and for a student `vocab.txt` (a bag of n-grams also
        `bow.npz`, its folded tables, for the numpy-only backend), for a teacher its
        `tokenizer.json`; plus copies of `runtime.py` and `tokenization.py`."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        c = self.config
        export_onnx(self.model, out / "model.onnx", torch.tensor(self.encode(["a fine example sentence"])))
        self.model.to(self.device)
        meta = {"format": BUNDLE_FORMAT, "labels": self.labels, "lowercase": self.lowercase, "n_ctx": c.n_ctx,
                "pad_id": self.pad_id, "backend": "onnx", "source": self.path, "config": config_to_dict(c)}
        if self.is_teacher:
            tokenizer_json = Path(self.path) / "tokenizer.json"
            if not tokenizer_json.is_file():
                raise UserError(f"{self.path}: no tokenizer.json (a fast tokenizer) to put in the bundle")
            shutil.copyfile(tokenizer_json, out / "tokenizer.json")
            special = json.loads(tokenizer_json.read_text(encoding="utf-8")).get("added_tokens", [])
            meta.update(tokenizer="huggingface", special_tokens=[t["content"] for t in special if t.get("special")])
        else:
            meta.update(tokenizer=c.tokenizer, unk_id=c.unk_token_id)
            atomic_write_text(out / "vocab.txt", "".join(f"{t}\n" for t in self.vocab))
        if isinstance(self.model, GloveBow):
            tables = fold_bow(self.model)
            with atomic_path(out / "bow.npz") as tmp, open(tmp, "wb") as f:
                np.savez(f, **tables)
            meta["backend"] = "numpy"
        atomic_write_text(out / "bundle.json", json.dumps(meta, indent=2) + "\n")
        for name in ("runtime.py", "tokenization.py"):
            shutil.copyfile(ROOT / name, out / name)
        return out


def fold_bow(model: GloveBow) -> dict[str, np.ndarray]:
    """A bag of n-grams as two score tables: the model is linear in its averaged features,
    so logits = (sum of unigram rows + sum of bigram rows) / feature count + bias, with each
    row already multiplied by the output layer: unigrams `[vocab, K]`, bigrams `[buckets, K]`."""
    with torch.no_grad():
        w = model.fc.weight.float().cpu()  # [K, E]
        return {"unigram_scores": (model.embedding.weight.float().cpu() @ w.T).numpy(),
                "bigram_scores": (model.bigrams.weight.float().cpu() @ w.T).numpy(),
                "bias": model.fc.bias.float().cpu().numpy(),
                "buckets": np.array(model.buckets)}


def export_onnx(model: nn.Module, path: str | Path, example_ids: torch.Tensor) -> None:
    """Export `model(ids, lengths) -> logits` with dynamic batch and sequence axes."""
    model = model.cpu().eval()
    lengths = torch.full((example_ids.size(0),), example_ids.size(1), dtype=torch.long)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter
        torch.onnx.export(
            model, (example_ids, lengths), str(tmp), input_names=["ids", "lengths"], output_names=["logits"],
            dynamic_axes={"ids": {0: "batch", 1: "seq"}, "lengths": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17, dynamo=False,
        )


def quantize_onnx(src: str | Path, dst: str | Path) -> None:
    """Dynamic int8 quantization of the weights (activations quantized at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_path(dst) as tmp:
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8)


def describe(predictor: Predictor) -> dict[str, Any]:
    """What results files record about a loaded model."""
    return {"runtime": predictor.runtime, **predictor.parameter_counts}
