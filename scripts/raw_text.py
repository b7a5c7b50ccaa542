"""Does a GloVe student lose accuracy on raw text? SST-2 comes tokenized (`it 's`, `does n't`,
`sweet ,`); users' text and what predict.py receives in production is raw (`it's`, `doesn't`,
`sweet,`). This script writes a raw-text copy of SST-2 (punctuation and clitics attached, as
people write), trains and tests the same student on both copies with each word tokenizer,
and writes results/raw_text.md.

    python scripts/raw_text.py              # `make raw-text`: the CNN on gold labels, 3 epochs
    python scripts/raw_text.py --student bilstm --epochs 5

Each run is preprocess.py (`--set tokenizer=...`), train.py and evaluate.py, as pipeline
steps (rerun only when their inputs change), in data/sst2-<copy>-<tokenizer>/.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config import STUDENT_KINDS  # noqa: E402
from dataset import read_examples, write_examples  # noqa: E402
from pipeline import SPLITS, Pipeline, Step  # noqa: E402
from util import atomic_write_text, cpu_model, read_json, run_main  # noqa: E402

logger = logging.getLogger(__name__)

# How people write what PTB-style tokenization split apart.
ATTACH_LEFT = {",", ".", "!", "?", ";", ":", "%", ")", "]", "}", "...", "''", "n't", "'s", "'re", "'ve", "'d", "'ll",
               "'m", "'"}
ATTACH_RIGHT = {"(", "[", "{", "``", "`", "$"}
QUOTES = {"``": '"', "''": '"', "`": "'"}
RUNS = (("tokenized", "whitespace"), ("tokenized", "glove"), ("raw", "whitespace"), ("raw", "glove"),
        ("raw", "spacy"))


def detokenize(sentence: str) -> str:
    """`it 's a `` fine '' film , is n't it ?` -> `it's a "fine" film, isn't it?`"""
    out = ""
    glue_next = True
    for token in sentence.split():
        text = QUOTES.get(token, token)
        if not (glue_next or token in ATTACH_LEFT):
            out += " "
        out += text
        glue_next = token in ATTACH_RIGHT
    return out


def write_raw_copy(source: Path, target: Path) -> None:
    """The three splits with their sentences detokenized (written only when they change)."""
    for split in SPLITS:
        examples = read_examples(source / f"{split}.txt")
        text = "".join(f"{detokenize(e.sentence)}\t{e.label}\n" for e in examples)
        path = target / f"{split}.txt"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            write_examples(path, ((detokenize(e.sentence), e.label) for e in examples))


def run_steps(data: Path, config: str, tokenizer: str, args: argparse.Namespace, out: Path) -> list[Step]:
    """Preprocess, train on gold labels, evaluate: one student with one word tokenizer."""
    ckpt = out / f"{args.student}-{data.name}.pt"
    over = f"--set=tokenizer={tokenizer}"
    return [
        Step(f"preprocess {data.name}", ["preprocess.py", f"--config={config}", f"--data_dir={data}", over,
                                         f"--embedding_path={args.embedding_path}"],
             [Path(config), *[data / f"{s}.txt" for s in SPLITS]], [data / "train.txt.ids", data / "vocab.txt"]),
        Step(f"train {data.name}", ["train.py", f"--config={config}", f"--data_dir={data}", over,
                                    f"--save_path={ckpt}", f"--lr={args.lr}", f"--epoch={args.epochs}",
                                    "--batch_size=128", "--use_transformers_optimizer", "--warmup_epoch=0",
                                    "--weight_decay=0.0", f"--log_dir={out / 'runs' / data.name}"],
             [data / "train.txt.ids", data / "valid.txt.ids"], [Path(f"{ckpt}.train_results.json")]),
        Step(f"evaluate {data.name}", ["evaluate.py", f"--config={config}", f"--data_dir={data}",
                                       f"--model_path={ckpt}", "--num_threads=1"],
             [ckpt, data / "test.txt"], [Path(f"{ckpt}.results.json")]),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_dir", default="data/sst2", help="the tokenized SST-2 (`make data`)")
    p.add_argument("--student", choices=sorted(STUDENT_KINDS), default="cnn")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--embedding_path", default="embeddings/glove.6B.50d.txt")
    p.add_argument("--out_dir", default="checkpoints/raw-text")
    p.add_argument("--results", default="results/raw_text.md")
    args = p.parse_args(argv)

    def body() -> int:
        source, out = Path(args.data_dir), Path(args.out_dir)
        config = STUDENT_KINDS[args.student].config_path
        pipeline = Pipeline(out / "pipeline.json", sys.executable, ROOT)
        rows = []
        for copy, tokenizer in RUNS:
            data = source.parent / f"{source.name}-{copy}-{tokenizer}"
            data.mkdir(parents=True, exist_ok=True)
            if copy == "raw":
                write_raw_copy(source, data)
            else:
                for split in SPLITS:
                    text = (source / f"{split}.txt").read_text(encoding="utf-8")
                    if not (data / f"{split}.txt").exists() or (data / f"{split}.txt").read_text() != text:
                        atomic_write_text(data / f"{split}.txt", text)
            for step in run_steps(data, config, tokenizer, args, out):
                pipeline.run(step)
            res = read_json(out / f"{args.student}-{data.name}.pt.results.json")
            vocab = read_json(data / "preprocess.glove.json")["vocab_size"]
            rows.append(f"| {copy} | {tokenizer} | {100 * res['accuracy']:.2f} ({res['correct']}/{res['total']}) | "
                        f"{vocab:,} |")
        example = next(e.sentence for e in read_examples(source / "test.txt") if " n't " in e.sentence
                       and " , " in e.sentence)
        lines = [f"# Raw text against tokenized text: {STUDENT_KINDS[args.student].title}, gold labels", "",
                 f"`python scripts/raw_text.py --student {args.student} --epochs {args.epochs}` on {cpu_model()}: "
                 f"the student trained {args.epochs} epochs (lr {args.lr:g}) on each copy of SST-2 and tested on "
                 f"the same copy's test.txt. The raw copy joins the PTB tokens as people write them: "
                 f"`{example}` becomes `{detokenize(example)}`.", "",
                 "| copy | word tokenizer | test accuracy % | vocabulary |", "| --- | --- | --- | --- |",
                 *rows, ""]
        atomic_write_text(Path(args.results), "\n".join(lines))
        print(Path(args.results).read_text(encoding="utf-8"))
        return 0

    return run_main(body, logger)


if __name__ == "__main__":
    sys.exit(main())
