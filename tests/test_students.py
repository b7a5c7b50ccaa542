"""Students: preprocess → train → evaluate on a toy set; padding invariance; checkpoints;
resume; `--set` and `--measure loss`; the distillation loss; parameter counts."""
from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate
import predict
import preprocess
import train
from checkpoint import load_student
from config import SINGLE_STUDENTS, STUDENT_KINDS, config_from_dict, load_config
from conftest import EMB_DIM, ROOT, TINY_STUDENTS, error_lines, refused
from dataset import read_ids
from inference import pad_batch
from inference import predict_logits
from model import build_student, count_parameters, distillation_loss


def run_student(data_dir: Path, glove: Path, config: Path, save: Path, *extra: str, epochs: int = 6,
                lr: str = "5e-3") -> None:
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}", f"--embedding_path={glove}"]) == 0
    assert train.main([f"--config={config}", f"--data_dir={data_dir}", f"--save_path={save}", f"--lr={lr}",
                       f"--epoch={epochs}", "--batch_size=32", "--device=cpu", f"--log_dir={save.parent / 'runs'}",
                       *extra]) == 0


@pytest.mark.parametrize("enc_class", SINGLE_STUDENTS)
def test_student_learns_toy_task(enc_class, data_dir, glove_path, student_config, tmp_path, capsys):
    config = student_config(enc_class)
    save = tmp_path / f"{enc_class}.pt"
    run_student(data_dir, glove_path, config, save)
    capsys.readouterr()
    assert evaluate.main([f"--config={config}", f"--data_dir={data_dir}", f"--model_path={save}",
                          "--device=cpu", "--num_threads=1"]) == 0
    err = capsys.readouterr().err
    assert ":[Accuracy] : " in err and ":[Elapsed Time] : " in err
    results = json.loads(Path(f"{save}.results.json").read_text())
    assert results["total"] == 40
    assert results["accuracy"] >= 0.8, results["accuracy"]
    assert results["timed"] == "raw sentences, tokenization included"
    assert results["parameters"] > results["parameters_without_embeddings"] > 0
    # the resolved config is saved beside the checkpoint
    assert json.loads(Path(f"{save}.train_config.json").read_text())["config"]["enc_class"] == enc_class


@pytest.mark.parametrize("enc_class", SINGLE_STUDENTS)
def test_padding_does_not_change_logits(enc_class):
    config = config_from_dict({"emb_class": "glove", "enc_class": enc_class, "token_emb_dim": EMB_DIM,
                               **TINY_STUDENTS[enc_class]}, "test")
    torch.manual_seed(0)
    model = build_student(config, vocab_size=30, num_labels=3).eval()
    sentences = [[5, 6, 7], [8], [9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20], [21, 22]]
    width = max(map(len, sentences))
    ids = torch.zeros(len(sentences), width, dtype=torch.long)
    for i, s in enumerate(sentences):
        ids[i, : len(s)] = torch.tensor(s)
    lengths = torch.tensor([len(s) for s in sentences])
    with torch.no_grad():
        batched = model(ids, lengths)
        for i, s in enumerate(sentences):
            alone = model(torch.tensor([s]), torch.tensor([len(s)]))
            torch.testing.assert_close(alone[0], batched[i], atol=1e-5, rtol=1e-5)
    # and padding is not free: different sentences do get different logits
    assert not torch.allclose(batched[0], batched[1])


def test_distillation_loss_matches_hand_computation():
    """All three criteria on a batch of 3 with 3 classes, at T = 1 and T = 2.5, against sums
    written out with `math` (batch means, KL and CE scaled by T^2)."""
    s_rows = [[1.0, 0.0, -1.0], [0.5, 2.0, 0.0], [-1.0, -1.0, 3.0]]
    t_rows = [[0.0, 2.0, 1.0], [1.5, 0.5, -0.5], [2.0, 0.0, 0.0]]
    s, t = torch.tensor(s_rows), torch.tensor(t_rows)

    def softmax(row: list[float], temperature: float) -> list[float]:
        z = [math.exp(x / temperature) for x in row]
        return [v / sum(z) for v in z]

    mse = sum((a - b) ** 2 for rs, rt in zip(s_rows, t_rows) for a, b in zip(rs, rt)) / 9
    assert distillation_loss(s, t, "MSELoss").item() == pytest.approx(mse, rel=1e-6)
    # MSE ignores the temperature
    assert distillation_loss(s, t, "MSELoss", temperature=2.5).item() == pytest.approx(mse, rel=1e-6)
    for temperature in (1.0, 2.5):
        kl = ce = 0.0
        for rs, rt in zip(s_rows, t_rows):
            p, q = softmax(rs, temperature), softmax(rt, temperature)
            kl += sum(qi * math.log(qi / pi) for qi, pi in zip(q, p))
            ce += -sum(qi * math.log(pi) for qi, pi in zip(q, p))
        scale = temperature**2 / 3  # T^2, averaged over the batch of 3
        assert distillation_loss(s, t, "KLDivLoss", temperature).item() == pytest.approx(kl * scale, rel=1e-5)
        assert distillation_loss(s, t, "CrossEntropyLoss", temperature).item() == pytest.approx(ce * scale, rel=1e-5)
    with pytest.raises(ValueError):
        distillation_loss(s, t, "HingeLoss")


def test_checkpoint_rebuilds_alone_and_refuses_pickles(data_dir, glove_path, student_config, tmp_path, capsys):
    config = student_config("cnn")
    save = tmp_path / "cnn.pt"
    run_student(data_dir, glove_path, config, save, epochs=1)
    ckpt = load_student(save)
    assert ckpt.labels == ["0", "1"] and ckpt.vocab[:2] == ["<pad>", "<unk>"]
    assert ckpt.state["best_epoch"] == 1 and 0.0 <= ckpt.state["best_metric"] <= 1.0
    assert ckpt.model.config.enc_class == "cnn" and not ckpt.model.training
    # a pickle that would run code is refused
    evil = tmp_path / "evil.pt"

    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    for write in (lambda: evil.write_bytes(pickle.dumps({"x": Boom()})),  # a bare pickle
                  lambda: torch.save({"x": Boom()}, evil)):  # the same inside a torch.save archive
        write()
        capsys.readouterr()
        assert evaluate.main([f"--config={config}", f"--data_dir={data_dir}", f"--model_path={evil}"]) == 1
        out = capsys.readouterr()
        assert "pwned" not in out.out
        lines = error_lines(out.err)
        assert len(lines) == 1 and f"{evil}: not a loadable student checkpoint" in lines[0], out.err
    # a checkpoint evaluated with a config of another enc_class is refused, naming both
    other = student_config("densenet-cnn")
    line = refused(capsys, evaluate, [f"--config={other}", f"--data_dir={data_dir}", f"--model_path={save}"],
                   "holds a glove/cnn model")
    assert f"but {other} is glove/densenet-cnn" in line
    # a truncated checkpoint is refused
    cut = tmp_path / "cut.pt"
    cut.write_bytes(save.read_bytes()[:1000])
    refused(capsys, evaluate, [f"--config={config}", f"--data_dir={data_dir}", f"--model_path={cut}"],
            "not a loadable student checkpoint")


def test_resume_continues_to_the_same_result(data_dir, glove_path, student_config, tmp_path, capsys):
    config = student_config("cnn")
    full = tmp_path / "full.pt"
    run_student(data_dir, glove_path, config, full, epochs=3)
    part = tmp_path / "part.pt"
    run_student(data_dir, glove_path, config, part, epochs=1)
    resume = [f"--config={config}", f"--data_dir={data_dir}", f"--save_path={part}", "--lr=5e-3", "--epoch=3",
              "--batch_size=32", "--device=cpu", f"--log_dir={tmp_path / 'runs'}", "--resume"]
    # a .last made for another config is refused, naming the key and both values
    refused(capsys, train, [*resume, "--set", "dropout=0.3"], "made for another config (dropout: 0.1 there, 0.3 here)")
    refused(capsys, train, [*resume, "--set", "cnn.num_filters=4"], "made for another config (cnn: ")
    assert train.main(resume) == 0
    a = torch.load(f"{full}.last", weights_only=True)
    b = torch.load(f"{part}.last", weights_only=True)
    assert a["state"]["best_metric"] == b["state"]["best_metric"]
    assert a["state"]["epoch"] == b["state"]["epoch"] == 3
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key])


def test_set_overrides_change_the_model_and_are_recorded(data_dir, glove_path, student_config, tmp_path):
    config = student_config("cnn")
    save = tmp_path / "cnn.pt"
    run_student(data_dir, glove_path, config, save, "--set", "cnn.num_filters=5", "--set", "fc_hidden_size=7",
                epochs=1)
    model = load_student(save).model
    assert [conv.out_channels for conv in model.cnn.convs] == [5, 5, 5]
    assert model.head.net[2].out_features == 7  # LayerNorm, Dropout, Linear(15 -> 7), ...
    recorded = json.loads(Path(f"{save}.train_config.json").read_text())
    assert recorded["config"]["cnn"] == {"num_filters": 5, "kernel_sizes": [2, 3, 4]}
    assert recorded["config"]["fc_hidden_size"] == 7
    assert recorded["args"]["set"] == ["cnn.num_filters=5", "fc_hidden_size=7"]
    # the file itself is untouched
    assert json.loads(config.read_text())["cnn"]["num_filters"] == 8


def test_measure_loss_keeps_the_lowest_validation_loss(data_dir, glove_path, student_config, tmp_path):
    config = student_config("cnn")
    save = tmp_path / "cnn.pt"
    # a large step: accuracy saturates early while the validation loss keeps moving
    run_student(data_dir, glove_path, config, save, "--measure=loss", epochs=5, lr="3e-2")
    results = json.loads(Path(f"{save}.train_results.json").read_text())
    assert "best_accuracy" not in results
    history = results["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    losses = [h["loss"] for h in history]
    accuracies = [h["accuracy"] for h in history]
    best = 1 + losses.index(min(losses))
    assert best != 1 + accuracies.index(max(accuracies)), "the toy run no longer tells the measures apart"
    assert results["best_loss"] == min(losses) and results["best_epoch"] == best
    # the checkpoint kept is that epoch's: its validation loss is the best one
    ckpt = load_student(save)
    assert ckpt.state["best_epoch"] == best and ckpt.state["best_metric"] == results["best_loss"]
    valid = read_ids(data_dir / "valid.txt.ids", 2)
    logits = predict_logits(ckpt.model, valid.seqs(range(len(valid))), 256, 0, torch.device("cpu"), progress=False)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(valid.labels)).item()
    assert loss == pytest.approx(results["best_loss"], rel=1e-4)


def test_bad_inputs_get_one_line(data_dir, glove_path, student_config, tmp_path, capsys, monkeypatch):
    config = student_config("cnn")
    base = [f"--data_dir={data_dir}", f"--embedding_path={glove_path}"]
    # missing data file
    (data_dir / "valid.txt").rename(data_dir / "valid.bak")
    refused(capsys, preprocess, [f"--config={config}", *base], "valid.txt: file not found")
    (data_dir / "valid.bak").rename(data_dir / "valid.txt")
    # missing embedding file
    refused(capsys, preprocess, [f"--config={config}", f"--data_dir={data_dir}",
                                 f"--embedding_path={tmp_path / 'nope.txt'}"], "nope.txt: file not found")
    # embedding dimension unlike the config's
    wide = student_config("cnn", token_emb_dim=50)
    refused(capsys, preprocess, [f"--config={wide}", *base], "token_emb_dim is 50")
    # unknown key, wrong type, bad JSON, unknown enc_class
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"emb_class": "glove", "enc_class": "cnn", "n_ctxx": 3}))
    refused(capsys, preprocess, [f"--config={bad}", *base], "unknown key 'n_ctxx'")
    bad.write_text(json.dumps({"emb_class": "glove", "enc_class": "cnn", "n_ctx": "3", "cnn": {}}))
    refused(capsys, preprocess, [f"--config={bad}", *base], "'n_ctx' must be an integer")
    bad.write_text('{"emb_class": "glove",\n "enc_class": }')
    refused(capsys, preprocess, [f"--config={bad}", *base], "bad.json:2:")
    bad.write_text(json.dumps({"emb_class": "glove", "enc_class": "rnn"}))
    refused(capsys, preprocess, [f"--config={bad}", *base], "unknown enc_class 'rnn'")
    # a malformed data line, and a test label train never had
    good_test = (data_dir / "test.txt").read_text()
    (data_dir / "test.txt").write_text("a fine film\t1\nno tab here\n")
    refused(capsys, preprocess, [f"--config={config}", *base], "test.txt:2: expected 'sentence<TAB>label'")
    (data_dir / "test.txt").write_text("a fine film\t7\n")
    refused(capsys, preprocess, [f"--config={config}", *base], "label '7' is not in the training labels")
    (data_dir / "test.txt").write_text(good_test)
    # --device cuda without a GPU (made so on any machine)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert preprocess.main([f"--config={config}", *base]) == 0
    refused(capsys, train, [f"--config={config}", f"--data_dir={data_dir}", "--device=cuda",
                            f"--save_path={tmp_path / 'x.pt'}"], "--device cuda: no CUDA device is available here")
    assert not (tmp_path / "x.pt").exists()
    # zero epochs is refused by argparse
    with pytest.raises(SystemExit) as e:
        train.main([f"--config={config}", f"--data_dir={data_dir}", "--epoch=0"])
    assert e.value.code == 2


def test_crlf_bom_and_blank_lines_are_accepted(data_dir, glove_path, student_config, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    for split in ("train", "valid", "test"):
        (plain / f"{split}.txt").write_text((data_dir / f"{split}.txt").read_text())
    text = (data_dir / "train.txt").read_text()
    (data_dir / "train.txt").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n\r\n").rstrip("\r\n").encode())
    config = student_config("cnn")
    for d in (data_dir, plain):
        assert preprocess.main([f"--config={config}", f"--data_dir={d}", f"--embedding_path={glove_path}"]) == 0
    assert len((data_dir / "train.txt.ids").read_text().splitlines()) == 240
    assert (data_dir / "train.txt.ids").read_bytes() == (plain / "train.txt.ids").read_bytes()


@pytest.mark.parametrize("enc_class", SINGLE_STUDENTS)
def test_onnx_export_agrees_with_pytorch(enc_class, data_dir, glove_path, student_config, tmp_path, capsys):
    config = student_config(enc_class)
    save = tmp_path / f"{enc_class}.pt"
    run_student(data_dir, glove_path, config, save, epochs=1)
    base = [f"--config={config}", f"--data_dir={data_dir}", f"--model_path={save}", "--device=cpu"]
    assert predict.main([f"--model_path={save}", "--device=cpu", "--export_onnx", "--quantize"]) == 0
    assert Path(f"{save}.onnx").exists() and Path(f"{save}.int8.onnx").exists()
    assert evaluate.main([*base, "--enable_ort"]) == 0
    onnx = json.loads(Path(f"{save}.onnx.results.json").read_text())
    assert onnx["runtime"] == "onnxruntime"
    assert onnx["max_abs_logit_diff_vs_pytorch"] <= 1e-4 and onnx["same_prediction_vs_pytorch"] == 1.0
    assert evaluate.main([*base, "--enable_ort", f"--onnx_path={save}.int8.onnx"]) == 0
    int8 = json.loads(Path(f"{save}.int8.onnx.results.json").read_text())
    assert int8["runtime"] == "onnxruntime-int8" and int8["total"] == 40


def test_pad_to_n_ctx_times_padded_ids_with_the_same_predictions(data_dir, glove_path, student_config, tmp_path):
    config = student_config("bilstm")
    save = tmp_path / "bilstm.pt"
    run_student(data_dir, glove_path, config, save, epochs=1)
    base = [f"--config={config}", f"--data_dir={data_dir}", f"--model_path={save}", "--device=cpu", "--warmup=0"]
    assert evaluate.main(base) == 0
    assert evaluate.main([*base, "--pad_to_n_ctx"]) == 0
    plain = json.loads(Path(f"{save}.results.json").read_text())
    padded = json.loads(Path(f"{save}.padded.results.json").read_text())
    assert plain["timed"] == "raw sentences, tokenization included"
    assert padded["timed"] == "ids padded to n_ctx=20 (the seed's method)"
    # padding to n_ctx changes the time, never the answer
    assert padded["predictions"] == plain["predictions"] and padded["total"] == 40


@pytest.mark.parametrize("enc_class", SINGLE_STUDENTS)
def test_padding_never_changes_a_students_logits(enc_class):
    """Each sentence scores the same alone, in a batch padded to its longest, and padded to
    n_ctx (the logits, to float rounding, not just the argmax)."""
    config = config_from_dict({"emb_class": "glove", "enc_class": enc_class, "n_ctx": 20, "token_emb_dim": EMB_DIM,
                               **TINY_STUDENTS[enc_class]}, "test")
    torch.manual_seed(0)
    model = build_student(config, vocab_size=40, num_labels=3).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    rng = np.random.default_rng(0)
    seqs = [rng.integers(2, 40, size=n).tolist() for n in (1, 3, 7, 20, 2)]
    if config.bow is not None:  # a bag of n-grams reads words and hashed bigrams
        ids = config.word_ids([f"w{i}" for i in range(40)])
        seqs = [ids.features(s) for s in seqs]
    with torch.inference_mode():
        alone = torch.cat([model(*pad_batch([s], 0)) for s in seqs])
        batched = model(*pad_batch(seqs, 0))
        padded = model(*pad_batch(seqs, 0, min_len=max(map(len, seqs)) + 13))
    torch.testing.assert_close(batched, alone, atol=1e-6, rtol=0)
    torch.testing.assert_close(padded, alone, atol=1e-6, rtol=0)
    assert not torch.allclose(alone[0], alone[1])  # the check can fail: sentences differ


def test_bilstm_matches_a_packed_bidirectional_lstm():
    """The BiLSTM student's unpacked formulation gives the packed bidirectional LSTM's final states."""
    config = config_from_dict({"emb_class": "glove", "enc_class": "bilstm", "token_emb_dim": EMB_DIM,
                               **TINY_STUDENTS["bilstm"]}, "test")
    torch.manual_seed(0)
    model = build_student(config, vocab_size=30, num_labels=2).eval()
    hidden = config.lstm.hidden_size
    packed_lstm = torch.nn.LSTM(EMB_DIM, hidden, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for name, _ in model.forward_lstms[0].named_parameters():
            getattr(packed_lstm, name).copy_(getattr(model.forward_lstms[0], name))
            getattr(packed_lstm, f"{name}_reverse").copy_(getattr(model.backward_lstms[0], name))
        ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 0, 0, 0], [12, 0, 0, 0, 0]])
        lengths = torch.tensor([5, 2, 1])
        x, _ = model.embed(ids, lengths)
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = packed_lstm(packed)  # h: [2, B, H]
        expected = model.head(torch.cat([h[0], h[1]], dim=1))
        assert torch.allclose(model(ids, lengths), expected, atol=1e-6)


# Parameters without the embedding tables, for the configs in configs/ at 50 and 300 dimensions
# (a bag of n-grams' hashed bigram table counts as an embedding table).
PARAMETERS_WITHOUT_EMBEDDINGS = {
    "cnn": {50: 588_802, 300: 1_868_802},
    "densenet-cnn": {50: 2_407_842, 300: 2_607_842},
    "densenet-dsa": {50: 3_585_282, 300: 3_785_282},
    "bilstm": {50: 303_002, 300: 603_002},
    "bow": {50: 102, 300: 602},
    "dan": {50: 79_362, 300: 143_362},
}


@pytest.mark.parametrize("enc_class", sorted(PARAMETERS_WITHOUT_EMBEDDINGS))
def test_parameter_counts_of_the_shipped_configs(enc_class):
    vocab = 1000
    for dim, without in PARAMETERS_WITHOUT_EMBEDDINGS[enc_class].items():
        # a small bucket table: the count is the same formula, without gigabytes of memory
        overrides = [f"token_emb_dim={dim}"] + (["bow.buckets=1009"] if enc_class in ("bow", "dan") else [])
        config = load_config(ROOT / STUDENT_KINDS[enc_class].config_path, overrides)
        counts = count_parameters(build_student(config, vocab, num_labels=2))
        tables = vocab * dim + (config.bow.buckets * dim if config.bow else 0)
        assert counts == {"parameters": without + tables, "parameters_without_embeddings": without}


def test_bag_trained_as_fasttext_inits_and_features(data_dir, glove_path, student_config, tmp_path):
    """bow.eos / word_init / zero_output: `</s>` is a feature of its own and ends the last bigram;
    word rows start uniform in +-1/dim (GloVe is not copied in), the output layer at zero; the
    bag learns the toy task that way and its bundle gives its logits."""
    from inference import Predictor
    from model import init_embeddings
    from runtime import Bundle, ngram_features

    # `</s>` (id = the vocabulary size, 10) is hashed alone and after the last word
    assert ngram_features([3, 4], 2, 7, 10) == [3, 4, 10 + (3 * 1_000_003 + 4) % 7]
    assert ngram_features([3, 4], 2, 7, 10, eos=True) == [3, 4, 10 + 10 % 7, 10 + (3 * 1_000_003 + 4) % 7,
                                                          10 + (4 * 1_000_003 + 10) % 7]
    fast = {"eos": True, "word_init": "uniform", "zero_output": True}
    config = config_from_dict({"emb_class": "glove", "enc_class": "bow", "token_emb_dim": EMB_DIM,
                               "dropout": 0.0, "bow": {"buckets": 97, **fast}}, "test")
    torch.manual_seed(0)
    model = build_student(config, vocab_size=30, num_labels=2)
    words = model.embedding.weight[:30]
    assert words.abs().max() <= 1 / EMB_DIM and words[1:].abs().sum() > 0 and not words[0].any()
    assert not model.mlp[-1].weight.any() and not model.mlp[-1].bias.any()
    init_embeddings(model, torch.ones(30, EMB_DIM))  # GloVe is not copied over the uniform rows
    assert model.embedding.weight[:30].abs().max() <= 1 / EMB_DIM
    path = student_config("bow", bow={"buckets": 97, **fast})
    save = tmp_path / "bow-fast.pt"
    # fastText steps per sentence: its lr times the batch (32) is the same step size
    run_student(data_dir, glove_path, path, save, "--optimizer=sgd", lr="16", epochs=8)
    predictor = Predictor.load(save)
    assert predictor.ids.eos
    sentences = [line.split("\t")[0] for line in (data_dir / "test.txt").read_text().splitlines()]
    gold = [line.split("\t")[1] for line in (data_dir / "test.txt").read_text().splitlines()]
    assert np.mean([p.label == g for p, g in zip(predictor.predict(sentences), gold)]) >= 0.8
    bundle = Bundle.load(predictor.export_bundle(tmp_path / "bundle"))
    assert bundle.ids.eos and bundle.backend == "numpy"
    np.testing.assert_allclose(bundle.logits(sentences), predictor.logits(sentences).numpy(), atol=1e-5, rtol=0)
