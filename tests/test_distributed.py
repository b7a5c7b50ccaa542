"""torchrun (DDP, gloo, 2 processes on CPU): training and teacher labeling match a single process,
and a DDP step averages the ranks' gradients exactly."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import augment_data
import evaluate
import label
import preprocess
import train

ROOT = Path(__file__).resolve().parents[1]


def torchrun(script: str, *argv: str) -> subprocess.CompletedProcess:
    """A stage script of the repository under torchrun, 2 processes."""
    return torchrun_script(ROOT / script, *argv)


def torchrun_script(path: Path, *argv: str) -> subprocess.CompletedProcess:
    """Any Python file under torchrun, 2 processes on the CPU; it must succeed."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(path), *argv]
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


@pytest.mark.slow
def test_teacher_labeling_under_torchrun_is_identical(data_dir, tiny_transformer, trained_teacher, tmp_path):
    teacher, config = trained_teacher
    assert augment_data.main(["--input", str(data_dir / "train.txt"), "--output", str(data_dir / "augmented.raw"),
                              "--n_iter", "2", "--analyzer", "none"]) == 0
    # label.py shards batches over the ranks, augmented sentences and unlabeled text included
    unlabeled = tmp_path / "unlabeled.txt"
    unlabeled.write_text("".join(f"{w} film and {v} plot\n" for w in ("good", "dull", "warm") for v in ("a", "the")))
    label_args = [f"--teacher={teacher}", f"--data_dir={data_dir}", "--augmentations", f"--unlabeled={unlabeled}",
                  "--batch_size=16", "--label_chunk=50", "--device=cpu"]
    assert label.main([*label_args, "--num_threads=1", f"--output={tmp_path / 'single.txt'}"]) == 0
    torchrun("label.py", *label_args, f"--output={tmp_path / 'ddp.txt'}")
    assert (tmp_path / "ddp.txt").read_bytes() == (tmp_path / "single.txt").read_bytes()
    # under torchrun the teacher also trains (2 processes) and saves once
    out2 = tmp_path / "teacher2"
    torchrun("train.py", f"--config={config}", f"--data_dir={data_dir}", "--bert_do_lower_case",
             f"--bert_model_name_or_path={tiny_transformer('bert')}", f"--bert_output_dir={out2}", "--lr=2e-3",
             "--epoch=1", "--batch_size=8", "--device=cpu", f"--log_dir={tmp_path / 'r3'}")
    assert (out2 / "model.safetensors").exists()


DDP_SCRIPT = '''
import json, sys
from pathlib import Path

spec = json.loads(Path(sys.argv[1]).read_text())
sys.path.insert(0, spec["root"])
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from config import config_from_dict
from model import build_student
from util import exit_stage, init_distributed

ctx = init_distributed("cpu")
torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
model = build_student(config_from_dict(spec["config"], "ddp"), spec["vocab"], 2)
forward = DistributedDataParallel(model)  # as train.py wraps a student on the CPU
optimizer = torch.optim.SGD(model.parameters(), lr=spec["lr"])
for step in spec["steps"]:
    ids, lengths, labels = step[ctx.rank]  # each rank its own batch
    loss = F.cross_entropy(forward(torch.tensor(ids), torch.tensor(lengths)), torch.tensor(labels))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
torch.save({"rank": ctx.rank, "world": ctx.world_size, "weights": model.state_dict()},
           Path(spec["out"]) / f"rank{ctx.rank}.pt")
dist.destroy_process_group()
exit_stage(0)
'''


def padded(seqs: list[list[int]]) -> tuple[list[list[int]], list[int]]:
    width = max(map(len, seqs))
    return [s + [0] * (width - len(s)) for s in seqs], [len(s) for s in seqs]


def test_ddp_step_averages_gradients_exactly(tmp_path):
    """Two ranks stepping on different batches end with identical weights, equal to one process
    stepping on the mean of both batches' losses (plain SGD, so a gradient that was not
    all-reduced, or summed instead of averaged, shows)."""
    import torch
    import torch.nn.functional as F

    from config import config_from_dict
    from conftest import TINY_STUDENTS
    from model import build_student

    config = {"emb_class": "glove", "enc_class": "cnn", "token_emb_dim": 8, **TINY_STUDENTS["cnn"], "dropout": 0.0}
    batches = [[[5, 6, 7, 8], [9, 10], [11, 12, 13]], [[14, 15], [16, 17, 18, 19, 20], [21]],
               [[22, 23, 24], [25], [5, 9, 14, 22]], [[26, 27, 28, 29], [6, 7], [8, 10, 12]]]
    labels = [[0, 1, 1], [1, 0, 0], [1, 1, 0], [0, 0, 1]]
    steps = [[(*padded(batches[2 * s + r]), labels[2 * s + r]) for r in range(2)] for s in range(2)]
    spec = {"root": str(ROOT), "config": config, "vocab": 30, "lr": 0.5, "steps": steps, "out": str(tmp_path)}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "ddp_step.py").write_text(DDP_SCRIPT)
    torchrun_script(tmp_path / "ddp_step.py", str(tmp_path / "spec.json"))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [(r["rank"], r["world"]) for r in ranks] == [(0, 2), (1, 2)]

    torch.manual_seed(0)
    model = build_student(config_from_dict(config, "single"), 30, 2)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in steps:
        losses = [F.cross_entropy(model(torch.tensor(ids), torch.tensor(lengths)), torch.tensor(y))
                  for ids, lengths, y in step]
        optimizer.zero_grad()
        (sum(losses) / 2).backward()
        optimizer.step()
    for key, value in model.state_dict().items():
        assert torch.equal(ranks[0]["weights"][key], ranks[1]["weights"][key]), key
        torch.testing.assert_close(ranks[0]["weights"][key], value, atol=1e-6, rtol=1e-5)
    # the steps moved the weights (the comparison above is not between two copies of the start)
    assert not torch.allclose(initial["cnn.convs.0.weight"], model.state_dict()["cnn.convs.0.weight"])


EXIT_SCRIPT = '''
import logging, sys
sys.path.insert(0, sys.argv[1])
from util import exit_stage

logging.basicConfig(level=logging.INFO, format="%(message)s")
logging.getLogger("stage").info("logged before the exit")
sys.stdout.write("written without a newline")  # a pipe buffers it: os._exit alone would lose it
exit_stage(3)
'''


def test_a_torchrun_worker_exits_with_its_code_and_its_output(tmp_path):
    """exit_stage ends a worker (WORLD_SIZE > 1) through os._exit, after flushing; a plain run
    exits the usual way. Both keep the exit code and every line written before it."""
    script = tmp_path / "exit.py"
    script.write_text(EXIT_SCRIPT)
    for world in ("2", "1"):
        # stdout buffered, as in a service or CI (PYTHONUNBUFFERED would hide a missing flush)
        env = {**{k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}, "WORLD_SIZE": world}
        result = subprocess.run([sys.executable, str(script), str(ROOT)], capture_output=True, text=True, env=env,
                                timeout=60)
        assert result.returncode == 3, world
        assert result.stdout == "written without a newline", world
        assert "logged before the exit" in result.stderr, world
