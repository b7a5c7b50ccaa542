"""The fetch step: SST-2 from a local directory (the shared copy when present), with the
standard line counts checked; the offline teacher backbone exported from its package."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import fetch_data  # noqa: E402
import fetch_embeddings  # noqa: E402
from conftest import error_lines  # noqa: E402

# A local SST-2 copy: SST2_DIR, the shared offline copy beside the checkout, or `make data`'s.
CANDIDATES = [Path(p) for p in (os.environ.get("SST2_DIR"),) if p] + [ROOT.parent / "shared" / "data" / "sst2",
                                                                      ROOT / "data" / "sst2"]
SHARED = next((p for p in CANDIDATES if (p / "train.txt").exists()), CANDIDATES[0])


# `make test` runs pytest with -rs, so a skip prints this reason in the run's summary
@pytest.mark.skipif(not (SHARED / "train.txt").exists(),
                    reason="no local SST-2 copy: set SST2_DIR or run `make data` (online) to check the real counts")
def test_fetch_from_local_copy_checks_counts(tmp_path):
    assert fetch_data.main(["--source", str(SHARED), "--out", str(tmp_path / "sst2")]) == 0
    counts = {s: len((tmp_path / "sst2" / f"{s}.txt").read_text().splitlines()) for s in ("train", "valid", "test")}
    assert counts == {"train": 67349, "valid": 872, "test": 1821}


def test_fetch_refuses_wrong_counts(data_dir, tmp_path, capsys):
    assert fetch_data.main(["--source", str(data_dir), "--out", str(tmp_path / "out")]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "240 examples, but the standard SST-2 train split has 67349" in lines[0]
    assert not (tmp_path / "out" / "train.txt").exists()
    assert fetch_data.main(["--source", str(data_dir), "--out", str(tmp_path / "out"), "--no_check"]) == 0


def test_minilm_exports_as_a_model_directory(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    assert fetch_embeddings.main(["--out_dir", str(tmp_path), "--what", "minilm"]) == 0
    model_dir = tmp_path / "all-MiniLM-L6-v2"
    assert AutoConfig.from_pretrained(model_dir).num_hidden_layers == 6
    assert AutoTokenizer.from_pretrained(model_dir)("a fine film")["input_ids"][0] == 101
