"""Calibrated probabilities: one temperature fitted on valid, stored with the model, applied in
predict and in bundles; NLL and ECE before and after in evaluate.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import evaluate
import preprocess
import train
from checkpoint import load_student
from inference import Predictor
from metrics import calibration, expected_calibration_error, fit_temperature, log_softmax, nll
from runtime import Bundle


def test_the_fitted_temperature_undoes_logits_scaled_by_3():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 1.5, size=(4000, 3))  # [n, K], calibrated by construction:
    p = np.exp(log_softmax(logits))
    gold = np.array([rng.choice(3, p=row) for row in p])  # labels drawn from softmax(logits)
    sharp = 3.0 * logits  # an over-confident model with the same argmax
    t = fit_temperature(sharp, gold)
    assert t == pytest.approx(3.0, rel=0.1)
    assert nll(sharp, gold, t) < nll(sharp, gold) - 0.1
    report = calibration(sharp, gold, t)
    assert report["ece_calibrated"] < report["ece"] and report["nll_calibrated"] < report["nll"]


def test_ece_on_a_hand_worked_example():
    # 15 bins (0, 1/15], (1/15, 2/15], ...: top probabilities 0.9 and 0.9 fall in (13/15, 14/15],
    # 0.6 and 0.55 in (8/15, 9/15]
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.45, 0.55]])
    gold = np.array([0, 0, 0, 1])  # right, wrong, right, right
    # the first bin: accuracy 1/2, confidence 0.9 -> |0.5 - 0.9| = 0.4, half the examples
    # the second: accuracy 1, confidence 0.575 -> 0.425, the other half
    expected = 2 / 4 * 0.4 + 2 / 4 * 0.425
    assert expected_calibration_error(probs, gold) == pytest.approx(expected)
    # a perfectly calibrated pair: confidence 0.5, right half the time
    assert expected_calibration_error(np.array([[0.5, 0.5], [0.5, 0.5]]), np.array([0, 1])) == pytest.approx(0.0)


def test_students_store_their_temperature_and_apply_it_everywhere(data_dir, glove_path, student_config, tmp_path,
                                                                  capsys):
    config = student_config("cnn")
    save = tmp_path / "cnn.pt"
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}", f"--embedding_path={glove_path}"]) == 0
    assert train.main([f"--config={config}", f"--data_dir={data_dir}", f"--save_path={save}", "--epochs=4",
                       "--lr=5e-3", "--batch_size=32", "--device=cpu", f"--log_dir={tmp_path / 'runs'}"]) == 0
    temperature = load_student(save).state["temperature"]
    assert 0.05 <= temperature <= 20.0 and temperature != 1.0
    predictor = Predictor.load(save)
    assert predictor.temperature == temperature
    sentences = ["a good film", "a dull plot", "the acting was fine"]
    logits = predictor.logits(sentences).numpy().astype(np.float64)
    expected = np.exp(log_softmax(logits / temperature))
    got = np.array([list(p.probabilities.values()) for p in predictor.predict(sentences)])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # the bundle carries it
    bundle = Bundle.load(predictor.export_bundle(tmp_path / "bundle"))
    assert bundle.temperature == pytest.approx(temperature)
    np.testing.assert_allclose(np.array([list(p.probabilities.values()) for p in bundle.predict(sentences)]), got,
                               atol=1e-5)
    # evaluate.py reports NLL and ECE before and after
    capsys.readouterr()
    assert evaluate.main([f"--config={config}", f"--data_dir={data_dir}", f"--model_path={save}",
                          "--device=cpu"]) == 0
    assert "[Calibration] temperature" in capsys.readouterr().err
    results = json.loads(Path(f"{save}.results.json").read_text())
    assert results["temperature"] == pytest.approx(temperature)
    assert {"nll", "nll_calibrated", "ece", "ece_calibrated"} <= set(results)
