"""Text to tokens: the GloVe-style word split, the spaCy split, lower-casing around special
tokens, the teacher tokenizers' mask token, and a student seeing raw text exactly as it saw
its tokenized training text."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import predict
import preprocess
import train
from conftest import write_glove, write_student_config
from dataset import read_ids
from teachers import load_hf_tokenizer, tokenizer_lowercases
from inference import Predictor
from runtime import SubwordIds, WordTokenizer, glove_split, lowercase_outside

GLOVE_CASES = {
    "moore's": ["moore", "'s"],
    "doesn't": ["does", "n't"],
    "can't": ["ca", "n't"],
    "sweet,": ["sweet", ","],
    "up!": ["up", "!"],
    "mr.": ["mr."],
    "u.s.": ["u.s."],
    "1,000": ["1,000"],
    "well-made": ["well-made"],
    "[MASK]": ["[MASK]"],
    "<mask>": ["<mask>"],
    "the end.": ["the", "end", "."],
    "wait...": ["wait", "..."],
    '"fine" film, \'truth\'': ["``", "fine", "''", "film", ",", "`", "truth", "'"],
    "a [MASK] film, isn't it?": ["a", "[MASK]", "film", ",", "is", "n't", "it", "?"],
    "mr. moore's 1,000 well-made films in the u.s.!": ["mr.", "moore", "'s", "1,000", "well-made", "films", "in", "the",
                                                      "u.s.", "!"],
}


@pytest.mark.parametrize("text", sorted(GLOVE_CASES))
def test_glove_split(text):
    tokens = glove_split(text)
    assert tokens == GLOVE_CASES[text]
    # idempotent: already tokenized text is left as it is
    assert glove_split(" ".join(tokens)) == tokens


def test_glove_split_leaves_tokenized_text_alone():
    for sentence in ("it 's a charming and often affecting journey .", "the film does n't work , sadly ...",
                     "`` a '' -- or maybe not ( really ) ; ca n't say",
                     "or doing last year 's taxes with your ex-wife ."):
        assert glove_split(sentence) == sentence.split()


def test_word_tokenizers():
    assert WordTokenizer("glove")("Moore's Film, Isn't It?") == ["moore", "'s", "film", ",", "is", "n't", "it", "?"]
    assert WordTokenizer("glove", lowercase=False)("Moore's") == ["Moore", "'s"]
    assert WordTokenizer("whitespace")("Moore's Film,  isn't") == ["moore's", "film,", "isn't"]
    spacy = WordTokenizer("spacy", lowercase=False)
    # spaCy keeps the special tokens whole, where its own rules would cut [MASK] apart
    assert spacy("a [MASK] film, isn't it? <mask>") == ["a", "[MASK]", "film", ",", "is", "n't", "it", "?", "<mask>"]
    assert spacy("[MASK][MASK] good") == ["[MASK]", "[MASK]", "good"]
    assert WordTokenizer("spacy")("A [MASK] Film!") == ["a", "[mask]", "film", "!"]
    with pytest.raises(ValueError, match="unknown word tokenizer 'nltk'"):
        WordTokenizer("nltk")


def test_lowercase_outside_keeps_special_tokens():
    assert lowercase_outside("A [MASK] Film [SEP]", ["[MASK]", "[SEP]"]) == "a [MASK] film [SEP]"
    assert lowercase_outside("The <mask> IS <s>", ["<mask>", "<s>"]) == "the <mask> is <s>"
    assert lowercase_outside("No Specials", []) == "no specials"


@pytest.mark.parametrize("family", ["bert", "roberta", "electra"])
def test_mask_token_encodes_as_the_mask_id(family, tiny_transformer):
    tok = load_hf_tokenizer(tiny_transformer(family))
    mask = tok.mask_token
    assert tokenizer_lowercases(tok) is (family != "roberta")
    for lowercase in (False, True):
        encoder = SubwordIds(tok.backend_tokenizer, lowercase, n_ctx=32, pad_id=tok.pad_token_id)
        ids = encoder.encode_batch([f"A Good {mask} Film", f"{mask} {mask} boring", mask])
        for row, masks in zip(ids, (1, 2, 1)):
            assert row.count(tok.mask_token_id) == masks, (lowercase, tok.convert_ids_to_tokens(row))
            pieces = tok.convert_ids_to_tokens(row)
            # no mask cut into pieces such as `[`, `mask`, `]`
            assert [p for p in pieces if "mask" in p.lower() and p != mask] == [], pieces
    # lower-casing applies outside the special tokens
    lowered = SubwordIds(tok.backend_tokenizer, True, 32, tok.pad_token_id).encode(f"A Good {mask} Film")
    assert lowered == SubwordIds(tok.backend_tokenizer, False, 32, tok.pad_token_id).encode(f"a good {mask} film")
    # the same ids as the library's own tokenizer gives the lower-cased text
    assert lowered == tok(f"a good {mask} film")["input_ids"]


def test_student_sees_raw_text_as_its_tokenized_training_text(data_dir, tmp_path, capsys):
    """Trained on SST-2-style tokenized text with the default (glove) tokenizer, a student maps
    the raw sentence a user types to the ids of the tokenized training sentence."""
    tokenized, raw = "moore 's film is n't bad !", "Moore's film isn't bad!"
    with open(data_dir / "train.txt", "a") as f:
        f.write(f"{tokenized}\t0\n")
    glove = write_glove(tmp_path / "glove.txt", extra=("moore", "'s", "n't", "!"))
    config = write_student_config(tmp_path, "cnn")
    assert "tokenizer" not in json.loads(config.read_text())  # the default
    save = tmp_path / "cnn.pt"
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}", f"--embedding_path={glove}"]) == 0
    assert train.main([f"--config={config}", f"--data_dir={data_dir}", f"--save_path={save}", "--epoch=1",
                       "--batch_size=32", "--device=cpu", f"--log_dir={tmp_path / 'runs'}"]) == 0
    vocab = (data_dir / "vocab.txt").read_text().split("\n")[:-1]
    train_ids = read_ids(data_dir / "train.txt.ids", 2)
    trained = train_ids.seqs([len(train_ids) - 1])[0].tolist()
    assert [vocab[i] for i in trained] == tokenized.split()  # every token known: no <unk>
    predictor = Predictor.load(save)
    assert predictor.encode_batch([raw, tokenized, raw.upper()]) == [trained, trained, trained]
    # and predict.py gives the raw sentence the tokenized sentence's prediction
    inputs = tmp_path / "in.txt"
    inputs.write_text(f"{raw}\n{tokenized}\n")
    capsys.readouterr()
    assert predict.main([f"--model_path={save}", f"--input={inputs}", "--device=cpu"]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first == second
    # the deployment bundle tokenizes the same way
    from runtime import Bundle

    bundle = Bundle.load(predictor.export_bundle(tmp_path / "bundle"))
    assert bundle.encode(raw) == trained
    assert (tmp_path / "bundle" / "runtime.py").read_bytes() == (Path(predict.__file__).parent /
                                                                 "runtime.py").read_bytes()


def test_ngram_features_match_the_hash_written_out():
    """The bigram comprehension gives the ids of the hash as documented: h = first id, then
    h = (h * M + next) mod P, bucket h mod buckets, after the word ids (2- to 4-grams)."""
    import random

    from runtime import NGRAM_MODULUS, NGRAM_MULTIPLIER, ngram_features

    def written_out(ids, ngrams, buckets, offset):
        out = list(ids)
        for n in range(2, ngrams + 1):
            for start in range(len(ids) - n + 1):
                h = ids[start]
                for i in ids[start + 1:start + n]:
                    h = (h * NGRAM_MULTIPLIER + i) % NGRAM_MODULUS
                out.append(offset + h % buckets)
        return out

    rng = random.Random(0)
    for _ in range(300):
        ids = [rng.randrange(400_000) for _ in range(rng.randrange(0, 12))]
        for ngrams in (1, 2, 3, 4):
            assert ngram_features(ids, ngrams, 2_000_003, 400_000) == written_out(ids, ngrams, 2_000_003, 400_000)
