"""Sentence pairs through every stage: the file format, text to ids (a GloVe student's `<sep>`,
a teacher's own pair encoding and segment ids), the pair students, bundles, the leakage key
in either order, augmentation of pairs, scores files with `text_b`, predict.py and the
refusals when a model and its data disagree."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import augment_data
import evaluate
import label
import predict
import preprocess
import train
from augment import PAIR_TOKEN, AugmentParams, augment_sentence
from checkpoint import load_pretrained_teacher, save_student
from config import PAIR_STUDENTS, config_from_dict
from conftest import (EMB_DIM, NEGATIVE, NEUTRAL, POSITIVE, TINY_STUDENTS, build_tiny_transformer, make_sentence,
                      fit_teacher, refused, teacher_config)
from dataset import read_examples, read_transfer
from inference import Predictor, pad_batch
from model import build_student, split_pair_ids
from runtime import Bundle, SubwordIds, WordIds, WordTokenizer, join_pair
from teachers import load_hf_tokenizer

LABELS = ["opposite", "same"]
PAIRS = [join_pair("the film was good", "a lovely and warm story"), join_pair("a dull plot", "superb acting"),
         join_pair("Moore's film isn't bad... really!", "\"fine\" -- 1,000 films"), join_pair("a [MASK] film", "x"),
         join_pair(" ".join(["good"] * 60), "boring")]


def write_pair_splits(d: Path, sizes: tuple[int, int, int] = (240, 40, 40), easy: bool = False) -> Path:
    """A separable pair task: `same` when both sides carry the same sentiment (`easy`: when side
    b is positive, which a tiny teacher learns in two epochs)."""
    d.mkdir(parents=True, exist_ok=True)
    for split, n, seed in zip(("train", "valid", "test"), sizes, (1, 2, 3)):
        rng = random.Random(seed)
        lines = []
        for i in range(n):
            a, b = rng.randint(0, 1), rng.randint(0, 1)
            lines.append(f"{make_sentence(rng, a)}\t{make_sentence(rng, b)}\t{LABELS[b if easy else int(a == b)]}\n")
        (d / f"{split}.txt").write_text("".join(lines), encoding="utf-8")
    return d


PAIR_VOCAB = ["<pad>", "<unk>", "<sep>", *POSITIVE, *NEGATIVE, *NEUTRAL, ",", "[mask]", "'s", "n't", "!"]


def random_pair_student(directory: Path, enc_class: str) -> Path:
    """A pair student with random weights over a pair vocabulary, saved as train.py saves one."""
    config = config_from_dict({"emb_class": "glove", "enc_class": enc_class, "n_ctx": 20, "token_emb_dim": EMB_DIM,
                               **TINY_STUDENTS[enc_class]}, "test")
    torch.manual_seed(0)
    model = build_student(config, len(PAIR_VOCAB), 2, config.sep_id(PAIR_VOCAB))
    with torch.no_grad():  # n-gram rows start at zero in training: give them values to check
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = directory / f"{enc_class}.pt"
    save_student(path, model, PAIR_VOCAB, LABELS)
    return path


def test_a_pair_file_is_read_as_one_text_a_side(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("A man is here \t No man is here\tCONTRADICTION\n")
    [example] = read_examples(path)
    assert example.pair and example.sentence == "A man is here\tNo man is here" and example.label == "CONTRADICTION"


def test_pair_ids_and_a_key_that_ignores_the_order():
    tokenizer = WordTokenizer()
    ids = WordIds(PAIR_VOCAB, tokenizer, n_ctx=3, sep_id=2)
    good, film, the = PAIR_VOCAB.index("good"), PAIR_VOCAB.index("film"), PAIR_VOCAB.index("the")
    # each side truncated to n_ctx on its own; `<sep>` typed in a sentence is an unknown word
    assert ids.word_ids("good film good film\tthe <sep>") == [good, film, good, 2, the, 1]
    assert tokenizer.key("a good film\tthe plot") == tokenizer.key("The plot\ta good film")
    assert tokenizer.key("a good film\tthe plot") != tokenizer.key("a good film the plot")
    with pytest.raises(ValueError, match="single sentence given to a sentence-pair model"):
        ids.word_ids("good film")
    with pytest.raises(ValueError, match="pair given to a single-sentence model"):
        WordIds(PAIR_VOCAB[:2] + PAIR_VOCAB[3:], tokenizer, n_ctx=3).word_ids("good\tfilm")


def test_split_pair_ids_puts_each_side_at_position_zero():
    ids = torch.tensor([[5, 6, 2, 7, 8, 9], [5, 2, 7, 0, 0, 0], [5, 6, 7, 0, 0, 0]])
    ids_a, len_a, ids_b, len_b = split_pair_ids(ids, torch.tensor([6, 3, 3]), sep_id=2, pad_id=0)
    assert ids_a.tolist() == [[5, 6, 0, 0, 0, 0], [5, 0, 0, 0, 0, 0], [5, 6, 7, 0, 0, 0]]
    assert ids_b.tolist() == [[7, 8, 9, 0, 0, 0], [7, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]
    assert len_a.tolist() == [2, 1, 3] and len_b.tolist() == [3, 1, 0]


@pytest.mark.parametrize("enc_class", PAIR_STUDENTS)
def test_pair_student_padding_swap_and_bundle(enc_class, tmp_path):
    """Every pair student: a pair's logits alone equal its logits in a padded batch; the
    torch-free bundle gives the checkpoint's logits (1e-5); a siamese student is a function of
    the pair, not of the side order, only through its [u, v, ...] features."""
    predictor = Predictor.load(random_pair_student(tmp_path, enc_class))
    assert predictor.pairs
    encoded = predictor.encode_batch(PAIRS)
    batched = predictor.logits(PAIRS).numpy()
    alone = np.concatenate([predictor.model(*pad_batch([e], 0)).detach().numpy() for e in encoded])
    np.testing.assert_allclose(alone, batched, atol=1e-5, rtol=0)
    out = predictor.export_bundle(tmp_path / "bundle")
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["pairs"] is True and meta["backends"] == ["onnxruntime"]  # no numpy bag for pairs
    bundle = Bundle.load(out)
    assert bundle.encode_batch(PAIRS) == encoded
    np.testing.assert_allclose(bundle.logits(PAIRS), batched, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.concatenate([bundle.logits([p]) for p in PAIRS]), batched, atol=1e-5, rtol=0)


def test_densenets_and_decomposable_attention_take_their_own_data(tmp_path, glove_path, student_config, capsys):
    data = write_pair_splits(tmp_path / "pairs")
    config = student_config("densenet-cnn")
    assert preprocess.main([f"--config={config}", f"--data_dir={data}", f"--embedding_path={glove_path}"]) == 0
    refused(capsys, train, [f"--config={config}", f"--data_dir={data}", f"--save_path={tmp_path / 'd.pt'}",
                            "--epochs=1", "--device=cpu", f"--log_dir={tmp_path / 'runs'}"],
            "the 'densenet-cnn' student does not take sentence pairs")
    assert not (tmp_path / "d.pt").exists()
    with pytest.raises(Exception, match="does not take single sentences"):
        build_student(config_from_dict({"emb_class": "glove", "enc_class": "decomp-att", "token_emb_dim": EMB_DIM,
                                        **TINY_STUDENTS["decomp-att"]}, "test"), 10, 2)


def test_a_teacher_reads_a_pair_as_its_tokenizer_does(tmp_path, tiny_transformer):
    """A cross-encoder: the pair's word pieces and segment ids are the tokenizer's own, for the
    seed's heads and for the library's, so a brought NLI model scores as it was trained."""
    model_dir = tiny_transformer("bert")
    tokenizer = load_hf_tokenizer(model_dir)
    a, b = "the film was good", "a dull plot"
    encoded = tokenizer(a, b, return_tensors="pt", return_token_type_ids=True)
    assert encoded["token_type_ids"].sum() > 0
    for head in ("mean", "hf"):
        config = config_from_dict({"emb_class": "bert", "enc_class": head, "n_ctx": 32,
                                   **({"dropout": 0.0} if head != "hf" else {})}, "test")
        model = load_pretrained_teacher(model_dir, LABELS, config).eval()
        assert model.sep_id == tokenizer.sep_token_id
        ids = SubwordIds(tokenizer.backend_tokenizer, True, 32, 0).encode(join_pair(a, b))
        assert ids == encoded["input_ids"][0].tolist()
        with torch.no_grad():
            ours = model(torch.tensor([ids]), torch.tensor([len(ids)]))
            if head == "hf":
                theirs = model.hf(**encoded).logits
            else:
                hidden = model.encoder(**encoded).last_hidden_state
                theirs = model.classifier(hidden.mean(1))
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_a_brought_cross_encoder_labels_pairs_by_label_name(tmp_path):
    """Someone's pair classifier with its own label order: label.py maps its columns by name."""
    data = write_pair_splits(tmp_path / "data", (30, 10, 10))
    teacher = build_tiny_transformer(tmp_path, "bert", id2label={0: "same", 1: "opposite"})
    unlabeled = tmp_path / "unlabeled.txt"
    unlabeled.write_text("a lovely film\tthe plot was dull\n" + "a warm story\tsuperb acting\n")
    assert label.main([f"--data_dir={data}", f"--teacher={teacher}", f"--unlabeled={unlabeled}",
                       "--device=cpu"]) == 0
    rows = list(read_transfer(data / "transfer.txt", 2))
    assert [r.sentence for r in rows if r.source == "unlabeled"] == ["a lovely film\tthe plot was dull",
                                                                     "a warm story\tsuperb acting"]
    predictor = Predictor.load(teacher)
    assert predictor.pairs is None  # someone's classifier takes either
    logits = predictor.logits([r.sentence for r in rows]).numpy()  # [n, 2] in its order: same, opposite
    np.testing.assert_allclose(np.array([r.scores for r in rows]), logits[:, [1, 0]], atol=1e-5, rtol=0)
    assert all("\t" in r.sentence for r in rows)


def test_a_swapped_test_pair_is_a_leak_and_scores_files_take_text_b(tmp_path):
    data = write_pair_splits(tmp_path / "data", (20, 5, 5))
    test_a, test_b = read_examples(data / "test.txt")[0].sentence.split("\t")
    train_a, train_b = read_examples(data / "train.txt")[0].sentence.split("\t")
    records = [{"text": test_b, "text_b": test_a, "logits": {"same": 1.0, "opposite": -1.0}},  # swapped test pair
               {"text": train_b, "text_b": train_a, "logits": {"same": 1.0, "opposite": -1.0}},  # kept
               {"text": train_a, "text_b": train_b, "logits": {"same": 1.0, "opposite": -1.0}}]  # its duplicate
    scores = tmp_path / "scores.jsonl"
    scores.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert label.main([f"--data_dir={data}", f"--teacher_logits={scores}"]) == 0
    rows = list(read_transfer(data / "transfer.txt", 2))
    assert [r.sentence for r in rows] == [f"{train_b}\t{train_a}"]
    sources = json.loads((data / "transfer.txt.results.json").read_text())["sources"]["file"]
    assert (sources["in_valid_or_test"], sources["duplicates"]) == (1, 1)


def test_a_scores_file_without_text_b_is_refused_for_pairs(tmp_path, capsys):
    data = write_pair_splits(tmp_path / "data", (20, 5, 5))
    scores = tmp_path / "scores.jsonl"
    scores.write_text(json.dumps({"text": "a good film", "text_b": "fine", "probs": {"same": 1, "opposite": 0}})
                      + "\n" + json.dumps({"text": "a good film", "probs": {"same": 1, "opposite": 0}}) + "\n")
    refused(capsys, label, [f"--data_dir={data}", f"--teacher_logits={scores}"],
            f"{scores}:2: no 'text_b': the file's first record and the data are sentence pairs")
    assert not (data / "transfer.txt").exists()


@pytest.mark.parametrize("mode", ["both", "one"])
def test_pair_augmentation_keeps_the_separator(mode):
    tokens = "the film was very good and warm".split() + [PAIR_TOKEN] + "a dull and boring plot".split()
    params = AugmentParams(p_mask=0.4, p_pos=0.0, p_ng=0.0, pair_mode=mode)
    rng = random.Random(0)
    both_changed = 0
    for _ in range(50):
        out = augment_sentence(tokens, None, {}, rng, params)
        assert out.count(PAIR_TOKEN) == 1
        a, b = out[: out.index(PAIR_TOKEN)], out[out.index(PAIR_TOKEN) + 1:]
        both_changed += a != tokens[:7] and b != tokens[8:]
    assert (both_changed > 0) == (mode == "both")


def test_augment_data_writes_pairs(tmp_path):
    data = write_pair_splits(tmp_path / "data", (10, 5, 5))
    out = tmp_path / "augmented.raw"
    assert augment_data.main(["--input", str(data / "train.txt"), "--output", str(out), "--n_iter=3",
                              "--analyzer=none"]) == 0
    rows = read_examples(out)
    assert len(rows) > 10 and all(r.pair for r in rows)


def test_predict_and_evaluate_read_pairs_and_refuse_the_wrong_kind(tmp_path, student_config, capsys):
    student = random_pair_student(tmp_path, "cnn")
    data = write_pair_splits(tmp_path / "data", (10, 5, 5))
    inp = tmp_path / "in.txt"
    inp.write_text("a good film\tit was fine\n" + "a dull plot\tsuperb\tsame\n")
    out = tmp_path / "out.jsonl"
    assert predict.main([f"--model_path={student}", f"--input={inp}", "--format=jsonl", f"--output={out}"]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["text"], r["text_b"]) for r in lines] == [("a good film", "it was fine"), ("a dull plot", "superb")]
    inp.write_text("a good film\tit was fine\n" + "a dull plot\n")
    refused(capsys, predict, [f"--model_path={student}", f"--input={inp}"], f"{inp}:2: expected a sentence pair")
    # a single-sentence student given pairs, and a pair student given sentences
    from test_deployment import random_student

    single = random_student(tmp_path, "cnn")
    inp.write_text("a good film\tit was fine\tsame\n")
    refused(capsys, predict, [f"--model_path={single}", f"--input={inp}"], f"{inp}:1: 3 columns, a sentence pair")
    refused(capsys, evaluate, [f"--config={student_config('cnn')}", f"--model_path={single}", f"--data_dir={data}",
                               "--device=cpu"],
            f"{data / 'test.txt'}: holds sentence pairs, but {single} takes single sentences")


@pytest.mark.slow
def test_pairs_end_to_end(tmp_path, tiny_transformer, glove_path, student_config):
    """A cross-encoder teacher fine-tuned on pairs, the transfer set with augmented pairs,
    a siamese student and decomposable attention distilled from it, evaluated."""
    data = write_pair_splits(tmp_path / "data", easy=True)
    teacher = tmp_path / "teacher"
    fit_teacher("bert", data, tiny_transformer("bert"), teacher_config(tmp_path, "bert"), teacher, epochs=3)
    assert json.loads((teacher / "distil_config.json").read_text())["pairs"] is True
    assert augment_data.main(["--input", str(data / "train.txt"), "--output", str(data / "augmented.raw"),
                              "--n_iter=2", "--analyzer=none", "--mask_token=[MASK]"]) == 0
    assert label.main([f"--data_dir={data}", f"--teacher={teacher}", "--augmentations", "--device=cpu"]) == 0
    for enc_class in ("cnn", "decomp-att"):
        cfg = student_config(enc_class)
        assert preprocess.main([f"--config={cfg}", f"--data_dir={data}", f"--embedding_path={glove_path}",
                                "--distill"]) == 0
        ckpt = tmp_path / f"{enc_class}.pt"
        assert train.main([f"--config={cfg}", f"--data_dir={data}", f"--save_path={ckpt}", "--distill",
                           "--epochs=3", "--lr=5e-3", "--batch_size=32", "--device=cpu",
                           f"--log_dir={tmp_path / 'runs'}"]) == 0
        assert evaluate.main([f"--config={cfg}", f"--model_path={ckpt}", f"--data_dir={data}", "--device=cpu"]) == 0
        result = json.loads(Path(f"{ckpt}.results.json").read_text())
        assert result["accuracy"] > 0.6, (enc_class, result["accuracy"])


def run_pair_student(data: Path, config: Path, save: Path, epochs: int, *extra: str) -> None:
    assert train.main([f"--config={config}", f"--data_dir={data}", f"--save_path={save}", "--lr=5e-3",
                       f"--epochs={epochs}", "--batch_size=32", "--device=cpu", f"--log_dir={save.parent / 'runs'}",
                       *extra]) == 0


def test_a_pair_student_resumes_to_the_same_result(tmp_path, glove_path, student_config):
    data = write_pair_splits(tmp_path / "data")
    config = student_config("bilstm")
    assert preprocess.main([f"--config={config}", f"--data_dir={data}", f"--embedding_path={glove_path}"]) == 0
    full, part = tmp_path / "full.pt", tmp_path / "part.pt"
    run_pair_student(data, config, full, 3)
    run_pair_student(data, config, part, 1)
    run_pair_student(data, config, part, 3, "--resume")
    a, b = (torch.load(f"{p}.last", weights_only=True) for p in (full, part))
    assert a["state"]["best_metric"] == b["state"]["best_metric"]
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key])


@pytest.mark.slow
def test_a_pair_student_trains_under_torchrun(tmp_path, glove_path, student_config):
    from test_distributed import torchrun

    data = write_pair_splits(tmp_path / "data")
    config = student_config("decomp-att")
    assert preprocess.main([f"--config={config}", f"--data_dir={data}", f"--embedding_path={glove_path}"]) == 0
    ddp = tmp_path / "ddp.pt"
    out = torchrun("train.py", f"--config={config}", f"--data_dir={data}", f"--save_path={ddp}", "--lr=5e-3",
                   "--epochs=2", "--batch_size=16", "--device=cpu", f"--log_dir={tmp_path / 'runs'}")
    assert "2 process(es)" in out.stderr
    assert json.loads(Path(f"{ddp}.train_results.json").read_text())["processes"] == 2
    assert evaluate.main([f"--config={config}", f"--data_dir={data}", f"--model_path={ddp}", "--device=cpu"]) == 0
