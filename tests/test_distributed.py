"""torchrun (DDP, gloo, 2 processes on CPU): training and teacher labeling match a single process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import augment_data
import evaluate
import preprocess
import train
from test_teacher_and_pipeline import fit_teacher

ROOT = Path(__file__).resolve().parents[1]


def torchrun(script: str, *argv: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / script), *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_student_under_torchrun_matches_single_process(data_dir, glove_path, student_config, tmp_path):
    config = student_config("cnn")
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}", f"--embedding_path={glove_path}"]) == 0
    common = [f"--config={config}", f"--data_dir={data_dir}", "--lr=5e-3", "--epoch=5", "--device=cpu"]
    single = tmp_path / "single.pt"
    assert train.main([*common, f"--save_path={single}", "--batch_size=32", f"--log_dir={tmp_path / 'r1'}"]) == 0
    ddp = tmp_path / "ddp.pt"
    out = torchrun("train.py", *common, f"--save_path={ddp}", "--batch_size=16", f"--log_dir={tmp_path / 'r2'}")
    assert "batch 16 per process x 2 process(es) = 32 global" in out.stderr
    a = json.loads(Path(f"{single}.train_results.json").read_text())
    b = json.loads(Path(f"{ddp}.train_results.json").read_text())
    assert b["processes"] == 2
    assert abs(a["best_accuracy"] - b["best_accuracy"]) <= 0.1
    # the DDP checkpoint evaluates like any other
    assert evaluate.main([f"--config={config}", f"--data_dir={data_dir}", f"--model_path={ddp}",
                          "--device=cpu"]) == 0


def test_teacher_labeling_under_torchrun_is_identical(data_dir, tiny_transformer, make_teacher_config, tmp_path):
    teacher = tmp_path / "teacher"
    config = fit_teacher("bert", data_dir, tiny_transformer, make_teacher_config, teacher, epochs=1)
    assert augment_data.main(["--input", str(data_dir / "train.txt"), "--output", str(data_dir / "augmented.raw"),
                              "--n_iter", "2", "--analyzer", "none"]) == 0
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}", "--bert_do_lower_case",
                            f"--bert_model_name_or_path={tiny_transformer('bert')}", "--augmented"]) == 0
    base = [f"--config={config}", f"--data_dir={data_dir}", f"--bert_output_dir={teacher}", "--batch_size=16",
            "--augmented", "--device=cpu"]
    assert evaluate.main([*base, "--num_threads=1"]) == 0
    single = (data_dir / "augmented.raw.pred").read_bytes()
    (data_dir / "augmented.raw.pred").unlink()
    torchrun("evaluate.py", *base)
    assert (data_dir / "augmented.raw.pred").read_bytes() == single
    # under torchrun the teacher also trains (2 processes) and saves once
    out2 = tmp_path / "teacher2"
    torchrun("train.py", f"--config={config}", f"--data_dir={data_dir}", "--bert_do_lower_case",
             f"--bert_model_name_or_path={tiny_transformer('bert')}", f"--bert_output_dir={out2}", "--lr=2e-3",
             "--epoch=1", "--batch_size=8", "--device=cpu", f"--log_dir={tmp_path / 'r3'}")
    assert (out2 / "model.safetensors").exists()
