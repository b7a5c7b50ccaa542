"""The few-labels case: a teacher fine-tuned on a few thousand labeled sentences, the rest of
the training set given as unlabeled text (its labels dropped), and the students distilled
from the augmented set, the unlabeled text, and both, beside the same students trained on
the labeled sentences alone. It answers "what does my unlabeled text buy me".

    python scripts/few_labels.py                   # `make few-labels`: SST-2, 5,000 labeled
    python scripts/few_labels.py --labeled 1000 --models cnn

Writes `data/<name>/` (train.txt: a seeded subset of `--labeled` lines; valid.txt and
test.txt unchanged; unlabeled.txt: the other training sentences, without labels), then runs
`scripts/distill.py` on it with `--unlabeled` and `--transfer augmented,unlabeled,both`;
the table is `results/<name>.md`.
"""
from __future__ import annotations

import argparse
import logging
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import distill  # noqa: E402
from dataset import read_examples  # noqa: E402
from util import UserError, atomic_write_text, run_main  # noqa: E402

logger = logging.getLogger(__name__)


def split(source: Path, out: Path, labeled: int, seed: int) -> tuple[int, int]:
    """Write the labeled subset, the unlabeled rest and the unchanged valid/test (each only
    when its bytes change, so distill.py's later stages stay up to date)."""
    examples = read_examples(source / "train.txt")
    if not 0 < labeled < len(examples):
        raise UserError(f"--labeled must be between 1 and {len(examples) - 1} ({source / 'train.txt'} has "
                        f"{len(examples)} sentences), got {labeled}")
    chosen = set(random.Random(seed).sample(range(len(examples)), labeled))
    files = {
        "train.txt": "".join(f"{e.sentence}\t{e.label}\n" for i, e in enumerate(examples) if i in chosen),
        "unlabeled.txt": "".join(f"{e.sentence}\n" for i, e in enumerate(examples) if i not in chosen),
        **{f"{s}.txt": (source / f"{s}.txt").read_text(encoding="utf-8") for s in ("valid", "test")},
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        if not (out / name).exists() or (out / name).read_text(encoding="utf-8") != text:
            atomic_write_text(out / name, text)
    return labeled, len(examples) - labeled


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_dir", default="data/sst2", help="the full labeled data set")
    p.add_argument("--labeled", type=int, default=5000, help="training sentences that keep their labels")
    p.add_argument("--name", help="the run's name (default <data_dir name>-<labeled / 1000>k)")
    p.add_argument("--models", default="cnn,bilstm", help="students (comma-separated)")
    p.add_argument("--recipe", default="configs/recipe-few-labels.json")
    p.add_argument("--seed", type=int, default=42, help="which sentences keep their labels")
    args = p.parse_args(argv)

    name = args.name or f"{Path(args.data_dir).resolve().name}-{args.labeled / 1000:g}k"
    out = ROOT / "data" / name

    def body() -> int:
        kept, dropped = split(Path(args.data_dir), out, args.labeled, args.seed)
        logger.info("[Few labels] %d labeled training sentences, %d given as unlabeled text -> %s", kept, dropped, out)
        return 0

    # the split, then the driver with its own logging (not nested inside this script's)
    return run_main(body, logger) or distill.main([
        f"--data_dir={out}", f"--name={name}", f"--unlabeled={out / 'unlabeled.txt'}",
        "--transfer=augmented,unlabeled,both", f"--models={args.models}", f"--recipe={args.recipe}"])


if __name__ == "__main__":
    sys.exit(main())
