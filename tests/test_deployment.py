"""The torch-free deployment bundle: `Predictor.export_bundle` / `predict.py --export_bundle`,
served by `runtime.Bundle` (numpy for a bag of n-grams, ONNX Runtime for the networks, the
`tokenizers` package for a teacher) with the same logits as PyTorch, and with torch absent."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import predict
from checkpoint import load_hf_tokenizer, load_pretrained_teacher, save_student, save_teacher
from config import config_from_dict
from conftest import EMB_DIM, NEGATIVE, NEUTRAL, POSITIVE, ROOT, TINY_STUDENTS
from inference import Predictor
from model import build_student
from runtime import Bundle

SENTENCES = ["the film was good and warm", "a dull , boring plot", "Superb!", "unknown words only",
             "", " ".join(["the movie is very good"] * 8), "a [MASK] film"]


def random_student(directory: Path, enc_class: str) -> Path:
    """A student with random weights over the toy vocabulary, saved as train.py saves one."""
    config = config_from_dict({"emb_class": "glove", "enc_class": enc_class, "n_ctx": 20, "token_emb_dim": EMB_DIM,
                               **TINY_STUDENTS[enc_class]}, "test")
    vocab = ["<pad>", "<unk>", *POSITIVE, *NEGATIVE, *NEUTRAL, ","]
    torch.manual_seed(0)
    model = build_student(config, len(vocab), 3)
    path = directory / f"{enc_class}.pt"
    save_student(path, model, vocab, ["negative", "neutral", "positive"])
    return path


def random_teacher(directory: Path, model_dir: Path) -> Path:
    """A tiny BERT with a random head, saved as a lower-casing teacher directory."""
    config = config_from_dict({"emb_class": "bert", "enc_class": "mean", "n_ctx": 16, "dropout": 0.0}, "test")
    torch.manual_seed(0)
    model = load_pretrained_teacher(model_dir, 2, 0.0, "mean")
    out = directory / "teacher"
    save_teacher(out, model, config, load_hf_tokenizer(model_dir), ["0", "1"], lowercase=True)
    return out


def test_bow_bundle_numpy_and_onnx_give_pytorch_logits(tmp_path):
    predictor = Predictor.load(random_student(tmp_path, "bow"))
    expected = predictor.logits(SENTENCES).numpy()
    out = predictor.export_bundle(tmp_path / "bundle")
    assert sorted(p.name for p in out.iterdir()) == ["bow.npz", "bundle.json", "model.onnx", "runtime.py",
                                                     "tokenization.py", "vocab.txt"]
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["backend"] == "numpy" and meta["labels"] == ["negative", "neutral", "positive"]
    bundle = Bundle.load(out)
    assert bundle.backend == "numpy" and bundle.session is None
    np.testing.assert_allclose(bundle.logits(SENTENCES), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(Bundle.load(out, backend="onnx").logits(SENTENCES), expected, atol=1e-5, rtol=0)
    assert [label for label, _ in bundle.predict(SENTENCES)] == [p.label for p in predictor.predict(SENTENCES)]
    assert bundle.predict_label(SENTENCES[0]) == predictor.predict(SENTENCES[:1])[0].label


def test_cnn_bundle_onnx_gives_pytorch_logits(tmp_path):
    predictor = Predictor.load(random_student(tmp_path, "cnn"))
    out = predictor.export_bundle(tmp_path / "bundle")
    assert not (out / "bow.npz").exists()
    bundle = Bundle.load(out)
    assert bundle.backend == "onnx"
    np.testing.assert_allclose(bundle.logits(SENTENCES), predictor.logits(SENTENCES).numpy(), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="needs bow.npz"):
        Bundle.load(out, backend="numpy")


def test_teacher_bundle_tokenizes_and_scores_as_pytorch(tmp_path, tiny_transformer):
    teacher = random_teacher(tmp_path, tiny_transformer("bert"))
    # as sentence-transformers ship it (all-MiniLM-L6-v2): fixed padding in tokenizer.json
    spec = json.loads((teacher / "tokenizer.json").read_text())
    spec["padding"] = {"strategy": {"Fixed": 32}, "direction": "Right", "pad_to_multiple_of": None, "pad_id": 0,
                       "pad_type_id": 0, "pad_token": "[PAD]"}
    (teacher / "tokenizer.json").write_text(json.dumps(spec))
    predictor = Predictor.load(teacher)
    out = predictor.export_bundle(tmp_path / "bundle")
    assert (out / "tokenizer.json").exists() and not (out / "vocab.txt").exists()
    bundle = Bundle.load(out)
    sentences = [s for s in SENTENCES if s] + ["A GOOD [MASK] Film", "[MASK] [MASK]"]
    assert [bundle.encode(s) for s in sentences] == predictor.encode(sentences)
    mask_id = load_hf_tokenizer(tiny_transformer("bert")).mask_token_id
    assert bundle.encode("A GOOD [MASK] Film").count(mask_id) == 1
    np.testing.assert_allclose(bundle.logits(sentences), predictor.logits(sentences).numpy(), atol=1e-4, rtol=0)


TORCH_FREE = """
import json, sys
sys.modules["torch"] = None  # `import torch` now raises ImportError
sys.path.insert(0, sys.argv[1])
{body}
assert sys.modules["torch"] is None
"""


def run_without_torch(body: str, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", TORCH_FREE.format(body=body), *argv], cwd=cwd,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_bundles_serve_without_torch(tmp_path, capsys):
    inputs = tmp_path / "in.txt"
    inputs.write_text("".join(f"{s}\tx\n" for s in SENTENCES if s))
    sentences = [s for s in SENTENCES if s]
    for enc_class in ("bow", "cnn"):
        checkpoint = random_student(tmp_path, enc_class)
        bundle_dir = tmp_path / f"bundle-{enc_class}"
        # predict.py --export_bundle without --input only exports
        assert predict.main([f"--model_path={checkpoint}", f"--export_bundle={bundle_dir}", "--device=cpu"]) == 0
        assert (bundle_dir / "bundle.json").exists()
        expected = Predictor.load(checkpoint).predict(sentences)
        # runtime.py from the bundle itself (its own copies of runtime.py and tokenization.py)
        result = run_without_torch(
            "import runtime\nb = runtime.Bundle.load(sys.argv[1])\n"
            "print(json.dumps({'backend': b.backend, 'predictions': b.predict(sys.argv[2:])}))",
            str(bundle_dir), *sentences, cwd=tmp_path)
        served = json.loads(result.stdout)
        assert served["backend"] == ("numpy" if enc_class == "bow" else "onnx")
        assert [label for label, _ in served["predictions"]] == [p.label for p in expected]
        for (_, probs), p in zip(served["predictions"], expected):
            assert probs == pytest.approx(p.probabilities, abs=1e-5)
        # predict.py --bundle, from the repository
        out = tmp_path / f"{enc_class}.jsonl"
        run_without_torch("import predict\nsys.exit(predict.main(sys.argv[2:]))", str(ROOT), f"--bundle={bundle_dir}",
                          f"--input={inputs}", f"--output={out}", "--format=jsonl", cwd=ROOT)
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["sentence"] for r in rows] == sentences
        assert [r["label"] for r in rows] == [p.label for p in expected]
