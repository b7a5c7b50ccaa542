"""Every family of bad input gets one ERROR line naming the culprit, exit code 1, no
traceback, and leaves no output under its final name."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import augment_data
import evaluate
import predict
import preprocess
import train
from conftest import refused


def outputs(data_dir: Path) -> set[str]:
    return {p.name for p in data_dir.iterdir() if p.suffix in (".ids", ".fs", ".npy", ".pred") or p.name == "vocab.txt"}


check_refused = refused


DATA_CASES = {
    "empty file": ("train.txt", b"", "train.txt: file is empty"),
    "too many tabs": ("train.txt", b"a good film\t1\textra\tmore\n",
                      "train.txt:1: expected 'sentence<TAB>label' or 'sentence_a<TAB>sentence_b<TAB>label', found 4 "
                      "columns"),
    "pairs and sentences mixed": ("train.txt", b"a good film\tit was good\t1\na bad film\t0\n",
                                  "train.txt:2: expected 'sentence_a<TAB>sentence_b<TAB>label' as line 1 does (a pair "
                                  "file), found 2 columns"),
    "a pair split among sentences": ("valid.txt", b"a good film\tit was good\t1\n",
                                     "valid.txt:1: expected 'sentence<TAB>label', found 3 columns"),
    "empty side of a pair": ("train.txt", b"a good film\t \t1\n", "train.txt:1: empty sentence_b"),
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
    "logit count": ("a fine film\taugmented\t\t0.5\n", "expected 2 teacher logits (one per label), found 1"),
    "non-numeric logit": ("a fine film\taugmented\t\t0.5 abc\n", "teacher logits must be numbers"),
    "infinite logit": ("a fine film\taugmented\t\t0.5 inf\n", "teacher logits must be finite"),
    "the seed's old two columns": ("a fine film\t0.5 0.5\n", "expected 'sentence<TAB>source<TAB>gold<TAB>logits'"),
    "unknown source": ("a fine film\tguessed\t\t0.5 0.5\n", "unknown source 'guessed'"),
}


@pytest.mark.parametrize("case", sorted(PRED_CASES))
def test_bad_teacher_logits(case, data_dir, glove_path, student_config, capsys):
    content, needle = PRED_CASES[case]
    (data_dir / "augmented.txt").write_text("a good movie\toriginal\t1\t1.0 -1.0\n" + content)
    config = student_config("cnn")
    check_refused(capsys, preprocess, [f"--config={config}", f"--data_dir={data_dir}",
                                       f"--embedding_path={glove_path}", "--augmented"], f"augmented.txt:2: {needle}")


def test_teacher_with_another_head_is_refused(data_dir, trained_teacher, make_teacher_config, capsys):
    teacher, config = trained_teacher
    # the teacher evaluated with a config of the other head is refused, naming both
    mean = make_teacher_config("bert", "mean")
    line = check_refused(capsys, evaluate, [f"--config={mean}", f"--data_dir={data_dir}",
                                            f"--bert_output_dir={teacher}", "--device=cpu"], "holds a bert/cls model")
    assert f"but {mean} is bert/mean" in line
    assert not (teacher / "results.json").exists()


CONFIG_CASES = {
    "missing": (None, "file not found"),
    "unknown emb_class": ({"emb_class": "word2vec", "enc_class": "cnn"}, "unknown emb_class 'word2vec'"),
    "missing section": ({"emb_class": "glove", "enc_class": "densenet-dsa", "densenet": {}}, "needs a 'dsa' section"),
    "wrong nested type": ({"emb_class": "glove", "enc_class": "cnn", "cnn": {"kernel_sizes": [2, "3"]}},
                          "'cnn.kernel_sizes[1]' must be an integer"),
    "not an object": ([1, 2], "expected a JSON object"),
    "negative size": ({"emb_class": "glove", "enc_class": "cnn", "cnn": {"num_filters": -3}},
                      "cnn.num_filters must be positive"),
    "unused section": ({"emb_class": "glove", "enc_class": "cnn", "cnn": {}, "lstm": {}},
                       "section 'lstm' is not used by glove/cnn; remove it"),
    "unknown tokenizer": ({"emb_class": "glove", "enc_class": "cnn", "cnn": {}, "tokenizer": "nltk"},
                          "unknown tokenizer 'nltk'"),
    "student key in a teacher": ({"emb_class": "bert", "enc_class": "cls", "lowercase": True},
                                 "key 'lowercase' is a GloVe student's"),
    "student head on a teacher": ({"emb_class": "bert", "enc_class": "cnn"},
                                  "unknown enc_class 'cnn' for emb_class 'bert'"),
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


@pytest.mark.parametrize("flag", ["--train_limit=-1", "--save_steps=-5", "--lr_decay_rate=1.5", "--alpha=2"])
def test_out_of_range_values_are_refused_by_argparse(flag, data_dir, student_config):
    with pytest.raises(SystemExit) as e:
        train.main([f"--config={student_config('cnn')}", f"--data_dir={data_dir}", flag])
    assert e.value.code == 2


# (module, flags, refusal); {student}/{teacher} are configs, {data} the data directory. Every
# combination here would silently ignore a flag, so it is refused before any work.
FLAG_CASES = {
    "train temperature with MSE": (train, "--config={student} --augmented --criterion=MSELoss --temperature=2",
                                   "--temperature is not used by MSELoss"),
    "train temperature on gold": (train, "--config={student} --temperature=2",
                                  "--temperature is not used by CrossEntropyLoss on gold labels"),
    "train alpha without logits": (train, "--config={student} --alpha=0.5", "need teacher logits: add --distill"),
    "train gold-mix size without auto": (train, "--config={student} --distill --gold_mix_below=10",
                                         "add --alpha auto"),
    "train alpha auto with resume": (train, "--config={student} --distill --alpha=auto --resume",
                                     "give --alpha a value"),
    "train patience steps without eval steps": (train, "--config={student} --patience_steps=100",
                                                "add --eval_steps"),
    "train eval steps with plateau decay": (train, "--config={student} --eval_steps=10 --lr_decay_rate=0.5",
                                            "decays on a plateau of epochs"),
    "train min steps for a teacher": (train, "--config={teacher} --min_steps=10 --bert_model_name_or_path=x",
                                      "a teacher is fine-tuned for --epochs"),
    "train distill for a teacher": (preprocess, "--config={teacher} --bert_model_name_or_path=x --distill",
                                    "a teacher trains on the splits"),
    "train alpha for a teacher": (train, "--config={teacher} --augmented --alpha=0.5 --bert_model_name_or_path=x",
                                  "--alpha mixes gold labels into a student's distillation"),
    "train decay rate on the linear schedule": (train, "--config={student} --use_transformers_optimizer "
                                                "--lr_decay_rate=0.5", "have their own linear schedule"),
    "train decay steps on the linear schedule": (train, "--config={student} --use_transformers_optimizer "
                                                 "--lr_decay_steps=3", "have their own linear schedule"),
    "train warm-up past the end": (train, "--config={student} --use_transformers_optimizer --warmup_epoch=2 "
                                   "--epoch=2", "--warmup_epoch 2 >= --epochs 2"),
    "train teacher without a backbone": (train, "--config={teacher}", "needs --bert_model_name_or_path"),
    "train student with lower-casing flag": (train, "--config={student} --bert_do_lower_case",
                                             "are for teacher configs"),
    "evaluate onnx path without ort": (evaluate, "--config={student} --onnx_path=m.onnx", "--enable_ort/--enable_openvino runs: add one"),
    "evaluate amp in ort": (evaluate, "--config={student} --enable_ort --amp=bf16", "--amp autocasts PyTorch"),
    "evaluate labeling with a student": (evaluate, "--config={student} --augmented", "labels with a teacher"),
    "evaluate latency flag with seed labeling": (evaluate, "--config={teacher} --augmented --pad_to_n_ctx",
                                                 "--pad_to_n_ctx is for test evaluation"),
    "preprocess backbone for a student": (preprocess, "--config={student} --bert_model_name_or_path=x",
                                          "are for teacher configs"),
    "preprocess lower-casing for a student": (preprocess, "--config={student} --bert_do_lower_case",
                                              "its lower-casing is the config's `lowercase`"),
    "preprocess vectors for a teacher": (preprocess, "--config={teacher} --bert_model_name_or_path=x "
                                         "--embedding_path=g.txt", "--embedding_path is for GloVe student configs"),
    "preprocess teacher without a backbone": (preprocess, "--config={teacher}", "needs --bert_model_name_or_path"),
}


@pytest.mark.parametrize("case", sorted(FLAG_CASES))
def test_ignored_flag_combinations_are_refused(case, data_dir, student_config, make_teacher_config, tmp_path,
                                               capsys):
    module, flags, needle = FLAG_CASES[case]
    argv = flags.format(student=student_config("cnn"), teacher=make_teacher_config("bert")).split()
    check_refused(capsys, module, [*argv, f"--data_dir={data_dir}"], needle)
    assert outputs(data_dir) == set()


def test_evaluate_has_no_set_and_predict_takes_one_source(data_dir, student_config, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.main([f"--config={student_config('cnn')}", f"--data_dir={data_dir}", "--set", "dropout=0.5"])
    assert e.value.code == 2
    for argv in ([], ["--model_path=a.pt", "--bundle=b"], ["--model_path=a.pt", "--bert_output_dir=t"]):
        with pytest.raises(SystemExit) as e:
            predict.main(argv)
        assert e.value.code == 2
    check_refused(capsys, predict, [f"--bundle={tmp_path}", "--enable_ort"], "are for checkpoints")
    check_refused(capsys, predict, ["--model_path=a.pt", "--onnx_path=a.onnx"], "add --enable_ort")
    check_refused(capsys, predict, ["--model_path=a.pt", "--quantize"], "add --export_onnx or --export_bundle")
    check_refused(capsys, predict, ["--model_path=a.pt", "--export_onnx", "--calibration_file=t.txt"],
                  "add --quantize")
    check_refused(capsys, predict, ["--model_path=a.pt", "--export_onnx", "--quantize", "--check_file=v.txt"],
                  "add --export_bundle and --quantize")
    check_refused(capsys, predict, [f"--bundle={tmp_path}", "--export_onnx"], "are for checkpoints")
    check_refused(capsys, predict, [f"--bundle={tmp_path}", f"--input={data_dir / 'test.txt'}"],
                  "cannot load the bundle")
    check_refused(capsys, augment_data, ["--input", str(data_dir / "train.txt"), "--output", str(tmp_path / "a.raw"),
                                         "--num_workers", "2"], "--num_workers sizes the --parallel pool")
    assert not (tmp_path / "a.raw").exists()


def test_train_defaults_differ_by_kind(student_config, make_teacher_config, data_dir):
    """A teacher is fine-tuned at 2e-5 for 3 epochs in batches of 32, a student trained at 1e-3
    for 5 epochs in batches of 128; the default optimizer path waits 4 epochs before decaying,
    the linear schedule warms up for 0 epochs; MSE on teacher logits, CE on gold labels."""
    from config import load_config
    def resolved(config: Path, *flags: str):
        args = train.build_parser().parse_args([f"--config={config}", f"--data_dir={data_dir}", *flags])
        return train.resolve_train_config(args, load_config(config))

    teacher = resolved(make_teacher_config("bert"), "--bert_model_name_or_path=x")
    assert (teacher.lr, teacher.epochs, teacher.batch_size) == (2e-5, 3, 32)
    student = resolved(student_config("cnn"))
    assert (student.lr, student.epochs, student.batch_size) == (1e-3, 5, 128)
    assert (student.min_steps, student.eval_steps, student.alpha, student.alpha_auto) == (0, 0, 0.0, False)
    assert (student.warmup_epoch, student.lr_decay_steps, student.patience) == (4.0, 2, 7)
    assert student.criterion == "CrossEntropyLoss"
    assert resolved(student_config("cnn"), "--use_transformers_optimizer").warmup_epoch == 0.0
    assert resolved(student_config("cnn"), "--augmented").criterion == "MSELoss"
    # the seed's --augmented reads its augmented.txt; --distill reads label.py's transfer.txt
    assert resolved(student_config("cnn"), "--augmented").transfer_file == "augmented.txt"
    assert resolved(student_config("cnn"), "--distill").transfer_file == "transfer.txt"
    assert resolved(student_config("cnn"), "--augmented", "--augmented_filename=x.txt").transfer_file == "x.txt"
    # the seed's --epoch and --epochs are one flag; --patience_steps is counted in validations
    assert resolved(student_config("cnn"), "--epoch=7").epochs == 7
    patient = resolved(student_config("cnn"), "--use_transformers_optimizer", "--eval_steps=50",
                       "--patience_steps=120")
    assert (patient.patience, patient.patience_steps) == (2, 120)
    assert resolved(student_config("cnn"), "--lr=0.5", "--epoch=2").lr == 0.5
