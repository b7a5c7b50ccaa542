"""Write a teacher's logits for a file's sentences as a scores file (`TEACHER_LOGITS=`,
`label.py --teacher_logits`): one `{"text": ..., "logits": {label: score}}` line a sentence.
It stands in for scores made elsewhere (an LLM, an API) when a recipe is tried on them.

    python scripts/teacher_scores.py --teacher=checkpoints/sst2-demo/teacher \\
        --input=data/sst2-demo/train.txt --output=data/scores-demo/scores.jsonl

With `--transfer` instead of `--teacher`, no teacher runs: the logits are those a labeling run
already wrote for the training sentences (a transfer set's `original` lines; label names from
the `label.txt` beside it), so the file holds exactly the scores the full recipe distilled from.

    python scripts/teacher_scores.py --transfer=data/sst2/transfer.txt --output=data/sst2-scores/scores.jsonl
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataset import read_labels, read_sentences, read_transfer  # noqa: E402
from util import atomic_write_text, run_main  # noqa: E402

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--teacher", help="a teacher directory or any sequence classifier (with --input)")
    source.add_argument("--transfer", help="a transfer set (label.py): its `original` lines' logits, no teacher run")
    p.add_argument("--input", help="sentences, one a line (a `sentence<TAB>label` line: its sentence)")
    p.add_argument("--output", required=True, help="the scores file (JSONL)")
    args = p.parse_args(argv)
    if bool(args.input) != bool(args.teacher):
        p.error("--input goes with --teacher (and only with it)")

    def body() -> int:
        if args.teacher:
            from inference import Predictor  # torch only here

            predictor = Predictor.load(args.teacher)
            sentences = [s for _, s in read_sentences(args.input)]
            labels = predictor.labels  # the teacher's own label order
            logits = predictor.logits(sentences, batch_size=128, progress=True).tolist()  # [n, K]
        else:
            labels = read_labels(Path(args.transfer).parent / "label.txt")  # preprocess.py's, beside it
            rows = [r for r in read_transfer(args.transfer, len(labels)) if r.source == "original"]
            sentences, logits = [r.sentence for r in rows], [r.scores for r in rows]  # [n, K], label.txt order
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.output, "".join(
            json.dumps({"text": s, "logits": dict(zip(labels, row))}) + "\n"
            for s, row in zip(sentences, logits)))
        logger.info("[Written] %s: %d sentences", args.output, len(sentences))
        return 0

    return run_main(body, logger)


if __name__ == "__main__":
    sys.exit(main())
