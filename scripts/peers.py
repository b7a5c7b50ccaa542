"""Peers: what a user would pick instead of a distilled GloVe student, trained and timed on the
same data and with the same timing method as `scripts/bench.py` (batch 1, one thread, from the
raw sentence string to a predicted label).

    python scripts/peers.py                  # `make peers`: 1,000 timed test sentences
    QUICK=1 python scripts/peers.py          # 200 timed sentences, one pass
    python scripts/peers.py --render         # rewrite peers.md from an existing peers.json

- fastText supervised (binding `fasttext-community`): unigrams and bigrams, each with and
  without GloVe 50d initial vectors; `epoch` and `lr` tuned on valid.txt over a small grid,
  the best refitted with one thread (deterministic) and evaluated on test.txt.
- Model2Vec distilled from the teacher's sentence encoder, with Model2Vec's own classifier
  (`StaticModelForClassification`, early stopping on valid.txt).

Needs `pip install -r requirements-peers.txt`. Writes results/peers.json and results/peers.md.
"""
from __future__ import annotations

import os

# The timing is single-threaded, like bench.py's one-thread rows. These must be set before numpy
# and torch are imported (util imports both); training raises torch's count explicitly.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"  # the teacher is a local directory; never reach for the hub
os.environ["TOKENIZERS_PARALLELISM"] = "false"  # batch-1 calls; no thread pool, no fork warnings

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import logging  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Sequence  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from tqdm import tqdm  # noqa: E402

from util import (  # noqa: E402
    UserError, atomic_write_text, cpu_model, library_versions, read_json, require_file, run_main,
    write_json,
)

logger = logging.getLogger(__name__)

LABEL_PREFIX = "__label__"
FT_SETTINGS = [("unigrams", 1, False), ("unigrams + GloVe 50d", 1, True),
               ("bigrams", 2, False), ("bigrams + GloVe 50d", 2, True)]
VERSIONED = ("fasttext-community", "model2vec", "skeletoken", "lightning", "tokenizers")


def _fmt_tuned(tuned: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in tuned.items()) or "-"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def render_markdown(report: dict) -> str:
    """peers.md from a peers.json report: one row per record. Pure: imports nothing heavy."""
    m = report["machine"]
    lines = [f"# Peers on {m['cpu']} ({m['cores']} cores)", "",
             (f"Command: `{report['command']}`; data `{report['data_dir']}`, {report['test_sentences']} test "
              f"sentences for accuracy; batch 1 latency over the first {report['timed_sentences']} of them, one "
              f"thread, raw sentence to label, best of {report.get('repeats', '?')} per sentence after "
              f"{report.get('warmup', '?')} warm-up sentences."), "",
             "| peer | setting | tuned on valid | valid % | test % (correct/total) | batch 1 p50 ms | batch 1 p90 ms |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["records"]:
        lines.append(f"| {r['peer']} | {r['setting']} | {_fmt_tuned(r.get('tuned', {}))} | "
                     f"{_pct(r.get('valid_accuracy'))} | {_pct(r.get('test_accuracy'))} "
                     f"({r.get('correct')}/{r.get('total')}) | {r['ms_p50']:.4f} | {r['ms_p90']:.4f} |")
    return "\n".join(lines) + "\n"


def _versions() -> dict:
    versions = library_versions()
    for name in VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def measure(predict: Callable[[str], str], sentences: Sequence[str], args: argparse.Namespace) -> dict:
    """Batch-1 latency of `predict` on the timed sentences, one torch thread (bench.py's method)."""
    import torch

    from timing import summary, time_calls

    torch.set_num_threads(1)
    return summary(time_calls(predict, list(sentences[: args.n]), args.repeats, args.warmup))


def _accuracy(pred: Sequence[str], gold: Sequence[str]) -> tuple[float, int]:
    correct = sum(p == g for p, g in zip(pred, gold))
    return correct / len(gold), correct


def write_glove_vec(src: Path, dst: Path, keep: set[str]) -> int:
    """A fastText .vec (header `N DIM`) of the GloVe rows whose word is in `keep`. Words outside the
    data files are never looked up, so dropping them changes no prediction on these files and
    spares loading 400k rows per fit. Returns the dimension."""
    rows, dim = [], None
    with open(src, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            word, _, rest = line.rstrip("\n").partition(" ")
            n = rest.count(" ") + 1
            if dim is None:
                dim = n
            elif n != dim:
                raise UserError(f"{src}:{lineno}: {n} values, expected {dim} like line 1")
            if word in keep:
                rows.append(line if line.endswith("\n") else line + "\n")
    if not rows:
        raise UserError(f"{src}: no vector for any word of the data")
    with open(dst, "w", encoding="utf-8") as f:
        f.write(f"{len(rows)} {dim}\n")
        f.writelines(rows)
    return dim


def run_fasttext(data: dict, labels: list[str], args: argparse.Namespace, tmp: Path) -> list[dict]:
    """The four fastText settings: grid on valid (thread=2), refit of the best (thread=1), test."""
    try:
        import fasttext
    except ImportError as e:
        raise UserError(f"fastText binding missing ({e}); pip install -r requirements-peers.txt") from e
    # label ids, not label strings: fastText splits on whitespace and a label may hold spaces
    index = {label: i for i, label in enumerate(labels)}
    (tmp / "train.ft").write_text("".join(f"{LABEL_PREFIX}{index[e.label]} {e.sentence}\n" for e in data["train"]),
                                  encoding="utf-8")
    words = {w for split in data.values() for e in split for w in e.sentence.split()}
    emb = require_file(ROOT / args.embedding_path, "a GloVe text file")
    dim = write_glove_vec(emb, tmp / "glove.vec", words)

    def to_labels(model: Any, sentences: list[str]) -> list[str]:
        got = model.predict(sentences)[0]  # k=1: one label each (EOS is always a known word)
        return [labels[int(p[0][len(LABEL_PREFIX):])] for p in got]

    def predict_one(model: Any, sentence: str) -> str:
        # the call a user makes for one sentence: fastText splits the raw string itself
        return labels[int(model.predict(sentence)[0][0][len(LABEL_PREFIX):])]

    def fit(params: dict, epoch: int, lr: float, thread: int) -> Any:
        return fasttext.train_supervised(input=str(tmp / "train.ft"), epoch=epoch, lr=lr, thread=thread,
                                         seed=args.seed, verbose=0, **params)

    valid_s = [e.sentence for e in data["valid"]]
    valid_y = [e.label for e in data["valid"]]
    test_s = [e.sentence for e in data["test"]]
    test_y = [e.label for e in data["test"]]
    records = []
    for name, ngrams, glove in FT_SETTINGS:
        params = {"wordNgrams": ngrams, **({"dim": dim, "pretrainedVectors": str(tmp / "glove.vec")} if glove else {})}
        grid, start = [], time.perf_counter()
        points = [(ep, lr) for ep in args.epochs for lr in args.lrs]
        for ep, lr in tqdm(points, desc=f"fastText {name}: epoch x lr on valid"):
            try:
                acc = _accuracy(to_labels(fit(params, ep, lr, args.train_threads), valid_s), valid_y)[0]
            except RuntimeError as e:  # fastText raises "Encountered NaN." when training diverges
                logger.warning("[fastText] %s epoch=%d lr=%g diverged (%s); skipped", name, ep, lr, e)
                acc = None
            grid.append({"epoch": ep, "lr": lr, "valid_accuracy": acc})
        tuning_s = time.perf_counter() - start
        done = [g for g in grid if g["valid_accuracy"] is not None]
        if not done:
            raise UserError(f"fastText {name}: every grid point diverged; try smaller --lrs")
        best = max(done, key=lambda g: g["valid_accuracy"])  # first best on ties: the cheaper epoch
        start = time.perf_counter()
        try:  # one thread: fastText is then deterministic for a given seed
            model = fit(params, best["epoch"], best["lr"], 1)
        except RuntimeError as e:
            raise UserError(f"fastText {name}: the one-thread refit diverged ({e})") from e
        train_s = time.perf_counter() - start
        valid_acc = _accuracy(to_labels(model, valid_s), valid_y)[0]
        test_acc, correct = _accuracy(to_labels(model, test_s), test_y)
        timing = measure(lambda s, m=model: predict_one(m, s), test_s, args)
        logger.info("[fastText] %s: epoch=%d lr=%g valid %.4f test %.4f p50 %.4f ms", name, best["epoch"],
                    best["lr"], valid_acc, test_acc, timing["ms_p50"])
        records.append({"peer": "fasttext", "setting": name, "tuned": {"epoch": best["epoch"], "lr": best["lr"]},
                        "params": {k: v for k, v in params.items() if k != "pretrainedVectors"} | {"glove": glove},
                        "valid_accuracy": valid_acc, "tuning_valid_accuracy": best["valid_accuracy"],
                        "test_accuracy": test_acc, "correct": correct, "total": len(test_y), **timing,
                        "train_seconds": train_s, "tuning_seconds": tuning_s, "grid": grid})
    return records


def run_model2vec(data: dict, args: argparse.Namespace) -> dict:
    """Model2Vec distilled from the teacher, with its own classifier (early stopping on valid)."""
    import torch

    try:
        from model2vec.distill import distill
        from model2vec.train import StaticModelForClassification
    except ImportError as e:
        raise UserError(f"model2vec[distill,train] missing ({e}); pip install -r requirements-peers.txt") from e
    teacher = ROOT / args.teacher_model
    require_file(teacher / "config.json", "a Hugging Face model directory (the teacher)")
    # Lightning's INFO lines (tips, model summary) drown our log; its warnings still show.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning").setLevel(logging.WARNING)
    torch.set_num_threads(args.train_threads)
    start = time.perf_counter()
    static = distill(model_name=str(teacher), pca_dims=args.pca_dims, device="cpu")
    distill_s = time.perf_counter() - start
    clf = StaticModelForClassification.from_static_model(model=static)  # fit() sizes the head
    start = time.perf_counter()
    clf.fit([e.sentence for e in data["train"]], [e.label for e in data["train"]],
            X_val=[e.sentence for e in data["valid"]], y_val=[e.label for e in data["valid"]],
            device="cpu", random_seed=args.seed)
    fit_s = time.perf_counter() - start
    valid_acc = _accuracy(list(clf.predict([e.sentence for e in data["valid"]])), [e.label for e in data["valid"]])[0]
    test_s = [e.sentence for e in data["test"]]
    test_acc, correct = _accuracy(list(clf.predict(test_s)), [e.label for e in data["test"]])
    timing = measure(lambda s: clf.predict([s])[0], test_s, args)
    logger.info("[Model2Vec] valid %.4f test %.4f p50 %.4f ms", valid_acc, test_acc, timing["ms_p50"])
    setting = f"{teacher.name}, {static.embedding.shape[1]}d + StaticModelForClassification"
    return {"peer": "model2vec", "setting": setting,
            "classifier": "StaticModelForClassification", "tuned": {"early_stopping": "valid accuracy, patience 5"},
            "valid_accuracy": valid_acc, "test_accuracy": test_acc, "correct": correct, "total": len(test_s),
            **timing, "train_seconds": distill_s + fit_s, "distill_seconds": distill_s, "fit_seconds": fit_s,
            "vocab_size": int(static.embedding.shape[0])}


def _numbers(kind: type) -> Callable[[str], list]:
    """An argparse type for a comma-separated list of positive `kind` values."""
    def parse(text: str) -> list:
        try:
            values = [kind(x) for x in text.split(",") if x]
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from e
        if not values or any(v <= 0 for v in values):
            raise argparse.ArgumentTypeError(f"expected positive {kind.__name__}s, got {text!r}")
        return values
    return parse


def main(argv: list[str] | None = None) -> int:
    """Train, evaluate and time the peers; write peers.json and peers.md (or only re-render)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_dir", default="data/sst2")
    p.add_argument("--out_dir", default="results")
    p.add_argument("--teacher_model", default="embeddings/all-MiniLM-L6-v2")
    p.add_argument("--embedding_path", default="embeddings/glove.6B.50d.txt")
    p.add_argument("--quick", action="store_true", default=bool(os.environ.get("QUICK")))
    p.add_argument("--n", type=int, default=0, help="timed test sentences (default 1000; quick: 200)")
    p.add_argument("--repeats", type=int, default=0, help="timings per sentence, best kept (default 3; quick: 1)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--epochs", type=_numbers(int), default=[2, 5, 10, 25], help="fastText grid (comma-separated)")
    p.add_argument("--lrs", type=_numbers(float), default=[0.05, 0.1, 0.25, 0.5, 1.0], help="fastText grid")
    p.add_argument("--train_threads", type=int, default=2)
    p.add_argument("--pca_dims", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--peers", default="fasttext,model2vec")
    p.add_argument("--render", action="store_true", help="rewrite peers.md from an existing peers.json")
    args = p.parse_args(argv)
    args.n = args.n or (200 if args.quick else 1000)
    args.repeats = args.repeats or (1 if args.quick else 3)
    out_dir = ROOT / args.out_dir

    def body() -> int:
        if args.render:
            report = read_json(out_dir / "peers.json")
            atomic_write_text(out_dir / "peers.md", render_markdown(report))
            return 0
        from dataset import label_ids, read_examples

        peers = [x for x in args.peers.split(",") if x]
        unknown = set(peers) - {"fasttext", "model2vec"}
        if unknown:
            raise UserError(f"--peers: unknown {sorted(unknown)}; expected fasttext and/or model2vec")
        start = time.perf_counter()
        data_dir = ROOT / args.data_dir
        data = {s: read_examples(data_dir / f"{s}.txt") for s in ("train", "valid", "test")}
        labels = sorted({e.label for e in data["train"]})
        for split in ("valid", "test"):  # a label the training set lacks is a UserError naming its line
            label_ids(data[split], labels, data_dir / f"{split}.txt")
        records = []
        if "fasttext" in peers:
            with tempfile.TemporaryDirectory(prefix="peers-ft-") as tmp:
                records += run_fasttext(data, labels, args, Path(tmp))
        if "model2vec" in peers:
            records.append(run_model2vec(data, args))
        command = ("QUICK=1 " if os.environ.get("QUICK") else "") + shlex.join(["python", "scripts/peers.py", *argv])
        report = {"command": command, "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
                  "versions": _versions(), "data_dir": args.data_dir, "labels": labels,
                  "test_sentences": len(data["test"]), "timed_sentences": min(args.n, len(data["test"])),
                  "repeats": args.repeats, "warmup": args.warmup,
                  "threads": {"timing": 1, "training": args.train_threads},
                  "wall_seconds": time.perf_counter() - start, "records": records}
        write_json(out_dir / "peers.json", report)
        atomic_write_text(out_dir / "peers.md", render_markdown(report))
        print((out_dir / "peers.md").read_text())
        return 0

    return run_main(body, logger)


if __name__ == "__main__":
    sys.exit(main())
