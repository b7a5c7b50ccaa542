"""Turn `sentence<TAB>label` files (or sentence pairs, `sentence_a<TAB>sentence_b<TAB>label`) into id-mapped files for a transformer tokenizer (`.fs`)
or a GloVe vocabulary (`.ids`).

    python preprocess.py --config=configs/config-bert-mean.json --data_dir=data/sst2 \
        --bert_model_name_or_path=./embeddings/all-MiniLM-L6-v2 --bert_do_lower_case
    python preprocess.py --config=configs/config-glove-cnn.json --data_dir=data/sst2
    python preprocess.py --config=configs/config-glove-cnn.json --data_dir=data/sst2 --distill
        # ... and the transfer set from label.py (transfer.txt; the seed's --augmented: augmented.txt)

Writes `label.txt` (sorted labels) and `label.json` (whether the data are multi-label:
`--multi_label`, `sentence<TAB>label1,label2,...`, which later stages read instead of being
told again), and for GloVe `vocab.txt` + `embedding.npy`. The GloVe
vocabulary is rebuilt from every file converted in the same run, so all `.ids` files
always share one vocabulary; they hold word ids (a bag of n-grams adds its n-grams as it
reads them). Words are split by the config's `tokenizer`. For a teacher,
`preprocess.transformer.json` records the tokenizer and lower-casing the `.fs` files were
made with; a later run (or train.py) with the other lower-casing is refused.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from cli import common_parser, transfer_file
from config import Config, config_to_dict, load_config
from dataset import (
    LABEL_RECORD,
    build_labels,
    check_label_list,
    build_vocab,
    count_tokens,
    label_ids,
    read_glove,
    read_splits,
    read_transfer,
    transfer_ids_line,
    write_ids,
    recorded_multi_label,
    write_label_record,
    write_labels,
    write_vocab,
)
from runtime import SubwordIds, WordTokenizer
from teachers import TOKENIZATION_RECORD, load_hf_tokenizer, read_tokenization_record
from util import UserError, atomic_path, run_main, write_json

logger = logging.getLogger(__name__)



def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                parents=[common_parser(runtime=False, encoder=True, distill=True)])
    p.add_argument("--embedding_path", help="GloVe text file (default embeddings/glove.6B.<token_emb_dim>d.txt)")
    p.add_argument("--multi_label", action="store_true",
                   help="label fields are comma-separated label lists (recorded in label.json for later stages)")
    return p


def check_flags(args: argparse.Namespace, config: Config) -> None:
    """Refuse flags this kind of config would ignore."""
    if config.is_transformer:
        if not args.bert_model_name_or_path:
            raise UserError(f"{args.config}: a transformer config needs --bert_model_name_or_path")
        if args.embedding_path:
            raise UserError("--embedding_path is for GloVe student configs, not a transformer config")
        if args.distill or args.transfer_file:
            raise UserError("--distill/--transfer_file convert a transfer set for GloVe students; a teacher trains on "
                            "the splits (label.py tokenizes what it scores)")
    elif args.bert_model_name_or_path or args.bert_do_lower_case:
        raise UserError(f"--bert_model_name_or_path/--bert_do_lower_case are for teacher configs; {args.config} is a "
                        "GloVe student (its lower-casing is the config's `lowercase`)")


def preprocess_transformer(args: argparse.Namespace, config: Config, data_dir: Path) -> dict:
    """Tokenize with the teacher's tokenizer into `.fs` files."""
    record = read_tokenization_record(data_dir)
    if record is not None and record["lowercase"] != args.bert_do_lower_case:
        raise UserError(f"--bert_do_lower_case is {'on' if args.bert_do_lower_case else 'off'}, but "
                        f"{data_dir / TOKENIZATION_RECORD} says the .fs files here were made with it "
                        f"{'on' if record['lowercase'] else 'off'}; use the same setting")
    tokenizer = load_hf_tokenizer(args.bert_model_name_or_path)
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"{args.bert_model_name_or_path}: its tokenizer has no fast (tokenizers) version")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encode = SubwordIds(tokenizer.backend_tokenizer, args.bert_do_lower_case, config.n_ctx, pad_id).encode_batch
    written = {}
    multi = args.multi_label
    splits = read_splits(data_dir, multi_label=multi)
    labels = build_labels(splits["train"], multi)
    targets = {s: label_ids(ex, labels, data_dir / f"{s}.txt", multi) for s, ex in splits.items()}
    write_labels(data_dir / "label.txt", labels)
    write_label_record(data_dir, multi)
    for split, examples in splits.items():
        ids = encode([e.sentence for e in examples])
        write_ids(data_dir / f"{split}.txt.fs", ids, targets[split])
        written[f"{split}.txt.fs"] = len(ids)
    return {"tokenizer": str(args.bert_model_name_or_path), "lowercase": args.bert_do_lower_case,
            "mask_token": tokenizer.mask_token, "pairs": splits["train"][0].pair, "written": written}


def preprocess_glove(args: argparse.Namespace, config: Config, data_dir: Path) -> dict:
    """Build the GloVe vocabulary over the splits and the transfer set, and write `.ids` files.
    The transfer set is read as a stream, twice (words, then ids), so it may be large."""
    embedding_path = Path(args.embedding_path or f"embeddings/glove.6B.{config.token_emb_dim}d.txt")
    multi = args.multi_label
    splits = read_splits(data_dir, multi_label=multi)
    labels = build_labels(splits["train"], multi)
    targets = {s: label_ids(ex, labels, data_dir / f"{s}.txt", multi) for s, ex in splits.items()}
    tokenize = WordTokenizer(config.tokenizer, config.lowercase)
    counts = count_tokens(tokenize(e.sentence) for ex in splits.values() for e in ex)
    name = transfer_file(args)
    transfer = data_dir / name if name else None
    if transfer is not None:
        # read through once before anything is written: a bad gold label list is refused here
        for row in read_transfer(transfer, len(labels)):
            count_tokens([tokenize(row.sentence)], counts)
            gold_ids(row.gold, labels, multi, f"{transfer}:{row.lineno}")
    start = time.time()
    glove = read_glove(embedding_path, set(counts), config.token_emb_dim)
    pairs = splits["train"][0].pair
    vocab, matrix = build_vocab(counts, glove, config.pad_token, config.unk_token, config.token_emb_dim,
                                config.sep_token if pairs else None)
    logger.info("[Vocab] %d words (%d of %d distinct data words in %s, %.1fs)%s",
                len(vocab), len(vocab) - 2 - pairs, len(counts), embedding_path, time.time() - start,
                "; sentence pairs: <sep> between the sides" if pairs else "")
    write_labels(data_dir / "label.txt", labels)
    write_label_record(data_dir, multi)
    write_vocab(data_dir, vocab, matrix)
    word_ids = config.word_ids(vocab).word_ids  # the .ids files hold word ids, shared by every student
    written = {}
    for split, examples in splits.items():
        write_ids(data_dir / f"{split}.txt.ids", (word_ids(e.sentence) for e in examples), targets[split])
        written[f"{split}.txt.ids"] = len(examples)
    if transfer is not None:
        n = 0
        with atomic_path(f"{transfer}.ids") as tmp, open(tmp, "w", encoding="utf-8") as f:
            for row in read_transfer(transfer, len(labels)):
                f.write(transfer_ids_line(word_ids(row.sentence), row.source,
                                          gold_ids(row.gold, labels, multi, f"{transfer}:{row.lineno}"), row.scores))
                n += 1
        written[f"{transfer.name}.ids"] = n
    return {"embedding_path": str(embedding_path), "vocab_size": len(vocab), "written": written}


def gold_ids(gold: str | None, labels: list[str], multi_label: bool, where: str) -> int | list[int]:
    """A transfer-set line's gold label as id(s): -1 without one (or, single-label, one the
    training set lacks); multi-label, the ids of its comma-joined list, which must be valid."""
    index = {label: i for i, label in enumerate(labels)}
    if gold is None:
        return -1
    if not multi_label:
        return index.get(gold, -1)
    names = check_label_list(gold, where).split(",")
    unknown = [name for name in names if name not in index]
    if unknown:
        raise UserError(f"{where}: gold label {unknown[0]!r} is not in the training labels {labels}")
    return [index[name] for name in names]


def check_record(args: argparse.Namespace, data_dir: Path) -> None:
    """Refuse a run of the other kind than the data's record (`label.json`): the teacher's and
    the students' id files must agree on it. To change it, remove the record first."""
    recorded = recorded_multi_label(data_dir)
    if recorded is not None and recorded != args.multi_label:
        kind = {True: "multi-label (--multi_label)", False: "single-label"}
        raise UserError(f"{data_dir / LABEL_RECORD}: the data were preprocessed {kind[recorded]}, this run is "
                        f"{kind[args.multi_label]}; use the same setting (or remove {LABEL_RECORD} to start over)")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        config = load_config(args.config, args.set)
        check_flags(args, config)
        data_dir = Path(args.data_dir)
        if not data_dir.is_dir():
            raise UserError(f"{data_dir}: data directory not found (run `make data`)")
        if config.is_transformer and args.augmented:
            # the seed converted augmented.raw for its teacher here; label.py (and the seed's
            # evaluate.py --augmented, which runs it) tokenizes what it scores
            logger.info("[Augmented] nothing to convert for a teacher: evaluate.py --augmented / label.py tokenize "
                        "the sentences they score")
            return 0
        check_record(args, data_dir)
        start = time.time()
        if config.is_transformer:
            done = preprocess_transformer(args, config, data_dir)
        else:
            done = preprocess_glove(args, config, data_dir)
        for name, count in done["written"].items():
            logger.info("[Written] %s: %d lines", data_dir / name, count)
        record = TOKENIZATION_RECORD if config.is_transformer else "preprocess.glove.json"
        write_json(data_dir / record, {**done, "multi_label": args.multi_label, "args": vars(args),
                                       "config": config_to_dict(config),
                                       "seconds": round(time.time() - start, 2)})
        return 0

    return run_main(body, logger)


if __name__ == "__main__":
    sys.exit(main())
