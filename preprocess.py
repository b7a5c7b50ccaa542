"""Turn `sentence<TAB>label` files into id-mapped files for a transformer tokenizer (`.fs`)
or a GloVe vocabulary (`.ids`).

    python preprocess.py --config=configs/config-bert-cls.json --data_dir=data/sst2 \
        --bert_model_name_or_path=./embeddings/all-MiniLM-L6-v2 --bert_do_lower_case
    python preprocess.py --config=configs/config-glove-cnn.json --data_dir=data/sst2
    python preprocess.py --config=configs/config-glove-cnn.json --data_dir=data/sst2 --augmented

Writes `label.txt` (sorted labels), and for GloVe `vocab.txt` + `embedding.npy`. The GloVe
vocabulary is rebuilt from every file converted in the same run, so all `.ids` files
always share one vocabulary.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from dataset import (
    GloveEncoder,
    TransformerEncoder,
    build_labels,
    build_vocab,
    glove_tokenize,
    label_ids,
    read_examples,
    read_glove,
    read_labels,
    read_predictions,
    write_ids,
    write_labels,
    write_vocab,
)
from util import Config, UserError, config_to_dict, load_config, run_main, setup_logging, write_json

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="model config JSON (configs/...)")
    p.add_argument("--data_dir", required=True, help="directory with train.txt, valid.txt, test.txt")
    p.add_argument("--bert_model_name_or_path", help="Hugging Face model directory (transformer configs)")
    p.add_argument("--bert_do_lower_case", action="store_true", help="lower-case text before the tokenizer")
    p.add_argument("--embedding_path", help="GloVe text file (default embeddings/glove.6B.<token_emb_dim>d.txt)")
    p.add_argument("--augmented", action="store_true", help="convert the augmented file as well")
    p.add_argument("--augmented_filename",
                   help="augmented file in data_dir (default: augmented.raw for transformers, augmented.txt for GloVe)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    return p


def default_augmented_filename(config: Config) -> str:
    """The seed's names: the teacher labels `augmented.raw`; students train on its copy `augmented.txt`."""
    return "augmented.raw" if config.is_transformer else "augmented.txt"


def preprocess_transformer(args: argparse.Namespace, config: Config, data_dir: Path) -> dict:
    """Tokenize with the teacher's tokenizer into `.fs` files."""
    from transformers import AutoTokenizer

    if not args.bert_model_name_or_path:
        raise UserError(f"{args.config}: a transformer config needs --bert_model_name_or_path")
    path = args.bert_model_name_or_path
    if Path(path).is_dir() and not any((Path(path) / f).exists() for f in ("tokenizer.json", "vocab.txt",
                                                                           "tokenizer_config.json")):
        raise UserError(f"{path}: not a Hugging Face model directory (no tokenizer files)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot load a tokenizer: {str(e).splitlines()[0]}") from e
    encoder = TransformerEncoder(tokenizer, args.bert_do_lower_case, config.n_ctx)
    written = {}
    if args.augmented:
        labels = read_labels(data_dir / "label.txt")
        name = args.augmented_filename or default_augmented_filename(config)
        examples = read_examples(data_dir / name)
        index = {label: i for i, label in enumerate(labels)}
        targets = [index.get(e.label, -1) for e in examples]
        ids = encoder.encode_many([e.sentence for e in examples])
        write_ids(data_dir / f"{name}.fs", ids, targets)
        written[f"{name}.fs"] = len(ids)
        return written
    splits = {s: read_examples(data_dir / f"{s}.txt") for s in SPLITS}
    labels = build_labels(splits["train"])
    write_labels(data_dir / "label.txt", labels)
    for split, examples in splits.items():
        targets = label_ids(examples, labels, data_dir / f"{split}.txt")
        ids = encoder.encode_many([e.sentence for e in examples])
        write_ids(data_dir / f"{split}.txt.fs", ids, targets)
        written[f"{split}.txt.fs"] = len(ids)
    return written


def preprocess_glove(args: argparse.Namespace, config: Config, data_dir: Path) -> dict:
    """Build the GloVe vocabulary over all files and write `.ids` files."""
    embedding_path = Path(args.embedding_path or f"embeddings/glove.6B.{config.token_emb_dim}d.txt")
    splits = {s: read_examples(data_dir / f"{s}.txt") for s in SPLITS}
    labels = build_labels(splits["train"])
    targets = {s: label_ids(ex, labels, data_dir / f"{s}.txt") for s, ex in splits.items()}
    sentences = {s: [e.sentence for e in ex] for s, ex in splits.items()}
    if args.augmented:
        name = args.augmented_filename or default_augmented_filename(config)
        sentences[name], logits = read_predictions(data_dir / name, len(labels))
        targets[name] = list(logits)
    token_lists = {name: [glove_tokenize(s, config.lowercase) for s in sents] for name, sents in sentences.items()}
    wanted = {t for tokens in token_lists.values() for sent in tokens for t in sent}
    start = time.time()
    glove = read_glove(embedding_path, wanted, config.token_emb_dim)
    vocab, matrix = build_vocab(
        (t for tokens in token_lists.values() for t in tokens), glove, config.pad_token, config.unk_token,
        config.token_emb_dim,
    )
    logger.info("[Vocab] %d words (%d of %d distinct data words in %s, %.1fs)",
                len(vocab), len(vocab) - 2, len(wanted), embedding_path, time.time() - start)
    write_labels(data_dir / "label.txt", labels)
    write_vocab(data_dir, vocab, matrix)
    encode = GloveEncoder(vocab, config.lowercase, config.n_ctx)
    written = {}
    for name, sents in sentences.items():
        filename = f"{name}.txt.ids" if name in SPLITS else f"{name}.ids"
        write_ids(data_dir / filename, [encode(s) for s in sents], targets[name])
        written[filename] = len(sents)
    return written


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging()

    def body() -> int:
        config = load_config(args.config, args.set)
        data_dir = Path(args.data_dir)
        if not data_dir.is_dir():
            raise UserError(f"{data_dir}: data directory not found (run `make data`)")
        start = time.time()
        if config.is_transformer:
            written = preprocess_transformer(args, config, data_dir)
        else:
            written = preprocess_glove(args, config, data_dir)
        for name, count in written.items():
            logger.info("[Written] %s: %d lines", data_dir / name, count)
        kind = "transformer" if config.is_transformer else "glove"
        write_json(data_dir / f"preprocess.{kind}.json", {
            "args": vars(args), "config": config_to_dict(config), "written": written,
            "seconds": round(time.time() - start, 2),
        })
        return 0

    return run_main(body, logger)


if __name__ == "__main__":
    sys.exit(main())
