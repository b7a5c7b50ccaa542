"""Teachers (tiny random BERT, RoBERTa, ELECTRA with tokenizers trained in the test) and the
whole distillation pipeline chained through the stages' main()."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import augment_data
import evaluate
import preprocess
import train
from conftest import error_lines
from dataset import read_predictions, write_predictions
from model import load_teacher


def fit_teacher(family, data_dir, tiny_transformer, make_teacher_config, out: Path, epochs: int = 3,
                head: str = "cls") -> Path:
    model_dir = tiny_transformer(family)
    config = make_teacher_config(family, head)
    lower = ["--bert_do_lower_case"] if family != "roberta" else []
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}",
                            f"--bert_model_name_or_path={model_dir}", *lower]) == 0
    assert train.main([f"--config={config}", f"--data_dir={data_dir}", f"--bert_model_name_or_path={model_dir}",
                       f"--bert_output_dir={out}", "--lr=2e-3", f"--epoch={epochs}", "--batch_size=16",
                       "--use_transformers_optimizer", "--warmup_epoch=0", "--device=cpu",
                       f"--log_dir={out.parent / 'runs'}", *lower]) == 0
    return config


@pytest.mark.parametrize("family", ["bert", "roberta", "electra"])
def test_teacher_trains_and_evaluates_from_its_directory(family, data_dir, tiny_transformer, make_teacher_config,
                                                         tmp_path, capsys):
    out = tmp_path / "teacher"
    config = fit_teacher(family, data_dir, tiny_transformer, make_teacher_config, out)
    capsys.readouterr()
    assert evaluate.main([f"--config={config}", f"--data_dir={data_dir}", f"--bert_output_dir={out}",
                          "--device=cpu"]) == 0
    assert ":[Accuracy] : " in capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["total"] == 40
    assert results["accuracy"] >= 0.75, results["accuracy"]


def test_teacher_refuses_a_directory_that_is_not_a_model(data_dir, make_teacher_config, tmp_path, capsys):
    config = make_teacher_config("bert")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}",
                            f"--bert_model_name_or_path={empty}"]) == 1
    assert evaluate.main([f"--config={config}", f"--data_dir={data_dir}", f"--bert_output_dir={empty}"]) == 1
    assert len(error_lines(capsys.readouterr().err)) == 2


def test_pred_file_round_trips_floats_in_order(tmp_path):
    sentences = [f"sentence {i}" for i in range(50)]
    logits = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    path = tmp_path / "x.pred"
    write_predictions(path, sentences, logits)
    back_sentences, back = read_predictions(path, 3)
    assert back_sentences == sentences
    assert np.array_equal(back, logits)


def test_end_to_end_distillation(data_dir, glove_path, tiny_transformer, make_teacher_config, student_config,
                                 tmp_path):
    teacher_dir = tmp_path / "teacher"
    teacher_cfg = fit_teacher("bert", data_dir, tiny_transformer, make_teacher_config, teacher_dir, epochs=3)
    model_dir = tiny_transformer("bert")
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
    sentences, logits = read_predictions(data_dir / "augmented.raw.pred", 2)
    raw_sentences = [line.split("\t")[0] for line in (data_dir / "augmented.raw").read_text().splitlines()]
    assert sentences == raw_sentences and logits.shape == (n_raw, 2)
    shutil.copy(data_dir / "augmented.raw.pred", data_dir / "augmented.txt")
    # 4. student on logits
    config = student_config("cnn")
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}", f"--embedding_path={glove_path}",
                            "--augmented"]) == 0
    save = tmp_path / "cnn.pt"
    assert train.main([f"--config={config}", f"--data_dir={data_dir}", f"--save_path={save}", "--lr=1e-2",
                       "--epoch=10", "--batch_size=32", "--augmented", "--criterion=MSELoss", "--device=cpu",
                       f"--log_dir={tmp_path / 'runs'}"]) == 0
    assert evaluate.main([f"--config={config}", f"--data_dir={data_dir}", f"--model_path={save}",
                          "--device=cpu"]) == 0
    results = json.loads(Path(f"{save}.results.json").read_text())
    teacher_results = json.loads((teacher_dir / "results.json").read_text()) if (
        teacher_dir / "results.json").exists() else None
    assert results["accuracy"] >= 0.7
    assert teacher_results is None or teacher_results["total"] == 40


@pytest.mark.parametrize("head", ["cls", "mean"])
def test_teacher_onnx_export_agrees(head, data_dir, tiny_transformer, make_teacher_config, tmp_path):
    out = tmp_path / "teacher"
    config = fit_teacher("bert", data_dir, tiny_transformer, make_teacher_config, out, epochs=1, head=head)
    base = [f"--config={config}", f"--data_dir={data_dir}", f"--bert_output_dir={out}", "--device=cpu"]
    assert evaluate.main([*base, "--convert_onnx"]) == 0
    assert evaluate.main([*base, "--enable_ort"]) == 0
    onnx = json.loads((out / "onnx.results.json").read_text())
    assert onnx["max_abs_logit_diff_vs_pytorch"] <= 1e-4 and onnx["same_prediction_vs_pytorch"] == 1.0


def test_mean_pooling_teacher_ignores_padding(data_dir, tiny_transformer, make_teacher_config, tmp_path):
    """The mean head pools only real tokens: a sentence scores the same alone or in a padded batch,
    and the head survives the save/load round trip."""
    out = tmp_path / "teacher"
    fit_teacher("bert", data_dir, tiny_transformer, make_teacher_config, out, epochs=1, head="mean")
    model, config, _, _, _ = load_teacher(out)
    assert config.enc_class == "mean" and model.pooling == "mean"
    short, long = [5, 6, 7], [5, 6, 7, 8, 9, 10, 11]
    ids = torch.tensor([short + [0] * 4, long])
    with torch.inference_mode():
        batched = model(ids, torch.tensor([3, 7]))
        alone = model(torch.tensor([short]), torch.tensor([3]))
    assert torch.allclose(batched[0], alone[0], atol=1e-5)
