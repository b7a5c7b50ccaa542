"""A student bundle in front of a teacher bundle (runtime.Cascade, predict.py --cascade_teacher)."""
from __future__ import annotations

import json

import pytest

import predict
import preprocess
import train
from conftest import refused
from dataset import read_examples
from inference import Predictor
from runtime import Bundle, Cascade


@pytest.fixture
def two_bundles(data_dir, glove_path, student_config, tmp_path):
    """A CNN bundle (the student) and a bag-of-n-grams bundle standing in for the teacher:
    the cascade needs only two bundles with one label set."""
    paths = []
    for enc_class in ("cnn", "bow"):
        config = student_config(enc_class)
        save = tmp_path / f"{enc_class}.pt"
        assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}",
                                f"--embedding_path={glove_path}"]) == 0
        assert train.main([f"--config={config}", f"--data_dir={data_dir}", f"--save_path={save}", "--epochs=2",
                           "--lr=5e-3", "--batch_size=32", "--device=cpu", f"--log_dir={tmp_path / 'runs'}"]) == 0
        paths.append(Predictor.load(save).export_bundle(tmp_path / f"{enc_class}-bundle"))
    return paths


def test_the_threshold_picks_the_student_or_the_teacher_exactly(two_bundles, data_dir):
    student, teacher = (Bundle.load(p) for p in two_bundles)
    sentences = [e.sentence for e in read_examples(data_dir / "test.txt")]
    assert Cascade(student, teacher, 0.0).predict(sentences) == student.predict(sentences)
    assert Cascade(student, teacher, 1.5).predict(sentences) == teacher.predict(sentences)
    # in between: the unsure sentences go to the teacher, in one batch, and only they
    calls = []
    real = teacher.predict
    teacher.predict = lambda batch: calls.append(list(batch)) or real(batch)
    alone = student.predict(sentences)
    threshold = sorted(max(p.probabilities.values()) for p in alone)[len(sentences) // 2]  # about half deferred
    cascade = Cascade(student, teacher, threshold)
    mixed = cascade.predict(sentences)
    unsure = [i for i, p in enumerate(alone) if max(p.probabilities.values()) < threshold]
    assert cascade.deferred == unsure and 0 < len(unsure) < len(sentences)
    assert calls == [[sentences[i] for i in unsure]]
    answers = dict(zip(unsure, real([sentences[i] for i in unsure])))
    assert mixed == [answers.get(i, p) for i, p in enumerate(alone)]


def test_a_cascade_is_refused_on_bad_input(two_bundles, data_dir, tmp_path, capsys):
    student, teacher = two_bundles
    meta = json.loads((teacher / "bundle.json").read_text())
    other = tmp_path / "other-labels"
    other.mkdir()
    for f in teacher.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    (other / "bundle.json").write_text(json.dumps({**meta, "labels": ["neg", "pos"]}))
    text = data_dir / "test.txt"
    refused(capsys, predict, [f"--bundle={student}", f"--cascade_teacher={other}", "--defer_below=0.5",
                              f"--input={text}"], "a cascade needs one label set")
    refused(capsys, predict, [f"--bundle={student}", f"--cascade_teacher={teacher}", "--defer_below=1.5",
                              f"--input={text}"], "--defer_below is a probability: 0 to 1, got 1.5")
    refused(capsys, predict, [f"--bundle={student}", f"--cascade_teacher={teacher}", f"--input={text}"],
            "a cascade takes --bundle (the student), --cascade_teacher and --defer_below together")
    out = tmp_path / "out.tsv"
    assert predict.main([f"--bundle={student}", f"--cascade_teacher={teacher}", "--defer_below=0",
                         f"--input={text}", f"--output={out}"]) == 0
    assert predict.main([f"--bundle={student}", f"--input={text}", f"--output={tmp_path / 'alone.tsv'}"]) == 0
    assert out.read_text() == (tmp_path / "alone.tsv").read_text()
