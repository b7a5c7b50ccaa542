"""Text to tokens, outside torch: the GloVe students' word tokenizers, and lower-casing that
leaves a transformer tokenizer's special tokens alone.

Only the standard library is imported at module level (spaCy only for the `spacy` word
tokenizer, when it is used), so the deployment runtime (`runtime.py`) needs no torch.

Word tokenizers (`tokenizer` in a GloVe student's config):

- `glove` (the default): splits punctuation and clitics the way GloVe's training text was
  split (Stanford's PTB-style tokenizer): `moore's` -> `moore 's`, `doesn't` -> `does n't`,
  `can't` -> `ca n't`, `sweet,` -> `sweet ,`, `up!` -> `up !`; it keeps hyphenated words
  (`well-made`), numbers (`1,000`, `3.5`), abbreviations (`mr.`, `u.s.`), runs of one
  punctuation mark (`...`, `--`, ``` `` ```) and bracketed special tokens (`[MASK]`,
  `<mask>`) whole, and writes quotes as PTB does (`"fine"` -> ``` `` fine '' ```). Text that
  is already tokenized this way (SST-2) comes out nearly unchanged.
- `whitespace`: split on white space only, for pre-tokenized data.
- `spacy`: spaCy's English rule-based tokenizer (`spacy.blank("en")`), special tokens kept.
"""
from __future__ import annotations

import re
from typing import Callable, Iterable, Sequence

WORD_TOKENIZERS = ("glove", "whitespace", "spacy")

# Bracketed special tokens that augmentation inserts ([MASK], <mask>): kept whole.
_SPECIAL = r"\[[A-Za-z_]+\]|<[A-Za-z_]+>"
# Abbreviations whose period stays attached (GloVe has `mr.`, `etc.`, `vs.`).
_ABBREVIATIONS = ("mr", "mrs", "ms", "dr", "jr", "sr", "st", "vs", "prof", "mt", "messrs", "gen", "sen", "rep",
                  "gov", "lt", "col", "sgt", "capt", "inc", "ltd", "corp", "etc")
# A letter that does not start a trailing `n't` (so `doesn't` splits as `does` + `n't`).
_LETTER = r"(?:(?!n't\b)[^\W_])"
_GLOVE_PATTERN = re.compile(
    "|".join([
        _SPECIAL,
        r"https?://\S+",
        r"(?:[^\W\d_]\.){2,}",  # u.s., e.g., p.m.
        r"[^\W\d_]\.(?=\s|$)",  # an initial: john f. kennedy
        r"(?:" + "|".join(_ABBREVIATIONS) + r")\.(?=\s|$)",
        r"\d+(?:[.,:]\d+)+",  # 1,000  3.5  10:30
        # a word: letters and digits, inner hyphens and slashes, inner apostrophes that do not start a
        # clitic (o'clock), stopping before a trailing n't
        _LETTER + r"+(?:[-/]" + _LETTER + r"+)*(?:'(?!(?:s|re|ve|d|ll|m)\b)" + _LETTER + r"+)*",
        r"'(?:em|n'?|\d+s)(?=\s|$)",  # 'em, rock 'n' roll, the '60s
        r"n't\b|'(?:s|re|ve|d|ll|m)\b",  # clitics
        r"([^\w\s])\1*",  # a run of one punctuation mark: ... -- `` ''
        r"\S",  # anything else, one character at a time
    ]),
    re.IGNORECASE,
)
_SPECIAL_PATTERN = re.compile(f"({_SPECIAL})")


def glove_split(text: str) -> list[str]:
    """Split `text` into GloVe-style tokens (see the module docstring)."""
    tokens: list[str] = []
    for chunk in text.split():
        # No rule splits a run of letters and digits: skip the pattern for those (most
        # words), which makes this about three times faster.
        if chunk.isalnum():
            tokens.append(chunk)
            continue
        pieces = [m.group(0) for m in _GLOVE_PATTERN.finditer(chunk)]
        for i, piece in enumerate(pieces):
            # PTB (and so GloVe) writes quotes as `` '' and ` ': opening at the start of a chunk
            if piece == '"':
                pieces[i] = "``" if i == 0 and len(pieces) > 1 else "''"
            elif piece == "'" and i == 0 and len(pieces) > 1:
                pieces[i] = "`"
        tokens.extend(pieces)
    return tokens


def _spacy_split() -> Callable[[str], list[str]]:
    try:
        import spacy
    except ImportError as e:  # the caller turns this into a user-facing message
        raise ImportError("the 'spacy' word tokenizer needs spaCy (pip install spacy)") from e
    tokenizer = spacy.blank("en").tokenizer

    def split(text: str) -> list[str]:
        tokens: list[str] = []
        for i, part in enumerate(_SPECIAL_PATTERN.split(text)):
            if i % 2:  # a special token, kept whole
                tokens.append(part)
            elif part.strip():
                tokens.extend(t.text for t in tokenizer(part) if not t.is_space)
        return tokens

    return split


class WordTokenizer:
    """Sentence -> word tokens for a GloVe student: optional lower-casing, then `kind`'s split."""

    def __init__(self, kind: str = "glove", lowercase: bool = True):
        if kind not in WORD_TOKENIZERS:
            raise ValueError(f"unknown word tokenizer {kind!r}; expected one of {list(WORD_TOKENIZERS)}")
        self.kind, self.lowercase = kind, lowercase
        self._split: Callable[[str], list[str]] = {
            "glove": glove_split, "whitespace": str.split}.get(kind) or _spacy_split()

    def __call__(self, sentence: str) -> list[str]:
        return self._split(sentence.lower() if self.lowercase else sentence)

    def many(self, sentences: Iterable[str]) -> list[list[str]]:
        """Tokenize each sentence."""
        return [self(s) for s in sentences]


def lowercase_outside(text: str, keep: Sequence[str]) -> str:
    """Lower-case `text` except inside the strings in `keep` (a tokenizer's special tokens, such
    as `[MASK]`, which the tokenizer only recognises in their own case)."""
    if not keep:
        return text.lower()
    pattern = "(" + "|".join(re.escape(t) for t in sorted(set(keep), key=len, reverse=True)) + ")"
    parts = re.split(pattern, text)
    # re.split with one group: odd positions are the kept tokens
    return "".join(part if i % 2 else part.lower() for i, part in enumerate(parts))
