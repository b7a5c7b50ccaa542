"""The results scripts on toy data: the ablation's training stage writes one row per run."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import preprocess
from conftest import write_agreeing_transfer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import ablation  # noqa: E402


def add_logits(data_dir: Path, glove: Path, config: Path) -> None:
    """transfer.txt with logits that agree with the gold labels, and its .ids file."""
    write_agreeing_transfer(data_dir, data_dir / "transfer.txt", extra=("a good [MASK] film",))
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}", f"--embedding_path={glove}",
                            "--augmented", "--augmented_filename=transfer.txt"]) == 0


def test_ablation_training_stage_writes_a_row_per_run(data_dir, glove_path, student_config, tmp_path, capsys):
    config = student_config("cnn")
    add_logits(data_dir, glove_path, config)
    sample = tmp_path / "sample"
    shutil.copytree(data_dir, sample)
    results = tmp_path / "ablation.md"
    assert ablation.main(["--stage", "train", f"--config={config}", f"--data_dir={data_dir}",
                          f"--sample_dir={sample}", f"--out_dir={tmp_path / 'out'}", f"--results={results}",
                          "--device=cpu", "--jobs=2", "--only=kl-t2,mse-sample"]) == 0
    table = results.read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "KLDivLoss, T = 2" in rows["kl-t2"] and "/40)" in rows["kl-t2"]
    assert "n-gram sample" in rows["mse-sample"] and "/40)" in rows["mse-sample"]
    assert "(not run yet)" in rows["mse"]
    assert (tmp_path / "out" / "cnn-kl-t2.pt.results.json").exists()
    assert ablation.main(["--stage", "train", "--only=nonsense", f"--data_dir={data_dir}",
                          f"--sample_dir={sample}", f"--out_dir={tmp_path / 'out'}", f"--results={results}"]) == 1
    assert "unknown run 'nonsense'" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_on_random_weights(data_dir, tiny_transformer, tmp_path):
    """QUICK bench with no checkpoints: random-weight stand-ins (the students from their configs
    in configs/, the teacher a random head on the tiny BERT), every runtime, each in its process."""
    import json
    import os

    import bench
    from conftest import write_glove

    glove = write_glove(tmp_path / "glove.50d.txt", dim=50)
    out = tmp_path / "results"
    assert bench.main(["--quick", f"--data_dir={data_dir}", f"--checkpoints={tmp_path / 'no-checkpoints'}",
                       f"--out_dir={out}", f"--onnx_dir={tmp_path / 'onnx'}", "--models=teacher,cnn,bow",
                       f"--teacher_model={tiny_transformer('bert')}", f"--embedding_path={glove}"]) == 0
    report = json.loads((out / "bench.json").read_text())
    records = report["records"]
    float_runtimes = {"pytorch", "onnxruntime", "onnxruntime-int8"}
    expected = {(m, r) for m in ("teacher", "cnn", "bow") for r in float_runtimes} | {
        ("bow", "numpy"), ("teacher", "onnxruntime-int8-rescored")}
    assert {(r["model"], r["runtime"]) for r in records} == expected
    assert len(records) == 2 * len(expected)  # one thread and all cores
    assert {r["threads"] for r in records} == {1, os.cpu_count()}
    for r in records:
        assert r["weights"] == "random" and r["sentences"] == 40
        # an accuracy over the 40 test sentences, and latencies a tiny model cannot exceed
        assert float(r["test_accuracy"] * 40).is_integer(), r
        assert 0 < r["text_ms_p50"] <= r["text_ms_p90"] < 1000 and r["batch128_sentences_per_s"] > 1, r
        assert r["torch_loaded"] is (r["runtime"] == "pytorch"), r
    # every float runtime of a model runs the same weights: the same accuracy
    for model in ("teacher", "cnn", "bow"):
        accuracies = {r["test_accuracy"] for r in records if r["model"] == model and r["runtime"] in float_runtimes
                      and "int8" not in r["runtime"]}
        assert len(accuracies) == 1, (model, accuracies)
    table = (out / "bench.md").read_text()
    assert "| bow | random | numpy | 1 |" in table and "| teacher | random | pytorch | 1 |" in table
    assert "Speed-up over the PyTorch teacher" in table
    assert (out / "accuracy_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "onnx" / "bow" / "bundle" / "bow.npz").exists()
    # static int8 for the CNN (calibrated), dynamic for the teacher and the bag
    assert {(r["model"], r["int8"]) for r in records if r["runtime"] == "onnxruntime-int8"} == {
        ("cnn", "static"), ("teacher", "dynamic"), ("bow", "dynamic")}
    assert "| cnn | random | onnxruntime-int8 (static) | 1 |" in table
    # the random tiny teacher's logits are all near-ties at margin 2: rescored, it is fp32 exactly
    by_runtime = {r["runtime"]: r["test_accuracy"] for r in records if r["model"] == "teacher" and r["threads"] == 1}
    assert by_runtime["onnxruntime-int8-rescored"] == by_runtime["onnxruntime"]


def test_few_labels_split_keeps_a_seeded_subset_and_drops_the_rest_labels(data_dir, tmp_path, capsys):
    import few_labels

    out = tmp_path / "few"
    assert few_labels.split(data_dir, out, 50, seed=42) == (50, 190)
    train = (data_dir / "train.txt").read_text().splitlines()
    kept = (out / "train.txt").read_text().splitlines()
    unlabeled = (out / "unlabeled.txt").read_text().splitlines()
    assert len(kept) == 50 and set(kept) <= set(train)
    # every training sentence once: labeled in train.txt or, without its label, in unlabeled.txt
    assert sorted([line.split("\t")[0] for line in kept] + unlabeled) == sorted(line.split("\t")[0] for line in train)
    assert all("\t" not in line for line in unlabeled)
    assert (out / "test.txt").read_bytes() == (data_dir / "test.txt").read_bytes()
    mtime = (out / "train.txt").stat().st_mtime_ns
    few_labels.split(data_dir, out, 50, seed=42)  # unchanged bytes are not rewritten (later stages stay done)
    assert (out / "train.txt").stat().st_mtime_ns == mtime
    import pytest

    from util import UserError

    with pytest.raises(UserError, match="--labeled must be between 1 and 239"):
        few_labels.split(data_dir, out, 240, seed=42)


def test_a_runtime_is_a_models_fastest_only_within_0_3_points_of_pytorch():
    """bench.fastest: a faster int8 runtime that loses more than 0.3 points of accuracy is passed over."""
    import bench

    def rec(runtime, ms, acc, threads=1):
        return {"model": "cnn", "runtime": runtime, "threads": threads, "text_ms_p50": ms, "test_accuracy": acc}

    records = [rec("pytorch", 1.0, 0.900), rec("onnxruntime", 0.8, 0.900), rec("onnxruntime-int8", 0.3, 0.8960),
               rec("onnxruntime-int8", 0.1, 0.900, threads=2)]
    assert bench.fastest(records, "cnn")["runtime"] == "onnxruntime"
    records[2]["test_accuracy"] = 0.8975  # 0.25 points below
    assert bench.fastest(records, "cnn")["runtime"] == "onnxruntime-int8"


def test_near_ties_are_the_rows_a_small_error_could_flip():
    from runtime import near_ties

    logits = np.array([[2.0, 1.5, -1.0], [3.0, 0.0, 0.1], [0.2, 0.1, 0.15]])
    assert near_ties(logits, 1.0).tolist() == [0, 2]
    assert near_ties(logits, 0.01).tolist() == []
    # multi-label: a logit within the margin of 0
    assert near_ties(np.array([[2.0, -3.0], [0.5, -4.0]]), 1.0, multi_label=True).tolist() == [1]
