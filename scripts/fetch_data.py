"""Fill data/sst2/{train,valid,test}.txt: from a local copy (--source or $SST2_DIR), else from
the Hugging Face hub (glue/sst2 train and validation, SetFit/sst2 test; needs `datasets`
and a network). Checks the standard line counts 67,349 / 872 / 1,821.

    SST2_DIR=../shared/data/sst2 python scripts/fetch_data.py --out data/sst2
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset import read_examples, write_examples  # noqa: E402
from util import UserError, atomic_path, run_main  # noqa: E402

logger = logging.getLogger(__name__)

EXPECTED = {"train": 67349, "valid": 872, "test": 1821}


def count_and_check(path: Path, split: str, expected: int | None) -> int:
    """Parse the file (format errors name the line) and compare its line count."""
    n = len(read_examples(path))
    if expected is not None and n != expected:
        raise UserError(
            f"{path}: {n} examples, but the standard SST-2 {split} split has {expected}; "
            "is this the right directory (or pass --no_check for another data set)?"
        )
    return n


def from_local(source: Path, out: Path, check: bool) -> None:
    for split, expected in EXPECTED.items():
        src = source / f"{split}.txt"
        count_and_check(src, split, expected if check else None)
        dst = out / f"{split}.txt"
        if dst.exists() and dst.read_bytes() == src.read_bytes():
            # untouched, so the stages downstream of it stay up to date
            logger.info("[Data] %s is already a copy of %s", dst, src)
            continue
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        logger.info("[Data] %s <- %s", dst, src)


def from_hub(out: Path) -> None:
    try:
        from datasets import load_dataset
    except ImportError as e:
        raise UserError("no SST2_DIR set and the `datasets` package is not installed: set SST2_DIR to a "
                        "directory with train.txt/valid.txt/test.txt, or `pip install datasets` and go online") from e
    sources = {"train": ("glue", "sst2", "train", "sentence"), "valid": ("glue", "sst2", "validation", "sentence"),
               "test": ("SetFit/sst2", None, "test", "text")}
    for split, (name, subset, hub_split, column) in sources.items():
        ds = load_dataset(name, subset, split=hub_split)
        rows = ((" ".join(str(r[column]).split()), str(r["label"])) for r in ds)
        write_examples(out / f"{split}.txt", rows)
        count_and_check(out / f"{split}.txt", split, EXPECTED[split])
        logger.info("[Data] %s <- hub %s/%s %s", out / f"{split}.txt", name, subset or "", hub_split)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Fetch SST-2 into a data directory.")
    p.add_argument("--out", default="data/sst2")
    p.add_argument("--source", default=os.environ.get("SST2_DIR") or None, help="local directory (default $SST2_DIR)")
    p.add_argument("--no_check", action="store_true", help="skip the SST-2 line-count check")
    args = p.parse_args(argv)

    def body() -> int:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if args.source:
            from_local(Path(args.source), out, not args.no_check)
        else:
            from_hub(out)
        return 0

    return run_main(body, logger)


if __name__ == "__main__":
    sys.exit(main())
