"""Every family of bad input gets one ERROR line naming the culprit, exit code 1, no
traceback, and leaves no output under its final name."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import evaluate
import preprocess
import train
from conftest import error_lines


def outputs(data_dir: Path) -> set[str]:
    return {p.name for p in data_dir.iterdir() if p.suffix in (".ids", ".fs", ".npy", ".pred") or p.name == "vocab.txt"}


def check_refused(capsys, module, argv, needle):
    capsys.readouterr()
    assert module.main(argv) == 1
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err


DATA_CASES = {
    "empty file": ("train.txt", b"", "train.txt: file is empty"),
    "too many tabs": ("train.txt", b"a good film\t1\textra\n", "train.txt:1: expected 'sentence<TAB>label' (one tab), found 2"),
    "empty sentence": ("valid.txt", b"a good film\t1\n \t0\n", "valid.txt:2: empty sentence"),
    "not utf-8": ("test.txt", b"a good film\t1\nbad \xff byte\t0\n", "test.txt:2: not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_data_files(case, data_dir, glove_path, student_config, capsys):
    name, content, needle = DATA_CASES[case]
    (data_dir / name).write_bytes(content)
    config = student_config("cnn")
    check_refused(capsys, preprocess, [f"--config={config}", f"--data_dir={data_dir}",
                                       f"--embedding_path={glove_path}"], needle)
    assert outputs(data_dir) == set()


def test_absurdly_long_line_is_truncated(data_dir, glove_path, student_config):
    with open(data_dir / "train.txt", "a") as f:
        f.write("good " * 100000 + "\t1\n")
    config = student_config("cnn")
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}", f"--embedding_path={glove_path}"]) == 0
    longest = max(len(line.split("\t")[0].split()) for line in (data_dir / "train.txt.ids").read_text().splitlines())
    assert longest == 20  # n_ctx of the tiny config


PRED_CASES = {
    "logit count": ("a fine film\t0.5\n", "expected 2 logits (one per label), found 1"),
    "non-numeric logit": ("a fine film\t0.5 abc\n", "logits must be numbers"),
    "infinite logit": ("a fine film\t0.5 inf\n", "logits must be finite"),
}


@pytest.mark.parametrize("case", sorted(PRED_CASES))
def test_bad_teacher_logits(case, data_dir, glove_path, student_config, capsys):
    content, needle = PRED_CASES[case]
    (data_dir / "augmented.txt").write_text("a good movie\t1.0 -1.0\n" + content)
    config = student_config("cnn")
    check_refused(capsys, preprocess, [f"--config={config}", f"--data_dir={data_dir}",
                                       f"--embedding_path={glove_path}", "--augmented"], f"augmented.txt:2: {needle}")


def test_fewer_teacher_ids_than_sentences(data_dir, tiny_transformer, make_teacher_config, tmp_path, capsys):
    from test_teacher_and_pipeline import fit_teacher

    teacher = tmp_path / "teacher"
    config = fit_teacher("bert", data_dir, tiny_transformer, make_teacher_config, teacher, epochs=1)
    (data_dir / "augmented.raw").write_text("a good movie\t0\na bad movie\t0\n")
    (data_dir / "augmented.raw.fs").write_text("2 5 3\t-1\n")
    check_refused(capsys, evaluate, [f"--config={config}", f"--data_dir={data_dir}", f"--bert_output_dir={teacher}",
                                     "--augmented", "--device=cpu"], "augmented.raw.fs: 1 lines but")
    assert not (data_dir / "augmented.raw.pred").exists()
    # a student checkpoint made for another config
    cnn = tmp_path / "c.json"
    cnn.write_text(json.dumps({"emb_class": "glove", "enc_class": "cnn", "cnn": {}}))
    check_refused(capsys, evaluate, [f"--config={cnn}", f"--data_dir={data_dir}", f"--bert_output_dir={teacher}",
                                     f"--model_path={teacher / 'model.safetensors'}"], "not a loadable student checkpoint")


CONFIG_CASES = {
    "missing": (None, "file not found"),
    "unknown emb_class": ({"emb_class": "word2vec", "enc_class": "cnn"}, "unknown emb_class 'word2vec'"),
    "missing section": ({"emb_class": "glove", "enc_class": "densenet-dsa", "densenet": {}}, "needs a 'dsa' section"),
    "wrong nested type": ({"emb_class": "glove", "enc_class": "cnn", "cnn": {"kernel_sizes": [2, "3"]}},
                          "'cnn.kernel_sizes[1]' must be an integer"),
    "not an object": ([1, 2], "expected a JSON object"),
    "negative size": ({"emb_class": "glove", "enc_class": "cnn", "cnn": {"num_filters": -3}},
                      "cnn.num_filters must be positive"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_configs(case, data_dir, glove_path, tmp_path, capsys):
    content, needle = CONFIG_CASES[case]
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(json.dumps(content))
    check_refused(capsys, preprocess, [f"--config={path}", f"--data_dir={data_dir}",
                                       f"--embedding_path={glove_path}"], needle)


def test_malformed_embedding_line(data_dir, glove_path, student_config, capsys):
    with open(glove_path, "a") as f:
        f.write("broken 0.1 0.2\n")
    check_refused(capsys, preprocess, [f"--config={student_config('cnn')}", f"--data_dir={data_dir}",
                                       f"--embedding_path={glove_path}"], "expected a word and 8 numbers")
    assert outputs(data_dir) == set()


@pytest.mark.parametrize("flag", ["--lr=-1", "--batch_size=0", "--epoch=-2", "--no_such_flag"])
def test_bad_flags_exit_nonzero(flag, data_dir, student_config):
    with pytest.raises(SystemExit) as e:
        train.main([f"--config={student_config('cnn')}", f"--data_dir={data_dir}", flag])
    assert e.value.code == 2


def test_text_file_as_checkpoint(data_dir, student_config, tmp_path, capsys):
    bogus = tmp_path / "model.pt"
    bogus.write_text("hello")
    check_refused(capsys, evaluate, [f"--config={student_config('cnn')}", f"--data_dir={data_dir}",
                                     f"--model_path={bogus}"], "not a torch.save archive")
