"""The flags the stage scripts share, declared once: each script builds its parser with
`parents=[common_parser(...)]` and adds its own."""
from __future__ import annotations

import argparse

from config import AMP_CHOICES
from util import non_negative


def common_parser(model: bool = True, runtime: bool = True, teacher: bool = False, amp: bool = False,
                  overrides: bool = True) -> argparse.ArgumentParser:
    """A parent parser with the chosen groups of shared flags:

    - `model`: `--config`, `--data_dir`, and (with `overrides`) `--set KEY=VALUE`;
    - `runtime`: `--device`, `--num_threads`, `--seed`;
    - `teacher`: `--bert_model_name_or_path`, `--bert_do_lower_case` (the seed's names);
    - `amp`: `--amp`.
    """
    p = argparse.ArgumentParser(add_help=False)
    if model:
        p.add_argument("--config", required=True, help="model config JSON (configs/...)")
        p.add_argument("--data_dir", required=True, help="data directory (train/valid/test.txt and the id files)")
    if model and overrides:
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key (section.key for a section's), value parsed as JSON")
    if teacher:
        p.add_argument("--bert_model_name_or_path", help="pretrained Hugging Face encoder directory (teachers)")
        p.add_argument("--bert_do_lower_case", action="store_true",
                       help="lower-case text outside the tokenizer's special tokens (stored with the teacher)")
    if runtime:
        p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="auto: CUDA when present, else CPU")
        p.add_argument("--num_threads", type=non_negative(int), default=0, help="torch CPU threads (0: torch's default)")
        p.add_argument("--seed", type=int, default=42, help="seed for Python, NumPy and torch")
    if amp:
        p.add_argument("--amp", choices=AMP_CHOICES, default="none",
                       help="autocast dtype (bf16: CUDA and CPUs with bf16 support; fp16: CUDA only)")
    return p
