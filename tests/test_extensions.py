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
from dataset import read_labels, write_predictions

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
    assert "export it first with evaluate.py --convert_onnx" in capsys.readouterr().err
    assert evaluate.main([f"--config={config}", f"--data_dir={data}", f"--model_path={save}", "--device=cpu",
                          "--convert_onnx"]) == 0
    out_ort = tmp_path / "pred-ort.tsv"
    assert predict.main([f"--model_path={save}", f"--input={data / 'test.txt'}", f"--output={out_ort}",
                         "--enable_ort", "--device=cpu"]) == 0
    assert [line.split("\t")[0] for line in out_ort.read_text().splitlines()] == [r["label"] for r in rows]


def test_alpha_mixes_gold_cross_entropy(data_dir, glove_path, student_config, tmp_path, capsys):
    # fake teacher logits that agree with the gold labels of the original sentences
    lines = (data_dir / "train.txt").read_text().splitlines()
    sentences = [line.split("\t")[0] for line in lines] + ["a [MASK] movie"]
    logits = [[2.0, -2.0] if line.endswith("\t0") else [-2.0, 2.0] for line in lines] + [[0.0, 0.0]]
    import numpy as np

    write_predictions(data_dir / "augmented.txt", sentences, np.array(logits, dtype=np.float32))
    config = student_config("cnn")
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}", f"--embedding_path={glove_path}",
                            "--augmented"]) == 0
    capsys.readouterr()
    save = tmp_path / "alpha.pt"
    assert train.main([f"--config={config}", f"--data_dir={data_dir}", f"--save_path={save}", "--augmented",
                       "--alpha=0.5", "--criterion=KLDivLoss", "--temperature=2", "--epoch=4", "--lr=5e-3",
                       "--batch_size=32", "--device=cpu", f"--log_dir={tmp_path / 'runs'}"]) == 0
    assert "240 of 241 augmented lines are training sentences" in capsys.readouterr().err
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
