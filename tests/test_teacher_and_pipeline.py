"""Teachers (tiny random BERT, RoBERTa, ELECTRA with tokenizers trained in the test), predict.py
with a teacher, the lower-casing contradictions, and the whole distillation chained through the
stages' main()."""
from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import augment_data
import evaluate
import predict
import preprocess
import train
from checkpoint import load_teacher
from conftest import error_lines, fit_teacher, refused
from dataset import read_examples, read_transfer, transfer_line
from inference import Predictor
from util import UserError


def train_teacher(family: str, data_dir: Path, tiny_transformer, make_teacher_config, out: Path, epochs: int = 3,
                  head: str = "cls") -> Path:
    """Fit a tiny teacher of `family` into `out`; returns its config."""
    config = make_teacher_config(family, head)
    fit_teacher(family, data_dir, tiny_transformer(family), config, out, epochs)
    return config


@pytest.mark.parametrize("family", ["bert", "roberta", "electra"])
def test_teacher_trains_evaluates_and_predicts_from_its_directory(family, data_dir, tiny_transformer,
                                                                  make_teacher_config, tmp_path, capsys,
                                                                  monkeypatch):
    out = tmp_path / "teacher"
    config = train_teacher(family, data_dir, tiny_transformer, make_teacher_config, out)
    meta = json.loads((out / "distil_config.json").read_text())
    assert meta["lowercase"] is (family != "roberta") and meta["labels"] == ["0", "1"]
    assert 0.05 <= meta["temperature"] <= 20.0  # fitted on valid with the best checkpoint
    capsys.readouterr()
    assert evaluate.main([f"--config={config}", f"--data_dir={data_dir}", f"--bert_output_dir={out}",
                          "--device=cpu"]) == 0
    assert ":[Accuracy] : " in capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["total"] == 40
    assert results["accuracy"] >= 0.75, results["accuracy"]
    # predict.py from stdin (tsv by default): a `sentence<TAB>label` line uses the sentence, blank lines skipped
    sentences = [e.sentence for e in read_examples(data_dir / "test.txt")][:6]
    text = "".join(f"{s}\tignored\n" if i % 2 else f"{s}\n\n" for i, s in enumerate(sentences))
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    capsys.readouterr()
    assert predict.main([f"--bert_output_dir={out}", "--device=cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = Predictor.load(out).predict(sentences)
    assert lines == [p.label + "\t" + " ".join(f"{p.probabilities[k]:.6f}" for k in ("0", "1")) for p in expected]
    assert [line.split("\t")[0] for line in lines] == [str(p) for p in results["predictions"][:6]]


def test_teacher_refuses_a_directory_that_is_not_a_model(data_dir, make_teacher_config, tmp_path, capsys):
    config = make_teacher_config("bert")
    empty = tmp_path / "empty"
    empty.mkdir()
    capsys.readouterr()
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}",
                            f"--bert_model_name_or_path={empty}"]) == 1
    assert evaluate.main([f"--config={config}", f"--data_dir={data_dir}", f"--bert_output_dir={empty}"]) == 1
    err = capsys.readouterr().err
    assert error_lines(err) == [
        f"ERROR:preprocess:{empty}: not a Hugging Face model directory (no tokenizer files)",
        f"ERROR:evaluate:{empty}: not a Hugging Face model directory (no config.json)",
    ]
    assert "Traceback" not in err


def test_lowercasing_contradictions_are_refused(data_dir, trained_teacher, tiny_transformer, tmp_path, capsys):
    """The .fs files were made lower-cased (preprocess.transformer.json says so) and the
    teacher trained so: the other setting is refused by preprocess, train and labeling."""
    teacher, config = trained_teacher
    model_dir = tiny_transformer("bert")
    record = data_dir / "preprocess.transformer.json"
    assert json.loads(record.read_text())["lowercase"] is True
    fs = (data_dir / "train.txt.fs").read_bytes()
    line = refused(capsys, preprocess, [f"--config={config}", f"--data_dir={data_dir}",
                                        f"--bert_model_name_or_path={model_dir}"],
                   "--bert_do_lower_case is off, but")
    assert "made with it on" in line and str(record) in line
    assert (data_dir / "train.txt.fs").read_bytes() == fs
    line = refused(capsys, train, [f"--config={config}", f"--data_dir={data_dir}",
                                   f"--bert_model_name_or_path={model_dir}",
                                   f"--bert_output_dir={tmp_path / 'other-teacher'}", "--epoch=1", "--device=cpu",
                                   f"--log_dir={tmp_path / 'runs'}"],
                   "--bert_do_lower_case is off, but the .fs files in")
    assert "were made with it on" in line
    assert not (tmp_path / "other-teacher" / "model.safetensors").exists()
    # labeling tokenizes raw text with the teacher's own setting: nothing to contradict
    assert Predictor.load(teacher).lowercase is True


def test_transfer_file_round_trips_floats_in_order(tmp_path):
    logits = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    path = tmp_path / "x.txt"
    sources = ["original", "augmented", "unlabeled", "file"]
    with open(path, "w") as f:
        for i, row in enumerate(logits):
            f.write(transfer_line(f"sentence {i}", sources[i % 4], "1" if i % 4 == 0 else None, row))
    rows = list(read_transfer(path, 3))
    assert [r.sentence for r in rows] == [f"sentence {i}" for i in range(50)]
    assert [r.source for r in rows] == [sources[i % 4] for i in range(50)]
    assert [r.gold for r in rows[:4]] == ["1", None, None, None]
    assert np.array_equal(np.array([r.scores for r in rows], dtype=np.float32), logits)
    # one format: a two-column line (the seed's old .pred) is refused with its line
    (tmp_path / "seed.pred").write_text("a fine film\t0.5 -0.25 1e-3\n")
    with pytest.raises(UserError, match="seed.pred:1: expected 'sentence<TAB>source<TAB>gold<TAB>logits'"):
        list(read_transfer(tmp_path / "seed.pred", 3))


def test_end_to_end_distillation(data_dir, glove_path, trained_teacher, tiny_transformer, student_config, tmp_path):
    teacher_dir, teacher_cfg = trained_teacher
    model_dir = tiny_transformer("bert")
    # 0. the teacher on the test set
    assert evaluate.main([f"--config={teacher_cfg}", f"--data_dir={data_dir}", f"--bert_output_dir={teacher_dir}",
                          "--device=cpu"]) == 0
    teacher_results = json.loads((teacher_dir / "results.json").read_text())
    assert teacher_results["total"] == 40 and teacher_results["accuracy"] >= 0.8, teacher_results["accuracy"]
    assert teacher_results["runtime"] == "pytorch" and teacher_results["parameters"] > 0
    # 1. augment
    assert augment_data.main(["--input", str(data_dir / "train.txt"), "--output", str(data_dir / "augmented.raw"),
                              "--n_iter", "3", "--analyzer", "none", "--seed", "1"]) == 0
    n_raw = len((data_dir / "augmented.raw").read_text().splitlines())
    assert n_raw > 240
    # 2. teacher ids, 3. teacher logits
    assert preprocess.main([f"--config={teacher_cfg}", f"--data_dir={data_dir}",
                            f"--bert_model_name_or_path={model_dir}", "--bert_do_lower_case", "--augmented"]) == 0
    assert evaluate.main([f"--config={teacher_cfg}", f"--data_dir={data_dir}", f"--bert_output_dir={teacher_dir}",
                          "--batch_size=64", "--augmented", "--device=cpu"]) == 0
    rows = list(read_transfer(data_dir / "augmented.raw.pred", 2))
    # one file: the training sentences with their gold labels, then the new augmented sentences
    examples = read_examples(data_dir / "train.txt")
    originals = [r for r in rows if r.source == "original"]
    assert [(r.sentence, r.gold) for r in originals] == [(e.sentence, e.label) for e in examples]
    assert rows[:len(originals)] == originals and {r.source for r in rows[len(originals):]} == {"augmented"}
    assert len({r.sentence for r in rows}) == len(rows) < n_raw + 240  # duplicates dropped
    # the logits are the teacher's own on those sentences
    teacher = Predictor.load(teacher_dir)
    sample = rows[::7]
    torch.testing.assert_close(torch.tensor([r.scores for r in sample]), teacher.logits([r.sentence for r in sample]),
                               atol=1e-4, rtol=1e-4)
    shutil.copy(data_dir / "augmented.raw.pred", data_dir / "augmented.txt")  # the seed's command
    # 4. student on logits
    config = student_config("cnn")
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}", f"--embedding_path={glove_path}",
                            "--augmented"]) == 0
    save = tmp_path / "cnn.pt"
    assert train.main([f"--config={config}", f"--data_dir={data_dir}", f"--save_path={save}", "--lr=1e-2",
                       "--epoch=10", "--batch_size=32", "--augmented", "--criterion=MSELoss", "--device=cpu",
                       f"--log_dir={tmp_path / 'runs'}"]) == 0
    assert json.loads(Path(f"{save}.train_results.json").read_text())["train_examples"] == len(rows)
    assert evaluate.main([f"--config={config}", f"--data_dir={data_dir}", f"--model_path={save}",
                          "--device=cpu"]) == 0
    results = json.loads(Path(f"{save}.results.json").read_text())
    assert results["total"] == 40 and results["accuracy"] >= 0.7, results["accuracy"]
    # the student learned the teacher's decisions: it agrees with it on most test sentences
    agree = np.mean(np.array(results["predictions"]) == np.array(teacher_results["predictions"]))
    assert agree >= 0.7, agree


def test_teacher_onnx_export_agrees(data_dir, trained_teacher):
    out, config = trained_teacher
    base = [f"--config={config}", f"--data_dir={data_dir}", f"--teacher={out}", "--device=cpu"]
    assert predict.main([f"--teacher={out}", "--device=cpu", "--export_onnx"]) == 0
    assert evaluate.main([*base, "--enable_ort"]) == 0
    onnx = json.loads((out / "onnx.results.json").read_text())
    assert onnx["max_abs_logit_diff_vs_pytorch"] <= 1e-4 and onnx["same_prediction_vs_pytorch"] == 1.0


def test_mean_pooling_teacher_ignores_padding_and_exports(data_dir, tiny_transformer, make_teacher_config, tmp_path):
    """The mean head pools only real tokens: a sentence scores the same alone or in a padded batch,
    the head survives the save/load round trip, and the ONNX export agrees."""
    out = tmp_path / "teacher"
    config = train_teacher("bert", data_dir, tiny_transformer, make_teacher_config, out, epochs=1, head="mean")
    teacher = load_teacher(out)
    model = teacher.model
    assert teacher.config.enc_class == "mean" and model.head == "mean" and teacher.lowercase is True
    short, long = [5, 6, 7], [5, 6, 7, 8, 9, 10, 11]
    ids = torch.tensor([short + [0] * 4, long])
    with torch.inference_mode():
        batched = model(ids, torch.tensor([3, 7]))
        alone = model(torch.tensor([short]), torch.tensor([3]))
    assert torch.allclose(batched[0], alone[0], atol=1e-5)
    assert not torch.allclose(batched[0], batched[1], atol=1e-5)
    base = [f"--config={config}", f"--data_dir={data_dir}", f"--teacher={out}", "--device=cpu"]
    assert predict.main([f"--teacher={out}", "--device=cpu", "--export_onnx"]) == 0
    assert evaluate.main([*base, "--enable_ort"]) == 0
    onnx = json.loads((out / "onnx.results.json").read_text())
    assert onnx["max_abs_logit_diff_vs_pytorch"] <= 1e-4 and onnx["same_prediction_vs_pytorch"] == 1.0
