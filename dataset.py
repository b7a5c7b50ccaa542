"""Files to tensors: the formats the stages exchange, each written and read here.

Formats (UTF-8, one example a line, `\\n` endings; CRLF, a BOM and a missing last newline
are accepted on reading):

- raw data (`train.txt`, `valid.txt`, `test.txt`, `augmented.raw`): `sentence<TAB>label`.
- `label.txt`: the label strings, sorted, one a line; line i is label id i.
- `vocab.txt` + `embedding.npy`: the GloVe student vocabulary (line i is token id i;
  `<pad>` is 0, `<unk>` is 1) and its `[vocab, dim]` float32 matrix.
- id-mapped files, `X.ids` (GloVe vocabulary) or `X.fs` (a transformer tokenizer):
  `id id id ...<TAB>target`, target a label id, or `-1` when the label is not one of the
  training labels (augmented sentences carry a placeholder label), or space-separated
  teacher logits (`augmented.txt.ids`).
- teacher predictions, `X.pred`: `sentence<TAB>logit_0 logit_1 ...`, one line per input
  line, same order; floats written with `repr` so they read back bit for bit.
"""
from __future__ import annotations

import logging
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from tokenization import WordTokenizer, lowercase_outside
from util import UserError, atomic_path, read_json, require_file

logger = logging.getLogger(__name__)


@dataclass
class Example:
    """One line of a raw data file."""

    sentence: str
    label: str
    lineno: int


def _read_lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    """Yield (line number, line without its ending) of a UTF-8 text file; blank lines skipped."""
    require_file(path, what)
    blank = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}:{lineno}: not UTF-8 text (bad byte at column {e.start + 1})") from e
            if lineno == 1 and line.startswith("\ufeff"):
                line = line[1:]
            line = line.rstrip("\r\n")
            if not line.strip():
                blank += 1
                continue
            yield lineno, line
    if blank:
        logger.info("%s: skipped %d blank line(s)", path, blank)


def read_examples(path: str | Path) -> list[Example]:
    """Read a `sentence<TAB>label` file. Blank lines are skipped; anything else malformed
    is a UserError naming the file and line."""
    path = Path(path)
    examples = []
    for lineno, line in _read_lines(path, "a 'sentence<TAB>label' file"):
        fields = line.split("\t")
        if len(fields) != 2:
            raise UserError(
                f"{path}:{lineno}: expected 'sentence<TAB>label' (one tab), found {len(fields) - 1} tabs"
            )
        sentence, label = fields[0].strip(), fields[1].strip()
        if not sentence:
            raise UserError(f"{path}:{lineno}: empty sentence")
        if not label:
            raise UserError(f"{path}:{lineno}: empty label")
        examples.append(Example(sentence, label, lineno))
    if not examples:
        raise UserError(f"{path}: no examples (only blank lines)")
    return examples


def write_examples(path: str | Path, examples: Iterable[tuple[str, str]]) -> int:
    """Write `sentence<TAB>label` lines atomically; return the count."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for sentence, label in examples:
            f.write(f"{sentence}\t{label}\n")
            n += 1
    return n


# ---------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------

def build_labels(examples: Sequence[Example]) -> list[str]:
    """The sorted label set (sorted so ids do not depend on file order)."""
    return sorted({e.label for e in examples}, key=_label_sort_key)


def _label_sort_key(label: str) -> tuple:
    # Numeric labels sort numerically ("2" before "10"), others as strings.
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def write_labels(path: str | Path, labels: Sequence[str]) -> None:
    """Write `label.txt`."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")


def read_labels(path: str | Path) -> list[str]:
    """Read `label.txt`."""
    path = Path(path)
    labels = [line for _, line in _read_lines(path, "label.txt from preprocess.py")]
    if len(set(labels)) != len(labels):
        raise UserError(f"{path}: duplicate labels")
    return labels


def label_ids(examples: Sequence[Example], labels: Sequence[str], path: str | Path) -> list[int]:
    """Map label strings to ids; a label the training set never had is a UserError."""
    index = {label: i for i, label in enumerate(labels)}
    ids = []
    for e in examples:
        if e.label not in index:
            raise UserError(
                f"{path}:{e.lineno}: label {e.label!r} is not in the training labels {list(labels)}"
            )
        ids.append(index[e.label])
    return ids


# ---------------------------------------------------------------------------
# GloVe vocabulary and embeddings
# ---------------------------------------------------------------------------

def read_glove(path: str | Path, wanted: set[str] | None, expected_dim: int) -> dict[str, np.ndarray]:
    """Read a GloVe text file (`word v1 ... vd` per line), keeping only `wanted` words
    (all when None). The dimension must equal `expected_dim`."""
    path = Path(path)
    vectors: dict[str, np.ndarray] = {}
    dim = None
    for lineno, line in _read_lines(path, "a GloVe text file ('word v1 ... vd' per line)"):
        parts = line.rstrip(" ").split(" ")
        if dim is None:
            if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                continue  # a word2vec-style "count dim" header
            dim = len(parts) - 1
            if dim != expected_dim:
                raise UserError(
                    f"{path}:{lineno}: vectors have dimension {dim}, but the config's token_emb_dim is "
                    f"{expected_dim}"
                )
        if len(parts) < dim + 1:
            raise UserError(f"{path}:{lineno}: expected a word and {dim} numbers, found {len(parts)} fields")
        # Some GloVe files have words containing spaces: the vector is the last `dim` fields.
        word = " ".join(parts[: len(parts) - dim])
        if wanted is not None and word not in wanted:
            continue
        try:
            vector = np.asarray(parts[len(parts) - dim:], dtype=np.float32)
        except ValueError as e:
            raise UserError(f"{path}:{lineno}: expected {dim} numbers after the word ({e})") from e
        vectors.setdefault(word, vector)
    if dim is None:
        raise UserError(f"{path}: no vectors found")
    return vectors


def build_vocab(
    token_lists: Iterable[list[str]], glove: dict[str, np.ndarray], pad_token: str, unk_token: str, dim: int
) -> tuple[list[str], np.ndarray]:
    """Vocabulary = `<pad>`, `<unk>`, then the data's tokens that GloVe knows, most frequent
    first (ties alphabetical). Returns the token list and its `[vocab, dim]` matrix;
    `<pad>` is zeros (padding contributes nothing), `<unk>` the mean GloVe vector."""
    counts: dict[str, int] = {}
    for tokens in token_lists:
        for token in tokens:
            if token in glove:
                counts[token] = counts.get(token, 0) + 1
    words = sorted(counts, key=lambda w: (-counts[w], w))
    vocab = [pad_token, unk_token, *words]
    matrix = np.zeros((len(vocab), dim), dtype=np.float32)
    if words:
        matrix[2:] = np.stack([glove[w] for w in words])
        matrix[1] = matrix[2:].mean(axis=0)
    return vocab, matrix


def write_vocab(data_dir: Path, vocab: Sequence[str], matrix: np.ndarray) -> None:
    """Write `vocab.txt` and `embedding.npy`."""
    with atomic_path(data_dir / "vocab.txt") as tmp:
        tmp.write_text("".join(f"{t}\n" for t in vocab), encoding="utf-8")
    with atomic_path(data_dir / "embedding.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, matrix)


def read_vocab(data_dir: Path) -> tuple[list[str], np.ndarray]:
    """Read `vocab.txt` and `embedding.npy` (written by preprocess.py)."""
    vocab_path = require_file(data_dir / "vocab.txt", "vocab.txt from preprocess.py")
    matrix_path = require_file(data_dir / "embedding.npy", "embedding.npy from preprocess.py")
    vocab = vocab_path.read_text(encoding="utf-8").split("\n")[:-1]
    try:
        matrix = np.load(matrix_path, allow_pickle=False)
    except ValueError as e:
        raise UserError(f"{matrix_path}: not a NumPy array file ({e})") from e
    if matrix.ndim != 2 or matrix.shape[0] != len(vocab):
        raise UserError(f"{matrix_path}: shape {matrix.shape} does not match {len(vocab)} words in vocab.txt")
    return vocab, matrix


class GloveEncoder:
    """Sentence → ids under a fixed student vocabulary, with the student's word tokenizer,
    truncated to `n_ctx` (at least one id: an empty sentence is `<unk>`)."""

    def __init__(self, vocab: Sequence[str], tokenizer: WordTokenizer, n_ctx: int, unk_id: int = 1):
        self.index = {t: i for i, t in enumerate(vocab)}
        self.tokenizer = tokenizer
        self.n_ctx = n_ctx
        self.unk_id = unk_id

    def __call__(self, sentence: str) -> list[int]:
        tokens = self.tokenizer(sentence)[: self.n_ctx]
        return [self.index.get(t, self.unk_id) for t in tokens] or [self.unk_id]

    def encode_many(self, sentences: Sequence[str]) -> list[list[int]]:
        """Ids for each sentence."""
        return [self(s) for s in sentences]


def tokenizer_lowercases(tokenizer) -> bool:
    """Whether a Hugging Face tokenizer lower-cases text itself (an uncased BERT does, RoBERTa
    does not): it gives cased and lower-cased text the same tokens."""
    sample = "The Quick Brown Fox Jumps Over The Lazy Dog"
    return tokenizer.tokenize(sample) == tokenizer.tokenize(sample.lower())


class TransformerEncoder:
    """Sentence → ids with a Hugging Face tokenizer (special tokens added), truncated to `n_ctx`.

    `lowercase` lower-cases the text outside the tokenizer's special tokens: lower-casing
    `[MASK]` too would make `[mask]`, which a BERT tokenizer splits into `[`, `mask`, `]`.
    """

    def __init__(self, tokenizer, lowercase: bool, n_ctx: int):
        self.tokenizer = tokenizer
        self.lowercase = lowercase
        self.n_ctx = n_ctx
        self.keep = list(tokenizer.all_special_tokens)

    def prepare(self, sentence: str) -> str:
        """The text the tokenizer sees."""
        return lowercase_outside(sentence, self.keep) if self.lowercase else sentence

    def encode_many(self, sentences: Sequence[str], batch_size: int = 4096) -> list[list[int]]:
        """Tokenize in batches (the fast tokenizer parallelises a batch)."""
        out: list[list[int]] = []
        for start in range(0, len(sentences), batch_size):
            chunk = [self.prepare(s) for s in sentences[start:start + batch_size]]
            out.extend(self.tokenizer(chunk, truncation=True, max_length=self.n_ctx)["input_ids"])
        return out


# `preprocess.py` records how it made a data directory's `.fs` files (tokenizer, lower-casing,
# mask token) here, so later stages can refuse a setting that contradicts it.
TOKENIZATION_RECORD = "preprocess.transformer.json"


def read_tokenization_record(data_dir: Path) -> dict | None:
    """The record of how `data_dir`'s `.fs` files were made, or None if there is none."""
    path = Path(data_dir) / TOKENIZATION_RECORD
    if not path.exists():
        return None
    record = read_json(path)
    return record if isinstance(record, dict) and "lowercase" in record else None


# ---------------------------------------------------------------------------
# Id-mapped files and teacher predictions
# ---------------------------------------------------------------------------

def write_ids(path: str | Path, ids: Sequence[Sequence[int]], targets: Sequence) -> None:
    """Write an id-mapped file; a target is an int label id or a sequence of logits."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for seq, target in zip(ids, targets):
            if isinstance(target, (int, np.integer)):
                target_text = str(int(target))
            else:
                target_text = " ".join(repr(float(x)) for x in target)
            f.write(" ".join(map(str, seq)) + "\t" + target_text + "\n")


@dataclass
class IdsData:
    """An id-mapped file in memory: `ids[i]` a token id list, and either `labels` (int ids)
    or `logits` (`[n, num_labels]` float32 teacher logits)."""

    ids: list[list[int]]
    labels: list[int] | None
    logits: np.ndarray | None

    def __len__(self) -> int:
        return len(self.ids)


def _parse_logits(values: list[str], num_labels: int, path: Path, lineno: int, text: str) -> list[float]:
    """One line's logits: `num_labels` finite numbers, else a UserError naming the line."""
    if len(values) != num_labels:
        raise UserError(f"{path}:{lineno}: expected {num_labels} logits (one per label), found {len(values)}")
    try:
        row = [float(x) for x in values]
    except ValueError as e:
        raise UserError(f"{path}:{lineno}: logits must be numbers, got {text!r}") from e
    if not all(math.isfinite(x) for x in row):
        raise UserError(f"{path}:{lineno}: logits must be finite, got {text!r}")
    return row


def read_ids(path: str | Path, num_labels: int, soft: bool) -> IdsData:
    """Read an id-mapped file. `soft`: targets are `num_labels` logits; else label ids
    (checked to be in range; -1 allowed for unlabeled augmented lines)."""
    path = Path(path)
    ids, labels, logits = [], [], []
    for lineno, line in _read_lines(path, "an id-mapped file from preprocess.py ('ids<TAB>target')"):
        fields = line.split("\t")
        if len(fields) != 2:
            raise UserError(f"{path}:{lineno}: expected 'ids<TAB>target', found {len(fields) - 1} tabs")
        try:
            seq = [int(x) for x in fields[0].split()]
        except ValueError as e:
            raise UserError(f"{path}:{lineno}: token ids must be integers") from e
        ids.append(seq)
        target = fields[1].split()
        if soft:
            logits.append(_parse_logits(target, num_labels, path, lineno, fields[1]))
        else:
            if len(target) != 1 or not target[0].lstrip("-").isdigit() or not -1 <= int(target[0]) < num_labels:
                raise UserError(f"{path}:{lineno}: expected a label id in 0..{num_labels - 1}, got {fields[1]!r}")
            labels.append(int(target[0]))
    if soft:
        return IdsData(ids, None, np.asarray(logits, dtype=np.float32).reshape(-1, num_labels))
    return IdsData(ids, labels, None)


def write_predictions(path: str | Path, sentences: Sequence[str], logits: np.ndarray) -> None:
    """Write a `.pred` file: `sentence<TAB>logit_0 logit_1 ...`, floats as `repr` (exact round trip)."""
    if len(sentences) != len(logits):
        raise ValueError(f"{len(sentences)} sentences but {len(logits)} logit rows")
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for sentence, row in zip(sentences, logits):
            f.write(sentence + "\t" + " ".join(repr(float(x)) for x in row) + "\n")


def read_predictions(path: str | Path, num_labels: int) -> tuple[list[str], np.ndarray]:
    """Read a `.pred` file (or `augmented.txt`, its copy): sentences and `[n, num_labels]` logits."""
    path = Path(path)
    sentences, rows = [], []
    for lineno, line in _read_lines(path, "a teacher prediction file ('sentence<TAB>logit_0 logit_1 ...')"):
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0].strip():
            raise UserError(f"{path}:{lineno}: expected 'sentence<TAB>logit_0 logit_1 ...'")
        rows.append(_parse_logits(fields[1].split(), num_labels, path, lineno, fields[1]))
        sentences.append(fields[0].strip())
    return sentences, np.asarray(rows, dtype=np.float32).reshape(-1, num_labels)


# ---------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------

def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches of indices sorted by length (longest first): least padding, for inference.
    The caller restores the input order from the indices."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, window: int = 50
) -> list[list[int]]:
    """Training batches: shuffle, sort by length inside windows of `window` batches, cut,
    shuffle the batches. Less padding than plain shuffling, still random; seeded by `rng`."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    span = batch_size * window
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: lengths[i])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, min_len: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id lists to the longest (at least `min_len`): ids `[batch, seq]`, lengths `[batch]`."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    width = max(int(lengths.max()), min_len)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return ids, lengths


# ---------------------------------------------------------------------------
# Resumable labeling: `X.pred.partial.<rank>`
# ---------------------------------------------------------------------------
# First line `# <fingerprint>` (input size, batch size, teacher weights), then one
# `index<TAB>logit_0 logit_1 ...` line per labeled sentence, appended and fsynced chunk by
# chunk. A line cut short by a kill has no newline and is ignored on reading.

def read_partial_predictions(path: str | Path, fingerprint: str, num_labels: int) -> dict[int, list[float]]:
    """Rows labeled by an earlier, interrupted run with the same fingerprint (else none)."""
    path = Path(path)
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    if not lines or lines[0] != f"# {fingerprint}":
        logger.info("%s: made for other inputs; starting over", path)
        return {}
    rows: dict[int, list[float]] = {}
    for line in lines[1:-1]:  # the last element is "" or a line cut short
        index, _, values = line.partition("\t")
        try:
            row = [float(v) for v in values.split()]
        except ValueError:
            continue
        if index.isdigit() and len(row) == num_labels:
            rows[int(index)] = row
    return rows


def append_partial_predictions(path: str | Path, fingerprint: str, indices: Sequence[int], logits: np.ndarray) -> None:
    """Append labeled rows (creating the file with its fingerprint) and fsync."""
    path = Path(path)
    new = not path.exists()
    with open(path, "a", encoding="utf-8") as f:
        if new:
            f.write(f"# {fingerprint}\n")
        for i, row in zip(indices, logits):
            f.write(f"{i}\t" + " ".join(repr(float(x)) for x in row) + "\n")
        f.flush()
        os.fsync(f.fileno())
