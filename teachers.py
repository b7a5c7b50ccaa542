"""What the toolkit knows about a teacher without loading its weights (no torch here).

- Its directory's record (`distil_config.json`, written by `checkpoint.save_teacher`), or a
  Hugging Face classifier's own `config.json` (`architectures`, `id2label`).
- Its tokenizer, and whether that tokenizer lower-cases by itself.
- How `preprocess.py` tokenized a data directory for it (`preprocess.transformer.json`).
- Its labels matched to the data's by name (`teacher_columns`, `--label_map`): the one rule
  every stage that reads a teacher's scores (labeling, evaluation, a scores file) uses.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from util import UserError, read_json

CHECKPOINT_FORMAT = "distil-glove/1"  # in every checkpoint and teacher record we write

TEACHER_META = "distil_config.json"


def hf_architectures(path: str | Path) -> list[str]:
    """The `architectures` a Hugging Face model directory (or hub name) declares."""
    from transformers import AutoConfig

    path = str(path)
    if Path(path).is_dir() and not (Path(path) / "config.json").is_file():
        raise UserError(f"{path}: not a Hugging Face model directory (no config.json)")
    if Path(path).is_file():
        raise UserError(f"{path}: is a file; a teacher is a Hugging Face model directory or hub name")
    try:
        return list(AutoConfig.from_pretrained(path).architectures or [])
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read a Hugging Face model config: {str(e).splitlines()[0]}") from e


def is_teacher(path: str | Path) -> bool:
    """Whether `path` is a ready teacher (a directory from train.py, or any Hugging Face
    `*ForSequenceClassification` model), rather than an encoder to fine-tune first."""
    if (Path(path) / TEACHER_META).is_file():
        return True
    return any(a.endswith("ForSequenceClassification") for a in hf_architectures(path))


def teacher_labels(path: str | Path) -> list[str]:
    """A ready teacher's labels in its own logit order, read without loading its weights
    (our record, or the classifier's `id2label`)."""
    meta_path = Path(path) / TEACHER_META
    if meta_path.is_file():
        return [str(x) for x in read_teacher_meta(path)["labels"]]
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read a Hugging Face model config: {str(e).splitlines()[0]}") from e
    return [str(config.id2label[i]) for i in range(config.num_labels)]


def teacher_multi_label(path: str | Path) -> bool:
    """Whether a ready teacher is multi-label (a sigmoid per label), read without its weights:
    our record's `multi_label`, or a classifier config's `problem_type`
    (`multi_label_classification`)."""
    if (Path(path) / TEACHER_META).is_file():
        return bool(read_teacher_meta(path).get("multi_label", False))
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read a Hugging Face model config: {str(e).splitlines()[0]}") from e
    return getattr(config, "problem_type", None) == "multi_label_classification"


def load_hf_tokenizer(path: str | Path) -> Any:
    """A Hugging Face tokenizer from a local model directory (or a hub name when online)."""
    from transformers import AutoTokenizer

    path = str(path)
    if Path(path).is_dir() and not any((Path(path) / f).exists() for f in ("tokenizer.json", "vocab.txt",
                                                                           "tokenizer_config.json")):
        raise UserError(f"{path}: not a Hugging Face model directory (no tokenizer files)")
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot load a tokenizer: {str(e).splitlines()[0]}") from e


def segment_sep_id(tokenizer: Any, encoder_config: Any) -> int | None:
    """The separator id a teacher derives its segment (token type) ids from, for sentence
    pairs: the tokenizer's `sep_token_id` when the model has segment embeddings
    (`type_vocab_size` > 1: BERT, ELECTRA, MiniLM); None for models without (RoBERTa), which
    read a pair from its separator tokens alone."""
    if int(getattr(encoder_config, "type_vocab_size", 0) or 0) < 2:
        return None
    return getattr(tokenizer, "sep_token_id", None)


def read_teacher_meta(out_dir: str | Path) -> dict:
    """A teacher directory's `distil_config.json` (config, labels, lower-casing, mask token)."""
    meta_path = Path(out_dir) / TEACHER_META
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{meta_path}: not a distil-glove teacher description")
    return meta


def tokenizer_lowercases(tokenizer) -> bool:
    """Whether a Hugging Face tokenizer lower-cases text itself (an uncased BERT does, RoBERTa
    does not): it gives cased and lower-cased text the same tokens."""
    sample = "The Quick Brown Fox Jumps Over The Lazy Dog"
    return tokenizer.tokenize(sample) == tokenizer.tokenize(sample.lower())


# `preprocess.py` records how it made a data directory's `.fs` files (tokenizer, lower-casing,
# mask token) here, so later stages can refuse a setting that contradicts it.
TOKENIZATION_RECORD = "preprocess.transformer.json"


def read_tokenization_record(data_dir: Path) -> dict | None:
    """The record of how `data_dir`'s `.fs` files were made, or None if there is none."""
    path = Path(data_dir) / TOKENIZATION_RECORD
    if not path.exists():
        return None
    record = read_json(path)
    return record if isinstance(record, dict) and "lowercase" in record else None


# ---------------------------------------------------------------------------
# A teacher's labels against the data's
# ---------------------------------------------------------------------------

def parse_label_map(text: str | None) -> dict[str, str]:
    """`--label_map NEGATIVE=0,POSITIVE=1` as {teacher label: data label}."""
    mapping: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, target = item.partition("=")
        if not sep or not name.strip() or not target.strip():
            raise UserError(f"--label_map {text!r}: expected TEACHER_LABEL=DATA_LABEL pairs separated by commas")
        if name.strip() in mapping:
            raise UserError(f"--label_map {text!r}: {name.strip()!r} is mapped twice")
        mapping[name.strip()] = target.strip()
    return mapping


def teacher_columns(teacher_labels: Sequence[str], data_labels: Sequence[str], label_map: dict[str, str],
                    teacher: str) -> list[int]:
    """For each data label (in id order), the teacher's logit column with that label, matched
    by name: `logits[:, columns]` puts a teacher's scores in the data's label order.

    Names match as they are, or through `label_map` ({teacher label: data label}); a teacher
    whose names are the default `LABEL_0..LABEL_k-1` matches data labels `0..k-1` by index.
    Anything else (a label on one side only, a map that is not one-to-one) is a UserError
    naming both label sets and the option that maps them."""
    default_names = [f"LABEL_{i}" for i in range(len(teacher_labels))]
    if label_map:
        unknown = sorted(set(label_map) - set(teacher_labels))
        if unknown:
            raise UserError(f"--label_map names {unknown[0]!r}, which {teacher} does not have; its labels are "
                            f"{list(teacher_labels)}")
        renamed = [label_map.get(t, t) for t in teacher_labels]
    elif list(teacher_labels) == default_names and sorted(data_labels) == sorted(str(i) for i in
                                                                               range(len(teacher_labels))):
        renamed = [str(i) for i in range(len(teacher_labels))]
    else:
        renamed = list(teacher_labels)
    if sorted(renamed) != sorted(data_labels) or len(set(renamed)) != len(renamed):
        example = ",".join(f"{t}={d}" for t, d in zip(sorted(teacher_labels), sorted(data_labels)))
        raise UserError(f"{teacher} has labels {list(teacher_labels)} but the data has {list(data_labels)}; map them "
                        f"one to one by name with --label_map (LABEL_MAP=), e.g. --label_map {example}")
    return [renamed.index(label) for label in data_labels]


def teacher_summary(path: str | Path, tokenizer: Any) -> tuple[str, bool]:
    """A ready teacher's head (`cls`, `mean` or `hf`) and lower-casing: our record's, or for
    anyone's classifier `hf` and what its tokenizer does."""
    if (Path(path) / TEACHER_META).is_file():
        meta = read_teacher_meta(path)
        return str(meta["config"].get("enc_class", "hf")), bool(meta.get("lowercase"))
    return "hf", tokenizer_lowercases(tokenizer)
