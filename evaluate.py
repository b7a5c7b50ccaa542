"""Evaluate a teacher or student on `test.txt` (accuracy and per-example latency), or label
augmented sentences with the teacher's logits.

    python evaluate.py --config=configs/config-bert-cls.json --data_dir=data/sst2 --bert_output_dir=bert-checkpoint
    python evaluate.py --config=configs/config-glove-cnn.json --data_dir=data/sst2 --model_path=pytorch-model-cnn.pt
    python evaluate.py --config=configs/config-bert-cls.json --data_dir=data/sst2 --bert_output_dir=bert-checkpoint \
        --batch_size=128 --augmented      # writes data/sst2/augmented.raw.pred

The model is rebuilt from the checkpoint alone (config, vocabulary or tokenizer, labels);
`--config` only says which kind of model to expect. Test sentences are tokenized exactly
as at training time, from the raw `test.txt`.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dataset import (
    append_partial_predictions,
    label_ids,
    length_sorted_batches,
    pad_batch,
    read_examples,
    read_ids,
    read_partial_predictions,
    write_predictions,
)
from model import Predictor, export_onnx, load_predictor, logits_for_batches, predict_logits, quantize_onnx
from preprocess import default_augmented_filename
from util import (
    Config,
    DistContext,
    UserError,
    amp_dtype,
    config_to_dict,
    init_distributed,
    library_versions,
    load_config,
    positive,
    resolve_device,
    run_in_group,
    run_main,
    set_seed,
    set_threads,
    setup_logging,
    write_json,
)

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="model config JSON (says teacher or student)")
    p.add_argument("--data_dir", required=True, help="directory with test.txt (and the augmented file)")
    p.add_argument("--bert_output_dir", default="bert-checkpoint", help="teacher directory from train.py")
    p.add_argument("--model_path", default="pytorch-model.pt", help="student checkpoint from train.py")
    p.add_argument("--batch_size", type=positive(int), default=1, help="batch size (1: per-example latency)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--num_threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--augmented", action="store_true", help="label the augmented file with the teacher's logits")
    p.add_argument("--augmented_filename", help="augmented file in data_dir (default augmented.raw)")
    p.add_argument("--test_filename", default="test.txt", help="labeled file in data_dir to evaluate")
    p.add_argument("--convert_onnx", action="store_true", help="export the model to ONNX (dynamic batch and length)")
    p.add_argument("--quantize_onnx", action="store_true",
                   help="with --convert_onnx: also write a dynamically int8-quantized copy; "
                        "with --enable_ort: evaluate that copy")
    p.add_argument("--enable_ort", action="store_true", help="evaluate (or label) with ONNX Runtime")
    p.add_argument("--label_chunk", type=positive(int), default=20000,
                   help="--augmented: sentences labeled between two saves of the resumable progress file")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none",
                   help="autocast dtype for the forward pass (bf16: CPUs with bf16 support, CUDA; fp16: CUDA)")
    p.add_argument("--warmup", type=int, default=10, help="untimed batches before timing")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    return p


def macro_f1(predictions: torch.Tensor, gold: torch.Tensor, num_labels: int) -> float:
    """Unweighted mean over classes of F1 (a class never predicted nor present counts 0)."""
    scores = []
    for k in range(num_labels):
        tp = int(((predictions == k) & (gold == k)).sum())
        fp = int(((predictions == k) & (gold != k)).sum())
        fn = int(((predictions != k) & (gold == k)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return sum(scores) / num_labels


def evaluate_test(args: argparse.Namespace, loaded: Predictor, device: torch.device) -> dict:
    """Accuracy on the labeled file and per-example latency at `--batch_size`."""
    path = Path(args.data_dir) / args.test_filename
    examples = read_examples(path)
    gold = torch.tensor(label_ids(examples, loaded.labels, path))
    ids = loaded.encode([e.sentence for e in examples])
    model, pad_id = loaded.model, loaded.pad_id
    dtype = amp_dtype(args.amp, device) if loaded.runtime == "pytorch" else None
    agreement = compare_with_pytorch(loaded, ids, device) if loaded.runtime != "pytorch" else {}
    bs = args.batch_size
    batches = [list(range(i, min(i + bs, len(ids)))) for i in range(0, len(ids), bs)]
    predictions = torch.empty(len(ids), dtype=torch.long)
    from tqdm import tqdm

    with torch.inference_mode():
        # Warm-up: first calls allocate buffers and pick kernels; not what a server sees.
        for batch in batches[: args.warmup]:
            x, lengths = pad_batch([ids[i] for i in batch], pad_id)
            model(x.to(device), lengths.to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for batch in tqdm(batches, desc="evaluate", leave=False):
            x, lengths = pad_batch([ids[i] for i in batch], pad_id)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(x.to(device), lengths.to(device))
            predictions[batch] = logits.argmax(-1).cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed_ms = (time.perf_counter() - start) * 1000
    correct = int((predictions == gold).sum())
    total = len(gold)
    accuracy = correct / total
    logger.info("[Accuracy] : %.4f, %5d/%5d", accuracy, correct, total)
    extra = {}
    if len(loaded.labels) > 2:
        extra["macro_f1"] = macro_f1(predictions, gold, len(loaded.labels))
        logger.info("[Macro-F1] : %.4f", extra["macro_f1"])
    logger.info("[Elapsed Time] : %sms, %sms on average", elapsed_ms, elapsed_ms / total)
    return {
        "accuracy": accuracy, "correct": correct, "total": total, **extra,
        "elapsed_ms": elapsed_ms, "ms_per_example": elapsed_ms / total,
        "batch_size": bs, "threads": torch.get_num_threads(), "device": str(device), "runtime": loaded.runtime, "amp": args.amp,
        **agreement,
        "predictions": predictions.tolist(),
        **loaded.parameter_counts,
    }


def compare_with_pytorch(loaded: Predictor, ids: list[list[int]], device: torch.device) -> dict:
    """Max |logit difference| and prediction agreement between the ONNX model and PyTorch."""
    ours = predict_logits(loaded.model, ids, 64, loaded.pad_id, device, desc="onnx", progress=False)
    theirs = predict_logits(loaded.torch_model, ids, 64, loaded.pad_id, device, desc="pytorch", progress=False)
    diff = (ours - theirs).abs().max().item()
    same = (ours.argmax(-1) == theirs.argmax(-1)).float().mean().item()
    logger.info("[ONNX vs PyTorch] max |logit difference| %.3g, same prediction on %.2f%%", diff, 100 * same)
    return {"max_abs_logit_diff_vs_pytorch": diff, "same_prediction_vs_pytorch": same}


def label_augmented(args: argparse.Namespace, loaded: Predictor, device: torch.device,
                    dist_ctx: DistContext | None = None) -> dict | None:
    """Write `<augmented file>.pred`: one line of teacher logits per input line, same order."""
    data_dir = Path(args.data_dir)
    name = args.augmented_filename or "augmented.raw"
    raw_path = data_dir / name
    examples = read_examples(raw_path)
    fs_path = data_dir / f"{name}.fs"
    if fs_path.exists():
        ids = read_ids(fs_path, len(loaded.labels), soft=False).ids
        if len(ids) != len(examples):
            raise UserError(f"{fs_path}: {len(ids)} lines but {raw_path} has {len(examples)}; rerun preprocess.py "
                            "--augmented")
    else:
        logger.info("%s not found: tokenizing %s", fs_path, raw_path)
        ids = loaded.encode([e.sentence for e in examples])
    dist_ctx = dist_ctx or DistContext()
    start = time.perf_counter()
    # The same length-sorted batches as a single process; under torchrun rank r takes
    # batches r, r + world, ...: each sentence meets the same batch, so the logits match.
    batches = length_sorted_batches([len(s) for s in ids], args.batch_size)
    mine = batches[dist_ctx.rank::dist_ctx.world_size]
    pred_path = data_dir / f"{name}.pred"
    # Labeling resumes from `<pred>.partial.<rank>` if a run with the same inputs was killed.
    partial = Path(f"{pred_path}.partial.{dist_ctx.rank}")
    weights = Path(loaded.path) / "model.safetensors"
    fingerprint = (f"lines={len(ids)} batch={args.batch_size} world={dist_ctx.world_size} amp={args.amp} "
                   f"runtime={loaded.runtime} teacher={weights.stat().st_size}:{weights.stat().st_mtime_ns}")
    logits = np.zeros((len(ids), len(loaded.labels)), dtype=np.float32)  # [n, K]
    labeled = np.zeros(len(ids), dtype=bool)
    for i, row in read_partial_predictions(partial, fingerprint, len(loaded.labels)).items():
        logits[i], labeled[i] = row, True
    if labeled.any():
        logger.info("[Resume] %d sentences already labeled in %s", int(labeled.sum()), partial)
    todo = [b for b in mine if not labeled[b].all()]
    chunk = max(1, args.label_chunk // args.batch_size)
    from tqdm import tqdm

    bar = tqdm(total=sum(map(len, todo)), desc="label", disable=not dist_ctx.is_main)
    for start_batch in range(0, len(todo), chunk):
        part = todo[start_batch:start_batch + chunk]
        indices = [i for batch in part for i in batch]
        rows = logits_for_batches(loaded.model, ids, part, loaded.pad_id, device, amp_dtype(args.amp, device),
                                  progress=False).numpy()  # [len(indices), K]
        append_partial_predictions(partial, fingerprint, indices, rows)
        logits[indices], labeled[indices] = rows, True
        bar.update(len(indices))
    bar.close()
    if dist_ctx.enabled:
        import torch.distributed as dist

        mine_indices = np.array([i for batch in mine for i in batch], dtype=np.int64)
        gathered: list = [None] * dist_ctx.world_size if dist_ctx.is_main else None
        dist.gather_object((mine_indices, logits[mine_indices]), gathered, dst=0)
        if not dist_ctx.is_main:
            partial.unlink(missing_ok=True)
            return None
        for indices, rows in gathered:
            logits[indices] = rows
    seconds = time.perf_counter() - start
    write_predictions(pred_path, [e.sentence for e in examples], logits)
    partial.unlink(missing_ok=True)
    logger.info("[Labeled] %d sentences in %.1fs (%.0f sentences/s) -> %s", len(examples), seconds,
                len(examples) / seconds, pred_path)
    return {"labeled": len(examples), "seconds": seconds, "sentences_per_s": len(examples) / seconds,
            "batch_size": args.batch_size, "threads": torch.get_num_threads(), "device": str(device),
            "processes": dist_ctx.world_size, "amp": args.amp, "output": str(pred_path)}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging()

    def body() -> int:
        config = load_config(args.config, args.set)
        resolve_device(args.device)
        dist_ctx = init_distributed(args.device) if args.augmented else DistContext()
        if not dist_ctx.is_main:
            logging.getLogger().setLevel(logging.WARNING)
        return run_in_group(dist_ctx, lambda: run_evaluation(args, config, dist_ctx))

    return run_main(body, logger)


def run_evaluation(args: argparse.Namespace, config: Config, dist_ctx: DistContext) -> int:
    """Evaluate, export or label (under torchrun: labeling only, sharded by rank)."""
    device = resolve_device(args.device, dist_ctx.local_rank)
    set_seed(args.seed)
    set_threads(args.num_threads)
    if not Path(args.data_dir).is_dir():
        raise UserError(f"{args.data_dir}: data directory not found (run `make data`)")
    if args.augmented and not config.is_transformer:
        raise UserError("--augmented labels with a teacher: pass a transformer config and --bert_output_dir")
    loaded = load_predictor(config.is_transformer, args.bert_output_dir, args.model_path, device)
    if loaded.config.enc_class != config.enc_class:
        raise UserError(f"{loaded.path}: holds a {loaded.config.emb_class}/{loaded.config.enc_class} "
                        f"model, but {args.config} is {config.emb_class}/{config.enc_class}")
    if args.convert_onnx:
        example = torch.tensor(loaded.encode(["a fine example sentence to trace the graph"]))
        export_onnx(loaded.model, loaded.onnx_path(), example)
        logger.info("[ONNX] %s", loaded.onnx_path())
        if args.quantize_onnx:
            quantize_onnx(loaded.onnx_path(), loaded.onnx_path(quantized=True))
            logger.info("[ONNX] %s (int8 weights)", loaded.onnx_path(quantized=True))
        loaded.model.to(device)
    if args.enable_ort:
        if device.type != "cpu":
            raise UserError("--enable_ort runs on the CPU; add --device cpu")
        loaded.use_onnxruntime(args.quantize_onnx, args.num_threads)
    if args.augmented:
        results = label_augmented(args, loaded, device, dist_ctx)
        if results is None:  # a non-zero rank: rank 0 writes
            return 0
        out = Path(results["output"]).with_name(Path(results["output"]).name + ".results.json")
    else:
        results = evaluate_test(args, loaded, device)
        suffix = {"pytorch": "", "onnxruntime": "onnx.", "onnxruntime-int8": "int8.onnx."}[loaded.runtime]
        model_path = Path(loaded.path)
        out = (model_path / f"{suffix}results.json" if config.is_transformer
               else Path(f"{model_path}.{suffix}results.json"))
    results.update({"args": vars(args), "config": config_to_dict(loaded.config),
                    "versions": library_versions()})
    write_json(out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
