"""Label raw sentences with a trained student or teacher.

    echo "a gorgeous , witty film" | python predict.py --model_path=pytorch-model-cnn.pt
    python predict.py --bert_output_dir=bert-checkpoint --input=sentences.txt --format=jsonl
    python predict.py --model_path=pytorch-model-cnn.pt --enable_ort --device=cpu < sentences.txt  # ONNX Runtime

One sentence a line (a `sentence<TAB>anything` line uses the sentence); blank lines are
skipped. Output, one line per sentence in input order: `label<TAB>p_0 p_1 ...` (tsv, the
class probabilities in `label.txt` order) or `{"sentence", "label", "probabilities"}` (jsonl).
Tokenization and lower-casing are the ones stored with the model.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from model import load_predictor
from util import UserError, atomic_path, positive, resolve_device, run_main, set_threads, setup_logging

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model_path", help="student checkpoint from train.py")
    source.add_argument("--bert_output_dir", help="teacher directory from train.py")
    p.add_argument("--input", default="-", help="raw sentences, one a line ('-': stdin)")
    p.add_argument("--output", default="-", help="where to write ('-': stdout)")
    p.add_argument("--format", choices=("tsv", "jsonl"), default="tsv")
    p.add_argument("--batch_size", type=positive(int), default=64)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--num_threads", type=int, default=0)
    p.add_argument("--enable_ort", action="store_true",
                   help="run the ONNX export beside the model (from evaluate.py --convert_onnx) in ONNX Runtime")
    p.add_argument("--quantize_onnx", action="store_true", help="with --enable_ort: the int8 copy (--quantize_onnx)")
    return p


def read_sentences(path: str) -> list[str]:
    """Raw sentences from a file or stdin; the text before a tab when there is one."""
    if path == "-":
        text = sys.stdin.read()
        name = "<stdin>"
    else:
        try:
            text = Path(path).read_bytes().decode("utf-8-sig")
        except FileNotFoundError as e:
            raise UserError(f"{path}: file not found") from e
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: not UTF-8 text (bad byte at offset {e.start})") from e
        name = path
    sentences = [line.split("\t")[0].strip() for line in text.splitlines()]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise UserError(f"{name}: no sentences")
    return sentences


def format_lines(sentences: list[str], probabilities: torch.Tensor, labels: list[str], fmt: str) -> list[str]:
    """One output line per sentence."""
    lines = []
    for sentence, probs in zip(sentences, probabilities.tolist()):
        label = labels[max(range(len(probs)), key=probs.__getitem__)]
        if fmt == "jsonl":
            lines.append(json.dumps({"sentence": sentence, "label": label,
                                     "probabilities": dict(zip(labels, probs))}, ensure_ascii=False))
        else:
            lines.append(label + "\t" + " ".join(f"{p:.6f}" for p in probs))
    return lines


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging()

    def body() -> int:
        device = resolve_device(args.device)
        set_threads(args.num_threads)
        predictor = load_predictor(args.bert_output_dir is not None, args.bert_output_dir, args.model_path, device)
        if args.enable_ort:
            if device.type != "cpu":
                raise UserError("--enable_ort runs on the CPU; add --device cpu")
            predictor.use_onnxruntime(args.quantize_onnx, args.num_threads)
        sentences = read_sentences(args.input)
        probabilities = torch.softmax(predictor.logits(sentences, args.batch_size, device), dim=-1)
        text = "\n".join(format_lines(sentences, probabilities, predictor.labels, args.format)) + "\n"
        if args.output == "-":
            sys.stdout.write(text)
        else:
            with atomic_path(args.output) as tmp:
                tmp.write_text(text, encoding="utf-8")
        return 0

    return run_main(body, logger)


if __name__ == "__main__":
    sys.exit(main())
