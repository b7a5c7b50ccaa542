"""The results scripts on toy data: the ablation's training stage writes one row per run."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

import preprocess
from dataset import read_examples, write_predictions

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import ablation  # noqa: E402


def add_logits(data_dir: Path, glove: Path, config: Path) -> None:
    """augmented.txt with logits that agree with the gold labels, and its .ids file."""
    examples = read_examples(data_dir / "train.txt")
    logits = np.array([[-2.0, 2.0] if e.label == "1" else [2.0, -2.0] for e in examples], dtype=np.float32)
    write_predictions(data_dir / "augmented.txt", [e.sentence for e in examples], logits)
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}", f"--embedding_path={glove}",
                            "--augmented"]) == 0


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
    expected = {(m, r) for m in ("teacher", "cnn", "bow") for r in float_runtimes} | {("bow", "numpy")}
    assert {(r["model"], r["runtime"]) for r in records} == expected
    assert len(records) == 2 * len(expected)  # one thread and all cores
    assert {r["threads"] for r in records} == {1, os.cpu_count()}
    for r in records:
        assert r["weights"] == "random" and r["sentences"] == 40
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["text_ms_p50"] > 0 and r["batch128_sentences_per_s"] > 0
        assert r["torch_loaded"] is (r["runtime"] == "pytorch"), r
    table = (out / "bench.md").read_text()
    assert "| bow | random | numpy | 1 |" in table and "| teacher | random | pytorch | 1 |" in table
    assert "Speed-up over the PyTorch teacher" in table
    assert (out / "accuracy_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "onnx" / "bow" / "float" / "bow.npz").exists()
