"""The labeling stage: one transfer set (dataset.py's format), scored by the teacher.

The sentences come, in this order, from the training set (`original`, with their gold
labels), the augmented file (`augmented`) and the user's unlabeled text (`unlabeled`), or,
with no teacher at all, from a file of teacher scores made elsewhere (`file`). Every source
is read as a stream. A line is dropped when the students would see it as a sentence already
taken (a duplicate) or as a sentence of valid.txt or test.txt (no test leakage), both
compared after the students' word tokenization and lower-casing; the counts are logged and
returned.

Scoring runs chunk by chunk: each chunk's sentences are tokenized by the teacher, cut into
length-sorted batches, scored (under torchrun, rank r scores batches r, r + world, ... and
rank 0 gathers), put in the data's label order by name, and appended to
`<output>.partial` with an fsync. A run killed and started again with the same inputs
continues from the last whole chunk, and gives the same bytes as an uninterrupted run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from config import LABEL_RUNTIMES
from dataset import (
    read_examples,
    read_sentences,
    read_teacher_scores,
    transfer_line,
)
from inference import Predictor, decision_agreement, logits_for_batches, predict_logits, session_forward
from runtime import OrtSession, WordTokenizer, length_sorted_batches, near_ties
from util import DistContext, UserError, atomic_write_text

logger = logging.getLogger(__name__)


@dataclass
class SourceCounts:
    """What happened to one source's lines."""

    read: int = 0
    kept: int = 0
    duplicates: int = 0  # the same student input as a line kept before
    in_valid_or_test: int = 0  # dropped: the students would see a valid or test sentence
    with_gold: int = 0  # kept lines that carry a gold label


@dataclass
class TransferPlan:
    """Where a transfer set's sentences come from, and how lines are compared."""

    train: Path | None = None  # training sentences with gold labels (None: none)
    augmented: Path | None = None  # `sentence<TAB>label` lines made by augment_data.py
    unlabeled: Path | None = None  # one sentence a line
    teacher_scores: Path | None = None  # JSONL scores made elsewhere (then nothing else)
    # with teacher_scores: a labeled file (train.txt) whose labels go with the scored sentences
    # the students would see as the same, so a student can mix gold labels in (train.py --alpha)
    gold_for_scores: Path | None = None
    held_out: list[Path] = field(default_factory=list)  # valid/test files no line may equal
    pairs: bool = False  # sentence pairs (two columns of unlabeled text, `text_b` in scores)
    multi_label: bool = False  # label lists in the labeled files; scores files' probabilities per label
    word_tokenizer: WordTokenizer = field(default_factory=WordTokenizer)  # the students'

    def inputs(self) -> list[Path]:
        return [p for p in (self.train, self.augmented, self.unlabeled, self.teacher_scores, self.gold_for_scores,
                            *self.held_out) if p]


@dataclass
class Item:
    """One sentence of the transfer set, before scoring (`scores` set for teacher-score files)."""

    sentence: str
    source: str
    gold: str | None
    scores: list[float] | None = None


def transfer_items(plan: TransferPlan, labels: list[str], label_map: dict[str, str],
                   counts: dict[str, SourceCounts]) -> Iterator[Item]:
    """The plan's sentences in order, without duplicates and valid/test sentences (a pair in
    either order: `WordTokenizer.key`); `counts` is filled as the stream is read."""
    def key(sentence: str) -> int:
        # a stable 64-bit digest of what the students see (the same on every torchrun rank)
        return int.from_bytes(hashlib.blake2b(plan.word_tokenizer.key(sentence).encode(), digest_size=8).digest(),
                              "little")

    multi = plan.multi_label
    held_out = {key(e.sentence) for path in plan.held_out for e in read_examples(path, multi_label=multi)}
    seen: set[int] = set()

    def keep(item: Item) -> bool:
        c = counts.setdefault(item.source, SourceCounts())
        c.read += 1
        h = key(item.sentence)
        if item.source != "original" and h in held_out:
            c.in_valid_or_test += 1
            return False
        if h in seen:
            c.duplicates += 1
            return False
        seen.add(h)
        c.kept += 1
        c.with_gold += item.gold is not None
        return True

    def stream() -> Iterator[Item]:
        if plan.teacher_scores:
            gold = {key(e.sentence): e.label for e in read_examples(plan.gold_for_scores, multi_label=multi)} \
                if plan.gold_for_scores else {}
            for _, text, scores in read_teacher_scores(plan.teacher_scores, labels, label_map, plan.pairs, multi):
                yield Item(text, "file", gold.get(key(text)), scores)
            return
        if plan.train:
            # a multi-label gold is the canonical comma-joined list (read_examples)
            yield from (Item(e.sentence, "original", e.label) for e in read_examples(plan.train, multi_label=multi))
        if plan.augmented:
            yield from (Item(e.sentence, "augmented", None) for e in read_examples(plan.augmented, plan.pairs))
        if plan.unlabeled:
            yield from (Item(sentence, "unlabeled", None) for _, sentence in read_sentences(plan.unlabeled,
                                                                                             plan.pairs))

    return (item for item in stream() if keep(item))


def chunks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class TeacherScorer:
    """A teacher's logits for a list of sentences, columns in the data's label order
    (`columns` from dataset.teacher_columns). Under torchrun every rank scores its share of
    the length-sorted batches and rank 0 receives all rows (other ranks get None)."""

    def __init__(self, predictor: Predictor, columns: list[int], batch_size: int, amp: torch.dtype | None,
                 dist_ctx: DistContext, rescore_margin: float = 0.0):
        self.predictor, self.columns, self.batch_size, self.amp, self.dist = (predictor, columns, batch_size, amp,
                                                                             dist_ctx)
        # with a runtime other than PyTorch: sentences whose top two logits lie closer than this (a
        # multi-label teacher: with a logit closer than this to 0) are scored again by the fp32
        # PyTorch model (the near-ties are where int8 flips labels)
        self.rescore_margin = rescore_margin if predictor.runtime != "pytorch" else 0.0
        self.pieces = self.scored = self.rescored = 0  # by this rank (for the log)

    def __call__(self, sentences: list[str]) -> np.ndarray | None:
        ids = self.predictor.encode_batch(sentences)
        batches = length_sorted_batches([len(s) for s in ids], self.batch_size)
        mine = batches[self.dist.rank::self.dist.world_size]
        indices = np.array([i for batch in mine for i in batch], dtype=np.int64)
        self.pieces += sum(len(ids[i]) for i in indices)
        self.scored += len(indices)
        rows = (logits_for_batches(self.predictor.forward, ids, mine, self.predictor.pad_id, self.predictor.device,
                                   self.amp, progress=False).numpy() if mine else
                np.zeros((0, len(self.columns)), dtype=np.float32))  # [len(indices), K]
        if self.rescore_margin and len(rows):
            close = near_ties(rows, self.rescore_margin, self.predictor.multi_label)
            if len(close):
                picked = [int(indices[i]) for i in close]
                again = length_sorted_batches([len(ids[i]) for i in picked], self.batch_size)
                fp32 = logits_for_batches(self.predictor.model, [ids[i] for i in picked], again,
                                          self.predictor.pad_id, self.predictor.device, progress=False).numpy()
                rows[close[[i for batch in again for i in batch]]] = fp32
                self.rescored += len(close)
        if self.dist.enabled:
            import torch.distributed as dist

            gathered: list | None = [None] * self.dist.world_size if self.dist.is_main else None
            dist.gather_object((indices, rows), gathered, dst=0)
            if not self.dist.is_main:
                return None
            indices = np.concatenate([g[0] for g in gathered])
            rows = np.concatenate([g[1] for g in gathered])
        out = np.empty((len(sentences), rows.shape[1]), dtype=np.float32)
        out[indices] = rows
        return out[:, self.columns]  # [n, K] in the data's label order


def choose_runtime(predictor: Predictor, sentences: list[str], batch_size: int, num_threads: int,
                   min_agreement: float, choosable: tuple[str, ...] = LABEL_RUNTIMES[1:]) -> list[dict]:
    """Score `sentences` (a sample of the transfer set) with fp32 PyTorch (the reference) and
    each `choosable` ONNX Runtime variant on the CPU, and switch `predictor` to the fastest
    choosable one whose decisions (`decision_agreement`) agree with the reference on at least `min_agreement` of
    them. Returns the trials (runtime, sentences/s, agreement, chosen)."""
    import tempfile

    cpu = torch.device("cpu")
    ids = predictor.encode_batch(sentences)

    def trial(forward) -> tuple[torch.Tensor, float]:
        predict_logits(forward, ids[:batch_size], batch_size, predictor.pad_id, cpu, progress=False)  # warm-up
        start = time.perf_counter()
        logits = predict_logits(forward, ids, batch_size, predictor.pad_id, cpu, progress=False)  # [n, K]
        return logits, len(ids) / (time.perf_counter() - start)

    reference, rate = trial(predictor.model)
    trials = [{"runtime": "pytorch", "sentences_per_s": rate, "agreement": 1.0, "max_abs_logit_diff": 0.0}]
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = predictor.export_onnx(Path(tmp) / "teacher.onnx", quantize="onnxruntime-int8" in choosable)
        for runtime, path in zip(("onnxruntime", "onnxruntime-int8"), paths):
            if runtime not in choosable:
                continue
            sessions[runtime] = session_forward(OrtSession(path, num_threads))  # the model is read into memory
            logits, rate = trial(sessions[runtime])
            trials.append({"runtime": runtime, "sentences_per_s": rate,
                           "agreement": decision_agreement(logits, reference, predictor.multi_label),
                           "max_abs_logit_diff": float((logits - reference).abs().max())})
    passing = [t for t in trials if t["runtime"] in choosable and t["agreement"] >= min_agreement]
    best = max(passing, key=lambda t: t["sentences_per_s"])
    for t in trials:
        t["chosen"] = t is best
        logger.info("[Runtime] %-16s %6.0f sentences/s, decision agreement with fp32 PyTorch %.2f%% (max |logit "
                    "difference| %.3g)%s", t["runtime"], t["sentences_per_s"], 100 * t["agreement"],
                    t["max_abs_logit_diff"], " <- chosen: the fastest at or above the "
                    f"{100 * min_agreement:.1f}% agreement" if t is best else "")
    if best["runtime"] != "pytorch":
        predictor.forward = sessions[best["runtime"]]
        predictor.runtime = best["runtime"]
    return trials


def _resume_point(partial: Path, stamp: Path, fingerprint: str, chunk: int) -> int:
    """Lines of an interrupted run's output to keep: its whole chunks, when it had the same
    inputs (else none). The file is cut back to them."""
    if not partial.exists() or not stamp.exists() or stamp.read_text(encoding="utf-8") != fingerprint:
        partial.unlink(missing_ok=True)
        atomic_write_text(stamp, fingerprint)
        return 0
    with open(partial, "rb") as f:
        data = f.read()
    lines = data.count(b"\n")
    keep = lines // chunk * chunk
    end = 0
    for _ in range(keep):
        end = data.index(b"\n", end) + 1
    with open(partial, "r+b") as f:
        f.truncate(end)
    return keep


def write_transfer_set(items: Iterable[Item], output: Path, fingerprint: str, chunk: int,
                       scorer: Callable[[list[str]], np.ndarray | None] | None,
                       dist_ctx: DistContext, progress_total: int | None = None) -> dict:
    """Score `items` chunk by chunk and write the transfer set to `output` (see the module
    docstring). `scorer` is None when the items carry their scores. Returns the timing."""
    partial = Path(f"{output}.partial")
    stamp = Path(f"{output}.partial.inputs")
    skip = _resume_point(partial, stamp, fingerprint, chunk) if dist_ctx.is_main else 0
    if dist_ctx.enabled:
        import torch.distributed as dist

        shared = [skip]
        dist.broadcast_object_list(shared, src=0)
        skip = shared[0]
    if skip:
        logger.info("[Resume] %d sentences already labeled in %s", skip, partial)
    start, scored = time.perf_counter(), 0
    # a context: the bar ends its line even when a bad input line stops the run
    with tqdm(total=progress_total, desc="label", unit="sent", disable=not dist_ctx.is_main) as bar:
        for index, part in enumerate(chunks(items, chunk)):
            if index * chunk < skip:
                bar.update(len(part))
                continue
            scores = scorer([item.sentence for item in part]) if scorer else np.array([item.scores for item in part])
            if dist_ctx.is_main:
                with open(partial, "a", encoding="utf-8") as f:
                    f.write("".join(transfer_line(item.sentence, item.source, item.gold, row)
                                    for item, row in zip(part, scores)))
                    f.flush()
                    os.fsync(f.fileno())
            scored += len(part)
            bar.update(len(part))
    seconds = time.perf_counter() - start
    if not dist_ctx.is_main:
        return {}
    if not partial.exists():
        raise UserError(f"{output}: the transfer set would be empty (every line was dropped or there was none)")
    os.replace(partial, output)
    stamp.unlink(missing_ok=True)
    return {"scored": scored, "resumed_from": skip, "seconds": seconds,
            "sentences_per_s": scored / seconds if seconds else None}


def label(plan: TransferPlan, output: Path, labels: list[str], label_map: dict[str, str],
          scorer: TeacherScorer | None, chunk: int, dist_ctx: DistContext, fingerprint_extra: dict) -> dict | None:
    """Build the plan's transfer set at `output` and return the results (None on ranks > 0)."""
    counts: dict[str, SourceCounts] = {}
    fingerprint = json.dumps({
        "inputs": {str(p): [p.stat().st_size, p.stat().st_mtime_ns] for p in plan.inputs()},
        "labels": labels, "label_map": label_map, "chunk": chunk,
        "word_tokenizer": [plan.word_tokenizer.kind, plan.word_tokenizer.lowercase], **fingerprint_extra,
    }, sort_keys=True)
    items = transfer_items(plan, labels, label_map, counts)
    timing = write_transfer_set(items, output, fingerprint, chunk, scorer, dist_ctx)
    if not dist_ctx.is_main:
        return None
    kept = sum(c.kept for c in counts.values())
    for source, c in counts.items():
        logger.info("[Transfer] %s: %d lines read, %d kept (%d with a gold label), %d duplicates dropped, %d dropped "
                    "as valid/test sentences", source, c.read, c.kept, c.with_gold, c.duplicates, c.in_valid_or_test)
    if scorer is not None:
        pieces = scorer.pieces / max(1, scorer.scored)
        logger.info("[Labeled] %d sentences (%.1f word pieces each) in %.1fs (%.0f sentences/s) -> %s",
                    timing["scored"], pieces, timing["seconds"], timing["sentences_per_s"] or 0, output)
        timing["word_pieces_per_sentence"] = pieces
    return {"output": str(output), "sentences": kept, "sources": {s: asdict(c) for s, c in counts.items()},
            "teacher": "file" if plan.teacher_scores else "model", **timing}
