"""Beyond the seed: string labels and more than two classes, predict.py on raw text,
the alpha-mixed loss, n-gram sampling."""
from __future__ import annotations

import json
from pathlib import Path

import augment_data
import evaluate
import predict
import preprocess
import train
from conftest import THREE_CLASS_WORDS, write_three_class
from dataset import read_labels

LABELS = THREE_CLASS_WORDS


def write_three_class_with_vectors(d: Path, glove: Path) -> None:
    write_three_class(d, (300, 60, 60))
    # vectors for the weather words
    with open(glove, "a") as f:
        for i, w in enumerate(LABELS["GetWeather"]):
            f.write(w + " " + " ".join("1.0" if j == 1 else f"0.{i}" for j in range(8)) + "\n")


def test_string_labels_multiclass_and_predict_agrees_with_evaluate(glove_path, student_config, tmp_path, capsys):
    data = tmp_path / "three"
    write_three_class_with_vectors(data, glove_path)
    config = student_config("cnn")
    assert preprocess.main([f"--config={config}", f"--data_dir={data}", f"--embedding_path={glove_path}"]) == 0
    assert read_labels(data / "label.txt") == ["GetWeather", "negative", "positive"]
    save = tmp_path / "cnn3.pt"
    assert train.main([f"--config={config}", f"--data_dir={data}", f"--save_path={save}", "--lr=5e-3", "--epoch=6",
                       "--batch_size=32", "--device=cpu", f"--log_dir={tmp_path / 'runs'}"]) == 0
    capsys.readouterr()
    assert evaluate.main([f"--config={config}", f"--data_dir={data}", f"--model_path={save}", "--device=cpu"]) == 0
    assert ":[Macro-F1] : " in capsys.readouterr().err
    results = json.loads(Path(f"{save}.results.json").read_text())
    assert results["accuracy"] > 0.8 and results["macro_f1"] > 0.8
    # predict on the raw test sentences agrees with evaluate
    out = tmp_path / "pred.jsonl"
    assert predict.main([f"--model_path={save}", f"--input={data / 'test.txt'}", f"--output={out}",
                         "--format=jsonl", "--device=cpu"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    labels = ["GetWeather", "negative", "positive"]
    assert [labels.index(r["label"]) for r in rows] == results["predictions"]
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in rows)
    # the same through ONNX Runtime, once exported
    assert predict.main([f"--model_path={save}", f"--input={data / 'test.txt'}", "--enable_ort", "--device=cpu"]) == 1
    assert "export it first with predict.py --export_onnx" in capsys.readouterr().err
    assert predict.main([f"--model_path={save}", "--device=cpu", "--export_onnx"]) == 0
    out_ort = tmp_path / "pred-ort.tsv"
    assert predict.main([f"--model_path={save}", f"--input={data / 'test.txt'}", f"--output={out_ort}",
                         "--enable_ort", "--device=cpu"]) == 0
    assert [line.split("\t")[0] for line in out_ort.read_text().splitlines()] == [r["label"] for r in rows]


def test_alpha_weights_gold_and_teacher_terms():
    """L = alpha * CE(gold) + (1 - alpha) * KD, with alpha = 0.2: swapping the weights fails."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from config import TrainConfig
    from dataset import IdsData
    from model import distillation_loss
    from training import StudentTask

    task = object.__new__(StudentTask)  # only loss(): no data directory needed
    task.train_config = TrainConfig(lr=1e-3, epochs=1, batch_size=3, distill=True, alpha=0.2, criterion="MSELoss")
    task.pad_id = 0
    scores = np.array([[2.0, -1.0], [0.5, 0.5], [-3.0, 1.0]], dtype=np.float32)
    task.train_data = IdsData(np.array([1, 2, 3, 4], dtype=np.int32), np.array([0, 1, 3, 4]),
                              np.array([1, -1, 0]), scores, np.array(["original", "augmented", "original"]))
    student = torch.tensor([[0.3, 0.1], [1.0, -1.0], [0.0, 2.0]])
    loss = task.loss(lambda ids, lengths: student, [0, 1, 2], torch.device("cpu"), None)
    ce = F.cross_entropy(student[[0, 2]], torch.tensor([1, 0]))  # the lines with gold labels only
    kd = distillation_loss(student, torch.from_numpy(scores), "MSELoss")
    assert torch.allclose(loss, 0.2 * ce + 0.8 * kd)
    assert not torch.allclose(loss, 0.8 * ce + 0.2 * kd)


def test_alpha_trains_on_a_transfer_set_with_gold(data_dir, glove_path, student_config, tmp_path, capsys):
    # teacher logits that agree with the gold labels of the original sentences, and one augmented line
    from dataset import transfer_line

    lines = (data_dir / "train.txt").read_text().splitlines()
    with open(data_dir / "augmented.txt", "w") as f:
        for line in lines:
            sentence, gold = line.split("\t")
            f.write(transfer_line(sentence, "original", gold, [2.0, -2.0] if gold == "0" else [-2.0, 2.0]))
        f.write(transfer_line("a [MASK] movie", "augmented", None, [0.0, 0.0]))
    config = student_config("cnn")
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}", f"--embedding_path={glove_path}",
                            "--augmented"]) == 0
    capsys.readouterr()
    save = tmp_path / "alpha.pt"
    assert train.main([f"--config={config}", f"--data_dir={data_dir}", f"--save_path={save}", "--augmented",
                       "--alpha=0.3", "--criterion=KLDivLoss", "--temperature=2", "--epoch=4", "--lr=5e-3",
                       "--batch_size=32", "--device=cpu", f"--log_dir={tmp_path / 'runs'}"]) == 0
    assert f"{len(lines) + 1} lines (original {len(lines)}, augmented 1), {len(lines)} with gold labels" in \
        capsys.readouterr().err
    results = json.loads(Path(f"{save}.train_results.json").read_text())
    assert results["best_accuracy"] >= 0.8
    # alpha without --augmented is refused
    assert train.main([f"--config={config}", f"--data_dir={data_dir}", "--alpha=0.5", "--device=cpu"]) == 1


def test_ngram_sample_mode_keeps_only_a_span(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("one two three four five six seven eight\t1\n")
    out = tmp_path / "out.txt"
    assert augment_data.main(["--input", str(src), "--output", str(out), "--analyzer", "none", "--p_mask", "0",
                              "--p_pos", "0", "--p_ng", "1", "--max_ng", "3", "--ngram_mode", "sample",
                              "--n_iter", "20"]) == 0
    original = "one two three four five six seven eight"
    variants = [line.split("\t")[0] for line in out.read_text().splitlines()]
    assert variants[0] == original
    for v in variants[1:]:
        assert 1 <= len(v.split()) <= 3 and v in original
