"""The flags the stage scripts share, declared once: each script builds its parser with
`parents=[common_parser(...)]`, or adds a shared flag to a group of its own with the
`add_*` functions, then adds its own flags.

One name per idea across stages and recipe, the seed's names kept as aliases:
`--teacher` (`--bert_output_dir`), `--epochs` (`--epoch`, in train.py), `--distill` with
`--transfer_file` (`--augmented`, `--augmented_filename`: see `add_distill_flags`).
"""
from __future__ import annotations

import argparse
from typing import Any

from config import AMP_CHOICES
from dataset import SEED_TRANSFER_FILE, TRANSFER_FILE
from util import non_negative


def common_parser(model: bool = True, runtime: bool = True, encoder: bool = False, amp: bool = False,
                  overrides: bool = True, distill: bool = False, seed: bool = True) -> argparse.ArgumentParser:
    """A parent parser with the chosen groups of shared flags:

    - `model`: `--config`, `--data_dir`, and (with `overrides`) `--set KEY=VALUE`;
    - `runtime`: `--device`, `--num_threads`, and `--seed` unless `seed` is False (a stage
      that draws nothing at random);
    - `encoder`: `--bert_model_name_or_path`, `--bert_do_lower_case` (the seed's names);
    - `amp`: `--amp`;
    - `distill`: `--distill`, `--transfer_file` and the seed's `--augmented` (`add_distill_flags`).
    """
    p = argparse.ArgumentParser(add_help=False)
    if model:
        p.add_argument("--config", required=True, help="model config JSON (configs/...)")
        p.add_argument("--data_dir", required=True, help="data directory (train/valid/test.txt and the id files)")
    if model and overrides:
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key (section.key for a section's), value parsed as JSON")
    if encoder:
        p.add_argument("--bert_model_name_or_path", help="pretrained Hugging Face encoder directory (teachers)")
        p.add_argument("--bert_do_lower_case", action="store_true",
                       help="lower-case text outside the tokenizer's special tokens (stored with the teacher)")
    if runtime:
        p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="auto: CUDA when present, else CPU")
        p.add_argument("--num_threads", type=non_negative(int), default=0, help="torch CPU threads (0: torch's default)")
        if seed:
            add_seed_flag(p)
    if amp:
        p.add_argument("--amp", choices=AMP_CHOICES, default="none",
                       help="autocast dtype (bf16: CUDA and CPUs with bf16 support; fp16: CUDA only)")
    if distill:
        add_distill_flags(p)
    return p


def add_seed_flag(p: Any) -> None:
    """`--seed` (part of the `runtime` group; alone for a stage without torch)."""
    p.add_argument("--seed", type=int, default=42, help="seed for Python, NumPy and (where it runs) torch")


def add_teacher_flag(p: Any, help: str, **kwargs: Any) -> None:
    """`--teacher` (the seed's `--bert_output_dir`) on a parser or an argument group."""
    p.add_argument("--teacher", "--bert_output_dir", dest="teacher", help=help, **kwargs)


def add_distill_flags(p: Any) -> None:
    """A student learns the teacher's scores in a transfer set: `--distill` reads
    `--transfer_file` (default `transfer.txt`, label.py's); the seed's `--augmented` is
    `--distill` with the seed's file, `augmented.txt`. Resolve with `transfer_file(args)`."""
    p.add_argument("--distill", action="store_true",
                   help="students: learn the teacher's scores in the transfer set (--transfer_file)")
    p.add_argument("--transfer_file", "--augmented_filename", dest="transfer_file",
                   help=f"with --distill: the transfer set in data_dir (default {TRANSFER_FILE}, label.py's output)")
    p.add_argument("--augmented", action="store_true",
                   help=f"the seed's name: --distill with --transfer_file={SEED_TRANSFER_FILE} unless one is given")


def transfer_file(args: argparse.Namespace) -> str | None:
    """The transfer set file name `add_distill_flags` selects, or None when not distilling."""
    if not (args.distill or args.augmented):
        return None
    return args.transfer_file or (SEED_TRANSFER_FILE if args.augmented and not args.distill else TRANSFER_FILE)
