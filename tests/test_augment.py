"""Tests for augment_data.py: draw statistics, budget, n-grams, dedupe, labels, determinism."""
from __future__ import annotations

import pathlib
import random
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import pytest

import augment_data
from augment import AugmentParams, augment_one, augment_sentence, change_budget
from dataset import read_examples

MASK = "[MASK]"

SENTENCES = [
    ("it 's a charming and often affecting journey .", "1"),
    ("unflinchingly bleak and desperate", "0"),
    ("allows us to hope that nolan is poised to embark a major career as a commercial yet inventive filmmaker .", "1"),
    ("the acting , costumes , music , cinematography and sound are all astounding given the production 's austere locales .", "1"),
    ("it 's slow -- very , very slow .", "0"),
    ("good", "1"),
    ("a sometimes tedious film .", "0"),
    ("or doing last year 's taxes with your ex-wife .", "0"),
]


def write_fixture(path: pathlib.Path, rows=SENTENCES) -> pathlib.Path:
    path.write_text("".join(f"{s}\t{label}\n" for s, label in rows), encoding="utf-8")
    return path


def run_cli(tmp_path: pathlib.Path, name: str, *extra: str, analyzer: str = "none") -> list[str]:
    inp = tmp_path / "in.txt"
    if not inp.exists():
        write_fixture(inp)
    out = tmp_path / name
    rc = augment_data.main(["--input", str(inp), "--output", str(out), "--analyzer", analyzer, *extra])
    assert rc == 0
    return out.read_text(encoding="utf-8").splitlines()


def test_mask_rate_respects_half_cap():
    tokens = [f"w{i}" for i in range(10)]
    params = AugmentParams(p_mask=0.5, p_pos=0.0, p_ng=0.0)
    rng = random.Random(0)
    draws = 4000
    counts = []
    for _ in range(draws):
        out = augment_sentence(tokens, None, {}, rng, params)
        assert len(out) == len(tokens)
        n_masked = sum(t == MASK for t in out)
        assert n_masked <= change_budget(len(tokens)) == 5
        counts.append(n_masked)
    # Expected count: E[min(Binomial-prefix masks, 5)] computed by simulating the exact rule.
    sim = random.Random(1)
    expected = 0
    for _ in range(draws):
        used = 0
        for _ in range(10):
            if sim.random() < 0.5 and used < 5:
                used += 1
        expected += used
    assert abs(sum(counts) / draws - expected / draws) < 0.1
    # Unmasked tokens stay in place.
    assert all(o in (MASK, t) for o, t in zip(out, tokens))


def test_mask_rate_small_p_close_to_p():
    tokens = [f"w{i}" for i in range(20)]
    params = AugmentParams(p_mask=0.1, p_pos=0.0, p_ng=0.0)
    rng = random.Random(3)
    total = sum(sum(t == MASK for t in augment_sentence(tokens, None, {}, rng, params)) for _ in range(3000))
    assert abs(total / (3000 * 20) - 0.1) < 0.01


def test_same_pos_replacement():
    tokens = ["the", "cat", "sat", "on", "the", "mat"]
    tags = ["DT", "NN", "VBD", "IN", "DT", "NN"]
    pos_vocab = {"DT": ["a", "the"], "NN": ["cat", "dog", "mat", "rug"], "VBD": ["sat"], "IN": ["in", "on", "under"]}
    params = AugmentParams(p_mask=0.0, p_pos=1.0, p_ng=0.0)
    rng = random.Random(0)
    replaced_seen = set()
    for _ in range(500):
        out = augment_sentence(tokens, tags, pos_vocab, rng, params)
        changed = [i for i, (o, t) in enumerate(zip(out, tokens)) if o != t]
        # "sat" is the only VBD word, so it can never change; the cap is 3 of 6.
        assert out[2] == "sat"
        assert len(changed) == 3
        for i in changed:
            assert out[i] in pos_vocab[tags[i]] and out[i] != tokens[i]
            replaced_seen.add((tags[i], out[i]))
    assert {("NN", "dog"), ("NN", "rug"), ("DT", "a")} <= replaced_seen


def test_no_tags_means_no_swaps():
    tokens = "a b c d e f".split()
    params = AugmentParams(p_mask=0.0, p_pos=1.0, p_ng=0.0)
    out = augment_sentence(tokens, None, {"X": ["z"]}, random.Random(0), params)
    assert out == tokens


def test_ngram_span_mask_mode():
    tokens = [f"w{i}" for i in range(12)]
    params = AugmentParams(p_mask=0.0, p_pos=0.0, p_ng=1.0, max_ng=5)
    rng = random.Random(0)
    lengths = set()
    for _ in range(1000):
        out = augment_sentence(tokens, None, {}, rng, params)
        idx = [i for i, t in enumerate(out) if t == MASK]
        assert idx, "p_ng=1 must mask a span"
        assert idx == list(range(idx[0], idx[-1] + 1)), "span must be contiguous"
        assert len(idx) <= 5 and len(idx) <= change_budget(len(tokens))
        assert all(out[i] == tokens[i] for i in range(len(tokens)) if i not in idx)
        lengths.add(len(idx))
    assert lengths == {1, 2, 3, 4, 5}


def test_ngram_span_shrinks_to_budget():
    tokens = [f"w{i}" for i in range(4)]  # budget 2
    params = AugmentParams(p_mask=0.0, p_pos=0.0, p_ng=1.0, max_ng=5)
    rng = random.Random(0)
    for _ in range(300):
        out = augment_sentence(tokens, None, {}, rng, params)
        assert 1 <= sum(t == MASK for t in out) <= 2


def test_half_cap_exact_with_p_mask_one():
    for n in range(1, 12):
        tokens = [f"w{i}" for i in range(n)]
        params = AugmentParams(p_mask=1.0, p_pos=0.0, p_ng=1.0)
        out = augment_sentence(tokens, None, {}, random.Random(n), params)
        assert sum(t == MASK for t in out) == n // 2
        # The first n//2 tokens are masked (budget used in order), the span adds nothing.
        assert out[: n // 2] == [MASK] * (n // 2)


def test_one_token_sentence_never_changes():
    params = AugmentParams(p_mask=1.0, p_pos=0.0, p_ng=1.0, n_iter=10)
    assert augment_one(0, ["good"], None, {}, params, seed=1) == ["good"]


def test_sample_mode_keeps_only_span():
    tokens = [f"w{i}" for i in range(10)]
    params = AugmentParams(p_mask=0.0, p_pos=0.0, p_ng=1.0, max_ng=4, ngram_mode="sample")
    rng = random.Random(0)
    for _ in range(300):
        out = augment_sentence(tokens, None, {}, rng, params)
        assert 1 <= len(out) <= 4
        start = tokens.index(out[0])
        assert out == tokens[start : start + len(out)]


def test_sample_mode_cli(tmp_path):
    lines = run_cli(tmp_path, "out.txt", "--ngram_mode", "sample", "--p_ng", "1", "--p_mask", "0", "--p_pos", "0")
    sentences = [line.split("\t")[0] for line in lines]
    for s, _ in SENTENCES:
        assert s in sentences
    originals = {s for s, _ in SENTENCES}
    # Every non-original line is a contiguous piece of some input sentence, at most 5 tokens.
    for s in sentences:
        if s not in originals:
            assert len(s.split()) <= 5
            assert any(f" {s} " in f" {o} " for o in originals)


def test_augment_one_original_first_and_unique():
    tokens = "it 's a charming and often affecting journey .".split()
    params = AugmentParams(n_iter=30)
    out = augment_one(7, tokens, None, {}, params, seed=42)
    assert out[0] == " ".join(tokens)
    assert len(out) == len(set(out))
    assert out == augment_one(7, tokens, None, {}, params, seed=42)
    assert out != augment_one(8, tokens, None, {}, params, seed=42)


def test_cli_dedupe_and_originals_kept(tmp_path):
    rows = SENTENCES + [SENTENCES[0]]  # a repeated input sentence is written once
    write_fixture(tmp_path / "in.txt", rows)
    lines = run_cli(tmp_path, "out.txt", "--n_iter", "30", "--p_mask", "0.3")
    sentences = [line.split("\t")[0] for line in lines]
    assert len(sentences) == len(set(sentences))
    assert len(lines) > len(SENTENCES)
    for s, _ in SENTENCES:
        assert s in sentences
    # The original comes first for each sentence, in input order.
    orig_positions = [sentences.index(s) for s, _ in SENTENCES]
    assert orig_positions == sorted(orig_positions) and orig_positions[0] == 0
    assert all(line.count("\t") == 1 for line in lines)


def test_labels_dummy_and_preserved(tmp_path):
    lines = run_cli(tmp_path, "dummy.txt", "--dummy_label", "-1")
    assert {line.split("\t")[1] for line in lines} == {"-1"}
    lines = run_cli(tmp_path, "kept.txt", "--preserve_label")
    gold = dict(SENTENCES)
    current = None
    for line in lines:
        s, label = line.split("\t")
        if s in gold:
            current = gold[s]
        assert label == current
    default = run_cli(tmp_path, "default.txt")
    assert {line.split("\t")[1] for line in default} == {"0"}


def test_no_augment_and_lower(tmp_path):
    rows = [("Hello   World ", "1"), ("Foo\u00a0Bar", "0")]
    write_fixture(tmp_path / "in.txt", rows)
    lines = run_cli(tmp_path, "out.txt", "--no_augment", "--lowercase", "--preserve_label")
    assert lines == ["hello world\t1", "foo bar\t0"]


def test_parallel_determinism_and_seed(tmp_path):
    base = ["--n_iter", "10", "--p_mask", "0.2", "--seed", "7"]
    serial = run_cli(tmp_path, "serial.txt", *base)
    par1 = run_cli(tmp_path, "par1.txt", *base, "--parallel", "--num_workers", "1")
    par2 = run_cli(tmp_path, "par2.txt", *base, "--parallel", "--num_workers", "2")
    b = lambda name: (tmp_path / name).read_bytes()
    assert b("serial.txt") == b("par1.txt") == b("par2.txt")
    assert serial == par1 == par2
    other = run_cli(tmp_path, "other.txt", "--n_iter", "10", "--p_mask", "0.2", "--seed", "8")
    assert other != serial
    assert (tmp_path / "serial.txt.config.json").exists()


@pytest.mark.parametrize(
    "content, lineno",
    [
        (b"good movie\t1\nno tab here\n", 2),
        (b"a\t1\tb\tc\n", 1),
        (b"a\tb\t1\nc\t1\n", 2),
        (b"good\t1\n\t0\n", 2),
        (b"good\t1\nbad \xff bytes\t0\n", 2),
    ],
)
def test_malformed_input_exit_1_no_output(tmp_path, capsys, content, lineno):
    inp = tmp_path / "bad.txt"
    inp.write_bytes(content)
    out = tmp_path / "out.txt"
    rc = augment_data.main(["--input", str(inp), "--output", str(out), "--analyzer", "none"])
    assert rc == 1
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [inp]  # no temp file left either
    err = capsys.readouterr().err
    assert f"ERROR:augment_data:{inp}:{lineno}:" in err
    assert err.count("\n") == 1  # one line, no traceback


def test_missing_and_empty_input(tmp_path):
    out = tmp_path / "out.txt"
    assert augment_data.main(["--input", str(tmp_path / "nope.txt"), "--output", str(out), "--analyzer", "none"]) == 1
    (tmp_path / "empty.txt").write_bytes(b"")
    assert augment_data.main(["--input", str(tmp_path / "empty.txt"), "--output", str(out), "--analyzer", "none"]) == 1
    (tmp_path / "blank.txt").write_bytes(b"\n  \n")
    assert augment_data.main(["--input", str(tmp_path / "blank.txt"), "--output", str(out), "--analyzer", "none"]) == 1
    assert not out.exists()


def test_read_crlf_bom_blank_lines_no_final_newline(tmp_path):
    inp = tmp_path / "in.txt"
    inp.write_bytes(b"\xef\xbb\xbfgood film \t1\r\n\r\nbad film\t0")
    rows = read_examples(inp)
    assert [(r.lineno, r.sentence, r.label) for r in rows] == [(1, "good film", "1"), (3, "bad film", "0")]


def test_spacy_analyzer(tmp_path):
    """spaCy and its English model are required dependencies (requirements.txt): a missing one
    fails here instead of skipping."""
    rows = SENTENCES[:5]
    write_fixture(tmp_path / "in.txt", rows)
    lines = run_cli(tmp_path, "out.txt", "--n_iter", "10", "--p_mask", "0", "--p_pos", "0.3", "--p_ng", "0",
                    analyzer="spacy")
    originals = [s for s, _ in rows]
    sentences = [line.split("\t")[0] for line in lines]
    for s in originals:
        assert s in sentences
    # Without masks or n-grams every draw keeps the token count of its source sentence,
    # and (with a 0.3 swap rate) some same-POS swaps happened.
    lengths = {len(s.split()) for s in originals}
    assert all(len(s.split()) in lengths for s in sentences)
    assert len(sentences) > len(originals)
    assert MASK not in " ".join(sentences)
    # A variant differs from its source only at positions swapped with in-file words.
    vocab = {w for s in originals for w in s.split()}
    current = None
    for s in sentences:
        if s in originals:
            current = s.split()
            continue
        toks = s.split()
        assert len(toks) == len(current)
        assert 0 < sum(a != b for a, b in zip(toks, current)) <= len(current) // 2
        assert set(toks) <= vocab


def test_tokenizer_flag_decides_the_tokens(tmp_path):
    write_fixture(tmp_path / "in.txt", [("Moore's film isn't bad!", "1"), ("it 's a well-made film , too", "0")])
    assert run_cli(tmp_path, "glove.txt", "--no_augment", "--lowercase") == [
        "moore 's film is n't bad !\t0", "it 's a well-made film , too\t0"]
    assert run_cli(tmp_path, "ws.txt", "--no_augment", "--tokenizer", "whitespace") == [
        "Moore's film isn't bad!\t0", "it 's a well-made film , too\t0"]
    assert run_cli(tmp_path, "spacy.txt", "--no_augment", "--tokenizer", "spacy") == [
        "Moore 's film is n't bad !\t0", "it 's a well - made film , too\t0"]
    # the draws mask the tokenizer's tokens: `'s` and `!` can be masked alone
    lines = run_cli(tmp_path, "masked.txt", "--n_iter", "30", "--p_mask", "0.4", "--p_pos", "0", "--p_ng", "0")
    original = "Moore 's film is n't bad !".split()
    variants = [v for v in (line.split("\t")[0].split() for line in lines)
                if len(v) == 7 and all(a in (b, MASK) for a, b in zip(v, original))]
    assert variants[0] == original and len(variants) > 5
    assert any(v[1] == MASK for v in variants) and any(v[6] == MASK for v in variants)


def test_other_mask_tokens_stay_whole(tmp_path):
    from runtime import glove_split

    lines = run_cli(tmp_path, "out.txt", "--mask_token", "<mask>", "--n_iter", "10", "--p_mask", "0.4")
    sentences = [line.split("\t")[0] for line in lines]
    assert any("<mask>" in s for s in sentences) and MASK not in " ".join(sentences)
    for s in sentences:  # the students' tokenizer reads a mask back as one token
        assert glove_split(s).count("<mask>") == s.split().count("<mask>")


def test_num_workers_needs_parallel(tmp_path, capsys):
    write_fixture(tmp_path / "in.txt")
    assert augment_data.main(["--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "out.txt"),
                              "--analyzer", "none", "--num_workers", "2"]) == 1
    err = capsys.readouterr().err
    assert err == "ERROR:augment_data:--num_workers sizes the --parallel pool: add --parallel\n"
    assert not (tmp_path / "out.txt").exists()
