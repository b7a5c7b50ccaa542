"""Shared fixtures: a tiny separable sentiment data set, a tiny GloVe file, tiny configs and
tiny random transformer teachers (BERT, RoBERTa, ELECTRA) with tokenizers trained here."""
from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

# One intra-op thread, here and in every stage the tests start as a subprocess (set before
# torch is first imported): the tiny models' steps take milliseconds, and two spinning OpenMP
# threads on a busy 2-core machine made them a hundred times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POSITIVE = ["good", "great", "fine", "superb", "lovely", "brilliant", "warm", "funny"]
NEGATIVE = ["bad", "awful", "dull", "boring", "poor", "terrible", "weak", "ugly"]
NEUTRAL = ["the", "a", "movie", "film", "plot", "acting", "is", "was", "and", "very", "story", "cast"]
EMB_DIM = 8


def pytest_configure(config: pytest.Config) -> None:
    # `make test-fast` deselects these (-m "not slow"); each test file keeps a fast test of its own
    config.addinivalue_line("markers", "slow: a whole-pipeline, torchrun or bench run, over 10 s on 2 cores")


def make_sentence(rng: random.Random, label: int) -> str:
    """A short sentence with two words of its class among neutral words."""
    words = [rng.choice(NEUTRAL) for _ in range(rng.randint(2, 8))]
    for _ in range(2):
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
    return " ".join(words)


def write_split(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        label = i % 2
        lines.append(f"{make_sentence(rng, label)}\t{label}\n")
    path.write_text("".join(lines), encoding="utf-8")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """train/valid/test with 240/40/40 lines of a separable toy task."""
    return write_toy_splits(tmp_path / "data")


def write_glove(path: Path, dim: int = EMB_DIM, extra: tuple[str, ...] = ()) -> Path:
    """A GloVe-format file of `dim`-d vectors: class words point in opposite directions along
    the first axis, neutral words (and `extra`) near the origin; '[mask]' has no vector."""
    rng = np.random.default_rng(0)
    lines = []
    for words, sign in ((POSITIVE, 1.0), (NEGATIVE, -1.0), (NEUTRAL + list(extra), 0.0)):
        for w in words:
            vec = rng.normal(0, 0.3, dim)
            vec[0] += sign
            lines.append(w + " " + " ".join(f"{x:.5f}" for x in vec))
    lines.append("unused " + " ".join("0.1" for _ in range(dim)))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def glove_path(tmp_path: Path) -> Path:
    """The toy task's 8-d GloVe file (write_glove)."""
    return write_glove(tmp_path / "glove.toy.8d.txt")


TINY_STUDENTS = {
    "cnn": {"dropout": 0.1, "fc_hidden_size": 16, "cnn": {"num_filters": 8, "kernel_sizes": [2, 3, 4]}},
    "densenet-cnn": {"dropout": 0.1, "fc_hidden_size": 0,
                     "densenet": {"first_num_filters": 8, "num_filters": 4, "last_num_filters": 8,
                                  "kernel_sizes": [[1, 1], [3, 3], [3, 5]]},
                     "cnn": {"num_filters": 8, "kernel_sizes": [2, 3]}},
    "densenet-dsa": {"dropout": 0.1, "fc_hidden_size": 16,
                     "densenet": {"first_num_filters": 8, "num_filters": 4, "last_num_filters": 8,
                                  "kernel_sizes": [[1, 1], [3, 3], [5, 5]]},
                     "dsa": {"num_attentions": 2, "dsa_dim": 6, "r": 2}},
    "bilstm": {"dropout": 0.1, "fc_hidden_size": 16, "lstm": {"hidden_size": 8, "num_layers": 1}},
    "bow": {"dropout": 0.0, "bow": {"buckets": 97}},
    "dan": {"dropout": 0.0, "bow": {"buckets": 97, "hidden": [12, 10]}},
    "decomp-att": {"dropout": 0.0, "fc_hidden_size": 8, "decomp": {"hidden": 8}},
}


def write_student_config(directory: Path, enc_class: str, **extra) -> Path:
    """A tiny student config JSON (8-d vectors)."""
    cfg = {"emb_class": "glove", "enc_class": enc_class, "n_ctx": 20, "lowercase": True,
           "token_emb_dim": EMB_DIM, **TINY_STUDENTS[enc_class], **extra}
    suffix = "".join(f"-{k}{v}" for k, v in sorted(extra.items()))
    path = directory / f"config-{enc_class}{suffix}.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


@pytest.fixture
def student_config(tmp_path: Path):
    """Factory: `student_config('cnn')` writes and returns a tiny config path."""
    return lambda enc_class, **extra: write_student_config(tmp_path, enc_class, **extra)


def _corpus() -> list[str]:
    rng = random.Random(0)
    return [make_sentence(rng, i % 2) for i in range(200)]


def build_tiny_transformer(directory: Path, family: str, id2label: dict[int, str] | None = None) -> Path:
    """A randomly initialised 2-layer encoder of `family` (bert, roberta, electra, distilbert)
    with a tokenizer trained here; with `id2label`, a `*ForSequenceClassification` model with
    those labels instead (a user's fine-tuned classifier, as `save_pretrained` writes it)."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import (
        AutoModel,
        AutoModelForSequenceClassification,
        BertConfig,
        DistilBertConfig,
        ElectraConfig,
        PreTrainedTokenizerFast,
        RobertaConfig,
    )

    corpus = _corpus()
    if family == "roberta":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        tok.train_from_iterator(corpus, trainers.BpeTrainer(
            vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
        tok.decoder = decoders.ByteLevel()
        hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                         pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>")
        config = RobertaConfig(vocab_size=len(hf_tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=130, pad_token_id=1)
    else:
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        tok.decoder = decoders.WordPiece()
        hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                         cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
        common = dict(vocab_size=len(hf_tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128)
        if family == "electra":
            config = ElectraConfig(embedding_size=16, **common)
        elif family == "distilbert":
            config = DistilBertConfig(vocab_size=len(hf_tok), dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                      max_position_embeddings=128, pad_token_id=0)
        else:
            config = BertConfig(**common)
    out = directory / (f"tiny-{family}" + ("-classifier" if id2label else ""))
    hf_tok.save_pretrained(out)
    import torch

    torch.manual_seed(0)
    if id2label:
        config.id2label = dict(id2label)
        config.label2id = {v: k for k, v in id2label.items()}
        AutoModelForSequenceClassification.from_config(config).save_pretrained(out)
    else:
        AutoModel.from_config(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_transformer(tmp_path_factory):
    """Factory: `tiny_transformer('bert')` → a model directory (built once per session)."""
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            cache[family] = build_tiny_transformer(tmp_path_factory.mktemp(family), family)
        return cache[family]

    return get


def teacher_config(directory: Path, family: str, head: str = "cls") -> Path:
    path = directory / f"config-{family}-{head}.json"
    path.write_text(json.dumps({"emb_class": family, "enc_class": head, "n_ctx": 32, "dropout": 0.0}),
                    encoding="utf-8")
    return path


@pytest.fixture
def make_teacher_config(tmp_path: Path):
    return lambda family, head="cls": teacher_config(tmp_path, family, head)


def write_agreeing_transfer(data_dir: Path, path: Path, extra: tuple[str, ...] = ()) -> Path:
    """A transfer set of train.txt's sentences (source `original`, their gold labels) with
    teacher logits that agree with the gold labels, plus `extra` augmented sentences scored 0."""
    from dataset import transfer_line

    with open(path, "w", encoding="utf-8") as f:
        for line in (data_dir / "train.txt").read_text(encoding="utf-8").splitlines():
            sentence, gold = line.split("\t")
            f.write(transfer_line(sentence, "original", gold, [-2.0, 2.0] if gold == "1" else [2.0, -2.0]))
        for sentence in extra:
            f.write(transfer_line(sentence, "augmented", None, [0.0, 0.0]))
    return path


def error_lines(text: str) -> list[str]:
    """The ERROR lines a stage printed."""
    return [line for line in text.splitlines() if line.startswith("ERROR:")]


def refused(capsys, module, argv: list[str], needle: str) -> str:
    """Run `module.main(argv)` and check the refusal: exit code 1, exactly one ERROR line,
    containing `needle`, and no traceback. Returns the line."""
    capsys.readouterr()
    assert module.main(argv) == 1
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


def fit_teacher(family: str, data_dir: Path, model_dir: Path, config: Path, out: Path, epochs: int = 3) -> None:
    """preprocess.py and train.py for a tiny teacher (lower-casing for the uncased families)."""
    import preprocess
    import train

    lower = ["--bert_do_lower_case"] if family != "roberta" else []
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}",
                            f"--bert_model_name_or_path={model_dir}", *lower]) == 0
    assert train.main([f"--config={config}", f"--data_dir={data_dir}", f"--bert_model_name_or_path={model_dir}",
                       f"--bert_output_dir={out}", "--lr=2e-3", f"--epoch={epochs}", "--batch_size=16",
                       "--use_transformers_optimizer", "--warmup_epoch=0", "--device=cpu",
                       f"--log_dir={out.parent / 'runs'}", *lower]) == 0


def write_toy_splits(d: Path) -> Path:
    """train/valid/test with 240/40/40 lines of a separable toy task."""
    d.mkdir(parents=True, exist_ok=True)
    write_split(d / "train.txt", 240, 1)
    write_split(d / "valid.txt", 40, 2)
    write_split(d / "test.txt", 40, 3)
    return d


@pytest.fixture(scope="session")
def teacher_template(tmp_path_factory, tiny_transformer) -> tuple[Path, Path, Path]:
    """A tiny BERT teacher (cls head, lower-cased) fine-tuned once per session for 2 epochs on
    the toy splits: (its data directory with the .fs files, the teacher directory, its config).
    Tests use copies (the `trained_teacher` fixture), never these."""
    root = tmp_path_factory.mktemp("bert-teacher")
    data = write_toy_splits(root / "data")
    config = teacher_config(root, "bert")
    fit_teacher("bert", data, tiny_transformer("bert"), config, root / "teacher", epochs=2)
    return data, root / "teacher", config


@pytest.fixture
def trained_teacher(teacher_template, data_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The session's tiny BERT teacher copied to `tmp_path / "teacher"`, with its `.fs` files,
    label.txt and tokenization record copied into `data_dir` (the same toy splits):
    (teacher directory, teacher config)."""
    import shutil

    data, teacher, config = teacher_template
    for f in data.iterdir():
        if f.name.endswith(".fs") or f.name in ("label.txt", "preprocess.transformer.json"):
            shutil.copy2(f, data_dir / f.name)
    out = tmp_path / "teacher"
    shutil.copytree(teacher, out)
    return out, config


# A separable 3-class task with string labels (two class words among neutral words).
THREE_CLASS_WORDS = {"positive": POSITIVE, "negative": NEGATIVE, "GetWeather": ["rain", "sunny", "forecast", "weather"]}


def write_three_class(d: Path, sizes: tuple[int, int, int]) -> Path:
    """train/valid/test.txt with `sizes` lines of the 3-class task, labels cycling in sorted order."""
    d.mkdir(parents=True)
    for split, n, seed in zip(("train", "valid", "test"), sizes, (1, 2, 3)):
        rng = random.Random(seed)
        lines = []
        for i in range(n):
            label = sorted(THREE_CLASS_WORDS)[i % 3]
            words = [rng.choice(NEUTRAL) for _ in range(rng.randint(2, 6))]
            for _ in range(2):
                words.insert(rng.randint(0, len(words)), rng.choice(THREE_CLASS_WORDS[label]))
            lines.append(" ".join(words) + "\t" + label + "\n")
        (d / f"{split}.txt").write_text("".join(lines))
    return d
