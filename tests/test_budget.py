"""The training budget: epochs with a minimum of steps, validation every N steps,
early stopping on valid, and gold labels mixed in where the teacher's scores are thin."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import label
import preprocess
import train
from config import GOLD_MIX_ALPHAS, TrainConfig
from conftest import ROOT
from dataset import read_examples, read_transfer
from inference import Predictor
from training import make_budget


def results_of(save: Path) -> dict:
    return json.loads(Path(f"{save}.train_results.json").read_text())


def gold_run(data_dir: Path, glove_path: Path, config: Path, save: Path, *flags: str) -> dict:
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}", f"--embedding_path={glove_path}"]) == 0
    assert train.main([f"--config={config}", f"--data_dir={data_dir}", f"--save_path={save}", "--batch_size=32",
                       "--lr=5e-3", "--use_transformers_optimizer", "--device=cpu", f"--log_dir={save}.runs",
                       *flags]) == 0
    return results_of(save)


def test_the_budget_is_epochs_raised_to_min_steps():
    tc = TrainConfig(lr=1e-3, epochs=4, batch_size=32, min_steps=1000)
    small, big = make_budget(tc, 30), make_budget(tc, 1000)
    assert (small.total_steps, small.epochs) == (1000, 34)  # 34 passes, the last cut at step 1000
    assert (big.total_steps, big.epochs) == (4000, 4)  # a big set keeps its epochs
    assert make_budget(TrainConfig(lr=1e-3, epochs=4, batch_size=32), 30).total_steps == 120


def test_epoch_still_means_epochs_and_min_steps_adds_passes(data_dir, glove_path, student_config, tmp_path):
    config = student_config("cnn")
    # 240 sentences in batches of 32: 8 steps an epoch
    seed = gold_run(data_dir, glove_path, config, tmp_path / "a.pt", "--epoch=3")
    assert (seed["steps"], seed["budget_steps"], seed["stop"]) == (24, 24, "budget")
    assert [h["epoch"] for h in seed["history"]] == [1, 2, 3]  # validated after every epoch
    longer = gold_run(data_dir, glove_path, config, tmp_path / "b.pt", "--epochs=1", "--min_steps=20",
                      "--eval_steps=5")
    assert (longer["steps"], longer["budget_steps"]) == (20, 20)
    assert [h["step"] for h in longer["history"]] == [5, 10, 15, 20]
    assert longer["best_step"] in (5, 10, 15, 20)


def test_a_tiny_run_stops_early_when_valid_stops_improving(data_dir, glove_path, student_config, tmp_path):
    # valid's labels are the opposite of train's: the better the model learns train, the worse
    # it does on valid, so validation never improves on its first score
    lines = (data_dir / "valid.txt").read_text().splitlines()
    flipped = [f"{s}\t{1 - int(y)}" for s, y in (line.rsplit("\t", 1) for line in lines)]
    (data_dir / "valid.txt").write_text("\n".join(flipped) + "\n")
    save = tmp_path / "early.pt"
    res = gold_run(data_dir, glove_path, student_config("cnn"), save, "--epochs=1", "--min_steps=400",
                   "--eval_steps=4", "--patience_steps=12", "--measure=loss")
    assert res["stop"] == "early stop" and res["steps"] < res["budget_steps"] == 400
    # patience 12 steps = 3 validations: stopped at the 4th validation below the best
    assert res["steps"] == res["best_step"] + 16
    assert len(res["history"]) * 4 == res["steps"]


def test_scores_for_train_only_keep_gold_labels_and_get_the_gold_mix(data_dir, glove_path, student_config,
                                                                       tmp_path, capsys):
    # scores made elsewhere for the training sentences (and one sentence not in train.txt)
    examples = read_examples(data_dir / "train.txt")
    rows = [{"text": e.sentence, "logits": {"0": -1.0 if e.label == "1" else 1.0, "1": 1.0 if e.label == "1" else
                                            -1.0}} for e in examples]
    rows.append({"text": "a warm new film", "logits": {"0": -2.0, "1": 2.0}})
    scores = tmp_path / "scores.jsonl"
    scores.write_text("".join(json.dumps(r) + "\n" for r in rows))
    capsys.readouterr()
    assert label.main([f"--teacher_logits={scores}", f"--data_dir={data_dir}"]) == 0
    assert "no augmented sentence can be scored" in capsys.readouterr().err
    transfer = list(read_transfer(data_dir / "transfer.txt", 2))
    gold = {e.sentence: e.label for e in examples}
    assert all(r.gold == gold.get(r.sentence) for r in transfer)
    assert sum(r.gold is not None for r in transfer) == len(transfer) - 1  # the new sentence has none
    config = student_config("cnn")
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}", f"--embedding_path={glove_path}",
                            "--distill"]) == 0
    save = tmp_path / "mix.pt"
    assert train.main([f"--config={config}", f"--data_dir={data_dir}", f"--save_path={save}", "--distill",
                       "--alpha=auto", "--epochs=2", "--batch_size=32", "--device=cpu",
                       f"--log_dir={tmp_path / 'runs'}"]) == 0
    res = results_of(save)
    assert [t["alpha"] for t in res["alpha_trials"]] == list(GOLD_MIX_ALPHAS)
    assert res["alpha"] in GOLD_MIX_ALPHAS and save.exists() and Path(f"{save}.last").exists()
    assert not list(tmp_path.glob("mix.pt.alpha*"))  # the trial not kept is removed
    best = max(t["best_accuracy"] for t in res["alpha_trials"])
    assert res["best_accuracy"] == best
    # above the size, no gold mix: one run with alpha 0
    again = tmp_path / "big.pt"
    assert train.main([f"--config={config}", f"--data_dir={data_dir}", f"--save_path={again}", "--distill",
                       "--alpha=auto", "--gold_mix_below=100", "--epochs=1", "--batch_size=32", "--device=cpu",
                       f"--log_dir={tmp_path / 'runs2'}"]) == 0
    assert "alpha_trials" not in results_of(again)


def test_file_formats_and_augmentation_load_no_torch():
    code = "import sys, dataset, augment, teachers, cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_teachers_scores_file_reads_back_as_its_logits(data_dir, trained_teacher, tmp_path):
    teacher, _ = trained_teacher
    scores = tmp_path / "scores.jsonl"
    script = ROOT / "scripts" / "teacher_scores.py"
    subprocess.run([sys.executable, str(script), f"--teacher={teacher}", f"--input={data_dir / 'train.txt'}",
                    f"--output={scores}"], cwd=ROOT, check=True, capture_output=True)
    assert label.main([f"--teacher_logits={scores}", f"--data_dir={data_dir}"]) == 0
    rows = list(read_transfer(data_dir / "transfer.txt", 2))
    expected = Predictor.load(teacher).logits([r.sentence for r in rows[:5]]).numpy()
    np.testing.assert_allclose(np.array([r.scores for r in rows[:5]]), expected, atol=1e-5)
    assert all(r.source == "file" and r.gold is not None for r in rows)


def test_a_scores_file_from_a_transfer_sets_training_sentences(tmp_path):
    (tmp_path / "label.txt").write_text("neg\npos\n")
    (tmp_path / "transfer.txt").write_text("good film\toriginal\tpos\t-1.5 2.0\n"
                                           "good movie\taugmented\t\t-1.0 1.0\n"
                                           "bad film\toriginal\tneg\t0.25 -0.75\n")
    out = tmp_path / "scores.jsonl"
    script = ROOT / "scripts" / "teacher_scores.py"
    subprocess.run([sys.executable, str(script), f"--transfer={tmp_path / 'transfer.txt'}", f"--output={out}"],
                   cwd=ROOT, check=True, capture_output=True)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == [{"text": "good film", "logits": {"neg": -1.5, "pos": 2.0}},
                     {"text": "bad film", "logits": {"neg": 0.25, "pos": -0.75}}]
