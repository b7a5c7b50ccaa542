"""The seed's end-of-epoch rules (best, learning-rate decay on a plateau, early stopping), and
the pipeline's rerun-by-content rule."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import preprocess
import train
from config import TrainConfig
from pipeline import Pipeline, Step
from training import EpochRule, epoch_rule
from util import UserError


def replay(rule: EpochRule, scores: list[float], rate: float, lr: float = 1.0
           ) -> tuple[list[float], list[bool], int | None]:
    """Feed validation scores epoch by epoch as train.py does: the learning rate each epoch
    trained with, which epochs were new bests, and the epoch after which training stopped."""
    lrs, improved = [], []
    for epoch, score in enumerate(scores):
        lrs.append(lr)
        best, decay, stop = rule.after_epoch(epoch, score)
        if stop:
            return lrs, improved, epoch
        improved.append(best)
        if decay:
            lr *= rate
    return lrs, improved, None


def test_plateau_decay_waits_for_warmup_and_early_stopping_ends_it():
    # training.py's rule: after epoch e (from 0), once e > warmup_epoch, decay when validation has
    # not improved on the previous epoch for lr_decay_steps epochs in a row (that count then starts
    # again), or has been below its best for more than lr_decay_steps epochs; stop once below
    # the best for more than `patience` epochs.
    cfg = TrainConfig(lr=1.0, epochs=20, batch_size=8, lr_decay_rate=0.5, lr_decay_steps=2, warmup_epoch=2,
                      patience=3)
    scores = [0.5, 0.5, 0.5, 0.5, 0.7, 0.6, 0.65, 0.62, 0.6, 0.9]
    lrs, improved, stopped = replay(epoch_rule(cfg), scores, cfg.lr_decay_rate)
    # epochs 1 and 2 do not improve, but epoch 2 is not past the warm-up; epoch 3 is the third
    # without improvement: decay. Epoch 7 is the third below the best (0.7): decay. Epoch 8 is
    # the fourth below it, more than the patience: stop (epoch 9 never runs).
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25]
    assert improved == [True, False, False, False, True, False, False, False]
    assert stopped == 8


def test_below_the_best_decays_every_epoch_on_the_loss():
    cfg = TrainConfig(lr=1.0, epochs=20, batch_size=8, lr_decay_rate=0.1, lr_decay_steps=1, warmup_epoch=0,
                      patience=10, measure="loss")
    lrs, improved, stopped = replay(epoch_rule(cfg), [1.0, 0.8, 0.9, 0.85, 0.95, 0.7, 0.7, 0.6],
                                     cfg.lr_decay_rate)
    # epoch 2: worse than epoch 1 (one step): decay; epochs 3 and 4: below the best for 2 and 3
    # epochs, more than one step: decay each time (epoch 3 is better than epoch 2, so that is
    # the only reason); epoch 5 is a new best; epoch 6 equals it: not better than the previous,
    # one step: decay; epoch 7 is a new best.
    assert lrs == pytest.approx([1.0, 1.0, 1.0, 0.1, 0.01, 0.001, 0.001, 0.0001])
    assert improved == [True, True, False, False, False, True, False, True]
    assert stopped is None


def test_no_decay_by_default_or_on_the_linear_schedule():
    scores = [0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
    default = TrainConfig(lr=1.0, epochs=20, batch_size=8, warmup_epoch=0)  # lr_decay_rate 1.0
    assert replay(epoch_rule(default), scores, default.lr_decay_rate)[0] == [1.0] * 6
    linear = TrainConfig(lr=1.0, epochs=20, batch_size=8, warmup_epoch=0, lr_decay_rate=0.5,
                         use_transformers_optimizer=True)
    assert epoch_rule(linear).decay_rate == 1.0
    assert replay(epoch_rule(linear), scores, 0.5)[0] == [1.0] * 6
    # patience 0: the first epoch below the best stops training
    eager = TrainConfig(lr=1.0, epochs=20, batch_size=8, patience=0)
    assert replay(epoch_rule(eager), [0.5, 0.6, 0.55, 0.9], 1.0)[2] == 2


def test_train_py_follows_the_rule(data_dir, glove_path, student_config, tmp_path):
    """train.py's recorded learning rates are the rule's for the validation scores it saw."""
    config = student_config("cnn")
    save = tmp_path / "cnn.pt"
    assert preprocess.main([f"--config={config}", f"--data_dir={data_dir}", f"--embedding_path={glove_path}"]) == 0
    assert train.main([f"--config={config}", f"--data_dir={data_dir}", f"--save_path={save}", "--lr=1e-2",
                       "--epoch=6", "--batch_size=32", "--lr_decay_rate=0.5", "--lr_decay_steps=1", "--warmup_epoch=0",
                       "--device=cpu", f"--log_dir={tmp_path / 'runs'}"]) == 0
    history = json.loads(Path(f"{save}.train_results.json").read_text())["history"]
    rule = EpochRule("accuracy", patience=7, decay_rate=0.5, decay_steps=1, warmup_epoch=0)
    lrs, _, _ = replay(rule, [h["accuracy"] for h in history], 0.5, lr=1e-2)
    assert [h["lr"] for h in history] == pytest.approx(lrs)
    assert min(lrs) < 1e-2  # the toy run saturates, so the rule did decay


def test_pipeline_reruns_a_step_only_when_its_content_changes(tmp_path):
    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("one\n")
    echoed: list[str] = []

    def pipeline(force: bool = False) -> Pipeline:  # a fresh one reads pipeline.json, as a new run does
        return Pipeline(tmp_path / "pipeline.json", sys.executable, tmp_path, force, echo=echoed.append)

    step = Step("copy", ["cp", str(src), str(out)], [src], [out])
    assert not pipeline().up_to_date(step)
    assert pipeline().run(step) is True and out.read_text() == "one\n"
    assert echoed == [f"$ cp {src} {out}"]
    record = json.loads((tmp_path / "pipeline.json").read_text())["copy"]
    assert record["fingerprint"]["argv"] == step.argv and "finished" in record
    # the second run skips it, and says nothing
    assert pipeline().up_to_date(step) and pipeline().run(step) is False
    assert len(echoed) == 1
    # the same bytes written again: still up to date (content, not times)
    src.write_text("one\n")
    assert pipeline().up_to_date(step)
    # changed input bytes rerun it
    src.write_text("two\n")
    assert not pipeline().up_to_date(step)
    assert pipeline().run(step) is True and out.read_text() == "two\n"
    assert pipeline().run(step) is False
    # a changed command line reruns it
    step = Step("copy", ["cp", "-p", str(src), str(out)], [src], [out])
    assert pipeline().run(step) is True and echoed[-1] == f"$ cp -p {src} {out}"
    # an edited output reruns it (and gets the step's bytes back); so does a missing one
    out.write_text("edited by hand\n")
    assert not pipeline().up_to_date(step)
    assert pipeline().run(step) is True and out.read_text() == "two\n"
    out.unlink()
    assert pipeline().run(step) is True and out.exists()
    # --force reruns everything
    assert pipeline(force=True).run(step) is True
    assert len(echoed) == 6


def test_pipeline_runs_python_steps_in_its_directory_and_refuses_failures(tmp_path):
    (tmp_path / "make.py").write_text("import sys\nopen(sys.argv[1], 'w').write('made\\n')\n")
    echoed: list[str] = []
    pipeline = Pipeline(tmp_path / "pipeline.json", sys.executable, tmp_path, echo=echoed.append)
    # relative paths are the pipeline's directory's; a `.py` step runs with its Python
    step = Step("make", ["make.py", "made.txt"], [Path("make.py")], [Path("made.txt")])
    assert pipeline.run(step) is True
    assert (tmp_path / "made.txt").read_text() == "made\n" and echoed == [f"$ {sys.executable} make.py made.txt"]
    assert pipeline.run(step) is False
    (tmp_path / "make.py").write_text("import sys\nopen(sys.argv[1], 'w').write('made again\\n')\n")
    assert pipeline.run(step) is True and (tmp_path / "made.txt").read_text() == "made again\n"
    # a failing step is a UserError naming it, and is not recorded as done
    failing = Step("fail", ["false"], [], [tmp_path / "never.txt"])
    with pytest.raises(UserError, match="stage 'fail' failed with exit code 1"):
        pipeline.run(failing)
    assert "fail" not in json.loads((tmp_path / "pipeline.json").read_text())
