"""Write a teacher's logits for a file's sentences as a scores file (`TEACHER_LOGITS=`,
`label.py --teacher_logits`): one `{"text": ..., "logits": {label: score}}` line a sentence.
It stands in for scores made elsewhere (an LLM, an API) when a recipe is tried on them.

    python scripts/teacher_scores.py --teacher=checkpoints/sst2-demo/teacher \\
        --input=data/sst2-demo/train.txt --output=data/scores-demo/scores.jsonl
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataset import read_sentences  # noqa: E402
from util import atomic_write_text, run_main  # noqa: E402

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", required=True, help="a teacher directory or any sequence classifier")
    p.add_argument("--input", required=True, help="sentences, one a line (a `sentence<TAB>label` line: its sentence)")
    p.add_argument("--output", required=True, help="the scores file (JSONL)")
    args = p.parse_args(argv)

    def body() -> int:
        from inference import Predictor

        predictor = Predictor.load(args.teacher)
        sentences = [s for _, s in read_sentences(args.input)]
        logits = predictor.logits(sentences, batch_size=128, progress=True).tolist()  # [n, K], its own label order
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.output, "".join(
            json.dumps({"text": s, "logits": dict(zip(predictor.labels, row))}) + "\n"
            for s, row in zip(sentences, logits)))
        logger.info("[Written] %s: %d sentences", args.output, len(sentences))
        return 0

    return run_main(body, logger)


if __name__ == "__main__":
    sys.exit(main())
