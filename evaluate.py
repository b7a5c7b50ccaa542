"""Evaluate a teacher or student on `test.txt`: accuracy (multi-label: micro- and macro-F1, exact
match, Jaccard and per-label precision, recall and F1) and per-example latency.

    python evaluate.py --config=configs/config-bert-mean.json --data_dir=data/sst2 --teacher=bert-checkpoint
    python evaluate.py --config=configs/config-glove-cnn.json --data_dir=data/sst2 --model_path=pytorch-model-cnn.pt
    python evaluate.py --config=configs/config-bert-hf.json --data_dir=data/sst2 --teacher=my-roberta-sst2 \
        --label_map=NEGATIVE=0,POSITIVE=1     # anyone's sequence classifier, its labels mapped by name
    # the seed's labeling command: runs label.py (the one labeling path) and writes its transfer
    # set to data/sst2/augmented.raw.pred
    python evaluate.py --config=configs/config-bert-mean.json --data_dir=data/sst2 --bert_output_dir=bert-checkpoint \
        --batch_size=128 --augmented

The model is rebuilt from the checkpoint alone (config, vocabulary or tokenizer, labels);
`--config` only says which kind of model to expect. Its labels are matched to the data's by
name. Latency is timed from the raw test sentence (tokenization included, what a user of the
model waits for), or with `--pad_to_n_ctx` as the seed timed it: from ids padded to `n_ctx`,
tokenization excluded. `--enable_ort`/`--enable_openvino` evaluate the ONNX export that
`predict.py --export_onnx` writes.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch
from tqdm import tqdm

import label
from cli import add_teacher_flag, common_parser
from config import Config, config_to_dict, load_config
from dataset import AUGMENTED_FILE, check_pairs, data_labels, label_ids, model_data_multi_label, read_examples
from inference import Predictor, compare_with_pytorch, describe, pad_batch, predict_logits
from metrics import ECE_BINS, calibration, macro_f1, multilabel_scores
from teachers import parse_label_map, teacher_columns
from util import (UserError, amp_dtype, exit_stage, library_versions, non_negative, positive, resolve_device,
                  run_main, set_seed, set_threads, write_json)

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                parents=[common_parser(amp=True, overrides=False)])
    add_teacher_flag(p, "teacher: a directory from train.py, or any Hugging Face sequence classifier (dir or hub "
                        "name)", default="bert-checkpoint")
    p.add_argument("--label_map", help="teacher label names to data labels, e.g. NEGATIVE=0,POSITIVE=1")
    p.add_argument("--results_path", help="the results JSON (default: beside the model)")
    p.add_argument("--model_path", default="pytorch-model.pt", help="student checkpoint from train.py")
    p.add_argument("--batch_size", type=positive(int), default=1, help="batch size (1: per-example latency)")
    p.add_argument("--augmented", action="store_true",
                   help=f"the seed's labeling command: label.py --augmentations, writing <data_dir>/{AUGMENTED_FILE}.pred")
    p.add_argument("--test_filename", default="test.txt", help="labeled file in data_dir to evaluate")
    p.add_argument("--pad_to_n_ctx", action="store_true",
                   help="time as the seed did: from ids padded to the config's n_ctx, tokenization excluded")
    p.add_argument("--warmup", type=non_negative(int), default=10, help="untimed batches before timing")
    p.add_argument("--latency_sample", type=non_negative(int), default=0,
                   help="time only the first N sentences at --batch_size (the rest are scored in untimed batches "
                        "of 64); 0: time them all")
    p.add_argument("--enable_ort", action="store_true", help="evaluate with ONNX Runtime on the CPU")
    p.add_argument("--enable_openvino", action="store_true", help="evaluate with OpenVINO on the CPU")
    p.add_argument("--onnx_path", help="with --enable_ort/--enable_openvino: the ONNX file (default: the export "
                                       "beside the model)")
    p.add_argument("--multi_label", action="store_true",
                   help="label sets (as preprocess.py recorded the data; need not be given again)")
    return p


def check_flags(args: argparse.Namespace, config: Config) -> None:
    """Refuse combinations that would be ignored."""
    if args.onnx_path and not (args.enable_ort or args.enable_openvino):
        raise UserError("--onnx_path names the model --enable_ort/--enable_openvino runs: add one")
    if args.enable_ort and args.enable_openvino:
        raise UserError("--enable_ort and --enable_openvino: choose one runtime")
    if args.label_map and not config.is_transformer:
        raise UserError("--label_map maps a teacher's label names; a student has the data's labels")
    if (args.enable_ort or args.enable_openvino) and args.amp != "none":
        raise UserError("--amp autocasts PyTorch; ONNX Runtime and OpenVINO run the exported float graph")


def evaluate_test(args: argparse.Namespace, predictor: Predictor, device: torch.device) -> dict:
    """Accuracy on the labeled file and per-example latency at `--batch_size`. The model's
    logit columns are put in the data's label order by name (a teacher's own order may differ)."""
    path = Path(args.data_dir) / args.test_filename
    multi = model_data_multi_label(Path(args.data_dir), args.multi_label, predictor.path, predictor.multi_label,
                                   path)
    examples = read_examples(path, multi_label=multi)
    check_pairs(predictor.path, predictor.pairs, path, examples[0].pair)
    sentences = [e.sentence for e in examples]
    labels = data_labels(Path(args.data_dir), multi)
    order = teacher_columns(predictor.labels, labels, parse_label_map(args.label_map), predictor.path)
    columns = torch.tensor(order)
    gold_ids = label_ids(examples, labels, path, multi)
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
            return predictor.forward(x.to(device), lengths.to(device))[:, columns].float().cpu()  # [B, K]

    logits = torch.empty(len(ids), len(labels))  # [n, K] in the data's label order
    with torch.inference_mode():
        for batch in batches[: args.warmup]:  # first calls allocate buffers and pick kernels
            run(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for batch in tqdm(batches, desc="evaluate", leave=False):
            logits[batch] = run(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed_ms = (time.perf_counter() - start) * 1000
    if timed_n < len(ids):  # the rest, for the accuracy only
        rest = predict_logits(predictor.forward, ids[timed_n:], 64, predictor.pad_id, device, amp_dtype=dtype,
                              progress=False)
        logits[timed_n:] = rest[:, columns]
    timed = f"ids padded to n_ctx={n_ctx} (the seed's method)" if args.pad_to_n_ctx else \
        "raw sentences, tokenization included"
    timing = {"elapsed_ms": elapsed_ms, "ms_per_example": elapsed_ms / timed_n, "timed_sentences": timed_n,
              "timed": timed, "batch_size": bs, "threads": torch.get_num_threads(), "device": str(device),
              "amp": args.amp, **agreement}
    if multi:
        # the model's thresholds are in its own label order: put them in the data's, as the logits
        thresholds = None if predictor.thresholds is None else [predictor.thresholds[c] for c in order]
        scores = multilabel_scores(logits.numpy(), gold_ids, labels, thresholds)
        log_timing(elapsed_ms, timed_n, timed, bs, device, predictor)
        return {**scores, "total": len(examples), **timing, **describe(predictor)}
    gold = torch.tensor(gold_ids)
    predicted = logits.argmax(-1)
    correct, total = int((predicted == gold).sum()), len(gold)
    logger.info("[Accuracy] : %.4f, %5d/%5d", correct / total, correct, total)
    extra = calibration(logits.numpy(), gold.numpy(), predictor.temperature)
    logger.info("[Calibration] temperature %.3f (stored with the model; 1: none): NLL %.4f -> %.4f, ECE (%d bins) "
                "%.4f -> %.4f", extra["temperature"], extra["nll"], extra["nll_calibrated"], ECE_BINS, extra["ece"],
                extra["ece_calibrated"])
    if len(labels) > 2:
        extra["macro_f1"] = macro_f1(predicted.numpy(), gold.numpy(), len(labels))
        logger.info("[Macro-F1] : %.4f", extra["macro_f1"])
    log_timing(elapsed_ms, timed_n, timed, bs, device, predictor)
    return {"accuracy": correct / total, "correct": correct, "total": total, **extra, **timing,
            "predictions": predicted.tolist(),
            **describe(predictor)}


def log_timing(elapsed_ms: float, timed_n: int, timed: str, bs: int, device: torch.device,
               predictor: Predictor) -> None:
    logger.info("[Elapsed Time] : %sms, %sms on average over %d timed sentences", elapsed_ms, elapsed_ms / timed_n,
                timed_n)
    logger.info("[Timed] %s; batch %d, %d thread(s), %s, %s", timed, bs, torch.get_num_threads(), device,
                predictor.runtime)


# evaluate.py's flags that label.py takes too, under the same names
LABEL_FLAGS = ("data_dir", "label_map", "batch_size", "device", "num_threads", "seed", "amp")


def seed_label_argv(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The seed's `evaluate.py --augmented` as label.py's command line: the teacher scores
    train.txt and augmented.raw into `augmented.raw.pred` (label.py's transfer set format).
    A flag of evaluation's own (latency, runtimes, the test file) would be ignored: refused."""
    config = load_config(args.config)
    if not config.is_transformer:
        raise UserError("--augmented labels with a teacher: pass a transformer config and --teacher")
    own = sorted(k for k, v in vars(args).items() if k not in (*LABEL_FLAGS, "config", "teacher", "augmented",
                                                                 "multi_label")
                 and v != parser.get_default(k))
    if own:
        raise UserError(f"--{own[0]} is for test evaluation, not the seed's --augmented labeling (label.py has the "
                        "labeling options)")
    pred = Path(args.data_dir) / f"{AUGMENTED_FILE}.pred"
    argv = [f"--teacher={args.teacher}", f"--augmentations={AUGMENTED_FILE}", f"--output={pred}"]
    return argv + [f"--{k}={getattr(args, k)}" for k in LABEL_FLAGS if getattr(args, k) is not None] + \
        (["--multi_label"] if args.multi_label else [])


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


def run_evaluation(args: argparse.Namespace, config: Config) -> int:
    """Load the model the flags name and evaluate it on the test file."""
    device = resolve_device(args.device)
    set_seed(args.seed)
    set_threads(args.num_threads)
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: data directory not found (run `make data`)")
    predictor = Predictor.load(args.teacher if config.is_transformer else args.model_path, device)
    if predictor.config.enc_class != config.enc_class:
        raise UserError(f"{predictor.path}: holds a {predictor.config.emb_class}/{predictor.config.enc_class} "
                        f"model, but {args.config} is {config.emb_class}/{config.enc_class}")
    if args.enable_ort or args.enable_openvino:
        if device.type != "cpu":
            raise UserError("--enable_ort/--enable_openvino run on the CPU; add --device cpu")
        predictor.use_runtime("onnxruntime" if args.enable_ort else "openvino", args.onnx_path, args.num_threads)
    results = evaluate_test(args, predictor, device)
    results.update({"args": vars(args), "config": config_to_dict(predictor.config), "versions": library_versions()})
    write_json(results_path(args, predictor), results)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.augmented:  # the seed's labeling command, run by the one labeling path
        return run_main(lambda: label.label_stage(label.build_parser().parse_args(seed_label_argv(parser, args))),
                        logger)

    def body() -> int:
        config = load_config(args.config)
        check_flags(args, config)
        return run_evaluation(args, config)

    return run_main(body, logger)


if __name__ == "__main__":
    exit_stage(main())
