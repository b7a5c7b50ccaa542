"""Multi-label classification (issue 28): label lists in the data, the `label.json` record, multi-hot
id files, sigmoid teachers and students, the losses on teacher scores, thresholds chosen on
valid, the metrics, bundles, brought multi-label classifiers and the refusals."""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import augment_data
import evaluate
import label
import preprocess
import train
from checkpoint import load_student, load_teacher, save_student
from config import Recipe, StudentRecipe, check_criterion, config_from_dict, load_recipe
from conftest import ROOT, EMB_DIM, NEGATIVE, NEUTRAL, POSITIVE, TINY_STUDENTS, build_tiny_transformer, refused, write_glove
from dataset import (build_labels, read_examples, read_ids, read_teacher_scores, read_transfer,
                     recorded_multi_label)
from inference import Predictor
from inference import decision_agreement
from metrics import choose_thresholds, multilabel_metrics
from model import build_student, distillation_loss
from pipeline import label_step, student_data_step, student_steps, teacher_steps
from runtime import Bundle, Cascade, Prediction, confidence, multilabel_decisions, predictions
from teachers import teacher_multi_label
from util import UserError

WEATHER = ["rain", "sunny", "forecast", "weather"]
WORDS = {"neg": NEGATIVE, "pos": POSITIVE, "weather": WEATHER}
LABELS = sorted(WORDS)  # ["neg", "pos", "weather"]


def write_multilabel_splits(d: Path, sizes: tuple[int, int, int] = (240, 60, 40)) -> Path:
    """A separable multi-label task: each sentence carries the words of a random non-empty set
    of labels, and that set (in random order) is its label list."""
    d.mkdir(parents=True, exist_ok=True)
    for split, n, seed in zip(("train", "valid", "test"), sizes, (1, 2, 3)):
        rng = random.Random(seed)
        lines = []
        for _ in range(n):
            chosen = [k for k in LABELS if rng.random() < 0.5] or [rng.choice(LABELS)]
            rng.shuffle(chosen)
            words = [rng.choice(NEUTRAL) for _ in range(rng.randint(2, 6))]
            for k in chosen:
                words.insert(rng.randint(0, len(words)), rng.choice(WORDS[k]))
            lines.append(" ".join(words) + "\t" + ",".join(chosen) + "\n")
        (d / f"{split}.txt").write_text("".join(lines), encoding="utf-8")
    return d


def gold_sets(path: Path) -> list[set[str]]:
    return [set(line.split("\t")[1].split(",")) for line in path.read_text().splitlines()]


@pytest.fixture
def ml_data(tmp_path: Path) -> Path:
    return write_multilabel_splits(tmp_path / "ml")


@pytest.fixture
def ml_glove(tmp_path: Path) -> Path:
    return write_glove(tmp_path / "glove.ml.8d.txt", extra=tuple(WEATHER))


def glove_preprocess(config: Path, data: Path, glove: Path, *extra: str) -> int:
    return preprocess.main([f"--config={config}", f"--data_dir={data}", f"--embedding_path={glove}", *extra])


def hf_config(directory: Path) -> Path:
    """A teacher config with the library's own head (`hf`: its model config keeps the dropout)."""
    path = directory / "config-bert-hf.json"
    path.write_text(json.dumps({"emb_class": "bert", "enc_class": "hf", "n_ctx": 32}), encoding="utf-8")
    return path


def write_scores(data: Path, path: Path, kind: str = "probs") -> Path:
    """A teacher-scores file for train.txt whose probabilities agree with the gold sets (0.9
    for a gold label, 0.1 otherwise: they do not sum to 1)."""
    with open(path, "w", encoding="utf-8") as f:
        for line in (data / "train.txt").read_text().splitlines():
            sentence, gold = line.split("\t")
            probs = {k: 0.9 if k in gold.split(",") else 0.1 for k in LABELS}
            scores = probs if kind == "probs" else {k: float(np.log(p / (1 - p))) for k, p in probs.items()}
            f.write(json.dumps({"text": sentence, kind: scores}) + "\n")
    return path


# ---------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------

def test_label_lists_read_canonically_and_labels_are_the_sorted_union(tmp_path: Path):
    path = tmp_path / "train.txt"
    path.write_text("a film\tpos, weather\nrain\tweather\nbad\tneg\n", encoding="utf-8")
    examples = read_examples(path, multi_label=True)
    assert [e.label for e in examples] == ["pos,weather", "weather", "neg"]
    assert examples[0].labels == ["pos", "weather"]
    assert build_labels(examples, multi_label=True) == LABELS
    # single-label reading keeps the field as one label, as before
    assert build_labels(read_examples(path)) == ["neg", "pos, weather", "weather"]


def test_preprocess_records_multi_label_and_writes_label_sets(ml_data: Path, ml_glove: Path, student_config):
    assert glove_preprocess(student_config("cnn"), ml_data, ml_glove, "--multi_label") == 0
    assert recorded_multi_label(ml_data) is True
    assert (ml_data / "label.txt").read_text().split() == LABELS
    first = (ml_data / "train.txt").read_text().splitlines()[0].split("\t")[1].split(",")
    ids_field = (ml_data / "train.txt.ids").read_text().splitlines()[0].split("\t")[1]
    assert ids_field == ",".join(str(LABELS.index(k)) for k in first)
    data = read_ids(ml_data / "train.txt.ids", 3, multi_label=True)
    assert data.labels.shape == (240, 3)
    for row, gold in zip(data.labels, gold_sets(ml_data / "train.txt")):
        assert {LABELS[k] for k in np.flatnonzero(row)} == gold
    assert data.has_gold.all()


def test_teacher_probabilities_enter_as_logits_and_need_not_sum_to_one(tmp_path: Path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"text": "x", "probs": {"a": 0.9, "b": 0.8, "c": 0.0}}) + "\n")
    (_, text, logits), = read_teacher_scores(path, ["a", "b", "c"], {}, multi_label=True)
    assert logits[0] == pytest.approx(np.log(9.0)) and logits[1] == pytest.approx(np.log(4.0))
    assert logits[2] == pytest.approx(np.log(1e-6 / (1 - 1e-6)))
    with pytest.raises(UserError, match="sum to 1"):  # single-label: still a distribution
        list(read_teacher_scores(path, ["a", "b", "c"], {}))
    path.write_text(json.dumps({"text": "x", "probs": {"a": 1.5, "b": 0.8, "c": 0.0}}) + "\n")
    with pytest.raises(UserError, match=f"{path}:1: probabilities must lie in"):
        list(read_teacher_scores(path, ["a", "b", "c"], {}, multi_label=True))


def test_augmentation_passes_label_lists_through(ml_data: Path, tmp_path: Path):
    out = tmp_path / "augmented.raw"
    assert augment_data.main(["--input", str(ml_data / "train.txt"), "--output", str(out), "--analyzer", "none",
                              "--n_iter=2", "--preserve_label"]) == 0
    train_labels = {line.split("\t")[1] for line in (ml_data / "train.txt").read_text().splitlines()}
    written = [line.split("\t")[1] for line in out.read_text().splitlines()]
    assert written and set(written) <= train_labels and any("," in w for w in written)
    assert all(e.labels for e in read_examples(out, multi_label=True))


# ---------------------------------------------------------------------------
# Decisions, metrics, thresholds, losses
# ---------------------------------------------------------------------------

def test_metrics_against_a_hand_worked_example():
    labels = ["a", "b", "c"]
    gold = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0]], dtype=bool)
    pred = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 1], [0, 0, 0]], dtype=bool)
    m = multilabel_metrics(pred, gold, labels)
    # a: tp 2; b: tp 0, fp 1, fn 2; c: tp 1 -> micro tp 3, fp 1, fn 2: 6 / (6 + 3)
    assert m["micro_f1"] == pytest.approx(6 / 9)
    assert m["per_label"]["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert m["per_label"]["b"]["f1"] == 0.0 and m["per_label"]["b"]["support"] == 2
    assert m["macro_f1"] == pytest.approx((1 + 0 + 1) / 3)
    assert m["exact_match"] == pytest.approx(1 / 4)
    # Jaccard per example: 1, 1/2, 1/2, 0
    assert m["jaccard"] == pytest.approx((1 + 0.5 + 0.5 + 0) / 4)


def test_thresholds_per_label_with_a_global_fallback_for_rare_labels():
    rng = np.random.default_rng(0)
    n = 200
    gold = np.zeros((n, 2), dtype=bool)
    gold[:100, 0] = True  # label 0: 100 positives, separable at 0.3 < p < 0.4
    probs = np.zeros((n, 2))
    probs[:, 0] = np.where(gold[:, 0], rng.uniform(0.4, 0.5, n), rng.uniform(0.0, 0.3, n))
    gold[:5, 1] = True  # label 1: 5 positives (fewer than 20): the global threshold
    probs[:, 1] = np.where(gold[:, 1], 0.95, 0.05)
    thresholds, global_threshold = choose_thresholds(probs, gold, min_positives=20)
    assert 0.3 < thresholds[0] <= 0.4  # its own, far from 0.5
    assert thresholds[1] == global_threshold
    # the global threshold maximises micro-F1 over both labels: between 0.3 and 0.4 as well
    assert 0.3 < global_threshold <= 0.4
    # with a lower bar, label 1 gets its own: the middle of its tying run 0.06..0.95 (90 grid
    # values, the 46th)
    own, _ = choose_thresholds(probs, gold, min_positives=5)
    assert own[1] == pytest.approx(0.51)


def test_predictions_are_label_sets_with_the_argmax_when_none_passes():
    logits = np.array([[2.0, 0.0, -3.0], [-1.0, -2.0, -0.5]])
    got = predictions(logits, ["a", "b", "c"], multi_label=True, thresholds=[0.5, 0.5, 0.5])
    assert got[0].label == "a,b"  # sigmoid(0) = 0.5 reaches its threshold
    assert got[1].label == "c"  # none passes: the most probable alone
    assert got[0].probabilities["a"] == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert predictions(logits, ["a", "b", "c"], multi_label=True, thresholds=[0.8, 0.9, 0.001])[0].label == "a,c"
    assert multilabel_decisions(np.array([[0.2, 0.1]]), None).tolist() == [[True, False]]
    sure = Prediction("a", {"a": 0.99, "b": 0.02})
    assert confidence(sure, multi_label=True) == pytest.approx(0.98)
    assert confidence(Prediction("a", {"a": 0.99, "b": 0.6}), multi_label=True) == pytest.approx(0.6)


def test_runtime_agreement_compares_label_sets():
    reference = torch.tensor([[2.0, -1.0], [0.5, 0.2]])
    other = torch.tensor([[1.0, -3.0], [0.6, -0.1]])  # same argmax everywhere, row 1's set differs
    assert decision_agreement(other, reference, multi_label=False) == 1.0
    assert decision_agreement(other, reference, multi_label=True) == 0.5


def test_losses_on_teacher_scores():
    torch.manual_seed(0)
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    T = 2.0
    q = torch.sigmoid(t / T)
    p = torch.sigmoid(s / T)
    manual = -(q * torch.log(p) + (1 - q) * torch.log(1 - p)).mean() * T**2
    assert torch.allclose(distillation_loss(s, t, "BCEWithLogitsLoss", T), manual, atol=1e-6)
    assert torch.allclose(distillation_loss(s, t, "MSELoss"), ((s - t) ** 2).mean())
    check_criterion("MSELoss", True, "x")
    with pytest.raises(UserError, match="not for multi-label"):
        check_criterion("KLDivLoss", True, "x")
    with pytest.raises(UserError, match="not for single-label"):
        check_criterion("BCEWithLogitsLoss", False, "x")


# ---------------------------------------------------------------------------
# End to end: scores file -> transfer set -> student -> evaluation -> bundle
# ---------------------------------------------------------------------------

def test_student_end_to_end(ml_data: Path, ml_glove: Path, student_config, tmp_path: Path, capsys):
    config = student_config("cnn")
    assert glove_preprocess(config, ml_data, ml_glove, "--multi_label") == 0
    scores = write_scores(ml_data, tmp_path / "scores.jsonl")
    assert label.main([f"--data_dir={ml_data}", f"--teacher_logits={scores}"]) == 0  # multi-label from the record
    rows = list(read_transfer(ml_data / "transfer.txt", 3))
    train_gold = [line.split("\t")[1] for line in (ml_data / "train.txt").read_text().splitlines()]
    canonical = [",".join(k.strip() for k in g.split(",")) for g in train_gold]
    assert [r.gold for r in rows] == canonical  # the comma-joined gold lists
    assert glove_preprocess(config, ml_data, ml_glove, "--multi_label", "--distill") == 0
    ckpt = tmp_path / "cnn.pt"
    base = [f"--config={config}", f"--data_dir={ml_data}", f"--save_path={ckpt}", "--device=cpu", "--epochs=2",
            "--batch_size=16", "--lr=0.02", f"--log_dir={tmp_path / 'runs'}"]
    assert train.main([*base, "--distill", "--alpha=0.5"]) == 0
    saved = json.loads(Path(f"{ckpt}.train_config.json").read_text())["train"]
    assert saved["criterion"] == "BCEWithLogitsLoss" and saved["multi_label"] and saved["measure"] == "micro_f1"
    student = load_student(ckpt)
    assert student.multi_label and len(student.thresholds) == 3
    assert all(0 < t < 1 for t in student.thresholds)
    # --resume continues the same run
    assert train.main([*base, "--distill", "--alpha=0.5", "--epochs=3", "--resume"]) == 0
    results_path = tmp_path / "res.json"
    assert evaluate.main([f"--config={config}", f"--data_dir={ml_data}", f"--model_path={ckpt}", "--device=cpu",
                          "--batch_size=8", "--warmup=0", f"--results_path={results_path}"]) == 0
    results = json.loads(results_path.read_text())
    for key in ("micro_f1", "macro_f1", "exact_match", "jaccard"):
        assert 0.0 <= results[key] <= 1.0
    assert results["micro_f1"] > 0.8  # a separable task
    assert set(results["per_label"]) == set(LABELS)
    assert set(results["per_label"]["pos"]) == {"precision", "recall", "f1", "support"}
    assert "accuracy" not in results
    # predictions: label sets from Predictor and from the torch-free bundle, logits within 1e-5
    sentences = [line.split("\t")[0] for line in (ml_data / "test.txt").read_text().splitlines()]
    predictor = Predictor.load(ckpt)
    ours = predictor.predict(sentences)
    assert all(set(p.label.split(",")) <= set(LABELS) and p.label for p in ours)
    bundle_dir = predictor.export_bundle(tmp_path / "bundle")
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    assert meta["multi_label"] is True and meta["thresholds"] == load_student(ckpt).thresholds
    bundle = Bundle.load(bundle_dir)
    assert np.abs(bundle.logits(sentences) - predictor.logits(sentences).numpy()).max() < 1e-5
    theirs = bundle.predict(sentences)
    assert [p.label for p in theirs] == [p.label for p in ours]
    assert bundle.predict_label(sentences[0]) == ours[0].label
    # the argmax-fallback decisions are evaluate.py's too
    hits = [set(p.label.split(",")) == g for p, g in zip(ours, gold_sets(ml_data / "test.txt"))]
    assert results["exact_match"] == pytest.approx(np.mean(hits))
    # a cascade of two multi-label bundles; a single-label one is refused
    cascade = Cascade(bundle, bundle, defer_below=1.1)
    assert [p.label for p in cascade.predict(sentences[:4])] == [p.label for p in ours[:4]]
    assert cascade.deferred == [0, 1, 2, 3]


def test_gold_student_and_multi_label_refusals(ml_data: Path, ml_glove: Path, data_dir: Path, glove_path: Path,
                                              student_config, tmp_path: Path, capsys):
    config = student_config("bow")
    assert glove_preprocess(config, ml_data, ml_glove, "--multi_label") == 0
    ckpt = tmp_path / "bow.pt"
    assert train.main([f"--config={config}", f"--data_dir={ml_data}", f"--save_path={ckpt}", "--device=cpu",
                       "--epochs=1", "--batch_size=32", f"--log_dir={tmp_path / 'runs'}"]) == 0
    assert load_student(ckpt).multi_label
    # a bag of n-grams' bundle runs in numpy alone: the same logits and label sets
    sentences = [line.split("\t")[0] for line in (ml_data / "test.txt").read_text().splitlines()]
    predictor = Predictor.load(ckpt)
    bundle = Bundle.load(predictor.export_bundle(tmp_path / "bow-bundle"), backend="numpy")
    assert np.abs(bundle.logits(sentences) - predictor.logits(sentences).numpy()).max() < 1e-5
    assert [p.label for p in bundle.predict(sentences)] == [p.label for p in predictor.predict(sentences)]
    # single-label data: its checkpoint and data refuse the other kind
    assert glove_preprocess(config, data_dir, glove_path) == 0
    assert recorded_multi_label(data_dir) is False
    single = tmp_path / "single.pt"
    cfg = config_from_dict({"emb_class": "glove", "enc_class": "bow", "n_ctx": 20, "token_emb_dim": EMB_DIM,
                            **TINY_STUDENTS["bow"]}, "test")
    vocab = (data_dir / "vocab.txt").read_text().split("\n")[:-1]
    save_student(single, build_student(cfg, len(vocab), 2), vocab, ["0", "1"], {})
    refused(capsys, evaluate, [f"--config={config}", f"--data_dir={data_dir}", f"--model_path={single}",
                               "--multi_label"], "preprocessed single-label")
    refused(capsys, evaluate, [f"--config={config}", f"--data_dir={data_dir}", f"--model_path={ckpt}"],
            "single-label data, but")
    refused(capsys, train, [f"--config={config}", f"--data_dir={data_dir}", f"--save_path={tmp_path / 'x.pt'}",
                            "--multi_label"], "preprocessed single-label")
    refused(capsys, preprocess, [f"--config={config}", f"--data_dir={data_dir}", f"--embedding_path={glove_path}",
                                 "--multi_label"], "label.json: the data were preprocessed single-label")
    refused(capsys, preprocess, [f"--config={config}", f"--data_dir={ml_data}", f"--embedding_path={ml_glove}"],
            "preprocessed multi-label")
    refused(capsys, train, [f"--config={config}", f"--data_dir={ml_data}", f"--save_path={tmp_path / 'y.pt'}",
                            "--distill", "--criterion=KLDivLoss"], "KLDivLoss is not for multi-label")
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()


@pytest.mark.parametrize("field, needle", [("pos,pos", "label 'pos' repeated"), ("pos,", "empty label in"),
                                           ("", "empty label")])
def test_bad_label_lists_are_refused_naming_file_and_line(tmp_path: Path, ml_glove: Path, student_config, capsys,
                                                         field: str, needle: str):
    data = write_multilabel_splits(tmp_path / "bad")
    lines = (data / "valid.txt").read_text().splitlines()
    lines[2] = lines[2].split("\t")[0] + "\t" + field
    (data / "valid.txt").write_text("\n".join(lines) + "\n")
    line = refused(capsys, preprocess, [f"--config={student_config('cnn')}", f"--data_dir={data}",
                                        f"--embedding_path={ml_glove}", "--multi_label"], needle)
    assert f"{data / 'valid.txt'}:3:" in line
    assert not (data / "label.txt").exists() and not (data / "label.json").exists()


def test_valid_label_unseen_in_train_is_refused(tmp_path: Path, ml_glove: Path, student_config, capsys):
    data = write_multilabel_splits(tmp_path / "unseen")
    with open(data / "test.txt", "a") as f:
        f.write("a good film\tpos,sports\n")
    refused(capsys, preprocess, [f"--config={student_config('cnn')}", f"--data_dir={data}",
                                 f"--embedding_path={ml_glove}", "--multi_label"], "label 'sports' is not in the")


# ---------------------------------------------------------------------------
# Teachers: a brought multi-label classifier, and the hf head fine-tuned here
# ---------------------------------------------------------------------------

def test_brought_multi_label_classifier_switches_it_on_and_maps_labels_by_name(ml_data: Path, tmp_path: Path):
    permuted = {0: "weather", 1: "neg", 2: "pos"}
    model_dir = build_tiny_transformer(tmp_path, "bert", id2label=permuted)
    cfg_path = model_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["problem_type"] = "multi_label_classification"
    cfg_path.write_text(json.dumps(cfg))
    teacher = load_teacher(model_dir)
    assert teacher.multi_label and teacher.labels == ["weather", "neg", "pos"]
    assert teacher_multi_label(model_dir)  # what make distill reads to switch it on
    # no --multi_label and no record: the classifier says so itself
    assert label.main([f"--data_dir={ml_data}", f"--teacher={model_dir}", "--device=cpu"]) == 0
    rows = list(read_transfer(ml_data / "transfer.txt", 3))
    predictor = Predictor.load(model_dir)
    expected = predictor.logits([r.sentence for r in rows]).numpy()[:, [1, 2, 0]]  # into neg, pos, weather
    assert np.abs(np.array([r.scores for r in rows]) - expected).max() < 1e-4
    assert rows[0].gold == (ml_data / "train.txt").read_text().splitlines()[0].split("\t")[1]
    # used as is for evaluation: sigmoid at 0.5, its labels mapped by name
    out = tmp_path / "teacher.results.json"
    assert evaluate.main([f"--config={hf_config(tmp_path)}", f"--data_dir={ml_data}",
                          f"--teacher={model_dir}", "--device=cpu", "--batch_size=8", "--warmup=0",
                          f"--results_path={out}"]) == 0
    assert json.loads(out.read_text())["thresholds"] is None


def test_single_label_teacher_refused_on_multi_label_data(ml_data: Path, teacher_template, capsys):
    _, teacher, _ = teacher_template  # a tiny single-label BERT teacher (read, not written)
    line = refused(capsys, label, [f"--data_dir={ml_data}", f"--teacher={teacher}", "--device=cpu", "--multi_label"],
                   "multi-label data, but the teacher")
    assert str(ml_data / "train.txt") in line and "single-label" in line
    assert not (ml_data / "transfer.txt").exists()


def test_hf_teacher_fine_tuned_multi_label(ml_data: Path, tiny_transformer, tmp_path: Path):
    bert = tiny_transformer("bert")
    config = hf_config(tmp_path)
    assert preprocess.main([f"--config={config}", f"--data_dir={ml_data}", f"--bert_model_name_or_path={bert}",
                            "--bert_do_lower_case", "--multi_label"]) == 0
    out = tmp_path / "teacher"
    assert train.main([f"--config={config}", f"--data_dir={ml_data}", f"--bert_model_name_or_path={bert}",
                       "--bert_do_lower_case", f"--teacher={out}", "--epochs=1", "--batch_size=32", "--lr=1e-3",
                       "--device=cpu", f"--log_dir={tmp_path / 'runs'}"]) == 0
    assert json.loads((out / "config.json").read_text())["problem_type"] == "multi_label_classification"
    meta = json.loads((out / "distil_config.json").read_text())
    assert meta["multi_label"] is True and len(meta["thresholds"]) == 3
    assert teacher_multi_label(out)
    teacher = load_teacher(out)
    assert teacher.multi_label and teacher.thresholds == meta["thresholds"]


# ---------------------------------------------------------------------------
# The driver: recipe and MULTI_LABEL
# ---------------------------------------------------------------------------

def test_recipe_and_driver_pass_multi_label(tmp_path: Path):
    recipe = Recipe(students={"cnn": StudentRecipe(epochs=1, gold_epochs=1, lr=1e-3)}, models=["cnn"],
                    multi_label=True)
    recipe.validate("recipe")
    data = tmp_path / "d"
    assert "--multi_label" in student_data_step(data, "c.json", "g.txt", multi_label=True).argv
    assert "--multi_label" in teacher_steps(recipe, data, "bert", tmp_path / "t", True, tmp_path)[0].argv
    assert "--multi_label" in label_step(recipe, data, "c.json", teacher_logits="s.jsonl").argv
    train_cmd = student_steps(recipe, "cnn", "distill", data, tmp_path / "c.pt", tmp_path)[0].argv
    assert "--criterion=BCEWithLogitsLoss" in train_cmd  # the multi-label default for a null criterion
    recipe.students["cnn"].criterion = "KLDivLoss"
    with pytest.raises(UserError, match="not for multi-label"):
        recipe.validate("recipe")
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert "$(if $(MULTI_LABEL),--multi_label)" in makefile
    assert load_recipe(ROOT / "configs/recipe-goemotions.json").multi_label


def test_driver_refuses_a_softmax_recipe_for_multi_label_data(ml_data: Path, tmp_path: Path, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    import distill

    # recipe-sst2.json's bags of n-grams learn with KLDivLoss: given for multi-label data, it is
    # refused before anything runs (without --recipe, multi-label data gets recipe-goemotions.json)
    refused(capsys, distill, [f"--data_dir={ml_data}", "--multi_label", "--teacher_logits=x.jsonl",
                              "--recipe=configs/recipe-sst2.json",
                              f"--work_dir={tmp_path / 'work'}", f"--out_dir={tmp_path / 'out'}"],
            "KLDivLoss is not for multi-label data")
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()

