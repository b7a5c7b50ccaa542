"""Teacher labeling: logits for every line of an augmented file, written as a `.pred` file
(dataset.py's format), resumable after a kill and sharded over torchrun ranks."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dataset import (
    TOKENIZATION_RECORD,
    append_partial_predictions,
    length_sorted_batches,
    read_examples,
    read_ids,
    read_partial_predictions,
    read_tokenization_record,
    write_predictions,
)
from inference import Predictor, logits_for_batches
from util import DistContext, UserError

logger = logging.getLogger(__name__)


def label_file(predictor: Predictor, raw_path: Path, batch_size: int, amp_dtype: torch.dtype | None,
               chunk_sentences: int, dist_ctx: DistContext | None = None) -> dict | None:
    """Write `<raw_path>.pred`: one line of teacher logits per line of `raw_path`, same order.

    Ids come from `<raw_path>.fs` (preprocess.py --augmented) when it exists, else from the
    teacher's tokenizer. The same length-sorted batches as a single process; under torchrun
    rank r takes batches r, r + world, ...: each sentence meets the same batch, so the logits
    match. Progress is appended to `<pred>.partial.<rank>` every `chunk_sentences`, and a run
    with the same inputs, killed, resumes from it. Returns the results (None on ranks > 0).
    """
    dist_ctx = dist_ctx or DistContext()
    examples = read_examples(raw_path)
    fs_path = Path(f"{raw_path}.fs")
    if fs_path.exists():
        record = read_tokenization_record(raw_path.parent)
        if record is not None and record["lowercase"] != predictor.lowercase:
            raise UserError(f"{fs_path} was made with lower-casing {'on' if record['lowercase'] else 'off'} "
                            f"({raw_path.parent / TOKENIZATION_RECORD}), but the teacher {predictor.path} was trained "
                            f"with it {'on' if predictor.lowercase else 'off'}; rerun preprocess.py --augmented with "
                            "the teacher's setting")
        ids = read_ids(fs_path, len(predictor.labels), soft=False).ids
        if len(ids) != len(examples):
            raise UserError(f"{fs_path}: {len(ids)} lines but {raw_path} has {len(examples)}; rerun preprocess.py "
                            "--augmented")
    else:
        logger.info("%s not found: tokenizing %s", fs_path, raw_path)
        ids = predictor.encode([e.sentence for e in examples])
    start = time.perf_counter()
    batches = length_sorted_batches([len(s) for s in ids], batch_size)
    mine = batches[dist_ctx.rank::dist_ctx.world_size]
    pred_path = Path(f"{raw_path}.pred")
    partial = Path(f"{pred_path}.partial.{dist_ctx.rank}")
    weights = Path(predictor.path) / "model.safetensors"
    fingerprint = (f"lines={len(ids)} batch={batch_size} world={dist_ctx.world_size} amp={amp_dtype} "
                   f"runtime={predictor.runtime} teacher={weights.stat().st_size}:{weights.stat().st_mtime_ns}")
    logits = np.zeros((len(ids), len(predictor.labels)), dtype=np.float32)  # [n, K]
    labeled = np.zeros(len(ids), dtype=bool)
    for i, row in read_partial_predictions(partial, fingerprint, len(predictor.labels)).items():
        logits[i], labeled[i] = row, True
    if labeled.any():
        logger.info("[Resume] %d sentences already labeled in %s", int(labeled.sum()), partial)
    todo = [b for b in mine if not labeled[b].all()]
    per_chunk = max(1, chunk_sentences // batch_size)
    bar = tqdm(total=sum(map(len, todo)), desc="label", disable=not dist_ctx.is_main)
    for first in range(0, len(todo), per_chunk):
        part = todo[first:first + per_chunk]
        indices = [i for batch in part for i in batch]
        rows = logits_for_batches(predictor.forward, ids, part, predictor.pad_id, predictor.device, amp_dtype,
                                  progress=False).numpy()  # [len(indices), K]
        append_partial_predictions(partial, fingerprint, indices, rows)
        logits[indices], labeled[indices] = rows, True
        bar.update(len(indices))
    bar.close()
    if dist_ctx.enabled:
        import torch.distributed as dist

        mine_indices = np.array([i for batch in mine for i in batch], dtype=np.int64)
        gathered: list | None = [None] * dist_ctx.world_size if dist_ctx.is_main else None
        dist.gather_object((mine_indices, logits[mine_indices]), gathered, dst=0)
        if not dist_ctx.is_main:
            partial.unlink(missing_ok=True)
            return None
        for indices, rows in gathered:
            logits[indices] = rows
    seconds = time.perf_counter() - start
    write_predictions(pred_path, [e.sentence for e in examples], logits)
    partial.unlink(missing_ok=True)
    pieces = sum(map(len, ids))
    logger.info("[Labeled] %d sentences (%.1f word pieces each) in %.1fs (%.0f sentences/s) -> %s", len(examples),
                pieces / len(ids), seconds, len(examples) / seconds, pred_path)
    return {"labeled": len(examples), "seconds": seconds, "sentences_per_s": len(examples) / seconds,
            "word_pieces_per_sentence": pieces / len(ids), "batch_size": batch_size,
            "threads": torch.get_num_threads(), "device": str(predictor.device), "processes": dist_ctx.world_size,
            "output": str(pred_path)}
