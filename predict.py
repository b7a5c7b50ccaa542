"""Label raw sentences with a trained student or teacher, or with a deployment bundle; export
a model for deployment (a bundle, or ONNX files).

    echo "a gorgeous , witty film" | python predict.py --model_path=pytorch-model-cnn.pt
    python predict.py --teacher=bert-checkpoint --input=sentences.txt --format=jsonl
    python predict.py --model_path=pytorch-model-cnn.pt --export_bundle=bundle/     # for runtime.py
    python predict.py --bundle=bundle/ < sentences.txt          # numpy + onnxruntime, no torch
    python predict.py --model_path=pytorch-model-cnn.pt --export_onnx --quantize   # .onnx and .int8.onnx
    # a bundle with static int8 (calibrated on training sentences), its default if it keeps valid accuracy
    python predict.py --model_path=cnn.pt --export_bundle=bundle/ --quantize \
        --calibration_file=data/sst2/train.txt --check_file=data/sst2/valid.txt
    # a cascade: the student answers when its top probability is >= 0.9, the teacher the rest
    python predict.py --bundle=cnn-bundle/ --cascade_teacher=teacher-bundle/ --defer_below=0.9 < sentences.txt

One sentence a line (a `sentence<TAB>label` line uses the sentence), or for a model of
sentence pairs one pair a line, `sentence_a<TAB>sentence_b` (a third column is ignored);
blank lines are skipped. Output, one line per sentence in input order: `label<TAB>p_0 p_1 ...`
(tsv, the class probabilities in label order) or `{"sentence", "label", "probabilities"}`
(jsonl; a pair's line has `"text"` and `"text_b"` in place of `"sentence"`).
Tokenization and lower-casing are the ones stored with the model. With `--bundle` this
script imports neither torch nor the training code.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from cli import add_teacher_flag, common_parser
from dataset import read_sentences
from runtime import Bundle, Cascade, Prediction, split_pair
from util import UserError, atomic_write_text, positive, run_main

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=[common_parser(model=False, seed=False)])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model_path", help="student checkpoint from train.py")
    add_teacher_flag(source, "teacher: a directory from train.py or any Hugging Face sequence classifier (directory "
                             "or hub name); its own labels")
    source.add_argument("--bundle", help="deployment bundle directory (runtime.py: numpy + onnxruntime)")
    p.add_argument("--input", help="raw sentences, one a line ('-' or none: stdin, unless only --export_bundle)")
    p.add_argument("--pairs", action="store_true",
                   help="read sentence pairs, for a classifier brought as it is (which takes either); a model trained "
                        "here knows what it takes")
    p.add_argument("--output", default="-", help="where to write ('-': stdout)")
    p.add_argument("--format", choices=("tsv", "jsonl"), default="tsv")
    p.add_argument("--batch_size", type=positive(int), default=64)
    p.add_argument("--enable_ort", action="store_true",
                   help="checkpoints: run the ONNX export (--export_onnx) in ONNX Runtime")
    p.add_argument("--onnx_path", help="with --enable_ort: the ONNX file (default: the export beside the model)")
    p.add_argument("--export_bundle", metavar="DIR",
                   help="write the model's deployment bundle to DIR (and label --input only if given)")
    p.add_argument("--cascade_teacher", metavar="BUNDLE",
                   help="with --bundle: a teacher bundle that answers the sentences the student is unsure of")
    p.add_argument("--defer_below", type=float,
                   help="with --cascade_teacher: defer a sentence whose top student probability is below this "
                        "(0 to 1; multi-label: whose least sure label, min max(p, 1 - p), is)")
    p.add_argument("--export_onnx", action="store_true",
                   help="write the model as ONNX (dynamic batch and length) beside it: <model>.onnx, or model.onnx "
                        "in a teacher's directory (and label --input only if given)")
    p.add_argument("--quantize", action="store_true",
                   help="with --export_onnx or --export_bundle: also an int8 copy (<name>.int8.onnx; a bundle's "
                        "onnxruntime-int8 backend): static for the cnn and DenseNet students given "
                        "--calibration_file, else dynamic")
    p.add_argument("--calibration_file", metavar="FILE",
                   help="with --quantize: sentences (a data file; a seeded sample of 300 lines) that fix static "
                        "int8's activation ranges, e.g. train.txt")
    p.add_argument("--check_file", metavar="FILE",
                   help="with --export_bundle --quantize: labeled lines (e.g. valid.txt); int8 becomes the bundle's "
                        "default backend only if its decisions there are right at most 0.3 points less often")
    return p


def read_input(path: str, pairs: bool) -> list[str]:
    """Raw sentences (or pairs, as 'a<TAB>b' texts) from a file or stdin ('-'), read as every
    sentence file is (`dataset.read_sentences`)."""
    sentences = [s for _, s in read_sentences(path, pairs)]
    if not sentences:
        raise UserError(f"{'<stdin>' if path == '-' else path}: no sentences")
    return sentences


def text_fields(text: str) -> dict[str, str]:
    """A jsonl line's text keys: `sentence`, or a pair's `text` and `text_b`."""
    pair = split_pair(text)
    return {"sentence": text} if pair is None else {"text": pair[0], "text_b": pair[1]}


def format_lines(sentences: list[str], results: list[Prediction], fmt: str) -> list[str]:
    """One output line per sentence, from its Prediction (label, {label: probability})."""
    if fmt == "jsonl":
        return [json.dumps({**text_fields(s), "label": label, "probabilities": probs}, ensure_ascii=False)
                for s, (label, probs) in zip(sentences, results)]
    return [label + "\t" + " ".join(f"{p:.6f}" for p in probs.values()) for label, probs in results]


def check_flags(args: argparse.Namespace) -> None:
    """Refuse combinations that would be ignored."""
    if args.bundle and (args.enable_ort or args.onnx_path or args.export_bundle or args.export_onnx
                        or args.device != "auto"):
        raise UserError("--enable_ort/--onnx_path/--export_bundle/--export_onnx/--device are for checkpoints; a "
                        "bundle runs its own backend on the CPU")
    if bool(args.cascade_teacher) != (args.defer_below is not None) or (args.cascade_teacher and not args.bundle):
        raise UserError("a cascade takes --bundle (the student), --cascade_teacher and --defer_below together")
    if args.defer_below is not None and not 0.0 <= args.defer_below <= 1.0:
        raise UserError(f"--defer_below is a probability: 0 to 1, got {args.defer_below:g}")
    if args.quantize and not (args.export_onnx or args.export_bundle):
        raise UserError("--quantize writes an int8 copy while exporting: add --export_onnx or --export_bundle (to "
                        "run that copy: --enable_ort --onnx_path=<model>.int8.onnx)")
    if args.calibration_file and not args.quantize:
        raise UserError("--calibration_file calibrates static int8: add --quantize")
    if args.check_file and not (args.quantize and args.export_bundle):
        raise UserError("--check_file decides a bundle's int8 default: add --export_bundle and --quantize")
    if args.onnx_path and not args.enable_ort:
        raise UserError("--onnx_path names the model --enable_ort runs: add --enable_ort")


def load_bundle(path: str, num_threads: int) -> Bundle:
    """A bundle, or one UserError line saying why not."""
    try:
        return Bundle.load(path, num_threads=num_threads or 0)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{path}: cannot load the bundle ({e})") from e


def load_model(args: argparse.Namespace) -> Any:
    """The model the flags name, ready to `predict` (a bundle, a cascade or a `Predictor`);
    exports a bundle or ONNX files first when asked."""
    if args.bundle:
        bundle = load_bundle(args.bundle, args.num_threads)
        if not args.cascade_teacher:
            return bundle
        try:
            return Cascade(bundle, load_bundle(args.cascade_teacher, args.num_threads), args.defer_below)
        except ValueError as e:
            raise UserError(str(e)) from e
    from dataset import read_examples
    from inference import Predictor, calibration_sample
    from util import resolve_device, set_threads

    device = resolve_device(args.device)
    set_threads(args.num_threads)
    predictor = Predictor.load(args.model_path or args.teacher, device)
    calibration = calibration_sample(read_input(args.calibration_file, bool(predictor.pairs))) \
        if args.calibration_file else []
    if args.export_bundle:
        check = [(e.sentence, e.label) for e in read_examples(args.check_file, multi_label=predictor.multi_label)] \
            if args.check_file else []
        logger.info("[Bundle] %s", predictor.export_bundle(args.export_bundle, args.quantize, calibration, check))
    if args.export_onnx:
        for path in predictor.export_onnx(quantize=args.quantize, calibration=calibration):
            logger.info("[ONNX] %s", path)
    if args.enable_ort:
        if device.type != "cpu":
            raise UserError("--enable_ort runs on the CPU; add --device cpu")
        predictor.use_runtime("onnxruntime", args.onnx_path, args.num_threads or 0)
    return predictor


def predict(model: Any, sentences: list[str], batch_size: int) -> list[Prediction]:
    """Label `sentences` in batches of `batch_size`."""
    return [r for i in range(0, len(sentences), batch_size) for r in model.predict(sentences[i:i + batch_size])]


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        check_flags(args)
        # with an export and no --input there is nothing to label
        only_export = (args.export_bundle or args.export_onnx) and args.input is None
        model = load_model(args)
        if only_export:
            return 0
        pairs = model.student.pairs if isinstance(model, Cascade) else model.pairs
        if args.pairs and pairs is False:
            raise UserError(f"--pairs: {args.model_path or args.teacher or args.bundle} takes single sentences")
        sentences = read_input(args.input or "-", bool(pairs) or args.pairs)
        results = predict(model, sentences, args.batch_size)
        text = "\n".join(format_lines(sentences, results, args.format)) + "\n"
        if args.output == "-":
            sys.stdout.write(text)
        else:
            atomic_write_text(args.output, text)
        return 0

    return run_main(body, logger)


if __name__ == "__main__":
    sys.exit(main())
