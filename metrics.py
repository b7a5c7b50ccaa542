"""Scores of a classifier's outputs, in numpy (no torch): macro-F1, the multi-label scores and
thresholds (micro- and macro-F1, exact match, Jaccard; `choose_thresholds`), and how well its
probabilities are calibrated: the negative log-likelihood (NLL), the expected calibration
error (ECE), and the one temperature T that calibrates them (temperature scaling, Guo et al.
2017: probabilities softmax(logits / T), T fitted on valid by minimising the NLL; the argmax,
so the accuracy, does not change).
"""
from __future__ import annotations

import logging
import math

import numpy as np

from runtime import multilabel_decisions, sigmoid

logger = logging.getLogger(__name__)

ECE_BINS = 15  # equal-width confidence bins, as Guo et al. report ECE


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of `[n, K]` logits (float64)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def nll(logits: np.ndarray, gold: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the gold labels `[n]` under softmax(logits / T)."""
    log_p = log_softmax(np.asarray(logits, dtype=np.float64) / temperature)  # [n, K]
    return float(-log_p[np.arange(len(gold)), gold].mean())


def fit_temperature(logits: np.ndarray, gold: np.ndarray, low: float = 0.05, high: float = 20.0,
                    iterations: int = 80) -> float:
    """The T in [low, high] that minimises `nll(logits, gold, T)`: a golden-section search on
    log T (the NLL is convex in 1/T, so it has one minimum on the interval)."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = math.log(low), math.log(high)
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(logits, gold, math.exp(c)), nll(logits, gold, math.exp(d))
    for _ in range(iterations):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(logits, gold, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(logits, gold, math.exp(d))
    return math.exp((a + b) / 2)


def reliability(probs: np.ndarray, gold: np.ndarray, bins: int = ECE_BINS) -> list[tuple[float, float, float]]:
    """For each non-empty equal-width bin of the top probability, (0, 1/bins], ...: (mean top
    probability, accuracy, share of the examples). `probs` `[n, K]`."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)  # [n]
    correct = probs.argmax(axis=1) == np.asarray(gold)  # [n]
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)  # [n]: the bin of each
    return [(float(confidence[index == b].mean()), float(correct[index == b].mean()), float((index == b).mean()))
            for b in range(bins) if (index == b).any()]


def expected_calibration_error(probs: np.ndarray, gold: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over the bins of `reliability` of |accuracy - mean top probability|, weighted by the
    bin's share of the examples."""
    return float(sum(share * abs(accuracy - confidence) for confidence, accuracy, share in
                     reliability(probs, gold, bins)))


def calibration(logits: np.ndarray, gold: np.ndarray, temperature: float) -> dict:
    """NLL and ECE of `[n, K]` logits as they are and divided by `temperature`."""
    scaled = np.exp(log_softmax(np.asarray(logits, dtype=np.float64) / temperature))
    return {"temperature": temperature, "nll": nll(logits, gold), "nll_calibrated": nll(logits, gold, temperature),
            "ece": expected_calibration_error(np.exp(log_softmax(logits)), gold),
            "ece_calibrated": expected_calibration_error(scaled, gold)}


def macro_f1(predicted: np.ndarray, gold: np.ndarray, num_labels: int) -> float:
    """Unweighted mean over classes of F1 (a class never predicted nor present counts 0)."""
    scores = []
    for k in range(num_labels):
        tp = int(((predicted == k) & (gold == k)).sum())
        fp = int(((predicted == k) & (gold != k)).sum())
        fn = int(((predicted != k) & (gold == k)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return sum(scores) / num_labels


# ---------------------------------------------------------------------------
# Multi-label: K yes/no decisions per example
# ---------------------------------------------------------------------------

MIN_POSITIVES = 20  # a label with fewer positives in valid gets the global threshold (too few to fit its own)
THRESHOLD_GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)  # [99] the thresholds tried: 0.01 .. 0.99


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """F1 = 2tp / (2tp + fp + fn), 0 where nothing was predicted nor present."""
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def multilabel_metrics(predicted: np.ndarray, gold: np.ndarray, labels: list[str]) -> dict:
    """Scores of `[n, K]` predicted label sets against the gold sets (both 0/1 or bool):
    micro-F1 (the counts pooled over labels), macro-F1 (the mean of the K labels' F1, a label
    never predicted nor present counting 0), exact match (the share of examples whose set is
    exactly right: subset accuracy), the Jaccard index (|pred & gold| / |pred | gold| per
    example, averaged; 1 where both are empty), and per label precision, recall, F1 and support."""
    pred, true = np.asarray(predicted).astype(bool), np.asarray(gold).astype(bool)  # [n, K]
    tp = (pred & true).sum(axis=0).astype(np.float64)  # [K]
    fp = (pred & ~true).sum(axis=0).astype(np.float64)
    fn = (~pred & true).sum(axis=0).astype(np.float64)
    f1 = _f1(tp, fp, fn)  # [K]
    union = (pred | true).sum(axis=1)  # [n]
    jaccard = np.where(union > 0, (pred & true).sum(axis=1) / np.maximum(union, 1), 1.0)
    per_label = {
        label: {"precision": float(tp[k] / (tp[k] + fp[k])) if tp[k] + fp[k] else 0.0,
                "recall": float(tp[k] / (tp[k] + fn[k])) if tp[k] + fn[k] else 0.0,
                "f1": float(f1[k]), "support": int(tp[k] + fn[k])}
        for k, label in enumerate(labels)}
    return {"micro_f1": float(_f1(tp.sum(), fp.sum(), fn.sum())), "macro_f1": float(f1.mean()),
            "exact_match": float((pred == true).all(axis=1).mean()), "jaccard": float(jaccard.mean()),
            "per_label": per_label}


def choose_thresholds(probs: np.ndarray, gold: np.ndarray, min_positives: int = MIN_POSITIVES
                      ) -> tuple[list[float], float]:
    """Decision thresholds for `[n, K]` sigmoid probabilities, chosen on valid (`gold` `[n, K]`
    0/1): for each label with at least `min_positives` positives, the grid threshold that
    maximises that label's F1; for the others, the one global threshold that maximises
    micro-F1 over all labels. Ties go to the middle of the tying run. Returns (the K thresholds, the
    global one)."""
    probs, true = np.asarray(probs, dtype=np.float64), np.asarray(gold).astype(bool)  # [n, K]
    grid = THRESHOLD_GRID  # [G]
    pred = probs[None, :, :] >= grid[:, None, None]  # [G, n, K]
    tp = (pred & true[None]).sum(axis=1).astype(np.float64)  # [G, K]
    fp = (pred & ~true[None]).sum(axis=1).astype(np.float64)
    fn = true.sum(axis=0)[None, :] - tp
    best_global = _middle_best(grid, _f1(tp.sum(axis=1), fp.sum(axis=1), fn.sum(axis=1)))
    per_label = [_middle_best(grid, column) for column in _f1(tp, fp, fn).T]  # K thresholds
    enough = true.sum(axis=0) >= min_positives  # [K]
    return [t if ok else best_global for t, ok in zip(per_label, enough)], best_global


def _middle_best(grid: np.ndarray, scores: np.ndarray) -> float:
    """The grid value at the middle of those with the best score (`[G]` each): ties are
    usually a run of thresholds between two examples' probabilities, and its middle keeps
    the widest margin to both."""
    best = np.flatnonzero(scores == scores.max())
    return float(grid[best[len(best) // 2]])


def multilabel_scores(logits: np.ndarray, gold_ids: list[list[int]], labels: list[str],
                      thresholds: list[float] | None) -> dict:
    """A multi-label model's test scores: its label sets (`runtime.multilabel_decisions` at its
    thresholds, columns in the data's label order) against the gold sets; micro- and macro-F1
    (the headline), exact match, Jaccard, and per label precision, recall and F1, logged."""
    gold = np.zeros(logits.shape, dtype=bool)  # [n, K]
    for row, ids in enumerate(gold_ids):
        gold[row, ids] = True
    predicted = multilabel_decisions(sigmoid(logits), thresholds)  # [n, K]
    scores = multilabel_metrics(predicted, gold, labels)
    logger.info("[Multi-label] micro-F1 %.4f, macro-F1 %.4f, exact match %.4f, Jaccard %.4f (%s)",
                scores["micro_f1"], scores["macro_f1"], scores["exact_match"], scores["jaccard"],
                "thresholds chosen on valid" if thresholds is not None else "threshold 0.5")
    for label, s in scores["per_label"].items():
        logger.info("[Label] %-16s precision %.4f, recall %.4f, F1 %.4f, support %d", label, s["precision"],
                    s["recall"], s["f1"], s["support"])
    return {**scores, "thresholds": thresholds,
            "predictions": [[labels[k] for k in np.flatnonzero(row)] for row in predicted]}
