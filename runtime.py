"""The one path from text to scores, without torch: sentence -> words or word pieces -> ids ->
padded batch -> logits -> label and probabilities.

Training, evaluation, labeling, `inference.Predictor` and the deployment bundle all import
this module, so a model is served exactly as it was trained. It needs only the standard
library and numpy at import time; spaCy (the `spacy` word tokenizer), `tokenizers` (a
teacher's word pieces), onnxruntime and openvino are imported when they are used.

It is also the only code file of a **bundle** (`Predictor.export_bundle`, `predict.py
--export_bundle`): a directory with `bundle.json` (labels, multi-label thresholds, tokenization, backend), the model
(`model.onnx`, or a bag of n-grams' `bow.npz` for the numpy backend), and the vocabulary
(`vocab.txt`; a bag of n-grams adds `buckets.npy`, the n-gram buckets its table keeps) or the
teacher's `tokenizer.json`. `Bundle.load(dir)` imports the bundle's own copy of this file by
path, under a module name of its own, so bundles of different versions live side by side in
one process and nothing on `sys.path` is shadowed:

    import importlib.util                      # in a service, without the checkout:
    spec = importlib.util.spec_from_file_location("sst2_bundle", "bundle/runtime.py")
    runtime = importlib.util.module_from_spec(spec); spec.loader.exec_module(runtime)
    bundle = runtime.Bundle.load("bundle/")
    bundle.predict(["a gorgeous, witty film"])   # [Prediction(label='1', probabilities={...})]

Word tokenizers (`tokenizer` in a GloVe student's config):

- `glove` (the default): splits punctuation and clitics the way GloVe's training text was
  split (Stanford's PTB-style tokenizer): `moore's` -> `moore 's`, `doesn't` -> `does n't`,
  `can't` -> `ca n't`, `sweet,` -> `sweet ,`, `up!` -> `up !`; it keeps hyphenated words
  (`well-made`), numbers (`1,000`, `3.5`), abbreviations (`mr.`, `u.s.`), runs of one
  punctuation mark (`...`, `--`, ``` `` ```) and bracketed special tokens (`[MASK]`,
  `<mask>`) whole, and writes quotes as PTB does (`"fine"` -> ``` `` fine '' ```). Text that
  is already tokenized this way (SST-2) comes out nearly unchanged.
- `whitespace`: split on white space only, for pre-tokenized data.
- `spacy`: spaCy's English rule-based tokenizer (`spacy.blank("en")`), special tokens kept.

Sentence pairs (paraphrase, entailment, duplicate questions) are one text with the two sides
joined by a tab, `"sentence_a\tsentence_b"`, the way a pair data file holds them
(`PAIR_SEP`, `join_pair`, `split_pair`). A teacher's tokenizer encodes the two sides as its
pair (`[CLS] a [SEP] b [SEP]` for BERT); a GloVe student's ids are the ids of side a, the
vocabulary's `<sep>`, then the ids of side b, and the student splits them again at `<sep>`.
Every file, batch and runtime downstream therefore treats a pair as one example.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np

BUNDLE_FORMAT = "distil-glove-bundle/2"

# ---------------------------------------------------------------------------
# Sentence pairs
# ---------------------------------------------------------------------------

PAIR_SEP = "\t"  # between the two sides of a pair's text (a data file's column separator)


def join_pair(sentence_a: str, sentence_b: str) -> str:
    """A pair as one text."""
    return f"{sentence_a}{PAIR_SEP}{sentence_b}"


def split_pair(text: str) -> tuple[str, str] | None:
    """(side a, side b) of a pair's text; None for a single sentence (no tab)."""
    if PAIR_SEP not in text:
        return None
    a, b = text.split(PAIR_SEP, 1)
    return a, b


def is_pair(text: str) -> bool:
    """Whether a text is a sentence pair."""
    return PAIR_SEP in text


# ---------------------------------------------------------------------------
# Words
# ---------------------------------------------------------------------------

WORD_TOKENIZERS = ("glove", "whitespace", "spacy")

# Bracketed special tokens that augmentation inserts ([MASK], <mask>): kept whole.
_SPECIAL = r"\[[A-Za-z_]+\]|<[A-Za-z_]+>"
# Abbreviations whose period stays attached (GloVe has `mr.`, `etc.`, `vs.`).
_ABBREVIATIONS = ("mr", "mrs", "ms", "dr", "jr", "sr", "st", "vs", "prof", "mt", "messrs", "gen", "sen", "rep",
                  "gov", "lt", "col", "sgt", "capt", "inc", "ltd", "corp", "etc")
# A letter that does not start a trailing `n't` (so `doesn't` splits as `does` + `n't`).
_LETTER = r"(?:(?!n't\b)[^\W_])"
_GLOVE_PATTERN = re.compile(
    "|".join([
        _SPECIAL,
        r"https?://\S+",
        r"(?:[^\W\d_]\.){2,}",  # u.s., e.g., p.m.
        r"[^\W\d_]\.(?=\s|$)",  # an initial: john f. kennedy
        r"(?:" + "|".join(_ABBREVIATIONS) + r")\.(?=\s|$)",
        r"\d+(?:[.,:]\d+)+",  # 1,000  3.5  10:30
        # a word: letters and digits, inner hyphens and slashes, inner apostrophes that do not start a
        # clitic (o'clock), stopping before a trailing n't
        _LETTER + r"+(?:[-/]" + _LETTER + r"+)*(?:'(?!(?:s|re|ve|d|ll|m)\b)" + _LETTER + r"+)*",
        r"'(?:em|n'?|\d+s)(?=\s|$)",  # 'em, rock 'n' roll, the '60s
        r"n't\b|'(?:s|re|ve|d|ll|m)\b",  # clitics
        r"([^\w\s])\1*",  # a run of one punctuation mark: ... -- `` ''
        r"\S",  # anything else, one character at a time
    ]),
    re.IGNORECASE,
)
_SPECIAL_PATTERN = re.compile(f"({_SPECIAL})")


def glove_split(text: str) -> list[str]:
    """Split `text` into GloVe-style tokens (see the module docstring)."""
    tokens: list[str] = []
    for chunk in text.split():
        # No rule splits a run of letters and digits: skip the pattern for those (most
        # words), which makes this about three times faster.
        if chunk.isalnum():
            tokens.append(chunk)
            continue
        pieces = [m.group(0) for m in _GLOVE_PATTERN.finditer(chunk)]
        for i, piece in enumerate(pieces):
            # PTB (and so GloVe) writes quotes as `` '' and ` ': opening at the start of a chunk
            if piece == '"':
                pieces[i] = "``" if i == 0 and len(pieces) > 1 else "''"
            elif piece == "'" and i == 0 and len(pieces) > 1:
                pieces[i] = "`"
        tokens.extend(pieces)
    return tokens


def _spacy_split() -> Callable[[str], list[str]]:
    try:
        import spacy
    except ImportError as e:  # the caller turns this into a user-facing message
        raise ImportError("the 'spacy' word tokenizer needs spaCy (pip install spacy)") from e
    tokenizer = spacy.blank("en").tokenizer

    def split(text: str) -> list[str]:
        tokens: list[str] = []
        for i, part in enumerate(_SPECIAL_PATTERN.split(text)):
            if i % 2:  # a special token, kept whole
                tokens.append(part)
            elif part.strip():
                tokens.extend(t.text for t in tokenizer(part) if not t.is_space)
        return tokens

    return split


class WordTokenizer:
    """Sentence -> word tokens for a GloVe student: optional lower-casing, then `kind`'s split."""

    def __init__(self, kind: str = "glove", lowercase: bool = True):
        if kind not in WORD_TOKENIZERS:
            raise ValueError(f"unknown word tokenizer {kind!r}; expected one of {list(WORD_TOKENIZERS)}")
        self.kind, self.lowercase = kind, lowercase
        self._split: Callable[[str], list[str]] = {
            "glove": glove_split, "whitespace": str.split}.get(kind) or _spacy_split()

    def __call__(self, sentence: str) -> list[str]:
        return self._split(sentence.lower() if self.lowercase else sentence)

    def many(self, sentences: Iterable[str]) -> list[list[str]]:
        """Tokenize each sentence."""
        return [self(s) for s in sentences]

    def key(self, sentence: str) -> str:
        """The sentence as the student sees it (its tokens, space-joined): two lines with the
        same key are the same input to a student. A pair's key is its two sides' keys in
        sorted order, so (a, b) and (b, a) share one (the leakage filter and dedupe treat a
        swapped pair as the same pair)."""
        pair = split_pair(sentence)
        if pair is None:
            return " ".join(self(sentence))
        return PAIR_SEP.join(sorted(" ".join(self(side)) for side in pair))


def lowercase_outside(text: str, keep: Sequence[str]) -> str:
    """Lower-case `text` except inside the strings in `keep` (a tokenizer's special tokens, such
    as `[MASK]`, which the tokenizer only recognises in their own case)."""
    if not keep:
        return text.lower()
    pattern = "(" + "|".join(re.escape(t) for t in sorted(set(keep), key=len, reverse=True)) + ")"
    parts = re.split(pattern, text)
    # re.split with one group: odd positions are the kept tokens
    return "".join(part if i % 2 else part.lower() for i, part in enumerate(parts))


# ---------------------------------------------------------------------------
# Ids: what a model reads
# ---------------------------------------------------------------------------

# The n-gram hash over word ids: h = first id, then h = (h * M + next id) mod P for each
# further word; the bucket is h mod buckets. For a bigram (a, b) that is (a * M + b) mod buckets.
NGRAM_MULTIPLIER = 1_000_003
NGRAM_MODULUS = (1 << 61) - 1


def ngram_features(word_ids: Sequence[int], ngrams: int, buckets: int, offset: int, eos: bool = False) -> list[int]:
    """Word ids followed by the hashed id of every 2..`ngrams`-gram of them, shifted by
    `offset` (the vocabulary size) so that words and n-grams index one table. With `eos`,
    fastText's `</s>`: the id `offset` (no word's) ends the sentence, in a hashed row of its
    own and in the n-grams that reach the end."""
    features = list(word_ids)
    if eos:
        features.append(offset + offset % buckets)  # `</s>` alone: the hash of a one-id sequence is the id
        word_ids = [*word_ids, offset]
    if ngrams >= 2:  # bigrams, the common case, in one comprehension (same ids; 2x faster than the loop)
        M, P = NGRAM_MULTIPLIER, NGRAM_MODULUS
        features += [offset + (a * M + b) % P % buckets for a, b in zip(word_ids, word_ids[1:])]
    for n in range(3, ngrams + 1):
        for start in range(len(word_ids) - n + 1):
            h = word_ids[start]
            for i in range(start + 1, start + n):
                h = (h * NGRAM_MULTIPLIER + word_ids[i]) % NGRAM_MODULUS
            features.append(offset + h % buckets)
    return features


def prune_buckets(table: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """A bag of n-grams' table `[vocab_size + buckets, E]` as a deployment ships it: the word
    rows, then the n-gram rows that are not all zero (training reached them; the rest never
    left their zero start), then one zero row, which every dropped bucket reads: the same
    logits from a fraction of the table (SST-2's transfer set reaches about 50k of the 2M
    buckets). Returns (the table `[vocab_size + k + 1, E]`, the kept buckets `[k]` int64,
    ascending); `kept_bucket_rows` says which row each bucket reads."""
    kept = np.flatnonzero((table[vocab_size:] != 0).any(axis=1)).astype(np.int64)  # [k]
    zero = np.zeros((1, table.shape[1]), dtype=table.dtype)  # [1, E]
    return np.concatenate([table[:vocab_size], table[vocab_size:][kept], zero]), kept


def kept_bucket_rows(kept_buckets: Sequence[int]) -> dict[int, int]:
    """Where `prune_buckets`' table puts each kept bucket, counted from the first n-gram row:
    bucket kept_buckets[i] -> i. A bucket not in the dict reads row len(kept_buckets), the zero row."""
    return {int(b): i for i, b in enumerate(kept_buckets)}


class WordIds:
    """Sentence -> a GloVe student's input ids: its word tokenizer, the vocabulary (a word
    outside it is `<unk>`), truncation to `n_ctx` words (an empty sentence is one `<unk>`),
    then, for students with n-gram features (`ngrams` > 1), the hashed n-grams after the
    words (`ngram_features`). With `sep_id` (a pair student's vocabulary has `<sep>`) a pair's
    text becomes side a's ids, `sep_id`, side b's ids, each side as a sentence is; without
    it, a pair is refused (ValueError)."""

    def __init__(self, vocab: Sequence[str], tokenizer: WordTokenizer, n_ctx: int, unk_id: int = 1,
                 ngrams: int = 1, buckets: int = 0, kept_buckets: Sequence[int] | None = None,
                 sep_id: int | None = None, eos: bool = False):
        self.index = {t: i for i, t in enumerate(vocab)}
        self.sep_id = sep_id
        if sep_id is not None:
            # `<sep>` typed in a sentence is an unknown word, never a side boundary
            self.index.pop(vocab[sep_id], None)
        self.tokenizer, self.n_ctx, self.unk_id = tokenizer, n_ctx, unk_id
        self.ngrams, self.buckets, self.vocab_size = ngrams, buckets, len(vocab)
        self.eos = eos  # fastText's `</s>` among the n-gram features (`ngram_features`)
        # a bundle's bag of n-grams keeps only the buckets training reached (`kept_buckets`,
        # ascending, from `prune_buckets`), and its table's rows are laid out by `kept_bucket_rows`
        self.bucket_rows = None if kept_buckets is None else kept_bucket_rows(kept_buckets)

    def pruned(self, kept_buckets: Sequence[int]) -> "WordIds":
        """These ids for the table `prune_buckets` made, which kept only `kept_buckets` (`[k]`,
        ascending) of the n-gram rows: the same tokenizer and vocabulary (shared, not copied)."""
        ids = copy.copy(self)
        ids.bucket_rows = kept_bucket_rows(kept_buckets)
        return ids

    @property
    def pairs(self) -> bool:
        """Whether this is a pair student's text-to-ids."""
        return self.sep_id is not None

    def _side_ids(self, sentence: str) -> list[int]:
        index, unk = self.index, self.unk_id
        return [index.get(t, unk) for t in self.tokenizer(sentence)[: self.n_ctx]] or [unk]

    def word_ids(self, sentence: str) -> list[int]:
        """The sentence's vocabulary ids, truncated to n_ctx (at least one); a pair's are
        side a's, `sep_id`, side b's."""
        pair = split_pair(sentence)
        if (pair is not None) != self.pairs:
            raise ValueError("a sentence pair given to a single-sentence model" if pair is not None else
                             "a single sentence given to a sentence-pair model (expected 'sentence_a<TAB>sentence_b')")
        if pair is None:
            return self._side_ids(sentence)
        return [*self._side_ids(pair[0]), self.sep_id, *self._side_ids(pair[1])]

    def features(self, word_ids: Sequence[int]) -> list[int]:
        """What the model reads for these word ids (the ids themselves, or with n-grams; a
        pair's n-grams are each side's, the sides still split by `sep_id`)."""
        if self.ngrams <= 1:
            return list(word_ids)
        if self.sep_id is not None and self.sep_id in word_ids:
            cut = list(word_ids).index(self.sep_id)
            return [*self.features(word_ids[:cut]), self.sep_id, *self.features(word_ids[cut + 1:])]
        features = ngram_features(word_ids, self.ngrams, self.buckets, self.vocab_size, self.eos)
        if self.bucket_rows is None:
            return features
        v, rows, unseen = self.vocab_size, self.bucket_rows, len(self.bucket_rows)
        return features[: len(word_ids)] + [v + rows.get(f - v, unseen) for f in features[len(word_ids):]]

    def encode(self, sentence: str) -> list[int]:
        """One sentence's input ids."""
        return self.features(self.word_ids(sentence))

    def encode_batch(self, sentences: Sequence[str]) -> list[list[int]]:
        """Input ids for each sentence."""
        return [self.encode(s) for s in sentences]


class SubwordIds:
    """Sentence -> a teacher's word-piece ids: its own `tokenizers.Tokenizer` (special tokens
    added, truncated to `n_ctx` pieces, no padding), after lower-casing outside the special
    tokens when `lowercase` (lower-casing `[MASK]` too would make `[mask]`, which a BERT
    tokenizer splits into `[`, `mask`, `]`)."""

    def __init__(self, tokenizer: Any, lowercase: bool, n_ctx: int, pad_id: int):
        from tokenizers import Tokenizer

        # a copy: padding (sentence-transformers ship a fixed 128) and truncation set here only
        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(n_ctx)
        self.lowercase, self.n_ctx, self.pad_id = lowercase, n_ctx, pad_id
        self.special = sorted(t.content for t in self.tokenizer.get_added_tokens_decoder().values() if t.special)

    @classmethod
    def from_file(cls, path: str | Path, lowercase: bool, n_ctx: int, pad_id: int) -> "SubwordIds":
        """From a `tokenizer.json`."""
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)), lowercase, n_ctx, pad_id)

    def prepare(self, sentence: str) -> str | tuple[str, str]:
        """The text the tokenizer sees: a sentence, or a pair's two sides (encoded as the
        tokenizer's pair, with its separator and, where the model has them, segment ids)."""
        pair = split_pair(sentence)
        if pair is not None:
            return (self.prepare(pair[0]), self.prepare(pair[1]))  # type: ignore[return-value]
        return lowercase_outside(sentence, self.special) if self.lowercase else sentence

    def encode(self, sentence: str) -> list[int]:
        """One sentence's (or pair's) word-piece ids."""
        prepared = self.prepare(sentence)
        return self.tokenizer.encode(*prepared).ids if isinstance(prepared, tuple) else \
            self.tokenizer.encode(prepared).ids

    def encode_batch(self, sentences: Sequence[str]) -> list[list[int]]:
        """Word-piece ids for each sentence or pair (the tokenizer parallelises a batch)."""
        return [e.ids for e in self.tokenizer.encode_batch([self.prepare(s) for s in sentences])]


# ---------------------------------------------------------------------------
# Batches and scores
# ---------------------------------------------------------------------------

def pad_ids(seqs: Sequence[Sequence[int]], pad_id: int, min_len: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Pad id lists to the longest (at least `min_len`): ids `[batch, seq]` and lengths
    `[batch]`, both int64. Padding comes after each sentence."""
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    ids = np.full((len(seqs), max(int(lengths.max()), min_len)), pad_id, dtype=np.int64)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = seq
    return ids, lengths


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches of indices sorted by length (longest first): least padding, for inference.
    The caller restores the input order from the indices."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class Prediction(NamedTuple):
    """One sentence's predicted label and the probability of every label. A multi-label
    model's `label` is its predicted label set, comma-joined in label order (`"anger,joy"`;
    the most probable label alone when no label reaches its threshold, so never empty), and
    `probabilities` each label's own sigmoid probability (they need not sum to 1)."""

    label: str
    probabilities: dict[str, float]


def near_ties(logits: np.ndarray, margin: float, multi_label: bool = False) -> np.ndarray:
    """Rows of `[n, K]` logits whose decision a small error could flip: the top two logits less
    than `margin` apart (multi-label: some logit within `margin` of 0, where its label flips).
    Returns their indices `[m]`; an int8 labeler scores these again in fp32."""
    if multi_label:
        return np.flatnonzero(np.abs(logits).min(axis=1) < margin)
    top2 = np.sort(logits, axis=1)[:, -2:]  # [n, 2]
    return np.flatnonzero(top2[:, 1] - top2[:, 0] < margin)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of `[n, K]` logits."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function, without overflow for large |logits|."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def multilabel_decisions(probs: np.ndarray, thresholds: Sequence[float] | None) -> np.ndarray:
    """`[n, K]` bool: the labels a multi-label model predicts from its `[n, K]` sigmoid
    probabilities: label k where p_k >= thresholds[k] (0.5 each without thresholds), and the
    most probable label of a row where none does (every sentence gets a label). Training's
    validation, evaluate.py, `Predictor` and bundles all decide here."""
    probs = np.asarray(probs)
    cut = np.full(probs.shape[1], 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)  # [K]
    chosen = probs >= cut  # [n, K]
    empty = ~chosen.any(axis=1)  # [n]
    chosen[np.flatnonzero(empty), probs[empty].argmax(axis=1)] = True
    return chosen


def predictions(logits: np.ndarray, labels: Sequence[str], temperature: float = 1.0, multi_label: bool = False,
                thresholds: Sequence[float] | None = None) -> list[Prediction]:
    """`[n, K]` logits (columns in `labels` order) as `Prediction`s, the probabilities
    softmax(logits / temperature): the model's temperature, fitted on valid when it was trained
    (calibrated probabilities; the argmax is the same for any temperature). A multi-label
    model's probabilities are sigmoid(logits) (no temperature), its label set
    `multilabel_decisions` at its `thresholds` (chosen on valid when it was trained)."""
    if multi_label:
        probs = sigmoid(np.asarray(logits))  # [n, K]
        chosen = multilabel_decisions(probs, thresholds)
        return [Prediction(",".join(labels[k] for k in np.flatnonzero(row)), dict(zip(labels, map(float, p))))
                for row, p in zip(chosen, probs)]
    return [Prediction(labels[int(row.argmax())], dict(zip(labels, map(float, row))))
            for row in softmax(np.asarray(logits) / temperature)]


def confidence(prediction: Prediction, multi_label: bool = False) -> float:
    """How sure a prediction is, for a cascade: the top probability; multi-label, the least
    sure of the K yes/no decisions, min over labels of max(p_k, 1 - p_k) (every decision
    has to be sure for the whole set to be)."""
    values = prediction.probabilities.values()
    return min(max(p, 1.0 - p) for p in values) if multi_label else max(values)


# ---------------------------------------------------------------------------
# Backends: `backend(ids [B, T] int64, lengths [B] int64) -> logits [B, K] float32`
# ---------------------------------------------------------------------------

class OrtSession:
    """A model exported to ONNX (inputs `ids`, `lengths`; output `logits`) in ONNX Runtime."""

    def __init__(self, path: str | Path, num_threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads  # 0: ONNX Runtime's default (all cores)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        state = ort.capi.onnxruntime_pybind11_state
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except (state.Fail, state.InvalidProtobuf, state.NoSuchFile, state.InvalidGraph, state.InvalidArgument) as e:
            raise ValueError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0][:200]})") from e

    def __call__(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"ids": ids, "lengths": lengths})[0]


class OpenVinoSession:
    """The same ONNX file compiled by OpenVINO for the CPU, tuned for latency."""

    def __init__(self, path: str | Path, num_threads: int = 0):
        import openvino as ov

        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if num_threads:
            config["INFERENCE_NUM_THREADS"] = str(num_threads)
        core = ov.Core()
        try:
            self.request = core.compile_model(core.read_model(str(path)), "CPU", config).create_infer_request()
        except RuntimeError as e:
            raise ValueError(f"{path}: OpenVINO cannot compile it ({str(e).splitlines()[0][:200]})") from e

    def __call__(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return self.request.infer({"ids": ids, "lengths": lengths})[0]


class NumpyBag:
    """A bag of n-grams in numpy (`bow.npz`): the mean of the sentence's feature rows, then
    the hidden ReLU layers, then the output layer. Without hidden layers the output layer is
    folded into the table (`scores`: `[features, K]`), so a sentence costs a row sum."""

    def __init__(self, path: str | Path):
        with np.load(path, allow_pickle=False) as f:
            tables = {k: f[k] for k in f.files}
        self.table = tables["table"]  # [features, E] or, folded, [features, K]
        self.layers = [(tables[f"weight_{i}"], tables[f"bias_{i}"]) for i in range(int(tables["layers"]))]

    def one(self, ids: Sequence[int]) -> np.ndarray:
        """Logits `[K]` of one sentence's feature ids (the batch-1 path: no padding)."""
        x = self.table[np.asarray(ids, dtype=np.int64)].mean(axis=0)  # [E] (or [K] when folded)
        for i, (weight, bias) in enumerate(self.layers):  # weight: [out, in]
            x = weight @ x + bias
            if i + 1 < len(self.layers):
                x = np.maximum(x, 0.0)
        return x

    def __call__(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return np.stack([self.one(row[:n]) for row, n in zip(ids, lengths)]).astype(np.float32)


# int8 counts as good enough (a bundle's default, a model's fastest runtime in the benchmark)
# only if its decisions are right at most this much less often than fp32's: 0.3 points
INT8_MAX_DROP = 0.003

# backend name -> (file in the bundle, how to open it)
BACKENDS: dict[str, tuple[str, Callable[[Path, int], Callable[[np.ndarray, np.ndarray], np.ndarray]]]] = {
    "numpy": ("bow.npz", lambda path, threads: NumpyBag(path)),
    "onnxruntime": ("model.onnx", OrtSession),
    "onnxruntime-int8": ("model.int8.onnx", OrtSession),
    "openvino": ("model.onnx", OpenVinoSession),
    "openvino-int8": ("model.int8.onnx", OpenVinoSession),
}


# ---------------------------------------------------------------------------
# Bundles
# ---------------------------------------------------------------------------

def import_bundle_code(path: Path) -> Any:
    """The bundle's own `runtime.py`, imported by path under a name of its own."""
    name = "distil_glove_bundle_" + hashlib.sha1(str(path).encode()).hexdigest()[:16]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path / "runtime.py")
        if spec is None or spec.loader is None:
            raise FileNotFoundError(f"{path}: no runtime.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


class Bundle:
    """A deployment bundle: its tokenization, labels and one backend."""

    def __init__(self, path: Path, meta: dict, backend: str, num_threads: int):
        self.path, self.meta, self.backend = path, meta, backend
        self.labels = list(meta["labels"])
        self.pad_id = meta["pad_id"]
        self.temperature = float(meta.get("temperature", 1.0))  # bundles before calibration: none
        self.multi_label = bool(meta.get("multi_label", False))
        self.thresholds = meta.get("thresholds")  # multi-label: one per label (None: 0.5 each)
        if meta["tokenizer"] == "huggingface":  # a teacher: its own word pieces
            self.ids = SubwordIds.from_file(path / "tokenizer.json", meta["lowercase"], meta["n_ctx"], self.pad_id)
        else:
            vocab = (path / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
            kept = np.load(path / meta["kept_buckets"], allow_pickle=False) if meta.get("kept_buckets") else None
            self.ids = WordIds(vocab, WordTokenizer(meta["tokenizer"], meta["lowercase"]), meta["n_ctx"],
                               meta["unk_id"], meta.get("ngrams", 1), meta.get("buckets", 0), kept,
                               meta.get("sep_id"), meta.get("eos", False))
        # True: sentence pairs; False: single sentences; None: either (a brought teacher)
        self.pairs: bool | None = meta.get("pairs", False)
        filename, opener = BACKENDS[backend]
        self.model = opener(path / filename, num_threads)

    @classmethod
    def load(cls, path: str | Path, backend: str | None = None, num_threads: int = 1) -> "Bundle":
        """Open the bundle at `path` with the bundle's own code (imported by path, see the
        module docstring). `backend`: one of `bundle.json`'s `backends` (default: the one it
        chose, the fastest that passed its accuracy check when it was exported)."""
        path = Path(path).resolve()
        if Path(__file__).resolve().parent != path:
            return import_bundle_code(path).Bundle.load(path, backend, num_threads)
        meta_path = path / "bundle.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{path}: not a bundle (no bundle.json)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {BUNDLE_FORMAT!r}")
        backend = backend or meta["backend"]
        if backend not in meta["backends"]:
            raise ValueError(f"{path}: no {backend!r} backend; it has {meta['backends']}")
        return cls(path, meta, backend, num_threads)

    def encode(self, sentence: str) -> list[int]:
        """One sentence's input ids, as at training time."""
        return self.ids.encode(sentence)

    def encode_batch(self, sentences: Sequence[str]) -> list[list[int]]:
        """Input ids for each sentence."""
        return self.ids.encode_batch(sentences)

    def logits_for_ids(self, encoded: Sequence[Sequence[int]]) -> np.ndarray:
        """`[n, K]` float32 logits of encoded sentences (a batch of several is padded)."""
        if isinstance(self.model, NumpyBag):
            return np.stack([self.model.one(seq) for seq in encoded]).astype(np.float32)
        return self.model(*pad_ids(encoded, self.pad_id))

    def logits(self, sentences: Sequence[str]) -> np.ndarray:
        """`[n, K]` float32 logits, columns in `labels` order."""
        return self.logits_for_ids(self.encode_batch(sentences))

    def predict(self, sentences: Sequence[str]) -> list[Prediction]:
        """The label and (calibrated) label probabilities of each sentence."""
        return predictions(self.logits(sentences), self.labels, self.temperature, self.multi_label, self.thresholds)

    def predict_label(self, sentence: str) -> str:
        """The label of one sentence (the batch-1 path; multi-label: the comma-joined set)."""
        logits = self.logits_for_ids([self.encode(sentence)])
        if self.multi_label:
            return predictions(logits, self.labels, multi_label=True, thresholds=self.thresholds)[0].label
        return self.labels[int(logits[0].argmax())]


class Cascade:
    """A student bundle in front of a teacher bundle: a sentence whose top student probability
    (calibrated: the student's temperature) is at least `defer_below` is answered by the
    student, every other one by the teacher, all deferred sentences of a call in one teacher
    batch. `defer_below` 0 answers everything with the student; above 1 (a probability never
    is) everything with the teacher. Multi-label bundles (both must be) compare `confidence`:
    the least sure label decision. The teacher's labels are matched to the student's by name
    (a teacher's own order may differ), so both must have the same label set."""

    def __init__(self, student: Bundle, teacher: Bundle, defer_below: float):
        if sorted(student.labels) != sorted(teacher.labels):
            raise ValueError(f"{teacher.path}: labels {teacher.labels} differ from the student's ({student.path}) "
                             f"{student.labels}; a cascade needs one label set")
        if not defer_below >= 0:
            raise ValueError(f"defer_below must be >= 0, got {defer_below}")
        if None not in (student.pairs, teacher.pairs) and student.pairs != teacher.pairs:
            raise ValueError(f"{teacher.path}: takes {'sentence pairs' if teacher.pairs else 'single sentences'}, the "
                             f"student ({student.path}) {'sentence pairs' if student.pairs else 'single sentences'}")
        if student.multi_label != teacher.multi_label:
            raise ValueError(f"{teacher.path}: {'multi' if teacher.multi_label else 'single'}-label, the student "
                             f"({student.path}) {'multi' if student.multi_label else 'single'}-label")
        self.student, self.teacher, self.defer_below = student, teacher, defer_below
        self.deferred: list[int] = []  # the last call's sentences answered by the teacher

    def predict(self, sentences: Sequence[str]) -> list[Prediction]:
        """Each sentence's label and probabilities, from the student or (deferred) the teacher."""
        results = self.student.predict(sentences)
        multi = self.student.multi_label
        self.deferred = [i for i, p in enumerate(results) if confidence(p, multi) < self.defer_below]
        if self.deferred:
            answers = self.teacher.predict([sentences[i] for i in self.deferred])  # one batch
            for i, answer in zip(self.deferred, answers):
                # the teacher's probabilities in the student's label order
                label = ",".join(k for k in self.student.labels if k in answer.label.split(",")) if multi else \
                    answer.label  # a multi-label set in the student's label order
                results[i] = Prediction(label, {k: answer.probabilities[k] for k in self.student.labels})
        return results
