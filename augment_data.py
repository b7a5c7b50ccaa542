"""Augment a `sentence<TAB>label` file for distillation (Tang et al. 2019, section 3.2; the
seed's defaults): masking, same-POS swaps and n-grams, `--n_iter` draws per sentence, the
originals kept first and no duplicate lines. The rules are in augment.py's docstring.

    python augment_data.py --input data/sst2/train.txt --output data/sst2/augmented.raw
    python augment_data.py --input data/sst2/train.txt --output data/sst2/augmented.raw --mask_token='<mask>'

Sentences are split by `--tokenizer` (the students' word tokenizer) and the output joins the
tokens with spaces. Each sentence's draws come from an RNG seeded by (--seed, its index), so
the output is byte-identical with or without `--parallel`. Writes `<output>.config.json`.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from augment import PAIR_MODES, PAIR_TOKEN, AugmentParams, build_pos_vocab, pos_tag, tokens_text, write_augmented
from cli import add_seed_flag
from dataset import read_examples
from runtime import WORD_TOKENIZERS, WordTokenizer, split_pair
from util import (UserError, atomic_path, bounded, non_negative,
                  probability, run_main, set_seed, write_json)

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--input", required=True, help="sentence<TAB>label file (or sentence_a<TAB>sentence_b<TAB>label)")
    p.add_argument("--output", required=True, help="augmented file, in the input's format")
    p.add_argument("--mask_token", default="[MASK]", help="mask token ('<mask>' for RoBERTa)")
    p.add_argument("--p_mask", type=probability, default=0.1, help="per-token masking probability")
    p.add_argument("--p_pos", type=probability, default=0.1, help="per-token same-POS replacement probability")
    p.add_argument("--p_ng", type=probability, default=0.25, help="per-draw n-gram probability")
    p.add_argument("--max_ng", type=bounded(int, 1, low_inclusive=True), default=5, help="largest n-gram length")
    p.add_argument("--n_iter", type=non_negative(int), default=20, help="draws per sentence")
    p.add_argument("--lowercase", action="store_true", help="lower-case sentences first")
    p.add_argument("--parallel", action="store_true", help="run the draws in a process pool")
    p.add_argument("--num_workers", type=bounded(int, 1, low_inclusive=True),
                   help="pool size with --parallel (default: the CPU count)")
    add_seed_flag(p)
    p.add_argument("--analyzer", choices=["spacy", "none"], default="spacy",
                   help="spacy: POS-tag the tokens for same-POS swaps; none: no swaps")
    p.add_argument("--tokenizer", choices=WORD_TOKENIZERS, default="glove",
                   help="how sentences are split into the tokens that are masked, swapped and tagged: the "
                        "students' word tokenizer (runtime.py)")
    p.add_argument("--no_augment", action="store_true", help="only copy the (normalised) sentences through")
    p.add_argument("--preserve_label", action="store_true", help="write each source label instead of --dummy_label")
    p.add_argument("--dummy_label", default="0", help="label written without --preserve_label")
    p.add_argument("--ngram_mode", choices=["mask", "sample"], default="mask",
                   help="mask: mask an n-gram; sample: keep only an n-gram (Tang et al.)")
    p.add_argument("--pair_mode", choices=PAIR_MODES, default="both",
                   help="sentence pairs: change both sides in each draw, or one side picked at random")
    p.add_argument("--spacy_batch_size", type=bounded(int, 1, low_inclusive=True), default=1000)
    return p


def run(args: argparse.Namespace) -> int:
    """The stage body: read, tag, augment, dedupe, write."""
    set_seed(args.seed)
    if args.p_mask + args.p_pos > 1.0:
        raise UserError(f"--p_mask + --p_pos must be at most 1, got {args.p_mask + args.p_pos:g}")
    if "\t" in args.dummy_label or "\n" in args.dummy_label or not args.dummy_label.strip():
        raise UserError(f"--dummy_label {args.dummy_label!r}: must be non-empty, without tabs or newlines")
    if args.num_workers is not None and not args.parallel:
        raise UserError("--num_workers sizes the --parallel pool: add --parallel")
    if not args.mask_token or any(c.isspace() for c in args.mask_token):
        raise UserError(f"--mask_token {args.mask_token!r}: must be non-empty, without whitespace")
    start = time.perf_counter()
    rows = read_examples(args.input)
    tokenize = WordTokenizer(args.tokenizer, args.lowercase)
    # a pair's tokens: side a's, PAIR_TOKEN, side b's (augment.py)
    token_lists = [tokenize(r.sentence) if not r.pair else
                   [*tokenize(split_pair(r.sentence)[0]), PAIR_TOKEN, *tokenize(split_pair(r.sentence)[1])]
                   for r in rows]
    labels = [r.label if args.preserve_label else args.dummy_label for r in rows]
    output = Path(args.output)
    n_out = 0

    if args.no_augment:
        with atomic_path(output) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as f:
            for tokens, label in zip(token_lists, labels):
                f.write(f"{tokens_text(tokens)}\t{label}\n")
                n_out += 1
        tag_time = draw_time = 0.0
    else:
        params = AugmentParams(args.mask_token, args.p_mask, args.p_pos, args.p_ng, args.max_ng, args.n_iter,
                               args.ngram_mode, args.pair_mode)
        t0 = time.perf_counter()
        if args.analyzer == "spacy":
            tag_lists: list[list[str]] | None = pos_tag(token_lists, args.spacy_batch_size)
            pos_vocab = build_pos_vocab(token_lists, tag_lists)
            logger.info("POS vocabulary: %d tags, %d (tag, word) pairs", len(pos_vocab), sum(map(len, pos_vocab.values())))
        else:
            tag_lists, pos_vocab = None, {}
        tag_time = time.perf_counter() - t0
        t0 = time.perf_counter()
        workers = (args.num_workers or os.cpu_count() or 1) if args.parallel else None
        n_out = write_augmented(output, token_lists, labels, tag_lists, pos_vocab, params, args.seed, workers)
        draw_time = time.perf_counter() - t0

    config = dict(vars(args))
    config["num_workers_used"] = (args.num_workers or os.cpu_count() or 1) if args.parallel else 0
    write_json(f"{output}.config.json", config)
    logger.info(
        "%d input sentences -> %d output lines in %s (%.1fs: tagging %.1fs, augmenting %.1fs)",
        len(rows), n_out, output, time.perf_counter() - start, tag_time, draw_time,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse flags and run the stage; returns the exit code (1 on a user error)."""
    args = build_parser().parse_args(argv)
    return run_main(lambda: run(args), logger)


if __name__ == "__main__":
    sys.exit(main())
