"""Compare two transfer sets of the same sentences (say, a teacher's logits from PyTorch fp32
and from int8 ONNX Runtime, `label.py --runtime`): how often the argmax agrees and how far the
logits move.

    python scripts/compare_logits.py data/sst2/transfer.txt /tmp/transfer-int8.txt
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataset import read_transfer  # noqa: E402
from util import UserError, run_main  # noqa: E402


def compare(a: Path, b: Path) -> dict:
    """Agreement of the argmax and the absolute logit differences, line by line."""
    with open(a, encoding="utf-8") as f:
        k = len(f.readline().rstrip("\n").split("\t")[-1].split())  # logits per line, from the first
    rows_a, rows_b = list(read_transfer(a, k)), list(read_transfer(b, k))
    sentences_a, logits_a = [r.sentence for r in rows_a], np.array([r.scores for r in rows_a])
    sentences_b, logits_b = [r.sentence for r in rows_b], np.array([r.scores for r in rows_b])
    if sentences_a != sentences_b:
        raise UserError(f"{b}: not the same sentences, in the same order, as {a}")
    diff = np.abs(logits_a - logits_b)  # [N, K]
    return {"sentences": len(sentences_a), "labels": k,
            "argmax_agreement": float((logits_a.argmax(1) == logits_b.argmax(1)).mean()),
            "max_abs_logit_diff": float(diff.max()), "mean_abs_logit_diff": float(diff.mean())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("first", type=Path)
    p.add_argument("second", type=Path)
    args = p.parse_args(argv)

    def body() -> int:
        print(json.dumps(compare(args.first, args.second), indent=1))
        return 0

    return run_main(body, logging.getLogger(__name__))


if __name__ == "__main__":
    sys.exit(main())
