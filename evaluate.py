"""Evaluate a teacher or student on `test.txt` (accuracy and per-example latency), export it
to ONNX, or label augmented sentences with the teacher's logits (the seed's command).

    python evaluate.py --config=configs/config-bert-mean.json --data_dir=data/sst2 --bert_output_dir=bert-checkpoint
    python evaluate.py --config=configs/config-glove-cnn.json --data_dir=data/sst2 --model_path=pytorch-model-cnn.pt
    python evaluate.py --config=configs/config-bert-hf.json --data_dir=data/sst2 --bert_output_dir=my-roberta-sst2 \
        --label_map=NEGATIVE=0,POSITIVE=1     # anyone's sequence classifier, its labels mapped by name
    python evaluate.py --config=configs/config-bert-mean.json --data_dir=data/sst2 --bert_output_dir=bert-checkpoint \
        --batch_size=128 --augmented      # writes data/sst2/augmented.raw.pred (label.py's transfer set)

The model is rebuilt from the checkpoint alone (config, vocabulary or tokenizer, labels);
`--config` only says which kind of model to expect. Its labels are matched to the data's by
name. Latency is timed from the raw test sentence (tokenization included, what a user of the
model waits for), or with `--pad_to_n_ctx` as the seed timed it: from ids padded to `n_ctx`,
tokenization excluded.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch
from tqdm import tqdm

from cli import common_parser
from config import Config, config_to_dict, load_config
from dataset import data_labels, label_ids, pad_batch, parse_label_map, read_examples, teacher_columns
from inference import Predictor, describe, predict_logits
from util import (DistContext, UserError, amp_dtype, exit_stage, init_distributed, library_versions, non_negative,
                  positive, resolve_device, run_in_group, run_main, set_seed, set_threads, write_json)

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                parents=[common_parser(amp=True, overrides=False)])
    p.add_argument("--bert_output_dir", default="bert-checkpoint",
                   help="teacher: a directory from train.py, or any Hugging Face sequence classifier (dir or hub name)")
    p.add_argument("--label_map", help="teacher label names to data labels, e.g. NEGATIVE=0,POSITIVE=1")
    p.add_argument("--results_path", help="the results JSON (default: beside the model)")
    p.add_argument("--model_path", default="pytorch-model.pt", help="student checkpoint from train.py")
    p.add_argument("--batch_size", type=positive(int), default=1, help="batch size (1: per-example latency)")
    p.add_argument("--augmented", action="store_true", help="label the augmented file with the teacher's logits")
    p.add_argument("--augmented_filename", help="--augmented: the file in data_dir (default augmented.raw)")
    p.add_argument("--label_chunk", type=positive(int), default=20000,
                   help="--augmented: sentences labeled between two saves of the resumable progress file")
    p.add_argument("--test_filename", default="test.txt", help="labeled file in data_dir to evaluate")
    p.add_argument("--pad_to_n_ctx", action="store_true",
                   help="time as the seed did: from ids padded to the config's n_ctx, tokenization excluded")
    p.add_argument("--warmup", type=non_negative(int), default=10, help="untimed batches before timing")
    p.add_argument("--latency_sample", type=non_negative(int), default=0,
                   help="time only the first N sentences at --batch_size (the rest are scored in untimed batches "
                        "of 64); 0: time them all")
    p.add_argument("--convert_onnx", action="store_true", help="export the model to ONNX (dynamic batch and length)")
    p.add_argument("--quantize_onnx", action="store_true",
                   help="with --convert_onnx: also write a dynamically int8-quantized copy (<name>.int8.onnx)")
    p.add_argument("--enable_ort", action="store_true", help="evaluate (or label) with ONNX Runtime on the CPU")
    p.add_argument("--enable_openvino", action="store_true", help="evaluate (or label) with OpenVINO on the CPU")
    p.add_argument("--onnx_path", help="with --enable_ort/--enable_openvino: the ONNX file (default: the export "
                                       "beside the model)")
    return p


def check_flags(args: argparse.Namespace, config: Config) -> None:
    """Refuse combinations that would be ignored."""
    if args.quantize_onnx and not args.convert_onnx:
        raise UserError("--quantize_onnx writes an int8 copy while exporting: add --convert_onnx (to evaluate that "
                        "copy: --enable_ort --onnx_path=<model>.int8.onnx)")
    if args.onnx_path and not (args.enable_ort or args.enable_openvino):
        raise UserError("--onnx_path names the model --enable_ort/--enable_openvino runs: add one")
    if args.enable_ort and args.enable_openvino:
        raise UserError("--enable_ort and --enable_openvino: choose one runtime")
    if args.label_map and not config.is_transformer:
        raise UserError("--label_map maps a teacher's label names; a student has the data's labels")
    if args.augmented and args.results_path:
        raise UserError("--results_path is for test evaluation; --augmented writes <file>.pred.results.json")
    if args.augmented and not config.is_transformer:
        raise UserError("--augmented labels with a teacher: pass a transformer config and --bert_output_dir")
    if not args.augmented and (args.augmented_filename or args.label_chunk != 20000):
        raise UserError("--augmented_filename/--label_chunk are for --augmented labeling")
    if args.augmented and (args.pad_to_n_ctx or args.test_filename != "test.txt" or args.latency_sample):
        raise UserError("--pad_to_n_ctx/--test_filename/--latency_sample are for test evaluation, not --augmented "
                        "labeling")
    if (args.enable_ort or args.enable_openvino) and args.amp != "none":
        raise UserError("--amp autocasts PyTorch; ONNX Runtime and OpenVINO run the exported float graph")


def evaluate_test(args: argparse.Namespace, predictor: Predictor, device: torch.device) -> dict:
    """Accuracy on the labeled file and per-example latency at `--batch_size`. The model's
    logit columns are put in the data's label order by name (a teacher's own order may differ)."""
    path = Path(args.data_dir) / args.test_filename
    examples = read_examples(path)
    sentences = [e.sentence for e in examples]
    labels = data_labels(Path(args.data_dir))
    columns = torch.tensor(teacher_columns(predictor.labels, labels, parse_label_map(args.label_map),
                                           predictor.path))
    gold = torch.tensor(label_ids(examples, labels, path))
    ids = predictor.encode_batch(sentences)
    dtype = amp_dtype(args.amp, device)
    agreement = compare_with_pytorch(predictor, ids) if predictor.runtime != "pytorch" else {}
    bs = args.batch_size
    timed_n = min(args.latency_sample or len(ids), len(ids))
    batches = [list(range(i, min(i + bs, timed_n), 1)) for i in range(0, timed_n, bs)]
    n_ctx = predictor.config.n_ctx

    def run(batch: list[int]) -> torch.Tensor:
        # what is timed: from the raw sentences, or (--pad_to_n_ctx) from ids padded to n_ctx
        seqs = ([ids[i] for i in batch] if args.pad_to_n_ctx else
                predictor.encode_batch([sentences[i] for i in batch]))
        x, lengths = pad_batch(seqs, predictor.pad_id, min_len=n_ctx if args.pad_to_n_ctx else 1)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return predictor.forward(x.to(device), lengths.to(device))[:, columns].argmax(-1).cpu()

    predicted = torch.empty(len(ids), dtype=torch.long)
    with torch.inference_mode():
        for batch in batches[: args.warmup]:  # first calls allocate buffers and pick kernels
            run(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for batch in tqdm(batches, desc="evaluate", leave=False):
            predicted[batch] = run(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed_ms = (time.perf_counter() - start) * 1000
    if timed_n < len(ids):  # the rest, for the accuracy only
        rest = predict_logits(predictor.forward, ids[timed_n:], 64, predictor.pad_id, device, amp_dtype=dtype,
                              progress=False)
        predicted[timed_n:] = rest[:, columns].argmax(-1)
    correct, total = int((predicted == gold).sum()), len(gold)
    timed = f"ids padded to n_ctx={n_ctx} (the seed's method)" if args.pad_to_n_ctx else \
        "raw sentences, tokenization included"
    logger.info("[Accuracy] : %.4f, %5d/%5d", correct / total, correct, total)
    extra = {}
    if len(labels) > 2:
        extra["macro_f1"] = macro_f1(predicted, gold, len(labels))
        logger.info("[Macro-F1] : %.4f", extra["macro_f1"])
    logger.info("[Elapsed Time] : %sms, %sms on average over %d timed sentences", elapsed_ms, elapsed_ms / timed_n,
                timed_n)
    logger.info("[Timed] %s; batch %d, %d thread(s), %s, %s", timed, bs, torch.get_num_threads(), device,
                predictor.runtime)
    return {"accuracy": correct / total, "correct": correct, "total": total, **extra, "elapsed_ms": elapsed_ms,
            "ms_per_example": elapsed_ms / timed_n, "timed_sentences": timed_n, "timed": timed, "batch_size": bs,
            "threads": torch.get_num_threads(), "device": str(device), "amp": args.amp, **agreement,
            "predictions": predicted.tolist(),
            **describe(predictor)}


def macro_f1(predicted: torch.Tensor, gold: torch.Tensor, num_labels: int) -> float:
    """Unweighted mean over classes of F1 (a class never predicted nor present counts 0)."""
    scores = []
    for k in range(num_labels):
        tp = int(((predicted == k) & (gold == k)).sum())
        fp = int(((predicted == k) & (gold != k)).sum())
        fn = int(((predicted != k) & (gold == k)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return sum(scores) / num_labels


def compare_with_pytorch(predictor: Predictor, ids: list[list[int]]) -> dict:
    """Max |logit difference| and prediction agreement between the exported model's runtime
    and PyTorch."""
    cpu = torch.device("cpu")
    ours = predict_logits(predictor.forward, ids, 64, predictor.pad_id, cpu, progress=False)
    theirs = predict_logits(predictor.model, ids, 64, predictor.pad_id, cpu, progress=False)
    diff = (ours - theirs).abs().max().item()
    same = (ours.argmax(-1) == theirs.argmax(-1)).float().mean().item()
    logger.info("[%s vs PyTorch] max |logit difference| %.3g, same prediction on %.2f%%", predictor.runtime, diff,
                100 * same)
    return {"max_abs_logit_diff_vs_pytorch": diff, "same_prediction_vs_pytorch": same}


def label_augmented(args: argparse.Namespace, predictor: Predictor, device: torch.device, dist: DistContext) -> int:
    """The seed's labeling command: the training sentences and `augmented.raw`, scored by the
    teacher, written as label.py writes a transfer set, to `<augmented file>.pred`."""
    from labeling import TeacherScorer, TransferPlan, label

    data_dir = Path(args.data_dir)
    raw_path = data_dir / (args.augmented_filename or "augmented.raw")
    if not raw_path.is_file():
        raise UserError(f"{raw_path}: not found (run augment_data.py first)")
    labels = data_labels(data_dir)
    label_map = parse_label_map(args.label_map)
    scorer = TeacherScorer(predictor, teacher_columns(predictor.labels, labels, label_map, predictor.path),
                           args.batch_size, amp_dtype(args.amp, device), dist)
    plan = TransferPlan(train=data_dir / "train.txt", augmented=raw_path,
                        held_out=[data_dir / "valid.txt", data_dir / "test.txt"])
    output = Path(f"{raw_path}.pred")
    results = label(plan, output, labels, label_map, scorer, args.label_chunk, dist,
                    {"teacher": predictor.path, "batch_size": args.batch_size, "amp": args.amp,
                     "runtime": predictor.runtime})
    if results is not None:
        results.update({"args": vars(args), "versions": library_versions()})
        write_json(f"{output}.results.json", results)
    return 0


def results_path(args: argparse.Namespace, predictor: Predictor) -> Path:
    """Where the test results go: --results_path, or beside the model (a teacher's in its
    directory), named by runtime and timing."""
    if args.results_path:
        return Path(args.results_path)
    suffix = {"pytorch": "", "onnxruntime": "onnx.", "onnxruntime-int8": "int8.onnx.", "openvino": "openvino.",
              "openvino-int8": "int8.openvino."}[predictor.runtime]
    if args.pad_to_n_ctx:
        suffix += "padded."
    if predictor.is_teacher:
        if not Path(predictor.path).is_dir():
            raise UserError(f"{predictor.path}: not a local directory to write results into; add --results_path")
        return Path(predictor.path) / f"{suffix}results.json"
    return Path(f"{predictor.path}.{suffix}results.json")


def run_evaluation(args: argparse.Namespace, config: Config, dist: DistContext) -> int:
    """Evaluate, export or label (under torchrun: labeling only, sharded by rank)."""
    device = resolve_device(args.device, dist.local_rank)
    set_seed(args.seed)
    set_threads(args.num_threads)
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: data directory not found (run `make data`)")
    predictor = Predictor.load(args.bert_output_dir if config.is_transformer else args.model_path, device)
    if predictor.config.enc_class != config.enc_class:
        raise UserError(f"{predictor.path}: holds a {predictor.config.emb_class}/{predictor.config.enc_class} "
                        f"model, but {args.config} is {config.emb_class}/{config.enc_class}")
    if args.convert_onnx:
        for path in predictor.export_onnx(quantize=args.quantize_onnx):
            logger.info("[ONNX] %s", path)
    if args.enable_ort or args.enable_openvino:
        if device.type != "cpu":
            raise UserError("--enable_ort/--enable_openvino run on the CPU; add --device cpu")
        predictor.use_runtime("onnxruntime" if args.enable_ort else "openvino", args.onnx_path, args.num_threads)
    if args.augmented:
        return label_augmented(args, predictor, device, dist)
    results = evaluate_test(args, predictor, device)
    results.update({"args": vars(args), "config": config_to_dict(predictor.config), "versions": library_versions()})
    write_json(results_path(args, predictor), results)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        config = load_config(args.config)
        check_flags(args, config)
        resolve_device(args.device)
        dist = init_distributed(args.device) if args.augmented else DistContext()
        return run_in_group(dist, lambda: run_evaluation(args, config, dist))

    return run_main(body, logger)


if __name__ == "__main__":
    exit_stage(main())
