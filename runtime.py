"""Serve a distilled student without torch: a deployment bundle (from
`Predictor.export_bundle` or `predict.py --export_bundle`) loaded with numpy, plus
onnxruntime for the networks. This file and `tokenization.py` are copied into every bundle.

    from runtime import Bundle
    bundle = Bundle.load("bundle/")
    bundle.predict(["a gorgeous , witty film"])   # [("1", {"0": 0.02, "1": 0.98})]

Backends: `onnx` (any student or teacher; `model.onnx` in ONNX Runtime) and `numpy` (a bag
of n-grams: `bow.npz`, its two score tables, nothing but numpy). A student's words are split
by `tokenization.py`; a teacher's bundle carries its `tokenizer.json`, read with the
`tokenizers` package (no torch either).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from tokenization import WordTokenizer, lowercase_outside

BUNDLE_FORMAT = "distil-glove-bundle/1"
# The bag of n-grams' bigram hash, here and in model.py: (first id * M + second id) mod buckets.
BIGRAM_MULTIPLIER = 1_000_003


class OrtSession:
    """An ONNX Runtime session of an exported student or teacher:
    `session(ids [B, T] int64, lengths [B] int64) -> logits [B, K] float32`."""

    def __init__(self, path: str | Path, num_threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads  # 0: ONNX Runtime's default (all cores)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except (ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.InvalidProtobuf,
                ort.capi.onnxruntime_pybind11_state.NoSuchFile, ort.capi.onnxruntime_pybind11_state.InvalidGraph,
                ort.capi.onnxruntime_pybind11_state.InvalidArgument) as e:
            raise ValueError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0][:200]})") from e

    def __call__(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"ids": ids, "lengths": lengths})[0]


class Bundle:
    """A student's bundle: its tokenization, vocabulary, labels and one backend."""

    def __init__(self, path: Path, meta: dict, backend: str, session: OrtSession | None,
                 tables: dict[str, np.ndarray] | None):
        self.meta, self.labels, self.backend = meta, list(meta["labels"]), backend
        self.n_ctx, self.unk_id, self.pad_id = meta["n_ctx"], meta.get("unk_id"), meta["pad_id"]
        self.session, self.tables = session, tables
        if meta["tokenizer"] == "huggingface":  # a teacher: its own subword tokenizer
            from tokenizers import Tokenizer

            self.subwords = Tokenizer.from_file(str(path / "tokenizer.json"))
            # sentence-transformers ship tokenizer.json with fixed padding to 128: ids of pad
            # tokens would count as words (and cost time). Pad per batch here, as training did.
            self.subwords.no_padding()
            self.subwords.enable_truncation(self.n_ctx)
            self.special = list(meta["special_tokens"])
            self.encode = self._encode_subwords  # type: ignore[method-assign]
        else:
            self.tokenizer = WordTokenizer(meta["tokenizer"], meta["lowercase"])
            vocab = (path / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
            self.index = {t: i for i, t in enumerate(vocab)}

    @classmethod
    def load(cls, path: str | Path, backend: str | None = None, num_threads: int = 1) -> "Bundle":
        """Read a bundle directory. `backend`: `numpy` (bags of n-grams only) or `onnx`;
        by default the bundle's own (`numpy` where it has one)."""
        path = Path(path)
        meta_path = path / "bundle.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{path}: not a bundle (no bundle.json)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {BUNDLE_FORMAT!r}")
        backend = backend or meta["backend"]
        if backend == "numpy":
            if not (path / "bow.npz").is_file():
                raise ValueError(f"{path}: the numpy backend needs bow.npz (bags of n-grams only)")
            with np.load(path / "bow.npz", allow_pickle=False) as f:
                tables = {k: f[k] for k in f.files}
            return cls(path, meta, backend, None, tables)
        if backend != "onnx":
            raise ValueError(f"unknown backend {backend!r}; expected 'onnx' or 'numpy'")
        return cls(path, meta, backend, OrtSession(path / "model.onnx", num_threads), None)

    def encode(self, sentence: str) -> list[int]:
        """Token ids, as at training time (truncated to n_ctx; `<unk>` for an empty sentence)."""
        index, unk = self.index, self.unk_id
        return [index.get(t, unk) for t in self.tokenizer(sentence)[: self.n_ctx]] or [unk]

    def _encode_subwords(self, sentence: str) -> list[int]:
        # as dataset.TransformerEncoder: lower-cased outside the special tokens when the teacher was
        text = lowercase_outside(sentence, self.special) if self.meta["lowercase"] else sentence
        return self.subwords.encode(text).ids

    def logits(self, sentences: Sequence[str]) -> np.ndarray:
        """`[n, K]` float32 logits."""
        return self.logits_for_ids([self.encode(s) for s in sentences])

    def logits_for_ids(self, encoded: Sequence[Sequence[int]]) -> np.ndarray:
        """`[n, K]` float32 logits of already encoded sentences."""
        if self.backend == "numpy":
            return np.stack([self._bow_logits(ids) for ids in encoded])
        width = max(map(len, encoded))
        ids = np.full((len(encoded), width), self.pad_id, dtype=np.int64)
        for row, seq in enumerate(encoded):
            ids[row, : len(seq)] = seq
        return self.session(ids, np.array([len(s) for s in encoded], dtype=np.int64))

    def _bow_logits(self, ids: list[int]) -> np.ndarray:
        # (sum of unigram score rows + sum of bigram score rows) / feature count + bias: [K]
        t = self.tables
        a = np.asarray(ids, dtype=np.int64)
        scores = t["unigram_scores"][a].sum(0)
        if len(a) > 1:
            scores = scores + t["bigram_scores"][(a[:-1] * BIGRAM_MULTIPLIER + a[1:]) % int(t["buckets"])].sum(0)
        return scores / (2 * len(a) - 1) + t["bias"]

    def predict(self, sentences: Sequence[str]) -> list[tuple[str, dict[str, float]]]:
        """(label, {label: probability}) for each sentence."""
        logits = self.logits(sentences)
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = z / z.sum(axis=1, keepdims=True)
        return [(self.labels[int(p.argmax())], dict(zip(self.labels, map(float, p)))) for p in probs]

    def predict_label(self, sentence: str) -> str:
        """The label of one sentence (the batch-1 path)."""
        return self.labels[int(self.logits([sentence])[0].argmax())]
