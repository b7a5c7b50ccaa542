"""scripts/distill.py, the whole recipe as one command, on tiny data outside the checkout:
three string labels, a tiny RoBERTa teacher (its `<mask>` must survive augmentation and
tokenization), every student; a second run skips every stage, a changed recipe value reruns
exactly the steps it feeds; bad input is one ERROR line."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from teachers import load_hf_tokenizer
from config import SINGLE_STUDENTS, STUDENT_KINDS
from conftest import ROOT, THREE_CLASS_WORDS, refused, write_glove, write_student_config, write_three_class
from dataset import read_labels, read_transfer
from inference import Predictor

sys.path.insert(0, str(ROOT / "scripts"))

import distill  # noqa: E402

STUDENTS = sorted(SINGLE_STUDENTS)


def write_data(d: Path) -> Path:
    """train/valid/test (120/30/30) of the separable 3-class task with string labels."""
    return write_three_class(d, (120, 30, 30))


def write_recipe(path: Path, configs: Path, bow_epochs: int = 2) -> Path:
    teacher = configs / "teacher.json"
    teacher.write_text(json.dumps({"emb_class": "roberta", "enc_class": "cls", "n_ctx": 32, "dropout": 0.0}))
    students = {}
    for name in STUDENTS:
        students[name] = {"epochs": bow_epochs if name == "bow" else 2, "gold_epochs": 0,
                          "lr": 0.005, "batch_size": 32, "amp": "none",
                          "config": str(write_student_config(configs, name))}
    path.write_text(json.dumps({
        "teacher": {"config": str(teacher), "epochs": 3, "lr": 0.003, "batch_size": 8, "warmup_epoch": 0.0,
                    "weight_decay": 0.01},
        "models": STUDENTS, "n_iter": 2, "label_batch_size": 64, "label_amp": "none", "students": students}))
    return path


def commands(printed: str) -> list[str]:
    """The stage command lines the driver printed before running them."""
    return [line for line in printed.splitlines() if line.startswith("$ ")]


@pytest.mark.slow
def test_distill_driver_runs_skips_and_reruns_by_content(tmp_path, tiny_transformer, capsys):
    source = write_data(tmp_path / "toy")
    configs = tmp_path / "configs"
    configs.mkdir()
    recipe = write_recipe(tmp_path / "recipe.json", configs)
    glove = write_glove(tmp_path / "glove.txt", extra=tuple(THREE_CLASS_WORDS["GetWeather"]))
    teacher_model = tiny_transformer("roberta")
    work, out, results = tmp_path / "work", tmp_path / "out", tmp_path / "results" / "toy.md"
    argv = [f"--data_dir={source}", f"--teacher={teacher_model}", f"--recipe={recipe}", f"--embedding_path={glove}",
            f"--work_dir={work}", f"--out_dir={out}", f"--results={results}"]
    # the stages the recipe needs (pipeline.py may add more, such as extra evaluations)
    needed = ["preprocess teacher", "train teacher", "evaluate teacher", "augment", "label", "preprocess students",
              *[f"{verb} {m} distill" for m in STUDENTS for verb in ("train", "evaluate")]]

    # 1. everything runs
    capsys.readouterr()
    assert distill.main(argv) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "pipeline.json").read_text())
    steps = list(record)
    assert set(needed) <= set(steps)
    assert len(commands(printed)) == len(steps)  # each printed once, before it ran
    # one name per idea: the pipeline distills from label.py's transfer.txt by default
    assert not any("--augmented" in c or "--bert_output_dir" in c or "--epoch=" in c for c in commands(printed))
    assert all("--distill" in c for c in commands(printed) if "train.py" in c and "distill.pt" in c)
    assert not any("gold" in name for name in steps)  # gold_epochs 0: no baselines
    assert read_labels(work / "label.txt") == ["GetWeather", "negative", "positive"]
    # the teacher's own tokenization: RoBERTa does not lower-case, its mask is <mask>
    assert json.loads((out / "recipe.json").read_text())["teacher"]["lowercase"] is False
    assert "--bert_do_lower_case" not in record["preprocess teacher"]["command"]
    tok = load_hf_tokenizer(teacher_model)
    rows = list(read_transfer(work / "transfer.txt", 3))
    assert {r.source for r in rows} == {"original", "augmented"}
    masked = [r.sentence for r in rows if "<mask>" in r.sentence]
    assert masked, "augmentation drew no mask"
    ids = Predictor.load(out / "teacher").encode_batch(masked)  # as the teacher read them when labeling
    for sentence, row in zip(masked, ids):  # each mask one <mask> piece, none cut into `<`, `mask`, `>`
        assert row.count(tok.mask_token_id) == sentence.count("<mask>")
        assert [p for p in tok.convert_ids_to_tokens(row) if "mask" in p.lower() and p != "<mask>"] == []
    # the table: the teacher and every student, evaluated on the 30 test sentences
    table = results.read_text()
    assert "(not run yet)" not in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and "/30)" in line]
    assert len(rows) == 1 + len(STUDENTS)  # the teacher and every distilled student
    for name in STUDENTS:
        assert any(row.startswith(f"| {STUDENT_KINDS[name].title} | teacher logits (distilled) |") for row in rows)
    teacher_results = json.loads((out / "teacher.results.json").read_text())
    assert teacher_results["total"] == 30 and teacher_results["accuracy"] >= 0.6, teacher_results["accuracy"]
    for name in STUDENTS:
        assert json.loads(Path(f"{out / name}-distill.pt.results.json").read_text())["total"] == 30

    # 2. nothing changed: every stage is skipped
    assert distill.main(argv) == 0
    assert commands(capsys.readouterr().out) == []
    assert json.loads((out / "pipeline.json").read_text()) == record

    # 3. one recipe value changed: exactly that student's training and its evaluations rerun
    write_recipe(recipe, configs, bow_epochs=1)
    assert distill.main(argv) == 0
    rerun = commands(capsys.readouterr().out)
    bow_steps = {name for name in steps if name.startswith(("train bow distill", "evaluate bow distill"))}
    assert {"train bow distill", "evaluate bow distill"} <= bow_steps
    assert len(rerun) == len(bow_steps)
    assert "train.py" in rerun[0] and "--epochs=1" in rerun[0] and "bow-distill.pt" in rerun[0]
    assert all("evaluate.py" in c and "bow-distill.pt" in c for c in rerun[1:])
    after = json.loads((out / "pipeline.json").read_text())
    assert sorted(after) == sorted(steps)
    assert {name for name in steps if after[name] != record[name]} == bow_steps
    history = json.loads(Path(f"{out / 'bow'}-distill.pt.train_results.json").read_text())["history"]
    assert len(history) == 1


def test_distill_driver_refuses_bad_input(tmp_path, tiny_transformer, capsys):
    source = write_data(tmp_path / "toy")
    configs = tmp_path / "configs"
    configs.mkdir()
    recipe = write_recipe(tmp_path / "recipe.json", configs)
    out = tmp_path / "out"

    def argv(data: Path = source, teacher: Path | None = None, recipe_path: Path = recipe, *extra: str) -> list[str]:
        return [f"--data_dir={data}", f"--teacher={teacher or tiny_transformer('roberta')}",
                f"--recipe={recipe_path}", f"--work_dir={tmp_path / 'work'}", f"--out_dir={out}",
                f"--results={tmp_path / 'toy.md'}", *extra]

    # a missing split
    (source / "valid.txt").rename(tmp_path / "valid.txt")
    refused(capsys, distill, argv(), f"{source / 'valid.txt'}: missing; DATA needs train.txt, valid.txt and test.txt")
    (tmp_path / "valid.txt").rename(source / "valid.txt")
    # an unknown recipe key
    bad = tmp_path / "bad-recipe.json"
    bad.write_text(json.dumps({**json.loads(recipe.read_text()), "n_iters": 3}))
    refused(capsys, distill, argv(recipe_path=bad), f"{bad}: unknown key 'n_iters'")
    # a teacher directory that is not a model
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    refused(capsys, distill, argv(teacher=empty), f"{empty}: not a Hugging Face model directory (no config.json)")
    # a student the recipe does not have
    refused(capsys, distill, argv(source, None, recipe, "--models=cnn,rnn"), "unknown student 'rnn' in --models")
    assert not out.exists() and not (tmp_path / "work").exists()
    with pytest.raises(SystemExit) as e:
        distill.main(["--no_such_flag"])
    assert e.value.code == 2


def test_multi_label_without_a_recipe_gets_the_multi_label_recipe():
    """`make distill DATA=... MULTI_LABEL=1` with no RECIPE runs GoEmotions' recipe (sigmoid losses),
    not SST-2's; the demo its demo."""
    import distill
    from config import load_recipe

    assert distill.default_recipe(False, False) == "configs/recipe-sst2.json"
    assert distill.default_recipe(True, False) == "configs/recipe-demo.json"
    for demo in (False, True):
        recipe = load_recipe(ROOT / distill.default_recipe(demo, True))
        assert recipe.multi_label and recipe.train_subset == (8000 if demo else 0)
