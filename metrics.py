"""Scores of a classifier's outputs, in numpy (no torch): macro-F1, and how well its
probabilities are calibrated: the negative log-likelihood (NLL), the expected calibration
error (ECE), and the one temperature T that calibrates them (temperature scaling, Guo et al.
2017: probabilities softmax(logits / T), T fitted on valid by minimising the NLL; the argmax,
so the accuracy, does not change).
"""
from __future__ import annotations

import math

import numpy as np

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
