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
from checkpoint import load_pretrained_teacher, save_student, save_teacher
from teachers import load_hf_tokenizer
from config import config_from_dict
from conftest import EMB_DIM, NEGATIVE, NEUTRAL, POSITIVE, ROOT, TINY_STUDENTS
from inference import Predictor
from model import build_student
from runtime import Bundle

SENTENCES = ["the film was good and warm", "a dull , boring plot", "Superb!", "unknown words only",
             "", " ".join(["the movie is very good"] * 8), "a [MASK] film"]
# punctuation, clitics, quotes, the mask token, an empty string and a 500-word line
HARD = ["Moore's film isn't bad... really!", "\"fine\" -- (u.s.) 1,000 well-made films; can't", "a [MASK] film",
        "A GOOD [MASK] Film", "[MASK] [MASK]", "", "   ", " ".join(["good", "boring", "the", "plot", "!"] * 100)]
STUDENTS = ["cnn", "densenet-cnn", "densenet-dsa", "bilstm", "bow", "dan"]


def random_student(directory: Path, enc_class: str) -> Path:
    """A student with random weights over the toy vocabulary, saved as train.py saves one."""
    config = config_from_dict({"emb_class": "glove", "enc_class": enc_class, "n_ctx": 20, "token_emb_dim": EMB_DIM,
                               **TINY_STUDENTS[enc_class]}, "test")
    vocab = ["<pad>", "<unk>", *POSITIVE, *NEGATIVE, *NEUTRAL, ",", "[MASK]", "'s", "n't", "!"]
    torch.manual_seed(0)
    model = build_student(config, len(vocab), 3)
    with torch.no_grad():  # n-gram rows start at zero in training: give them values to check
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = directory / f"{enc_class}.pt"
    save_student(path, model, vocab, ["negative", "neutral", "positive"])
    return path


def random_teacher(directory: Path, model_dir: Path, head: str = "mean") -> Path:
    """A tiny BERT with a random head (`mean`, the seed's, or `hf`, the library's), saved as
    a lower-casing teacher directory."""
    settings = {"emb_class": "bert", "enc_class": head, "n_ctx": 16}
    config = config_from_dict({**settings, "dropout": 0.0} if head != "hf" else settings, "test")
    torch.manual_seed(0)
    model = load_pretrained_teacher(model_dir, ["0", "1"], config)
    out = directory / f"teacher-{head}"
    save_teacher(out, model, config, load_hf_tokenizer(model_dir), ["0", "1"], lowercase=True)
    return out


@pytest.mark.parametrize("enc_class", STUDENTS)
def test_student_bundle_gives_the_torch_path_logits(enc_class, tmp_path):
    """One path from text to scores: the checkpoint in PyTorch and its bundle give the same
    ids and logits (1e-5), sentence by sentence and batched, on hard sentences."""
    predictor = Predictor.load(random_student(tmp_path, enc_class))
    out = predictor.export_bundle(tmp_path / "bundle")
    bundle = Bundle.load(out)
    assert bundle.encode_batch(HARD) == predictor.encode_batch(HARD)
    expected = predictor.logits(HARD).numpy()
    for backend in json.loads((out / "bundle.json").read_text())["backends"]:
        served = Bundle.load(out, backend=backend)
        np.testing.assert_allclose(served.logits(HARD), expected, atol=1e-5, rtol=0, err_msg=backend)
        one = np.concatenate([served.logits([s]) for s in HARD])
        np.testing.assert_allclose(one, expected, atol=1e-5, rtol=0, err_msg=backend)
    assert [p.label for p in bundle.predict(HARD)] == [p.label for p in predictor.predict(HARD)]
    assert bundle.predict_label(HARD[0]) == predictor.predict(HARD[:1])[0].label
    files = sorted(p.name for p in out.iterdir())
    numpy_files = ["bow.npz", "buckets.npy"] if enc_class in ("bow", "dan") else []
    assert files == sorted(["bundle.json", "model.onnx", "runtime.py", "vocab.txt", *numpy_files])
    assert bundle.backend == ("numpy" if numpy_files else "onnxruntime")
    if not numpy_files:
        with pytest.raises(ValueError, match="no 'numpy' backend"):
            Bundle.load(out, backend="numpy")


@pytest.mark.parametrize("enc_class", ["densenet-cnn", "densenet-dsa", "bilstm"])
def test_int8_bundle_is_static_for_convolutions_and_default_only_if_it_keeps_accuracy(enc_class, tmp_path):
    """`--quantize`: a convolutional student gets static int8 (QDQ: quantize and dequantize nodes,
    activation ranges from the calibration sentences), others dynamic; both close to fp32. int8
    is the default backend only when the check set says it is as accurate (here: labels that
    are fp32's own decisions, so int8 can only tie or lose)."""
    import onnx

    predictor = Predictor.load(random_student(tmp_path, enc_class))
    calibration = [s for s in HARD if s.strip()] + SENTENCES
    check = [(s, p.label) for s, p in zip(SENTENCES, predictor.predict(SENTENCES))]
    out = predictor.export_bundle(tmp_path / "bundle", quantize=True, calibration=calibration, check=check)
    meta = json.loads((out / "bundle.json").read_text())
    ops = {n.op_type for n in onnx.load(str(out / "model.int8.onnx")).graph.node}
    if enc_class != "bilstm":
        assert meta["int8"] == "static" and {"QuantizeLinear", "DequantizeLinear"} <= ops
        graph = onnx.load(str(out / "model.int8.onnx")).graph
        dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        convs = {n.name: n for n in graph.node if n.op_type == "Conv"}
        # the DSA's last convolution stays fp32 (config.STATIC_INT8_STUDENTS), the others are int8
        last = convs.pop("/densenet/last/Conv")
        if enc_class == "densenet-dsa":
            assert not set(last.input) & dequantized
        else:
            assert set(last.input[:2]) <= dequantized
        assert all(set(n.input[:2]) <= dequantized for n in convs.values())
    else:
        assert meta["int8"] == "dynamic" and "QuantizeLinear" not in ops
    assert meta["backends"] == ["onnxruntime", "onnxruntime-int8"]
    fp32 = Bundle.load(out, "onnxruntime").logits(SENTENCES)
    int8 = Bundle.load(out, "onnxruntime-int8").logits(SENTENCES)
    assert np.abs(int8 - fp32).max() < 0.05 * np.abs(fp32).max() + 0.05
    result = meta["int8_check"]
    assert result["fp32_right"] == 1.0 and result["sentences"] == len(SENTENCES)
    assert meta["backend"] == ("onnxruntime-int8" if result["int8_right"] >= 1.0 - result["max_drop"]
                               else "onnxruntime")
    # without a check set int8 is offered, never the default
    plain = json.loads((predictor.export_bundle(tmp_path / "plain", quantize=True, calibration=calibration)
                        / "bundle.json").read_text())
    assert plain["backend"] == "onnxruntime" and "int8_check" not in plain


def test_predict_exports_a_calibrated_int8_bundle(data_dir, tmp_path):
    """predict.py --export_bundle --quantize --calibration_file --check_file: the bundle has both
    backends, static int8, and a check on the labeled file (labels the model never saw: it
    still records both runtimes' share right)."""
    model = random_student(tmp_path, "cnn")
    out = tmp_path / "bundle"
    assert predict.main([f"--model_path={model}", f"--export_bundle={out}", "--quantize",
                         f"--calibration_file={data_dir / 'train.txt'}", f"--check_file={data_dir / 'valid.txt'}"]) == 0
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["int8"] == "static" and meta["backends"] == ["onnxruntime", "onnxruntime-int8"]
    assert meta["int8_check"]["sentences"] == 40 and meta["int8_check"]["fp32_right"] == 0.0


@pytest.mark.parametrize("enc_class", ["bow", "dan"])
def test_bag_bundle_keeps_only_the_buckets_training_reached(enc_class, tmp_path):
    """A bag of n-grams ships the n-gram rows that are not zero and one zero row for the rest:
    the same logits as the full table, from a smaller one."""
    path = random_student(tmp_path, enc_class)
    checkpoint = torch.load(path, weights_only=True)
    weight = checkpoint["model"]["embedding.weight"]  # [V + 97, E]
    words = weight.size(0) - 97
    weight[words::2] = 0  # every other bucket never reached in training
    torch.save(checkpoint, path)
    predictor = Predictor.load(path)
    out = predictor.export_bundle(tmp_path / "bundle")
    kept = np.load(out / "buckets.npy")
    np.testing.assert_array_equal(kept, np.arange(1, 97, 2))
    table = np.load(out / "bow.npz")["table"]
    assert table.shape[0] == words + len(kept) + 1
    # the sentences reach kept buckets and dropped ones (which read the zero row)
    features = [f for ids in Bundle.load(out).encode_batch(HARD) for f in ids if f >= words]
    assert words + len(kept) in features and any(f < words + len(kept) for f in features)
    expected = predictor.logits(HARD).numpy()
    for backend in ("numpy", "onnxruntime"):
        served = Bundle.load(out, backend=backend)
        np.testing.assert_allclose(served.logits(HARD), expected, atol=1e-5, rtol=0, err_msg=backend)


@pytest.mark.parametrize("head", ["mean", "hf"])
def test_teacher_bundle_tokenizes_and_scores_as_pytorch(head, tmp_path, tiny_transformer):
    teacher = random_teacher(tmp_path, tiny_transformer("bert"), head)
    # as sentence-transformers ship it (all-MiniLM-L6-v2): fixed padding in tokenizer.json
    spec = json.loads((teacher / "tokenizer.json").read_text())
    spec["padding"] = {"strategy": {"Fixed": 32}, "direction": "Right", "pad_to_multiple_of": None, "pad_id": 0,
                       "pad_type_id": 0, "pad_token": "[PAD]"}
    (teacher / "tokenizer.json").write_text(json.dumps(spec))
    predictor = Predictor.load(teacher)
    out = predictor.export_bundle(tmp_path / "bundle")
    assert (out / "tokenizer.json").exists() and not (out / "vocab.txt").exists()
    bundle = Bundle.load(out)
    assert [bundle.encode(s) for s in HARD] == predictor.encode_batch(HARD)
    mask_id = load_hf_tokenizer(tiny_transformer("bert")).mask_token_id
    assert bundle.encode("A GOOD [MASK] Film").count(mask_id) == 1
    assert max(len(bundle.encode(s)) for s in HARD) == 16  # truncated to n_ctx
    expected = predictor.logits(HARD).numpy()
    np.testing.assert_allclose(bundle.logits(HARD), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.concatenate([bundle.logits([s]) for s in HARD]), expected, atol=1e-5, rtol=0)


def test_two_bundles_in_one_process_beside_foreign_modules(tmp_path, tiny_transformer):
    """A teacher bundle and a student bundle loaded side by side, each by path with its own
    code, while a directory with other `runtime.py` and `tokenization.py` files is first on
    sys.path."""
    student = Predictor.load(random_student(tmp_path, "cnn")).export_bundle(tmp_path / "student")
    teacher = Predictor.load(random_teacher(tmp_path, tiny_transformer("bert"))).export_bundle(tmp_path / "teacher")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    for name in ("runtime.py", "tokenization.py"):
        (foreign / name).write_text("raise ImportError('the wrong module was imported')\n")
    # the student bundle's code is older: a marker only its copy has
    (student / "runtime.py").write_text((student / "runtime.py").read_text() + "\nMARKER = 'student'\n")
    script = f"""
import sys
sys.path.insert(0, {str(foreign)!r})
sys.modules.pop("runtime", None)
import importlib.util
spec = importlib.util.spec_from_file_location("loader", {str(ROOT / "runtime.py")!r})
loader = importlib.util.module_from_spec(spec); spec.loader.exec_module(loader)
s = loader.Bundle.load({str(student)!r}); t = loader.Bundle.load({str(teacher)!r})
assert "loader" not in (type(s).__module__, type(t).__module__)  # each bundle's own code, by path
assert type(s).__module__ != type(t).__module__, (type(s).__module__, type(t).__module__)
assert sys.modules[type(s).__module__].MARKER == "student"
assert not hasattr(sys.modules[type(t).__module__], "MARKER")
print(s.predict_label("a good film"), t.predict_label("a good film"))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=foreign, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(result.stdout.split()) == 2


def test_bundle_files_follow_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        out = Predictor.load(random_student(tmp_path, "bow")).export_bundle(tmp_path / "bundle")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert modes == {name: 0o644 for name in modes}, modes


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
        # runtime.py from the bundle itself
        result = run_without_torch(
            "import runtime\nb = runtime.Bundle.load(sys.argv[1])\n"
            "print(json.dumps({'backend': b.backend, 'predictions': b.predict(sys.argv[2:])}))",
            str(bundle_dir), *sentences, cwd=tmp_path)
        served = json.loads(result.stdout)
        assert served["backend"] == ("numpy" if enc_class == "bow" else "onnxruntime")
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
