"""Students: preprocess → train → evaluate on a toy set; padding invariance; checkpoints;
resume; the distillation loss."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

import evaluate
import preprocess
import train
from conftest import EMB_DIM, TINY_STUDENTS, error_lines
from model import build_student, distillation_loss, load_student_checkpoint
from util import config_from_dict


def run_student(data_dir: Path, glove: Path, config: Path, save: Path, *extra: str, epochs: int = 6) -> None:
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}", f"--embedding_path={glove}"]) == 0
    assert train.main([f"--config={config}", f"--data_dir={data_dir}", f"--save_path={save}", "--lr=5e-3",
                       f"--epoch={epochs}", "--batch_size=32", "--device=cpu", f"--log_dir={save.parent / 'runs'}",
                       *extra]) == 0


@pytest.mark.parametrize("enc_class", sorted(TINY_STUDENTS))
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
    assert results["parameters"] > results["parameters_without_embeddings"] > 0
    # the resolved config is saved beside the checkpoint
    assert json.loads(Path(f"{save}.train_config.json").read_text())["config"]["enc_class"] == enc_class


@pytest.mark.parametrize("enc_class", sorted(TINY_STUDENTS))
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


def test_distillation_loss_matches_hand_computation():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 2.0]])
    assert distillation_loss(s, t, "MSELoss").item() == pytest.approx((1 + 4) / 2)
    # KL(q || p) with q = softmax(t), p = softmax(s)
    import math

    q = [1 / (1 + math.e**2), math.e**2 / (1 + math.e**2)]
    p = [math.e / (1 + math.e), 1 / (1 + math.e)]
    kl = sum(qi * math.log(qi / pi) for qi, pi in zip(q, p))
    assert distillation_loss(s, t, "KLDivLoss").item() == pytest.approx(kl, rel=1e-5)
    ce = -sum(qi * math.log(pi) for qi, pi in zip(q, p))
    assert distillation_loss(s, t, "CrossEntropyLoss").item() == pytest.approx(ce, rel=1e-5)
    # temperature: T^2 * KL at softened distributions
    T = 2.0
    q2 = torch.softmax(t / T, -1)[0].tolist()
    p2 = torch.softmax(s / T, -1)[0].tolist()
    kl2 = sum(qi * math.log(qi / pi) for qi, pi in zip(q2, p2)) * T * T
    assert distillation_loss(s, t, "KLDivLoss", temperature=T).item() == pytest.approx(kl2, rel=1e-5)


def test_checkpoint_rebuilds_alone_and_refuses_pickles(data_dir, glove_path, student_config, tmp_path, capsys):
    config = student_config("cnn")
    save = tmp_path / "cnn.pt"
    run_student(data_dir, glove_path, config, save, epochs=1)
    model, vocab, labels, state = load_student_checkpoint(save)
    assert labels == ["0", "1"] and vocab[:2] == ["<pad>", "<unk>"]
    assert "best_metric" in state
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
        assert "pwned" not in out.out and len(error_lines(out.err)) == 1
    # a checkpoint made for another config is refused
    other = student_config("densenet-cnn")
    assert evaluate.main([f"--config={other}", f"--data_dir={data_dir}", f"--model_path={save}"]) == 1
    assert "holds a glove/cnn model" in capsys.readouterr().err
    # a truncated checkpoint is refused
    cut = tmp_path / "cut.pt"
    cut.write_bytes(save.read_bytes()[:1000])
    assert evaluate.main([f"--config={config}", f"--data_dir={data_dir}", f"--model_path={cut}"]) == 1
    assert "not a loadable" in capsys.readouterr().err


def test_resume_continues_to_the_same_result(data_dir, glove_path, student_config, tmp_path):
    config = student_config("cnn")
    full = tmp_path / "full.pt"
    run_student(data_dir, glove_path, config, full, epochs=3)
    part = tmp_path / "part.pt"
    run_student(data_dir, glove_path, config, part, epochs=1)
    assert train.main([f"--config={config}", f"--data_dir={data_dir}", f"--save_path={part}", "--lr=5e-3",
                       "--epoch=3", "--batch_size=32", "--device=cpu", f"--log_dir={tmp_path / 'runs'}",
                       "--resume"]) == 0
    a = torch.load(f"{full}.last", weights_only=True)
    b = torch.load(f"{part}.last", weights_only=True)
    assert a["state"]["best_metric"] == b["state"]["best_metric"]
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key])


def test_bad_inputs_get_one_line(data_dir, glove_path, student_config, tmp_path, capsys):
    config = student_config("cnn")

    def fails(module, argv, needle):
        capsys.readouterr()
        assert module.main(argv) == 1
        err = capsys.readouterr().err
        lines = error_lines(err)
        assert len(lines) == 1 and needle in lines[0], err
        assert "Traceback" not in err

    base = [f"--data_dir={data_dir}", f"--embedding_path={glove_path}"]
    # missing data file
    (data_dir / "valid.txt").rename(data_dir / "valid.bak")
    fails(preprocess, [f"--config={config}", *base], "valid.txt: file not found")
    (data_dir / "valid.bak").rename(data_dir / "valid.txt")
    # missing embedding file
    fails(preprocess, [f"--config={config}", f"--data_dir={data_dir}", f"--embedding_path={tmp_path / 'nope.txt'}"],
          "nope.txt: file not found")
    # embedding dimension unlike the config's
    wide = student_config("cnn", token_emb_dim=50)
    fails(preprocess, [f"--config={wide}", *base], "token_emb_dim is 50")
    # unknown key, wrong type, bad JSON, unknown enc_class
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"emb_class": "glove", "enc_class": "cnn", "n_ctxx": 3}))
    fails(preprocess, [f"--config={bad}", *base], "unknown key 'n_ctxx'")
    bad.write_text(json.dumps({"emb_class": "glove", "enc_class": "cnn", "n_ctx": "3", "cnn": {}}))
    fails(preprocess, [f"--config={bad}", *base], "'n_ctx' must be an integer")
    bad.write_text('{"emb_class": "glove",\n "enc_class": }')
    fails(preprocess, [f"--config={bad}", *base], "bad.json:2:")
    bad.write_text(json.dumps({"emb_class": "glove", "enc_class": "rnn"}))
    fails(preprocess, [f"--config={bad}", *base], "unknown enc_class 'rnn'")
    # a malformed data line, and a test label train never had
    good_test = (data_dir / "test.txt").read_text()
    (data_dir / "test.txt").write_text("a fine film\t1\nno tab here\n")
    fails(preprocess, [f"--config={config}", *base], "test.txt:2: expected 'sentence<TAB>label'")
    (data_dir / "test.txt").write_text("a fine film\t7\n")
    fails(preprocess, [f"--config={config}", *base], "label '7' is not in the training labels")
    (data_dir / "test.txt").write_text(good_test)
    # --device cuda without a GPU
    if not torch.cuda.is_available():
        assert preprocess.main([f"--config={config}", *base]) == 0
        fails(train, [f"--config={config}", f"--data_dir={data_dir}", "--device=cuda"], "no CUDA device")
    # zero epochs is refused by argparse
    with pytest.raises(SystemExit):
        train.main([f"--config={config}", f"--data_dir={data_dir}", "--epoch=0"])


def test_crlf_bom_and_blank_lines_are_accepted(data_dir, glove_path, student_config, tmp_path):
    text = (data_dir / "train.txt").read_text()
    (data_dir / "train.txt").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n\r\n").rstrip("\r\n").encode())
    config = student_config("cnn")
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}", f"--embedding_path={glove_path}"]) == 0
    assert len((data_dir / "train.txt.ids").read_text().splitlines()) == 240


@pytest.mark.parametrize("enc_class", ["cnn", "densenet-cnn", "densenet-dsa", "bilstm"])
def test_onnx_export_agrees_with_pytorch(enc_class, data_dir, glove_path, student_config, tmp_path):
    config = student_config(enc_class)
    save = tmp_path / f"{enc_class}.pt"
    run_student(data_dir, glove_path, config, save, epochs=1)
    base = [f"--config={config}", f"--data_dir={data_dir}", f"--model_path={save}", "--device=cpu"]
    assert evaluate.main([*base, "--convert_onnx", "--quantize_onnx"]) == 0
    assert evaluate.main([*base, "--enable_ort"]) == 0
    onnx = json.loads(Path(f"{save}.onnx.results.json").read_text())
    assert onnx["runtime"] == "onnxruntime"
    assert onnx["max_abs_logit_diff_vs_pytorch"] <= 1e-4 and onnx["same_prediction_vs_pytorch"] == 1.0
    assert evaluate.main([*base, "--enable_ort", "--quantize_onnx"]) == 0
    assert json.loads(Path(f"{save}.int8.onnx.results.json").read_text())["runtime"] == "onnxruntime-int8"


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
