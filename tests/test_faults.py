"""Faults and determinism: SIGKILL mid-epoch then --resume; SIGKILL mid-labeling then rerun;
the same seed gives the same bytes."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import augment_data
import evaluate
import label as label_stage
import preprocess
import train

ROOT = Path(__file__).resolve().parents[1]


def start(script: str, *argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / script), *argv], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> bool:
    """SIGKILL `proc` as soon as `ready()`; False if it finished first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    proc.kill()
    raise AssertionError("timed out")


# the seed's epochs, validated after each; a step budget (60 steps an epoch, 150 steps: the third
# epoch cut short), validated every 20 steps
BUDGETS = {"epochs": ["--epoch=3"],
           "steps": ["--epochs=1", "--min_steps=150", "--eval_steps=20", "--use_transformers_optimizer"]}


@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_training_killed_mid_epoch_resumes_to_the_same_result(budget, data_dir, glove_path, student_config,
                                                              tmp_path):
    config = student_config("cnn")
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}", f"--embedding_path={glove_path}"]) == 0
    common = [f"--config={config}", f"--data_dir={data_dir}", "--lr=5e-3", *BUDGETS[budget], "--batch_size=4",
              "--save_steps=7", "--device=cpu", "--num_threads=1", f"--log_dir={tmp_path / 'runs'}"]
    whole = tmp_path / "whole.pt"
    assert train.main([*common, f"--save_path={whole}"]) == 0
    cut = tmp_path / "cut.pt"
    proc = start("train.py", *common, f"--save_path={cut}")
    assert kill_when(proc, lambda: Path(f"{cut}.last").exists()), "training finished before it could be killed"
    assert proc.returncode == -signal.SIGKILL
    state = torch.load(f"{cut}.last", weights_only=True)["state"]
    assert state["epoch"] == 0 and state["step_in_epoch"] > 0  # killed mid-epoch 1
    assert not Path(f"{cut}.train_results.json").exists()
    assert not list(tmp_path.glob(".*.tmp"))  # no half-written file left behind
    assert train.main([*common, f"--save_path={cut}", "--resume"]) == 0
    a = json.loads(Path(f"{whole}.train_results.json").read_text())
    b = json.loads(Path(f"{cut}.train_results.json").read_text())
    assert abs(a["best_accuracy"] - b["best_accuracy"]) <= 0.005
    assert a["steps"] == b["steps"] == (180 if budget == "epochs" else 150)
    wa = torch.load(f"{whole}.last", weights_only=True)["model"]
    wb = torch.load(f"{cut}.last", weights_only=True)["model"]
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_labeling_killed_resumes_and_same_seed_gives_same_bytes(data_dir, glove_path, tiny_transformer,
                                                                  trained_teacher, student_config, tmp_path):
    teacher, tcfg = trained_teacher
    raw = data_dir / "augmented.raw"
    args = ["--input", str(data_dir / "train.txt"), "--n_iter", "12", "--analyzer", "none", "--seed", "7"]
    assert augment_data.main([*args, "--output", str(raw)]) == 0
    assert augment_data.main([*args, "--output", str(tmp_path / "again.raw"), "--parallel", "--num_workers", "2"]) == 0
    assert sha(raw) == sha(tmp_path / "again.raw")
    pred = data_dir / "augmented.raw.pred"
    label = [f"--teacher={teacher}", f"--data_dir={data_dir}", "--augmentations", f"--output={pred}",
             "--batch_size=8", "--device=cpu", "--num_threads=1", "--label_chunk=8"]
    assert label_stage.main(label) == 0
    first = sha(pred)
    pred.unlink()
    partial = Path(f"{pred}.partial")
    proc = start("label.py", *label)
    killed = kill_when(proc, lambda: partial.exists() and partial.stat().st_size > 2000)
    assert killed, "labeling finished before it could be killed"
    assert not pred.exists()
    assert label_stage.main(label) == 0
    assert sha(pred) == first and not partial.exists()
    # students from the same seed predict the same
    import shutil

    shutil.copy(pred, data_dir / "augmented.txt")
    config = student_config("cnn")
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}", f"--embedding_path={glove_path}",
                            "--augmented"]) == 0
    predictions = []
    for run in ("a", "b"):
        save = tmp_path / f"{run}.pt"
        assert train.main([f"--config={config}", f"--data_dir={data_dir}", f"--save_path={save}", "--augmented",
                           "--epoch=2", "--lr=5e-3", "--batch_size=32", "--device=cpu",
                           f"--log_dir={tmp_path / 'runs'}"]) == 0
        assert evaluate.main([f"--config={config}", f"--data_dir={data_dir}", f"--model_path={save}",
                              "--device=cpu"]) == 0
        predictions.append(json.loads(Path(f"{save}.results.json").read_text())["predictions"])
    assert predictions[0] == predictions[1]
