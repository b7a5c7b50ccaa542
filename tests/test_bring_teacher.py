"""Bring your teacher: anyone's fine-tuned sequence classifier used as it is (BERT, RoBERTa,
ELECTRA, DistilBERT; its labels mapped by name), unlabeled text as the transfer set (no test
leakage), and teacher scores from a JSONL file (bad lines refused, file and line named)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate
import label
import predict
from conftest import ROOT, build_tiny_transformer, refused, write_glove, write_three_class
from dataset import read_examples, read_transfer

sys.path.insert(0, str(ROOT / "scripts"))

import distill  # noqa: E402

FAMILIES = ["bert", "roberta", "electra", "distilbert"]
# the data's labels, sorted, are GetWeather, negative, positive: the teachers' own order differs
ID2LABEL = {0: "positive", 1: "GetWeather", 2: "negative"}
DATA_LABELS = ["GetWeather", "negative", "positive"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """Factory: `classifier(family, id2label)` → a saved `*ForSequenceClassification` directory."""
    cache: dict[tuple, Path] = {}

    def get(family: str, id2label: dict[int, str] = ID2LABEL) -> Path:
        key = (family, tuple(sorted(id2label.items())))
        if key not in cache:
            cache[key] = build_tiny_transformer(tmp_path_factory.mktemp(family), family, id2label)
        return cache[key]

    return get


def own_logits(model_dir: Path, sentences: list[str]) -> np.ndarray:
    """The classifier's logits in its own column order, computed by the library alone."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    rows = []
    with torch.inference_mode():
        for s in sentences:
            enc = tok(s, return_tensors="pt", truncation=True, max_length=128)
            rows.append(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[0].numpy())
    return np.stack(rows)


def by_name(logits: np.ndarray, id2label: dict[int, str], labels: list[str]) -> np.ndarray:
    """Columns put in `labels` order by name."""
    own = [id2label[i] for i in range(len(id2label))]
    return logits[:, [own.index(name) for name in labels]]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_fine_tuned_classifier_labels_with_its_own_head_by_name(family, classifier, tmp_path, capsys):
    data = write_three_class(tmp_path / "data", (24, 6, 6))
    teacher = classifier(family)
    output = data / "transfer.txt"
    assert label.main([f"--teacher={teacher}", f"--data_dir={data}", "--batch_size=4", "--device=cpu"]) == 0
    rows = list(read_transfer(output, 3))
    assert [(r.sentence, r.gold) for r in rows] == [(e.sentence, e.label) for e in read_examples(data / "train.txt")]
    expected = by_name(own_logits(teacher, [r.sentence for r in rows]), ID2LABEL, DATA_LABELS)
    np.testing.assert_allclose(np.array([r.scores for r in rows]), expected, atol=1e-5, rtol=0)
    # evaluate.py and predict.py take it as it is, too: the same decisions in the data's label order
    config = ROOT / "configs" / "config-bert-hf.json"
    results_path = tmp_path / "teacher.results.json"
    assert evaluate.main([f"--config={config}", f"--data_dir={data}", f"--bert_output_dir={teacher}",
                          f"--results_path={results_path}", "--device=cpu"]) == 0
    tests = read_examples(data / "test.txt")
    decided = by_name(own_logits(teacher, [e.sentence for e in tests]), ID2LABEL, DATA_LABELS).argmax(1)
    assert json.loads(results_path.read_text())["predictions"] == decided.tolist()
    capsys.readouterr()
    out = tmp_path / "pred.jsonl"
    assert predict.main([f"--bert_output_dir={teacher}", f"--input={data / 'test.txt'}", f"--output={out}",
                         "--format=jsonl", "--device=cpu"]) == 0
    assert [json.loads(line)["label"] for line in out.read_text().splitlines()] == [DATA_LABELS[i] for i in decided]


def test_label_names_that_differ_are_refused_or_mapped(classifier, data_dir, tmp_path, capsys):
    named = classifier("bert", {0: "NEG", 1: "POS"})
    line = refused(capsys, label, [f"--teacher={named}", f"--data_dir={data_dir}", "--device=cpu"],
                   "has labels ['NEG', 'POS'] but the data has ['0', '1']")
    assert "--label_map (LABEL_MAP=)" in line and "--label_map NEG=0,POS=1" in line
    assert sorted(p.name for p in data_dir.iterdir()) == ["test.txt", "train.txt", "valid.txt"]  # nothing written
    # mapped by name, in the opposite order of the teacher's columns
    assert label.main([f"--teacher={named}", f"--data_dir={data_dir}", "--label_map=NEG=1,POS=0",
                       "--device=cpu"]) == 0
    rows = list(read_transfer(data_dir / "transfer.txt", 2))[:10]
    expected = own_logits(named, [r.sentence for r in rows])[:, [1, 0]]
    np.testing.assert_allclose(np.array([r.scores for r in rows]), expected, atol=1e-5, rtol=0)
    # the library's default names LABEL_0, LABEL_1 map to the labels 0, 1 by index
    default = classifier("bert", {0: "LABEL_0", 1: "LABEL_1"})
    assert label.main([f"--teacher={default}", f"--data_dir={data_dir}", f"--output={tmp_path / 't.txt'}",
                       "--device=cpu"]) == 0
    # a teacher with a label the data lacks is refused unless mapped
    three = classifier("bert", {0: "0", 1: "1", 2: "maybe"})
    refused(capsys, label, [f"--teacher={three}", f"--data_dir={data_dir}", f"--output={tmp_path / 'x.txt'}",
                            "--device=cpu"], "has labels ['0', '1', 'maybe'] but the data has ['0', '1']")
    assert not (tmp_path / "x.txt").exists() and not (tmp_path / "x.txt.partial").exists()


def test_unlabeled_text_drops_and_counts_test_sentences(classifier, data_dir, tmp_path, capsys):
    teacher = classifier("bert", {0: "LABEL_0", 1: "LABEL_1"})
    test_sentence = read_examples(data_dir / "test.txt")[0].sentence
    train_sentence = read_examples(data_dir / "train.txt")[0].sentence
    unlabeled = tmp_path / "unlabeled.txt"
    # a test sentence as a user might write it (other case, other spacing), a training sentence, a new one
    unlabeled.write_text(f"{test_sentence.upper()}\n{train_sentence}  \nan entirely new sentence here\n")
    capsys.readouterr()
    assert label.main([f"--teacher={teacher}", f"--data_dir={data_dir}", f"--unlabeled={unlabeled}",
                       "--device=cpu"]) == 0
    assert "unlabeled: 3 lines read, 1 kept (0 with a gold label), 1 duplicates dropped, 1 dropped as valid/test" \
        in capsys.readouterr().err
    results = json.loads((data_dir / "transfer.txt.results.json").read_text())
    assert results["sources"]["unlabeled"] == {"read": 3, "kept": 1, "duplicates": 1, "in_valid_or_test": 1,
                                               "with_gold": 0}
    rows = list(read_transfer(data_dir / "transfer.txt", 2))
    assert [r.sentence for r in rows if r.source == "unlabeled"] == ["an entirely new sentence here"]
    assert test_sentence.upper() not in {r.sentence for r in rows}


BAD_SCORES = {
    "not JSON": ('{"text": "a film", "logits": {"0": 1.0, "1": 2.0}', "not valid JSON"),
    "missing label": ('{"text": "a film", "logits": {"0": 1.0}}', "missing label '1'"),
    "unknown label": ('{"text": "a film", "logits": {"0": 1.0, "1": 2.0, "2": 0.5}}', "unknown label '2'"),
    "non-finite score": ('{"text": "a film", "logits": {"0": NaN, "1": 2.0}}', "every score must be a finite number"),
    "infinite score": ('{"text": "a film", "logits": {"0": Infinity, "1": 2.0}}', "every score must be a finite number"),
    "probabilities off by 0.01": ('{"text": "a film", "probs": {"0": 0.3, "1": 0.71}}', "probabilities must lie in [0, 1] and sum to 1 (within 1e-3)"),
    "no text": ('{"logits": {"0": 1.0, "1": 2.0}}', "'text' must be a non-empty string"),
}


@pytest.mark.parametrize("case", sorted(BAD_SCORES))
def test_bad_teacher_score_lines_are_refused_by_file_and_line(case, data_dir, capsys):
    content, needle = BAD_SCORES[case]
    scores = data_dir / "scores.jsonl"
    scores.write_text('{"text": "a good film", "probs": {"0": 0.2, "1": 0.8}}\n' + content + "\n")
    refused(capsys, label, [f"--teacher_logits={scores}", f"--data_dir={data_dir}"], f"{scores}:2: {needle}")
    assert not (data_dir / "transfer.txt").exists() and not (data_dir / "transfer.txt.partial").exists()


def test_teacher_scores_from_a_file_enter_as_centred_log_probabilities(data_dir, capsys):
    scores = data_dir / "scores.jsonl"
    scores.write_text('{"text": "a good film", "probs": {"1": 0.8, "0": 0.2}}\n'
                      '{"text": "a dull film", "logits": {"0": 3.5, "1": -1.25}}\n'
                      '{"text": "a sure thing", "probs": {"0": 0.0, "1": 1.0}}\n')
    assert label.main([f"--teacher_logits={scores}", f"--data_dir={data_dir}"]) == 0
    rows = list(read_transfer(data_dir / "transfer.txt", 2))
    assert [r.source for r in rows] == ["file"] * 3
    good, dull, sure = (np.array(r.scores) for r in rows)
    np.testing.assert_allclose(good, [math.log(0.2) - math.log(0.16) / 2, math.log(0.8) - math.log(0.16) / 2],
                               atol=1e-12)
    np.testing.assert_allclose(np.exp(good) / np.exp(good).sum(), [0.2, 0.8], atol=1e-12)
    assert dull.tolist() == [3.5, -1.25]  # logits as given, in the data's label order
    assert abs(sure.sum()) < 1e-9 and sure[1] - sure[0] == pytest.approx(-math.log(1e-6))  # floored at 1e-6


@pytest.mark.slow
def test_driver_with_a_ready_classifier_runs_no_teacher_training(classifier, tmp_path, capsys):
    from test_driver import commands, write_recipe

    source = write_three_class(tmp_path / "toy", (60, 15, 15))
    configs = tmp_path / "configs"
    configs.mkdir()
    recipe = write_recipe(tmp_path / "recipe.json", configs)
    teacher = classifier("roberta")
    test_sentence = read_examples(source / "test.txt")[3].sentence
    unlabeled = tmp_path / "unlabeled.txt"
    unlabeled.write_text(f"{test_sentence}\nrain and sunny weather today\n")
    out, results = tmp_path / "out", tmp_path / "toy.md"
    argv = [f"--data_dir={source}", f"--teacher={teacher}", f"--recipe={recipe}", "--models=cnn",
            f"--embedding_path={write_glove(tmp_path / 'glove.txt')}", f"--work_dir={tmp_path / 'work'}",
            f"--out_dir={out}", f"--results={results}", f"--unlabeled={unlabeled}", "--transfer=augmented,both"]
    capsys.readouterr()
    assert distill.main(argv) == 0
    printed = capsys.readouterr().out
    steps = list(json.loads((out / "pipeline.json").read_text()))
    assert not any("teacher" in s and s.startswith(("train", "preprocess")) for s in steps), steps
    assert not any("train.py" in c and "--bert_output_dir" in c for c in commands(printed))
    # the teacher row is the classifier's own accuracy on test.txt
    tests = read_examples(source / "test.txt")
    decided = by_name(own_logits(teacher, [e.sentence for e in tests]), ID2LABEL, DATA_LABELS).argmax(1)
    own = float(np.mean([DATA_LABELS[i] == e.label for i, e in zip(decided, tests)]))
    teacher_results = json.loads((out / "teacher.results.json").read_text())
    assert teacher_results["accuracy"] == pytest.approx(own)
    table = results.read_text()
    teacher_row = next(line for line in table.splitlines() if line.startswith(f"| {teacher.name} teacher |"))
    assert f"{100 * own:.2f}" in teacher_row
    assert "duplicates and 1 lines that are valid or test sentences" in table and "unlabeled 1" in table
    # one student per transfer choice, side by side
    for choice in ("augmented", "both"):
        assert f"| GloVe CNN | teacher logits, transfer `{choice}` | " in table
        train_cmd = json.loads((out / "pipeline.json").read_text())[f"train cnn distill-{choice}"]["command"]
        assert f"--transfer={choice}" in train_cmd
    # a label set that does not map is refused before anything is written
    refused(capsys, distill, [*argv[:1], f"--teacher={classifier('bert', {0: 'NEG', 1: 'POS', 2: 'MEH'})}",
                              *argv[2:6], f"--out_dir={tmp_path / 'out2'}", f"--work_dir={tmp_path / 'work2'}",
                              f"--results={tmp_path / 'toy2.md'}"], "but the data has ['GetWeather', 'negative', ")
    assert not (tmp_path / "out2").exists() and not (tmp_path / "work2").exists()


def test_labeling_runtime_is_chosen_by_speed_and_agreement(classifier, data_dir, tmp_path, capsys):
    """--runtime auto times fp32 PyTorch and ONNX Runtime fp32/int8 on a sample, keeps the fastest
    that agrees, and records why; a runtime named is used, its agreement logged."""
    teacher = classifier("bert", {0: "LABEL_0", 1: "LABEL_1"})
    base = [f"--teacher={teacher}", f"--data_dir={data_dir}", "--device=cpu", "--num_threads=1",
            "--runtime_sample=64"]
    capsys.readouterr()
    assert label.main([*base, "--runtime=auto", f"--output={tmp_path / 'auto.txt'}"]) == 0
    err = capsys.readouterr().err
    results = json.loads((tmp_path / "auto.txt.results.json").read_text())
    trials = results["runtime_trials"]
    assert [t["runtime"] for t in trials] == ["pytorch", "onnxruntime", "onnxruntime-int8"]
    chosen = [t for t in trials if t["chosen"]]
    assert len(chosen) == 1 and chosen[0]["agreement"] >= 0.995 and results["runtime"] == chosen[0]["runtime"]
    assert all(t["sentences_per_s"] <= chosen[0]["sentences_per_s"] for t in trials if t["agreement"] >= 0.995)
    assert "<- chosen: the fastest at or above the 99.5% agreement" in err
    assert trials[1]["max_abs_logit_diff"] < 1e-4  # fp32 ONNX is the same function
    # named: ONNX Runtime fp32 gives PyTorch's scores
    assert label.main([*base, "--runtime=onnxruntime", f"--output={tmp_path / 'ort.txt'}"]) == 0
    assert label.main([f"--teacher={teacher}", f"--data_dir={data_dir}", "--device=cpu",
                       f"--output={tmp_path / 'torch.txt'}"]) == 0
    ort = np.array([r.scores for r in read_transfer(tmp_path / "ort.txt", 2)])
    torch_scores = np.array([r.scores for r in read_transfer(tmp_path / "torch.txt", 2)])
    np.testing.assert_allclose(ort, torch_scores, atol=1e-4, rtol=0)
    refused(capsys, label, [*base[:3], "--min_agreement=0.9"], "are for --runtime auto")
    # int8, with every near-tie (here: every sentence) scored again in fp32 PyTorch: PyTorch's scores
    assert label.main([*base, "--runtime=onnxruntime-int8", "--rescore_margin=1e9",
                       f"--output={tmp_path / 'int8.txt'}"]) == 0
    assert json.loads((tmp_path / "int8.txt.results.json").read_text())["rescored_fp32"] == len(torch_scores)
    int8 = np.array([r.scores for r in read_transfer(tmp_path / "int8.txt", 2)])
    np.testing.assert_allclose(int8, torch_scores, atol=1e-5, rtol=0)
