"""Label the transfer set: the sentences the students learn the teacher from, with the
teacher's scores, in one file (`transfer.txt`, dataset.py's format).

    # the training sentences and their augmentations (augment_data.py), scored by a teacher
    python label.py --teacher=checkpoints/sst2/teacher --data_dir=data/sst2 --augmentations
    # ... and the user's unlabeled text; any Hugging Face sequence classifier is a teacher
    python label.py --teacher=my-finetuned-roberta --data_dir=data/intents --augmentations \
        --unlabeled=tickets.txt --label_map=NEGATIVE=0,POSITIVE=1
    # no teacher at all: scores made elsewhere (an LLM, an API), one JSON object a line
    python label.py --teacher_logits=scores.jsonl --data_dir=data/intents

The teacher scores `train.txt` (source `original`, gold labels kept), `augmented.raw` with
`--augmentations`, and `--unlabeled` text. This is the one labeling path: the seed's
`evaluate.py --augmented` runs it too. Lines the students would see as a duplicate or as a
sentence of valid.txt or test.txt are dropped and counted (labeling.py). A teacher's logits
are put in the data's label order by name (`--label_map` when the names differ). Labeling is
resumable (run the same command again) and shards over torchrun ranks. Multi-label data
(`--multi_label`, or as preprocess.py recorded them, or a teacher whose `problem_type` is
`multi_label_classification`) keep their comma-joined gold label lists. Writes
`<output>.results.json` beside the output.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cli import add_teacher_flag, common_parser
from config import LABEL_RUNTIMES, load_config
from dataset import (AUGMENTED_FILE, TRANSFER_FILE, check_pairs, data_labels, data_multi_label, is_pair_data,
                     model_data_multi_label, read_examples)
from runtime import WordTokenizer
from teachers import parse_label_map, teacher_columns
from util import (DistContext, UserError, amp_dtype, exit_stage, init_distributed, library_versions, positive,
                  resolve_device, run_in_group, run_main, set_seed, set_threads, write_json)

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                parents=[common_parser(model=False, amp=True)])
    source = p.add_mutually_exclusive_group(required=True)
    add_teacher_flag(source, "a teacher directory from train.py, or any Hugging Face sequence classifier (directory "
                             "or hub name)")
    source.add_argument("--teacher_logits", help="teacher scores made elsewhere: JSONL, {\"text\": ..., \"logits\"|"
                                                 "\"probs\": {label: score}} a line; no teacher runs")
    p.add_argument("--data_dir", required=True, help="train/valid/test.txt (and augmented.raw)")
    p.add_argument("--augmentations", nargs="?", const=AUGMENTED_FILE, metavar="FILE",
                   help=f"also score augment_data.py's sentences (FILE in data_dir; default {AUGMENTED_FILE})")
    p.add_argument("--unlabeled", help="also score this unlabeled text: one sentence a line, UTF-8, any size")
    p.add_argument("--label_map", help="teacher label names to data labels, e.g. NEGATIVE=0,POSITIVE=1")
    p.add_argument("--student_config", help="the students' config: lines are compared after its word tokenizer and "
                                            "lower-casing (default: the glove tokenizer, lower-cased)")
    p.add_argument("--output", help=f"the transfer set (default <data_dir>/{TRANSFER_FILE})")
    p.add_argument("--batch_size", type=positive(int), default=128, help="teacher batch size")
    p.add_argument("--label_chunk", type=positive(int), default=20000,
                   help="sentences scored between two saves of the resumable output")
    p.add_argument("--runtime", choices=LABEL_RUNTIMES, default="pytorch",
                   help="the teacher's runtime on the CPU; auto: time each on a sample of the transfer set and use "
                        "the fastest whose argmax agrees with fp32 PyTorch on --min_agreement of it")
    p.add_argument("--runtime_sample", type=positive(int), default=2000,
                   help="--runtime: sentences of the training set the runtimes are timed and compared on")
    p.add_argument("--min_agreement", type=float, default=0.995, help="--runtime auto: the agreement required")
    p.add_argument("--multi_label", action="store_true",
                   help="label sets ('sentence<TAB>a,b'); implied by data preprocessed so, or by a teacher whose "
                        "problem_type is multi_label_classification")
    p.add_argument("--rescore_margin", type=float, default=0.0,
                   help="with an ONNX Runtime teacher: score again in fp32 PyTorch the sentences whose top two "
                        "logits (multi-label: a logit and 0) lie closer than this (0: none)")
    return p


def check_flags(args: argparse.Namespace) -> None:
    """Refuse combinations that would be ignored."""
    if args.teacher_logits and (args.augmentations or args.unlabeled or args.amp != "none"):
        raise UserError("--teacher_logits brings the scores: --augmentations, --unlabeled and --amp need a --teacher")
    if args.runtime != "pytorch" and (args.teacher_logits or args.amp != "none"):
        raise UserError("--runtime runs the teacher on the CPU in fp32 or int8: not with --teacher_logits or --amp")
    if args.runtime == "pytorch" and (args.runtime_sample != 2000 or args.min_agreement != 0.995
                                      or args.rescore_margin):
        raise UserError("--runtime_sample/--min_agreement/--rescore_margin are for --runtime "
                        "auto|onnxruntime|onnxruntime-int8")
    if args.rescore_margin < 0:
        raise UserError(f"--rescore_margin must be >= 0, got {args.rescore_margin}")


def word_tokenizer(student_config: str | None) -> WordTokenizer:
    """How the students split and lower-case words (what makes two lines the same for them)."""
    if not student_config:
        return WordTokenizer()
    config = load_config(student_config)
    if config.is_transformer:
        raise UserError(f"--student_config {student_config}: a teacher config; give a GloVe student's")
    return WordTokenizer(config.tokenizer, config.lowercase)


def run(args: argparse.Namespace, dist_ctx: DistContext) -> int:
    from labeling import TeacherScorer, TransferPlan, choose_runtime, label

    data_dir = Path(args.data_dir)
    for split in ("train", "valid", "test"):
        if not (data_dir / f"{split}.txt").is_file():
            raise UserError(f"{data_dir / f'{split}.txt'}: not found (label.py reads the data set's splits)")
    multi = data_multi_label(data_dir, args.multi_label)
    label_map = parse_label_map(args.label_map)
    output = Path(args.output) if args.output else data_dir / TRANSFER_FILE
    plan = TransferPlan(held_out=[data_dir / "valid.txt", data_dir / "test.txt"],
                        word_tokenizer=word_tokenizer(args.student_config), pairs=is_pair_data(data_dir / "train.txt"))
    scorer, extra, trials = None, {}, None
    predictor = None
    if args.teacher:
        from inference import Predictor

        device = resolve_device(args.device, dist_ctx.local_rank)
        set_threads(args.num_threads)
        predictor = Predictor.load(args.teacher, device)
        multi = model_data_multi_label(data_dir, args.multi_label, f"the teacher {args.teacher}",
                                       predictor.multi_label, data_dir / "train.txt")
    plan.multi_label = multi
    labels = data_labels(data_dir, multi)
    if args.teacher_logits:
        plan.teacher_scores, plan.gold_for_scores = Path(args.teacher_logits), data_dir / "train.txt"
        logger.info("[Scores] from %s: no teacher runs, so no augmented sentence can be scored; the students learn "
                    "from the file's sentences (those of train.txt keep their gold label). To augment, bring the "
                    "teacher itself (--teacher, TEACHER=)", args.teacher_logits)
    else:
        plan.train = data_dir / "train.txt"
        plan.augmented = data_dir / args.augmentations if args.augmentations else None
        plan.unlabeled = Path(args.unlabeled) if args.unlabeled else None
        for path in (plan.augmented, plan.unlabeled):
            if path is not None and not path.is_file():
                raise UserError(f"{path}: not found")
        check_pairs(f"the teacher {args.teacher}", predictor.pairs, data_dir / "train.txt", plan.pairs)
        columns = teacher_columns(predictor.labels, labels, label_map, str(args.teacher))
        if args.runtime != "pytorch":
            if device.type != "cpu" or dist_ctx.enabled:
                logger.info("[Runtime] pytorch: --runtime %s is for one CPU process (here %s, %d process(es))",
                            args.runtime, device, dist_ctx.world_size)
            else:
                sample = [e.sentence for e in read_examples(plan.train)[: args.runtime_sample]]
                # auto: the fastest that agrees; a runtime named: that one, its agreement logged
                choosable = LABEL_RUNTIMES[1:] if args.runtime == "auto" else (args.runtime,)
                trials = choose_runtime(predictor, sample, args.batch_size, args.num_threads or 0,
                                        args.min_agreement if args.runtime == "auto" else 0.0, choosable)
        scorer = TeacherScorer(predictor, columns, args.batch_size, amp_dtype(args.amp, device), dist_ctx,
                               args.rescore_margin)
        weights = sorted(Path(args.teacher).glob("*.safetensors")) if Path(args.teacher).is_dir() else []
        extra = {"teacher": str(args.teacher), "weights": [[str(f), f.stat().st_size, f.stat().st_mtime_ns]
                                                           for f in weights],
                 "batch_size": args.batch_size, "amp": args.amp, "runtime": predictor.runtime,
                 **({"rescore_margin": scorer.rescore_margin} if scorer.rescore_margin else {})}
    results = label(plan, output, labels, label_map, scorer, args.label_chunk, dist_ctx, extra)
    if results is None:
        return 0
    if scorer is not None and scorer.rescore_margin:
        logger.info("[Rescored] %d of %d sentences (top-two margin < %g) in fp32 PyTorch", scorer.rescored,
                    scorer.scored, scorer.rescore_margin)
        results["rescored_fp32"] = scorer.rescored
    results.update({"processes": dist_ctx.world_size, "runtime": extra.get("runtime"), "runtime_trials": trials,
                    "args": vars(args),
                    "versions": library_versions()})
    write_json(f"{output}.results.json", results)
    return 0


def label_stage(args: argparse.Namespace) -> int:
    """The stage for parsed flags (also the seed's `evaluate.py --augmented`): check, seed,
    join the torchrun group when a teacher runs, label."""
    check_flags(args)
    set_seed(args.seed)
    resolve_device(args.device)
    dist_ctx = init_distributed(args.device) if args.teacher else DistContext()
    return run_in_group(dist_ctx, lambda: run(args, dist_ctx))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run_main(lambda: label_stage(args), logger)


if __name__ == "__main__":
    exit_stage(main())
