"""The files the stages exchange, each format written and read here (text to ids is
runtime.py's; this module turns files into the arrays and tensors training reads).

Formats (UTF-8, one example a line, `\\n` endings; CRLF, a BOM and a missing last newline
are accepted on reading):

- raw data (`train.txt`, `valid.txt`, `test.txt`, `augmented.raw`): `sentence<TAB>label`, or
  for sentence pairs `sentence_a<TAB>sentence_b<TAB>label` on every line of the file. A pair
  is carried everywhere as one text, its sides joined by a tab (`runtime.join_pair`), so the
  id files and the transfer set below hold it as they hold a sentence.
- unlabeled text (`--unlabeled`): one sentence a line (a pair data set: two columns).
- `label.txt`: the label strings, sorted, one a line; line i is label id i. Its companion
  `label.json` (`{"multi_label": bool}`, preprocess.py) records whether the data set is
  multi-label, so later stages need not be told.
- multi-label data (`--multi_label`): the label field is a comma-separated list of label
  strings (`sentence<TAB>joy,surprise`), at least one, none repeated; the labels are the
  sorted union of train's. An id file's label field is then the comma-joined label ids
  (`3,7`; -1: none), and a transfer set's gold the comma-joined label strings.
- `vocab.txt` + `embedding.npy`: the GloVe student vocabulary (line i is token id i;
  `<pad>` is 0, `<unk>` is 1) and its `[vocab, dim]` float32 matrix.
- id-mapped splits, `X.txt.ids` (GloVe vocabulary) or `X.txt.fs` (a teacher's tokenizer):
  `id id id ...<TAB>label id` (-1: a label the training set lacks).
- the transfer set (`transfer.txt`) and its id file: see "The transfer set" below.
- teacher scores from elsewhere (`--teacher_logits`, JSONL): see `read_teacher_scores`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import sys
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from runtime import is_pair, join_pair
from teachers import teacher_columns
from util import UserError, atomic_path, read_json, require_file

logger = logging.getLogger(__name__)

STDIN = "-"  # the path that reads standard input
# augment_data.py's output in a data directory, which label.py --augmentations scores.
AUGMENTED_FILE = "augmented.raw"
# The transfer set label.py writes, which preprocess.py and train.py read with --distill.
TRANSFER_FILE = "transfer.txt"
# The seed's name for it (`cp augmented.raw.pred augmented.txt`), read with --augmented.
SEED_TRANSFER_FILE = "augmented.txt"


@dataclass
class Example:
    """One line of a raw data file (`sentence` is a pair's joined text for pair data)."""

    sentence: str
    label: str
    lineno: int

    @property
    def pair(self) -> bool:
        return is_pair(self.sentence)

    @property
    def labels(self) -> list[str]:
        """The label field split at commas: a multi-label example's label strings."""
        return split_labels(self.label)


LABEL_SEP = ","  # between the labels of a multi-label example


def split_labels(field: str) -> list[str]:
    """A multi-label field's label strings (`'a,b'` -> `['a', 'b']`)."""
    return [part.strip() for part in field.split(LABEL_SEP)]


def check_label_list(field: str, where: str) -> str:
    """A multi-label field checked (at least one label, none empty, none repeated) and written
    canonically (comma-joined, no spaces around the labels); else a UserError naming `where`."""
    parts = split_labels(field)
    if any(not part for part in parts):
        raise UserError(f"{where}: empty label in the label list {field!r} (expected 'label1,label2,...')")
    repeated = sorted({part for part in parts if parts.count(part) > 1})
    if repeated:
        raise UserError(f"{where}: label {repeated[0]!r} repeated in the label list {field!r}")
    return LABEL_SEP.join(parts)


def _stdin_bytes() -> Iterable[bytes]:
    """Standard input as lines of bytes (decoded, and errors named, as a file's are)."""
    buffer = getattr(sys.stdin, "buffer", None)  # None: a text stream put in its place
    return buffer if buffer is not None else (line.encode("utf-8") for line in sys.stdin)


def _read_lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    """Yield (line number, line without its ending) of a UTF-8 text file, or of stdin when
    `path` is '-'; blank lines skipped."""
    if str(path) != STDIN:
        require_file(path, what)
    blank = 0
    with (contextlib.nullcontext(_stdin_bytes()) if str(path) == STDIN else open(path, "rb")) as f:
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


SINGLE_FORMAT, PAIR_FORMAT = "'sentence<TAB>label'", "'sentence_a<TAB>sentence_b<TAB>label'"


def read_examples(path: str | Path, pairs: bool | None = None, multi_label: bool = False) -> list[Example]:
    """Read a `sentence<TAB>label` file, or a pair file (`sentence_a<TAB>sentence_b<TAB>label`).
    The first line decides which, unless `pairs` says; every line must then have that many
    columns. With `multi_label` the label field is a label list (`check_label_list`), kept in
    its canonical form. Blank lines are skipped; anything else malformed is a UserError naming
    the file and line."""
    path = Path(path)
    examples = []
    for lineno, line in _read_lines(path, f"a {SINGLE_FORMAT} or {PAIR_FORMAT} file"):
        fields = line.split("\t")
        if pairs is None and len(fields) in (2, 3):
            pairs = len(fields) == 3
        if len(fields) != (3 if pairs else 2):
            expected = f"{SINGLE_FORMAT} or {PAIR_FORMAT}" if pairs is None else PAIR_FORMAT if pairs else SINGLE_FORMAT
            what = "" if pairs is None or not examples else \
                f" as line {examples[0].lineno} does ({'a pair' if pairs else 'a single sentence'} file)"
            raise UserError(f"{path}:{lineno}: expected {expected}{what}, found {len(fields)} columns")
        texts, label = [f.strip() for f in fields[:-1]], fields[-1].strip()
        for side, text in zip(("sentence_a", "sentence_b") if pairs else ("sentence",), texts):
            if not text:
                raise UserError(f"{path}:{lineno}: empty {side}")
        if not label:
            raise UserError(f"{path}:{lineno}: empty label")
        if multi_label:
            label = check_label_list(label, f"{path}:{lineno}")
        examples.append(Example(join_pair(*texts) if pairs else texts[0], label, lineno))
    if not examples:
        raise UserError(f"{path}: no examples (only blank lines)")
    return examples


def read_splits(data_dir: Path, splits: Sequence[str] = ("train", "valid", "test"),
                multi_label: bool = False) -> dict[str, list[Example]]:
    """The data set's splits, all in train.txt's format (single sentences or pairs): a split
    in the other is refused at its first line."""
    out: dict[str, list[Example]] = {}
    for split in splits:
        pairs = out[splits[0]][0].pair if out else None
        out[split] = read_examples(Path(data_dir) / f"{split}.txt", pairs, multi_label)
    return out


def check_pairs(model: str, model_pairs: bool | None, path: str | Path, data_pairs: bool) -> None:
    """Refuse a model of single sentences given pair data, or the reverse (`model_pairs`
    None: a model that takes either)."""
    if model_pairs is not None and model_pairs != data_pairs:
        kind = {True: "sentence pairs", False: "single sentences"}
        raise UserError(f"{path}: holds {kind[data_pairs]}, but {model} takes {kind[model_pairs]}")


def is_pair_data(path: str | Path) -> bool:
    """Whether a data file holds sentence pairs (its first line has three columns)."""
    for _, line in _read_lines(Path(path), f"a {SINGLE_FORMAT} or {PAIR_FORMAT} file"):
        return line.count("\t") == 2
    raise UserError(f"{path}: no examples (only blank lines)")


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

def build_labels(examples: Sequence[Example], multi_label: bool = False) -> list[str]:
    """The sorted label set (sorted so ids do not depend on file order); multi-label: the
    sorted union of the examples' label lists."""
    found = {label for e in examples for label in e.labels} if multi_label else {e.label for e in examples}
    return sorted(found, key=_label_sort_key)


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


def label_ids(examples: Sequence[Example], labels: Sequence[str], path: str | Path,
              multi_label: bool = False) -> list[int] | list[list[int]]:
    """Map label strings to ids (multi-label: each example's list of ids, in its order); a
    label the training set never had is a UserError."""
    index = {label: i for i, label in enumerate(labels)}
    ids: list = []
    for e in examples:
        for label in (e.labels if multi_label else [e.label]):
            if label not in index:
                raise UserError(f"{path}:{e.lineno}: label {label!r} is not in the training labels {list(labels)}")
        ids.append([index[label] for label in e.labels] if multi_label else index[e.label])
    return ids


# preprocess.py's record beside label.txt: whether the data set is multi-label
LABEL_RECORD = "label.json"


def write_label_record(data_dir: Path, multi_label: bool) -> None:
    """Write `label.json`."""
    with atomic_path(Path(data_dir) / LABEL_RECORD) as tmp:
        tmp.write_text(json.dumps({"multi_label": multi_label}) + "\n", encoding="utf-8")


def recorded_multi_label(data_dir: Path) -> bool | None:
    """Whether preprocess.py recorded `data_dir` as multi-label (None: no record; data
    preprocessed before the record existed are single-label)."""
    path = Path(data_dir) / LABEL_RECORD
    if not path.is_file():
        return None
    record = read_json(path)
    if not isinstance(record, dict) or not isinstance(record.get("multi_label"), bool):
        raise UserError(f"{path}: expected {{\"multi_label\": true|false}} (rerun preprocess.py)")
    return record["multi_label"]


def data_multi_label(data_dir: Path, flag: bool) -> bool:
    """Whether a stage works on multi-label data: as preprocess.py recorded it (`--multi_label`
    need not be given again), or as the flag says where nothing is recorded. `--multi_label`
    against data recorded single-label is refused."""
    recorded = recorded_multi_label(data_dir)
    if recorded is None:
        return flag
    if flag and not recorded:
        raise UserError(f"{Path(data_dir) / LABEL_RECORD}: the data were preprocessed single-label; --multi_label "
                        "needs them preprocessed with --multi_label")
    return recorded


def model_data_multi_label(data_dir: Path, flag: bool, model: str, model_multi: bool, data: str | Path) -> bool:
    """Whether a stage that runs a model on `data_dir` works on label sets: as the data's record
    says, else as `--multi_label` or the model itself says (a classifier whose `problem_type` is
    `multi_label_classification` switches it on by itself); a model of the other kind than the
    data is refused (`check_multi_label`)."""
    multi = data_multi_label(data_dir, flag)
    if recorded_multi_label(data_dir) is None:
        multi = multi or model_multi
    check_multi_label(model, model_multi, data, multi)
    return multi


def check_multi_label(model: str, model_multi: bool, data: str | Path, data_multi: bool) -> None:
    """Refuse a multi-label model on single-label data, or the reverse."""
    if model_multi != data_multi:
        kind = {True: "multi-label", False: "single-label"}
        raise UserError(f"{data}: {kind[data_multi]} data, but {model} is {kind[model_multi]}")


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


def count_tokens(token_lists: Iterable[list[str]], counts: dict[str, int] | None = None) -> dict[str, int]:
    """How often each token occurs (added to `counts` when given)."""
    counts = {} if counts is None else counts
    for tokens in token_lists:
        for token in tokens:
            counts[token] = counts.get(token, 0) + 1
    return counts


def build_vocab(
    counts: dict[str, int], glove: dict[str, np.ndarray], pad_token: str, unk_token: str, dim: int,
    sep_token: str | None = None,
) -> tuple[list[str], np.ndarray]:
    """Vocabulary = `<pad>`, `<unk>`, for pair data `sep_token` (`<sep>`, between a pair's
    sides), then the data's tokens (`counts`) that GloVe knows, most frequent first (ties
    alphabetical). Returns the token list and its `[vocab, dim]` matrix; `<pad>` and `<sep>`
    are zeros (a pair student splits at `<sep>` and never reads its vector), `<unk>` the mean
    GloVe vector."""
    words = sorted((w for w in counts if w in glove and w != sep_token), key=lambda w: (-counts[w], w))
    specials = [pad_token, unk_token] + ([sep_token] if sep_token else [])
    vocab = [*specials, *words]
    matrix = np.zeros((len(vocab), dim), dtype=np.float32)
    if words:
        matrix[len(specials):] = np.stack([glove[w] for w in words])
        matrix[1] = matrix[len(specials):].mean(axis=0)
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


def data_labels(data_dir: Path, multi_label: bool = False) -> list[str]:
    """The data set's labels in id order: `label.txt` when preprocess.py wrote one, else the
    sorted labels of `train.txt` (what preprocess.py would write)."""
    path = Path(data_dir) / "label.txt"
    return read_labels(path) if path.exists() else \
        build_labels(read_examples(Path(data_dir) / "train.txt", multi_label=multi_label), multi_label)


# ---------------------------------------------------------------------------
# Id-mapped files
# ---------------------------------------------------------------------------

def format_target(target: int | Sequence[int]) -> str:
    """An id file's label field: a label id, or a multi-label example's comma-joined ids."""
    if isinstance(target, (int, np.integer)):
        return str(int(target))
    return LABEL_SEP.join(str(int(t)) for t in target)


def write_ids(path: str | Path, ids: Iterable[Sequence[int]], targets: Iterable[int | Sequence[int]]) -> None:
    """Write an id-mapped split file: `ids<TAB>label id` lines (multi-label: `ids<TAB>3,7`)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for seq, target in zip(ids, targets):
            f.write(" ".join(map(str, seq)) + "\t" + format_target(target) + "\n")


class IdsData:
    """An id-mapped file in memory, its sequences stored flat (`tokens` int32, sequence i is
    `tokens[offsets[i]:offsets[i + 1]]`): compact enough for millions of sentences.

    `labels`: gold label ids `[n]` (-1: none), or for multi-label data the gold label sets
    as a `[n, K]` float32 0/1 matrix (a row of -1: none; `has_gold`); `scores`: the teacher's `[n, K]` float32 logits
    (transfer sets only); `sources`: each line's source (transfer sets only)."""

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, labels: np.ndarray,
                 scores: np.ndarray | None = None, sources: np.ndarray | None = None):
        self.tokens, self.offsets, self.labels, self.scores, self.sources = tokens, offsets, labels, scores, sources

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def has_gold(self) -> np.ndarray:
        """`[n]` bool: whether each line carries a gold label (set)."""
        return self.labels[:, 0] >= 0 if self.labels.ndim == 2 else self.labels >= 0

    def seqs(self, indices: Iterable[int]) -> list[np.ndarray]:
        """The id sequences at `indices`."""
        return [self.tokens[self.offsets[i]:self.offsets[i + 1]] for i in indices]

    @classmethod
    def from_seqs(cls, seqs: Sequence[Sequence[int]], labels: np.ndarray, scores: np.ndarray | None = None,
                  sources: np.ndarray | None = None) -> "IdsData":
        """Id sequences packed flat, with their per-line arrays."""
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = (np.concatenate([np.asarray(s, dtype=np.int32) for s in seqs]) if len(seqs) else
                  np.zeros(0, dtype=np.int32))
        return cls(tokens, offsets, labels, scores, sources)

    def subset(self, indices: np.ndarray) -> "IdsData":
        """The lines at `indices`, in that order."""
        return IdsData.from_seqs(self.seqs(indices), self.labels[indices],
                                 None if self.scores is None else self.scores[indices],
                                 None if self.sources is None else self.sources[indices])


class _IdsBuilder:
    """Collects parsed lines into an IdsData: token ids in one growing int32 buffer (a few
    bytes a token, not an object a line, so millions of lines fit)."""

    def __init__(self, num_labels: int, multi_label: bool = False) -> None:
        self.num_labels, self.multi_label = num_labels, multi_label
        self.tokens = array("i")
        self.lengths = array("q")
        self.labels = array("q")
        self.label_sets: list[list[int] | None] = []  # multi-label: each line's label ids (None: no gold)
        self.scores: list[list[float]] = []
        self.sources: list[str] = []

    def add(self, seq: list[int], label: int | list[int] | None, scores: list[float] | None = None,
            source: str | None = None) -> None:
        self.tokens.extend(seq)
        self.lengths.append(len(seq))
        if self.multi_label:
            self.label_sets.append(label)  # type: ignore[arg-type]
        else:
            self.labels.append(label)  # type: ignore[arg-type]
        if scores is not None:
            self.scores.append(scores)
        if source is not None:
            self.sources.append(source)

    def build(self, soft: bool) -> IdsData:
        num_labels = self.num_labels
        offsets = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        np.cumsum(np.frombuffer(self.lengths, dtype=np.int64), out=offsets[1:])
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1, num_labels) if soft else None
        if self.multi_label:
            labels = np.zeros((len(self.label_sets), num_labels), dtype=np.float32)  # [n, K] 0/1
            for row, ids in enumerate(self.label_sets):
                if ids is None:
                    labels[row] = -1.0
                else:
                    labels[row, ids] = 1.0
        else:
            labels = np.frombuffer(self.labels, dtype=np.int64).copy()  # [n]
        return IdsData(np.frombuffer(self.tokens, dtype=np.int32).copy(), offsets, labels, scores,
                       np.asarray(self.sources) if soft else None)


def _parse_ids(text: str, path: Path, lineno: int) -> list[int]:
    try:
        seq = [int(x) for x in text.split()]
    except ValueError as e:
        raise UserError(f"{path}:{lineno}: token ids must be integers") from e
    if not seq or min(seq) < 0:
        raise UserError(f"{path}:{lineno}: expected one or more token ids >= 0")
    return seq


def _parse_label_id(text: str, num_labels: int, path: Path, lineno: int) -> int:
    if not text.lstrip("-").isdigit() or not -1 <= int(text) < num_labels:
        raise UserError(f"{path}:{lineno}: expected a label id in 0..{num_labels - 1} (or -1: none), got {text!r}")
    return int(text)


def _parse_label_field(text: str, num_labels: int, multi_label: bool, path: Path, lineno: int
                       ) -> int | list[int] | None:
    """An id file's label field: a label id, or (multi-label) comma-joined distinct label ids,
    None for `-1` (no gold)."""
    if not multi_label:
        return _parse_label_id(text, num_labels, path, lineno)
    if text == "-1":
        return None
    parts = text.split(LABEL_SEP)
    if not all(p.isdigit() and int(p) < num_labels for p in parts) or len(set(parts)) != len(parts):
        raise UserError(f"{path}:{lineno}: expected distinct comma-joined label ids in 0..{num_labels - 1} (or -1: "
                        f"none), got {text!r} (a single-label id file? rerun preprocess.py)")
    return [int(p) for p in parts]


def read_ids(path: str | Path, num_labels: int, multi_label: bool = False) -> IdsData:
    """Read an id-mapped split file (`ids<TAB>label id`, -1 allowed for no label; multi-label:
    comma-joined label ids)."""
    path = Path(path)
    rows = _IdsBuilder(num_labels, multi_label)
    for lineno, line in _read_lines(path, "an id-mapped file from preprocess.py ('ids<TAB>label id')"):
        fields = line.split("\t")
        if len(fields) != 2:
            raise UserError(f"{path}:{lineno}: expected 'ids<TAB>label id', found {len(fields) - 1} tabs")
        rows.add(_parse_ids(fields[0], path, lineno),
                 _parse_label_field(fields[1].strip(), num_labels, multi_label, path, lineno))
    return rows.build(soft=False)


# ---------------------------------------------------------------------------
# The transfer set: what the students learn the teacher from
# ---------------------------------------------------------------------------
# `transfer.txt` (label.py; the seed's `evaluate.py --augmented` runs label.py and writes it
# as `augmented.raw.pred`): one sentence a line, `sentence<TAB>source<TAB>gold<TAB>s_0 s_1 ...`:
# - source: `original` (a training sentence), `augmented` (made from one), `unlabeled` (the
#   user's unlabeled text) or `file` (scored outside, `--teacher_logits`);
# - gold: the label string of a training sentence (an `original`, or a `file` line whose
#   sentence is in train.txt; multi-label: its comma-joined label list), empty otherwise;
# - s_k: the teacher's logit for label id k (label.txt order), written with `repr` (exact).
# Its GloVe id file (`transfer.txt.ids`, preprocess.py) is `ids<TAB>source<TAB>gold id<TAB>s_0 ...`.

TRANSFER_SOURCES = ("original", "augmented", "unlabeled", "file")
# train.py --transfer: which sources a student learns from
TRANSFER_CHOICES = {"augmented": ("original", "augmented"), "unlabeled": ("original", "unlabeled", "file"),
                    "both": TRANSFER_SOURCES}


@dataclass
class TransferRow:
    """One line of a transfer set."""

    sentence: str
    source: str
    gold: str | None
    scores: list[float]
    lineno: int = 0


def format_scores(scores: Iterable[float]) -> str:
    """Scores as text that reads back bit for bit."""
    return " ".join(repr(float(x)) for x in scores)


def transfer_line(sentence: str, source: str, gold: str | None, scores: Iterable[float]) -> str:
    """One transfer-set line, with its newline."""
    return f"{sentence}\t{source}\t{gold or ''}\t{format_scores(scores)}\n"


def _parse_scores(values: list[str], num_labels: int, path: Path, lineno: int, text: str) -> list[float]:
    """One line's scores: `num_labels` finite numbers, else a UserError naming the line."""
    if len(values) != num_labels:
        raise UserError(f"{path}:{lineno}: expected {num_labels} teacher logits (one per label), found {len(values)}")
    try:
        row = [float(x) for x in values]
    except ValueError as e:
        raise UserError(f"{path}:{lineno}: teacher logits must be numbers, got {text!r}") from e
    if not all(math.isfinite(x) for x in row):
        raise UserError(f"{path}:{lineno}: teacher logits must be finite, got {text!r}")
    return row


def read_transfer(path: str | Path, num_labels: int) -> Iterator[TransferRow]:
    """Stream a transfer set (either form, see above); a malformed line is a UserError."""
    path = Path(path)
    for lineno, line in _read_lines(path, "a transfer set ('sentence<TAB>source<TAB>gold<TAB>logits')"):
        fields = line.rsplit("\t", 3)  # a pair's text has a tab of its own
        if len(fields) != 4:
            raise UserError(f"{path}:{lineno}: expected 'sentence<TAB>source<TAB>gold<TAB>logits' (label.py's transfer "
                            f"set), found {len(fields) - 1} tabs")
        sentence, source, gold, scores = fields[0], fields[1], fields[2] or None, fields[3]
        if source not in TRANSFER_SOURCES:
            raise UserError(f"{path}:{lineno}: unknown source {source!r}; expected one of {list(TRANSFER_SOURCES)}")
        if not all(side.strip() for side in sentence.split("\t")):
            raise UserError(f"{path}:{lineno}: empty sentence")
        yield TransferRow(sentence.strip(), source, gold, _parse_scores(scores.split(), num_labels, path, lineno,
                                                                        scores), lineno)


def transfer_ids_line(ids: Sequence[int], source: str, gold_id: int | Sequence[int], scores: Iterable[float]) -> str:
    """One line of a transfer set's id file, with its newline (`gold_id`: -1, a label id, or
    a multi-label line's label ids)."""
    return " ".join(map(str, ids)) + f"\t{source}\t{format_target(gold_id)}\t{format_scores(scores)}\n"


def count_transfer_ids(path: str | Path, sources: Sequence[str], limit: int) -> tuple[int, int]:
    """(lines, lines with a gold label) of a transfer id file's `sources`, counted up to
    `limit` lines (a big file is not read to its end). Lines are checked by `read_transfer_ids`."""
    lines = gold = 0
    for _, line in _read_lines(Path(path), "a transfer id file from preprocess.py --distill"):
        fields = line.split("\t")
        if len(fields) == 4 and fields[1] in sources:
            lines += 1
            gold += fields[2] != "-1"
            if lines >= limit:
                break
    return lines, gold


def read_transfer_ids(path: str | Path, num_labels: int, multi_label: bool = False) -> IdsData:
    """Read a transfer set's id file (`ids<TAB>source<TAB>gold id<TAB>logits`; multi-label:
    the gold ids comma-joined)."""
    path = Path(path)
    rows = _IdsBuilder(num_labels, multi_label)
    for lineno, line in _read_lines(path, "a transfer id file from preprocess.py --distill"):
        fields = line.split("\t")
        if len(fields) != 4 or fields[1] not in TRANSFER_SOURCES:
            raise UserError(f"{path}:{lineno}: expected 'ids<TAB>source<TAB>gold id<TAB>logits' (rerun preprocess.py "
                            "--distill)")
        rows.add(_parse_ids(fields[0], path, lineno),
                 _parse_label_field(fields[2], num_labels, multi_label, path, lineno),
                 _parse_scores(fields[3].split(), num_labels, path, lineno, fields[3]), fields[1])
    return rows.build(soft=True)


# ---------------------------------------------------------------------------
# Teacher scores from any source (`--teacher_logits file.jsonl`)
# ---------------------------------------------------------------------------
# One JSON object a line: {"text": "...", "logits": {"<label>": score, ...}} or
# {"text": "...", "probs": {...}}, with a score for every label of the data (names mapped as a
# teacher's are: `teacher_columns`). Probabilities p enter as the logits log(max(p, 1e-6)),
# centred to sum to 0: softmax gives back p (to 1e-6), so KL and cross-entropy see p itself,
# and MSE sees log-probability differences. Multi-label (`multi_label`): each label's probability
# stands alone (they need not sum to 1) and enters as its logit log(p / (1 - p)), p clipped to
# [1e-6, 1 - 1e-6], so a sigmoid gives back p.

PROB_FLOOR = 1e-6


def read_teacher_scores(path: str | Path, labels: Sequence[str], label_map: dict[str, str],
                        pairs: bool | None = None, multi_label: bool = False
                        ) -> Iterator[tuple[int, str, list[float]]]:
    """Stream (line number, text, logits in `labels` order) from a teacher-scores JSONL file;
    a pair's record has `text_b` beside `text` (`pairs`: whether the data are pairs; None: as
    the first record).
    Refused, naming the file and line: not JSON, no text, a missing or unknown label, a
    non-finite score, probabilities outside [0, 1] or (single-label) not summing to 1 within 1e-3."""
    path = Path(path)
    columns_for: dict[tuple[str, ...], list[int]] = {}
    for lineno, line in _read_lines(path, "teacher scores, one JSON object a line"):
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from e
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected a JSON object with 'text' and 'logits' or 'probs'")
        kinds = [k for k in ("logits", "probs") if k in record]
        unknown = sorted(set(record) - {"text", "text_b", "logits", "probs"})
        if unknown or len(kinds) != 1 or not isinstance(record[kinds[0]], dict):
            raise UserError(f"{where}: expected keys 'text' (and 'text_b' for a pair) and one of 'logits'/'probs' (an "
                            "object label -> score)" + (f"; unknown key {unknown[0]!r}" if unknown else ""))
        if pairs is None:
            pairs = "text_b" in record
        if pairs != ("text_b" in record):
            raise UserError(f"{where}: " + ("no 'text_b': the file's first record and the data are sentence pairs"
                                            if pairs else "'text_b' in a file of single sentences"))
        sides = [record.get(k) for k in (("text", "text_b") if pairs else ("text",))]
        for key, side in zip(("text", "text_b"), sides):
            if not isinstance(side, str) or not side.strip() or "\t" in side or "\n" in side:
                raise UserError(f"{where}: {key!r} must be a non-empty string without tabs or newlines")
        text = join_pair(*(side.strip() for side in sides)) if pairs else sides[0]
        kind, scores = kinds[0], record[kinds[0]]
        names = tuple(sorted(scores))
        if names not in columns_for:
            try:
                columns_for[names] = teacher_columns(names, labels, label_map, f"{where}: its {kind}")
            except UserError as e:
                missing = sorted(set(labels) - {label_map.get(n, n) for n in names})
                extra = sorted({label_map.get(n, n) for n in names} - set(labels))
                detail = f"missing label {missing[0]!r}" if missing else f"unknown label {extra[0]!r}" if extra else ""
                raise UserError(f"{where}: {detail + '; ' if detail else ''}{e}") from e
        values = [scores[n] for n in names]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
            raise UserError(f"{where}: every score must be a finite number, got {scores}")
        if kind == "probs" and multi_label:
            if any(not 0.0 <= v <= 1.0 for v in values):
                raise UserError(f"{where}: probabilities must lie in [0, 1], got {scores}")
            clipped = [min(max(v, PROB_FLOOR), 1.0 - PROB_FLOOR) for v in values]
            values = [math.log(p / (1.0 - p)) for p in clipped]
        elif kind == "probs":
            if any(not 0.0 <= v <= 1.0 for v in values) or abs(sum(values) - 1.0) > 1e-3:
                raise UserError(f"{where}: probabilities must lie in [0, 1] and sum to 1 (within 1e-3), got "
                                f"{sum(values):.6g} (label sets, each label's own probability: --multi_label)")
            logs = [math.log(max(v, PROB_FLOOR)) for v in values]
            values = [v - sum(logs) / len(logs) for v in logs]
        yield lineno, text.strip(), [float(values[c]) for c in columns_for[names]]


# ---------------------------------------------------------------------------
# Training batches
# ---------------------------------------------------------------------------

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


def read_sentences(path: str | Path, pairs: bool = False) -> Iterator[tuple[int, str]]:
    """Stream unlabeled text (a file, or stdin for '-'): (line number, sentence), one sentence
    a line (the text before a tab when a line has one), or with `pairs` one pair a line (the
    first two columns, both non-empty, as one text); blank lines skipped. The one reader of
    sentence files: label.py's unlabeled text, predict.py's input."""
    for lineno, line in _read_lines(Path(path), "a sentence pair a line, 'sentence_a<TAB>sentence_b'" if pairs
                                    else "unlabeled text, one sentence a line"):
        fields = [f.strip() for f in line.split("\t")]
        if not pairs:
            if len(fields) > 2:
                raise UserError(f"{path}:{lineno}: {len(fields)} columns, a sentence pair and its label? Expected one "
                                "sentence a line (a 'sentence<TAB>label' line uses the sentence): this is for single "
                                "sentences")
            if fields[0]:
                yield lineno, fields[0]
            continue
        if len(fields) < 2 or not fields[0] or not fields[1]:
            raise UserError(f"{path}:{lineno}: expected a sentence pair, 'sentence_a<TAB>sentence_b' (both sides "
                            f"non-empty), found {'one column' if len(fields) < 2 else 'an empty side'}")
        yield lineno, join_pair(fields[0], fields[1])
