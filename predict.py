"""Label raw sentences with a trained student or teacher, or with a deployment bundle.

    echo "a gorgeous , witty film" | python predict.py --model_path=pytorch-model-cnn.pt
    python predict.py --bert_output_dir=bert-checkpoint --input=sentences.txt --format=jsonl
    python predict.py --model_path=pytorch-model-cnn.pt --export_bundle=bundle/     # for runtime.py
    python predict.py --bundle=bundle/ < sentences.txt          # numpy + onnxruntime, no torch

One sentence a line (a `sentence<TAB>anything` line uses the sentence); blank lines are
skipped. Output, one line per sentence in input order: `label<TAB>p_0 p_1 ...` (tsv, the
class probabilities in label order) or `{"sentence", "label", "probabilities"}` (jsonl).
Tokenization and lower-casing are the ones stored with the model. With `--bundle` this
script imports neither torch nor the training code.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from runtime import Bundle, Prediction
from util import UserError, atomic_write_text, positive, run_main

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model_path", help="student checkpoint from train.py")
    source.add_argument("--bert_output_dir", help="teacher: a directory from train.py or any Hugging Face sequence "
                                                  "classifier (directory or hub name); its own labels")
    source.add_argument("--bundle", help="deployment bundle directory (runtime.py: numpy + onnxruntime)")
    p.add_argument("--input", help="raw sentences, one a line ('-' or none: stdin, unless only --export_bundle)")
    p.add_argument("--output", default="-", help="where to write ('-': stdout)")
    p.add_argument("--format", choices=("tsv", "jsonl"), default="tsv")
    p.add_argument("--batch_size", type=positive(int), default=64)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="checkpoints only")
    p.add_argument("--num_threads", type=positive(int), help="CPU threads (default: the library's)")
    p.add_argument("--enable_ort", action="store_true",
                   help="checkpoints: run the ONNX export (evaluate.py --convert_onnx) in ONNX Runtime")
    p.add_argument("--onnx_path", help="with --enable_ort: the ONNX file (default: the export beside the model)")
    p.add_argument("--export_bundle", metavar="DIR",
                   help="write the model's deployment bundle to DIR (and label --input only if given)")
    return p


def read_sentences(path: str) -> list[str]:
    """Raw sentences from a file or stdin; the text before a tab when there is one."""
    if path == "-":
        text, name = sys.stdin.read(), "<stdin>"
    else:
        try:
            text, name = Path(path).read_bytes().decode("utf-8-sig"), path
        except FileNotFoundError as e:
            raise UserError(f"{path}: file not found") from e
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: not UTF-8 text (bad byte at offset {e.start})") from e
    sentences = [s for s in (line.split("\t")[0].strip() for line in text.splitlines()) if s]
    if not sentences:
        raise UserError(f"{name}: no sentences")
    return sentences


def format_lines(sentences: list[str], results: list[Prediction], fmt: str) -> list[str]:
    """One output line per sentence, from its Prediction (label, {label: probability})."""
    if fmt == "jsonl":
        return [json.dumps({"sentence": s, "label": label, "probabilities": probs}, ensure_ascii=False)
                for s, (label, probs) in zip(sentences, results)]
    return [label + "\t" + " ".join(f"{p:.6f}" for p in probs.values()) for label, probs in results]


def check_flags(args: argparse.Namespace) -> None:
    """Refuse combinations that would be ignored."""
    if args.bundle and (args.enable_ort or args.onnx_path or args.export_bundle or args.device != "auto"):
        raise UserError("--enable_ort/--onnx_path/--export_bundle/--device are for checkpoints; a bundle runs "
                        "its own backend on the CPU")
    if args.onnx_path and not args.enable_ort:
        raise UserError("--onnx_path names the model --enable_ort runs: add --enable_ort")


def predict(args: argparse.Namespace, sentences: list[str] | None) -> list[Prediction] | None:
    """Load the model the flags name (export a bundle if asked) and label `sentences`."""
    if args.bundle:
        try:
            bundle = Bundle.load(args.bundle, num_threads=args.num_threads or 0)
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"{args.bundle}: cannot load the bundle ({e})") from e
        return [r for i in range(0, len(sentences), args.batch_size)
                for r in bundle.predict(sentences[i:i + args.batch_size])]
    from inference import Predictor
    from util import resolve_device, set_threads

    device = resolve_device(args.device)
    set_threads(args.num_threads)
    predictor = Predictor.load(args.model_path or args.bert_output_dir, device)
    if args.export_bundle:
        logger.info("[Bundle] %s", predictor.export_bundle(args.export_bundle))
        if sentences is None:
            return None
    if args.enable_ort:
        if device.type != "cpu":
            raise UserError("--enable_ort runs on the CPU; add --device cpu")
        predictor.use_runtime("onnxruntime", args.onnx_path, args.num_threads or 0)
    return predictor.predict(sentences, args.batch_size)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        check_flags(args)
        # with --export_bundle and no --input there is nothing to label
        only_export = args.export_bundle and args.input is None
        sentences = None if only_export else read_sentences(args.input or "-")
        results = predict(args, sentences)
        if results is None:
            return 0
        text = "\n".join(format_lines(sentences, results, args.format)) + "\n"
        if args.output == "-":
            sys.stdout.write(text)
        else:
            atomic_write_text(args.output, text)
        return 0

    return run_main(body, logger)


if __name__ == "__main__":
    sys.exit(main())
