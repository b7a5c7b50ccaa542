"""Inference with torch: batched logits, the `Predictor` API, ONNX export, and the
deployment bundle. Text to ids and ids to predictions are runtime.py's (the torch-free layer
a bundle ships), so a model predicts here exactly as it does in a bundle.

    from inference import Predictor
    predictor = Predictor.load("checkpoints/sst2/bilstm-distill.pt")   # or a teacher directory / hub name
    for p in predictor.predict(["a gorgeous , witty film", "a dull mess"]):
        print(p.label, p.probabilities)
    predictor.export_bundle("bundle/")    # then runtime.Bundle.load("bundle/"): no torch
"""
from __future__ import annotations

import json
import logging
import random
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from checkpoint import load_student, load_teacher
from config import STATIC_INT8_STUDENTS, Config, config_to_dict
from model import GloveBow, GloveStudent, SiameseStudent, bag_of_ngrams, count_parameters
from runtime import (
    BUNDLE_FORMAT,
    INT8_MAX_DROP,
    OpenVinoSession,
    OrtSession,
    Prediction,
    SubwordIds,
    WordIds,
    join_pair,
    length_sorted_batches,
    pad_ids,
    predictions,
)
from teachers import is_teacher
from util import UserError, atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

# forward(ids [B, T], lengths [B]) -> logits [B, K]: a torch module, or a wrapped runtime session
Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ROOT = Path(__file__).resolve().parent


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, min_len: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """`runtime.pad_ids` as tensors: ids `[batch, seq]`, lengths `[batch]`."""
    ids, lengths = pad_ids(seqs, pad_id, min_len)
    return torch.from_numpy(ids), torch.from_numpy(lengths)


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


def session_forward(session: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Forward:
    """A runtime session (numpy in, numpy out) as a Forward."""
    return lambda ids, lengths: torch.from_numpy(session(ids.cpu().numpy(), lengths.cpu().numpy()))


class Predictor:
    """A trained student or teacher with its own text-to-ids: sentences in, predictions out.
    `labels` are the model's own (a teacher's `id2label` order)."""

    def __init__(self, model: nn.Module, config: Config, labels: list[str], ids: WordIds | SubwordIds, path: str,
                 vocab: list[str] | None = None, device: torch.device | str = "cpu", temperature: float = 1.0,
                 pairs: bool | None = False, multi_label: bool = False, thresholds: list[float] | None = None):
        self.model, self.config, self.labels, self.ids, self.path = model, config, labels, ids, path
        # True: takes sentence pairs ('a<TAB>b' texts); False: single sentences; None: either
        # (someone's classifier, whose tokenizer takes both)
        self.pairs = ids.pairs if isinstance(ids, WordIds) else pairs
        self.temperature = temperature  # fitted on valid when trained here (metrics.fit_temperature)
        # label sets: a sigmoid per label, decided at `thresholds` (chosen on valid; None: 0.5 each)
        self.multi_label, self.thresholds = multi_label, thresholds
        self.pad_id = ids.pad_id if isinstance(ids, SubwordIds) else config.pad_token_id
        self.vocab = vocab  # students only
        self.device = torch.device(device)
        self.parameter_counts = count_parameters(model)
        self.runtime = "pytorch"
        self.forward: Forward = model  # replaced by a runtime session by `use_runtime`

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "Predictor":
        """A student checkpoint (`.pt` from train.py), or a teacher: a directory from train.py or
        any Hugging Face sequence classifier (directory or hub name)."""
        if Path(path).is_file():
            student = load_student(path, device)
            return cls.for_student(student.model, student.vocab, student.labels, str(path), device,
                                   float(student.state.get("temperature", 1.0)), student.multi_label,
                                   student.thresholds)
        if not is_teacher(path):
            raise UserError(f"{path}: a Hugging Face encoder, not a fine-tuned classifier: fine-tune it first "
                            "(train.py) or give a *ForSequenceClassification model")
        teacher = load_teacher(path, device)
        if not getattr(teacher.tokenizer, "is_fast", False):
            raise UserError(f"{path}: its tokenizer has no fast (tokenizers) version, which the toolkit needs")
        pad_id = teacher.tokenizer.pad_token_id if teacher.tokenizer.pad_token_id is not None else 0
        ids = SubwordIds(teacher.tokenizer.backend_tokenizer, teacher.lowercase, teacher.config.n_ctx, pad_id)
        return cls(teacher.model, teacher.config, teacher.labels, ids, str(path), device=device,
                   temperature=teacher.temperature, pairs=teacher.pairs, multi_label=teacher.multi_label,
                   thresholds=teacher.thresholds)

    @classmethod
    def for_student(cls, model: GloveStudent | SiameseStudent, vocab: list[str], labels: list[str], path: str,
                    device: torch.device | str = "cpu", temperature: float = 1.0, multi_label: bool = False,
                    thresholds: list[float] | None = None) -> "Predictor":
        """A student with the word tokenization its config stores."""
        return cls(model, model.config, labels, model.config.word_ids(vocab), path, vocab, device, temperature,
                   multi_label=multi_label, thresholds=thresholds)

    @property
    def is_teacher(self) -> bool:
        return self.config.is_transformer

    @property
    def lowercase(self) -> bool:
        return self.ids.lowercase if isinstance(self.ids, SubwordIds) else self.ids.tokenizer.lowercase

    def encode(self, sentence: str) -> list[int]:
        """One sentence's input ids."""
        return self.ids.encode(sentence)

    def encode_batch(self, sentences: Sequence[str]) -> list[list[int]]:
        """Input ids for each sentence."""
        return self.ids.encode_batch(sentences)

    def logits(self, sentences: Sequence[str], batch_size: int = 64, progress: bool = False) -> torch.Tensor:
        """`[n, K]` logits in input order."""
        return predict_logits(self.forward, self.encode_batch(list(sentences)), batch_size, self.pad_id,
                              self.device, progress=progress)

    def predict(self, sentences: Sequence[str], batch_size: int = 64) -> list[Prediction]:
        """The label (multi-label: the comma-joined label set) and (calibrated) label
        probabilities of each sentence (`runtime.predictions`)."""
        return predictions(self.logits(sentences, batch_size).numpy(), self.labels, self.temperature,
                           self.multi_label, self.thresholds)

    # -- ONNX and other runtimes ---------------------------------------------------
    def onnx_path(self, quantized: bool = False) -> Path:
        """Where exports go by default: beside a student checkpoint, inside a teacher directory."""
        base = Path(self.path) / "model.onnx" if self.is_teacher else Path(f"{self.path}.onnx")
        return base.with_name(base.name.replace(".onnx", ".int8.onnx")) if quantized else base

    @property
    def int8_kind(self) -> str:
        """`static` for the convolutional students (calibrated activation ranges), else `dynamic`."""
        return "dynamic" if self.is_teacher or self.config.enc_class not in STATIC_INT8_STUDENTS else "static"

    def export_onnx(self, path: str | Path | None = None, quantize: bool = False,
                    calibration: Sequence[str] = ()) -> list[Path]:
        """Export to ONNX (dynamic batch and length); with `quantize` also an int8 copy: static
        (`quantize_onnx_static`) where `int8_kind` says so and `calibration` sentences are given,
        else dynamic (int8 weights, activations scaled per call)."""
        path = Path(path) if path else self.onnx_path()
        export_onnx(self.model, path, torch.tensor(self.encode_batch([self.trace_text])))
        written = [path]
        if quantize:
            written.append(path.with_name(path.name.replace(".onnx", "") + ".int8.onnx"))
            self.quantize(path, written[-1], self.ids, calibration)
        self.model.to(self.device)
        return written

    def quantize(self, src: Path, dst: Path, ids: WordIds | SubwordIds, calibration: Sequence[str]) -> str:
        """Write the int8 copy of the export `src` (read with `ids`); returns how it was quantized."""
        if self.int8_kind == "static" and calibration:
            quantize_onnx_static(src, dst, ids.encode_batch(list(calibration)), self.pad_id,
                                 STATIC_INT8_STUDENTS[self.config.enc_class])
            return "static"
        # a teacher keeps its decisions far better with a scale per output channel (label.py's
        # runtime trials: 99.85% argmax agreement on SST-2 sentences)
        quantize_onnx(src, dst, per_channel=self.is_teacher)
        return "dynamic"

    @property
    def trace_text(self) -> str:
        """A sentence (or pair) to trace the graph with for export."""
        text = "a fine example sentence to trace the graph"
        return join_pair(text, "another sentence") if self.pairs else text

    def use_runtime(self, runtime: str, onnx_path: str | Path | None = None, num_threads: int = 0) -> None:
        """Run an exported ONNX file in `runtime` (`onnxruntime` or `openvino`) on the CPU
        instead of PyTorch."""
        path = Path(onnx_path) if onnx_path else self.onnx_path()
        if not path.exists():
            raise UserError(f"{path}: not found; export it first with predict.py --export_onnx")
        session = {"onnxruntime": OrtSession, "openvino": OpenVinoSession}[runtime](path, num_threads)
        self.forward = session_forward(session)
        self.runtime = runtime + ("-int8" if ".int8." in path.name else "")

    # -- deployment --------------------------------------------------------------
    def export_bundle(self, out_dir: str | Path, quantize: bool = False, calibration: Sequence[str] = (),
                      check: Sequence[tuple[str, str]] = ()) -> Path:
        """A directory that `runtime.Bundle.load` serves without torch: `bundle.json` (labels,
        tokenization, backends), `model.onnx`, and for a student `vocab.txt` (a bag of n-grams
        also `bow.npz`, its table, for the numpy-only backend), for a teacher its
        `tokenizer.json`; plus a copy of `runtime.py`, the bundle's code. A bag of n-grams is
        exported with only the n-gram rows training reached (`buckets.npy` lists them).

        `quantize` adds `model.int8.onnx` (`quantize`: static with `calibration` sentences for the
        convolutional students, else dynamic), the `onnxruntime-int8` backend. It becomes the
        bundle's default only when `check` ((text, label) pairs, e.g. valid) is given and int8's
        decisions there are right at most `INT8_MAX_DROP` less often than fp32's
        (`bundle.json`'s `int8_check` records both)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        c = self.config
        model, ids, kept = self.model, self.ids, None
        if bag_of_ngrams(model) is not None:  # only the n-gram rows in use (runtime.prune_buckets)
            model, kept = model.without_unused_buckets()
            ids = self.ids.pruned(kept)
        export_onnx(model, out / "model.onnx", torch.tensor(ids.encode_batch([self.trace_text])))
        self.model.to(self.device)
        meta: dict[str, Any] = {"format": BUNDLE_FORMAT, "labels": self.labels, "lowercase": self.lowercase,
                                "n_ctx": c.n_ctx, "pad_id": self.pad_id, "source": self.path,
                                "temperature": self.temperature, "pairs": self.pairs,
                                "multi_label": self.multi_label, "thresholds": self.thresholds,
                                "config": config_to_dict(c)}
        backends = ["onnxruntime"]
        if isinstance(self.ids, SubwordIds):
            with atomic_path(out / "tokenizer.json") as tmp:
                self.ids.tokenizer.save(str(tmp))
            meta["tokenizer"] = "huggingface"
        else:
            meta.update(tokenizer=c.tokenizer, unk_id=c.unk_token_id, ngrams=self.ids.ngrams, buckets=self.ids.buckets,
                        sep_id=self.ids.sep_id, eos=self.ids.eos)
            atomic_write_text(out / "vocab.txt", "".join(f"{t}\n" for t in self.vocab))
        if kept is not None:
            with atomic_path(out / "buckets.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, kept)  # [k] int64, ascending
            meta["kept_buckets"] = "buckets.npy"
        if isinstance(model, GloveBow):  # a single-sentence bag: numpy alone (a pair bag runs in ONNX)
            with atomic_path(out / "bow.npz") as tmp, open(tmp, "wb") as f:
                np.savez(f, **bow_tables(model))
            backends.insert(0, "numpy")
        if quantize:
            meta["int8"] = self.quantize(out / "model.onnx", out / "model.int8.onnx", ids, calibration)
            backends.append("onnxruntime-int8")
        meta.update(backend=backends[0], backends=backends)
        atomic_write_text(out / "bundle.json", json.dumps(meta, indent=2) + "\n")
        with atomic_path(out / "runtime.py") as tmp:
            shutil.copyfile(ROOT / "runtime.py", tmp)
        if quantize and check:
            meta["int8_check"] = int8_check(out, check)
            if meta["int8_check"]["chosen"] and meta["backend"] == "onnxruntime":  # numpy stays first
                meta["backend"] = "onnxruntime-int8"
            atomic_write_text(out / "bundle.json", json.dumps(meta, indent=2) + "\n")
        return out


def decision_agreement(logits: torch.Tensor, reference: torch.Tensor, multi_label: bool) -> float:
    """The share of sentences whose decision two `[n, K]` logit matrices agree on: the argmax,
    or for a multi-label teacher every label's side of 0 (sigmoid 0.5)."""
    if multi_label:
        return float(((logits >= 0) == (reference >= 0)).all(dim=1).float().mean())
    return float((logits.argmax(1) == reference.argmax(1)).float().mean())


def compare_with_pytorch(predictor: Predictor, ids: list[list[int]]) -> dict:
    """Max |logit difference| and decision agreement (`decision_agreement`) between the
    exported model's runtime and PyTorch, on the CPU."""
    cpu = torch.device("cpu")
    ours = predict_logits(predictor.forward, ids, 64, predictor.pad_id, cpu, progress=False)
    theirs = predict_logits(predictor.model, ids, 64, predictor.pad_id, cpu, progress=False)
    diff = (ours - theirs).abs().max().item()
    same = decision_agreement(ours, theirs, predictor.multi_label)
    logger.info("[%s vs PyTorch] max |logit difference| %.3g, same decision on %.2f%%", predictor.runtime, diff,
                100 * same)
    return {"max_abs_logit_diff_vs_pytorch": diff, "same_prediction_vs_pytorch": same}


def bow_tables(model: GloveBow) -> dict[str, np.ndarray]:
    """A bag of n-grams as runtime.NumpyBag's arrays. Without hidden layers the model is
    linear in the mean of its feature rows, so the output layer is folded into the table:
    row_f = W e_f + b, and logits = the mean of the sentence's rows (`[features, K]`, no layer).
    With hidden layers the table is the embeddings and every layer is kept."""
    with torch.no_grad():
        table = model.embedding.weight.float().cpu()  # [features, E]
        linears = [m for m in model.mlp if isinstance(m, nn.Linear)]
        if len(linears) == 1:
            table = table @ linears[0].weight.float().cpu().T + linears[0].bias.float().cpu()  # [features, K]
            linears = []
        arrays = {"table": table.numpy(), "layers": np.array(len(linears))}
        for i, layer in enumerate(linears):
            arrays[f"weight_{i}"] = layer.weight.float().cpu().numpy()  # [out, in]
            arrays[f"bias_{i}"] = layer.bias.float().cpu().numpy()
        return arrays


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


def quantize_onnx(src: str | Path, dst: str | Path, per_channel: bool = False) -> None:
    """Dynamic int8 quantization of the weights (activations quantized at run time).
    `per_channel`: a scale per output channel, with 7-bit weights (`reduce_range`, which keeps
    the int8 products of non-VNNI CPUs from saturating): closer to fp32 for a transformer."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_path(dst) as tmp:
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel,
                         reduce_range=per_channel)


def int8_check(bundle_dir: Path, check: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """How often the bundle's fp32 and int8 ONNX backends decide `check`'s (text, label) pairs
    right (multi-label: the whole label set), and whether int8 is chosen."""
    from runtime import Bundle

    texts, gold = [t for t, _ in check], [g for _, g in check]
    right = {}
    for backend in ("onnxruntime", "onnxruntime-int8"):
        bundle = Bundle.load(bundle_dir, backend)
        right[backend] = float(np.mean([set(p.label.split(",")) == set(g.split(","))
                                        for p, g in zip(bundle.predict(texts), gold)]))
    chosen = right["onnxruntime-int8"] >= right["onnxruntime"] - INT8_MAX_DROP
    return {"sentences": len(check), "fp32_right": right["onnxruntime"], "int8_right": right["onnxruntime-int8"],
            "max_drop": INT8_MAX_DROP, "chosen": chosen}


# Static int8: a few hundred sentences fix every activation's range, in batches of 32
CALIBRATION_SENTENCES = 300
CALIBRATION_BATCH = 32


def calibration_sample(sentences: Sequence[str], n: int = CALIBRATION_SENTENCES, seed: int = 0) -> list[str]:
    """A seeded sample of `n` sentences (all of them if fewer) to calibrate static int8 with."""
    if len(sentences) <= n:
        return list(sentences)
    return random.Random(seed).sample(list(sentences), n)


QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")


def quantize_onnx_static(src: str | Path, dst: str | Path, calibration_ids: Sequence[Sequence[int]],
                         pad_id: int, keep_fp32: Sequence[str] = ()) -> None:
    """Static int8 quantization in QDQ form: weights int8 with a scale per output channel,
    activations uint8 with ranges (min-max) fixed from running `calibration_ids` through the fp32
    model. Only convolutions and matrix products are quantized (their inputs and outputs), less
    the nodes whose names start with a `keep_fp32` prefix; layer norm, softmax, masking and the
    embedding lookup stay in fp32, where int8 would cost accuracy for no speed."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if not calibration_ids:
        raise ValueError("static int8 needs calibration sentences")
    excluded = [n.name for n in onnx.load(str(src)).graph.node
                if n.op_type in QUANTIZED_OPS and n.name.startswith(tuple(keep_fp32))] if keep_fp32 else []
    order = length_sorted_batches([len(s) for s in calibration_ids], CALIBRATION_BATCH)
    batches = [pad_ids([calibration_ids[i] for i in b], pad_id) for b in order]  # ([B, T] int64, [B] int64)

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.pending = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.pending, None)
            return None if batch is None else {"ids": batch[0], "lengths": batch[1]}

    with atomic_path(dst) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the quantizer's advice to pre-process the graph
        quantize_static(str(src), str(tmp), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=excluded)


def describe(predictor: Predictor) -> dict[str, Any]:
    """What results files record about a loaded model."""
    return {"runtime": predictor.runtime, **predictor.parameter_counts}
