"""The distillation recipe as a pipeline of the toolkit's own command lines, rerun by content.

`scripts/distill.py` (`make distill`, `make demo`) and `scripts/ablation.py` build their
stages from the functions here. Each `Step` is one command line with the files it reads and
writes. `Pipeline.run` skips a step when its outputs exist and its fingerprint (its argv and
the SHA-256 of every input file, configs included) matches the one recorded in
`pipeline.json` when it last ran, and the outputs are still the bytes it wrote. A changed
config, recipe value or input reruns the step; its new outputs change the inputs of the steps
after it, so those rerun too, and nothing else does.
"""
from __future__ import annotations

import json
import logging
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from config import Recipe, default_criterion
from dataset import AUGMENTED_FILE, TRANSFER_FILE
from util import UserError, file_digest, write_json

logger = logging.getLogger(__name__)


@dataclass
class Step:
    """One command line with the files it reads and writes."""

    name: str
    argv: list[str]  # a stage script (`train.py ...`, run with the pipeline's Python) or a program
    inputs: list[Path]
    outputs: list[Path]


@dataclass
class Pipeline:
    """Runs steps in order, skipping those that are up to date by content (module docstring).
    A training step's output is its `train_results.json`, written only when training ends, so
    a run killed mid-training is redone (or resumed by hand with `train.py --resume`)."""

    record_path: Path
    python: str
    cwd: Path
    force: bool = False
    echo: Callable[[str], None] = print
    record: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.record_path.exists():
            self.record = json.loads(self.record_path.read_text(encoding="utf-8"))
        self.lock = threading.Lock()  # steps may run from several threads (scripts/ablation.py --jobs)

    def command(self, step: Step) -> list[str]:
        return [self.python, *step.argv] if step.argv[0].endswith(".py") else list(step.argv)

    def fingerprint(self, step: Step) -> dict:
        """The step's argv and its inputs' digests (a missing input counts as missing)."""
        inputs = {}
        for path in step.inputs:
            resolved = path if path.is_absolute() else self.cwd / path
            inputs[str(path)] = file_digest(resolved) if resolved.exists() else "missing"
        return {"argv": step.argv, "inputs": inputs}

    def output_digests(self, step: Step) -> dict:
        return {str(p): file_digest(p if p.is_absolute() else self.cwd / p) for p in step.outputs}

    def up_to_date(self, step: Step) -> bool:
        """Outputs present, unchanged since the step wrote them, and the same argv and inputs."""
        done = self.record.get(step.name)
        if self.force or done is None or not all((p if p.is_absolute() else self.cwd / p).exists()
                                                 for p in step.outputs):
            return False
        return done.get("fingerprint") == self.fingerprint(step) and done.get("outputs") == self.output_digests(step)

    def run(self, step: Step) -> bool:
        """Run `step` unless it is up to date; True if it ran. A failing step is a UserError."""
        if self.up_to_date(step):
            logger.info("[Skip] %s (up to date)", step.name)
            return False
        fingerprint = self.fingerprint(step)
        argv = self.command(step)
        self.echo("$ " + " ".join(shlex.quote(a) for a in argv))
        start = time.time()
        result = subprocess.run(argv, cwd=self.cwd)
        if result.returncode != 0:
            raise UserError(f"stage {step.name!r} failed with exit code {result.returncode} (its log is above)")
        seconds = time.time() - start
        with self.lock:
            self.record[step.name] = {"seconds": round(seconds, 1), "command": " ".join(step.argv),
                                      "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                                      "fingerprint": fingerprint, "outputs": self.output_digests(step)}
            write_json(self.record_path, self.record)
        logger.info("[Done] %s in %.1fs", step.name, seconds)
        return True


# ---------------------------------------------------------------------------
# The recipe's stages
# ---------------------------------------------------------------------------

SPLITS = ("train", "valid", "test")
# The config `evaluate.py --config` expects for a teacher of each head.
TEACHER_CONFIGS = {"cls": "configs/config-bert-cls.json", "mean": "configs/config-bert-mean.json",
                   "hf": "configs/config-bert-hf.json"}


def local_files(model: str) -> list[Path]:
    """A local model directory's files, as step inputs (a hub name has none)."""
    path = Path(model)
    return sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else []


def teacher_steps(recipe: Recipe, data: Path, backbone: str, teacher: Path, lowercase: bool,
                  runs: Path) -> list[Step]:
    """Ids for the backbone's tokenizer and the teacher's fine-tuning (the recipe's head)."""
    cfg, t = recipe.teacher.config, recipe.teacher
    lower = ["--bert_do_lower_case"] if lowercase else []
    multi = ["--multi_label"] if recipe.multi_label else []
    return [
        Step("preprocess teacher", ["preprocess.py", f"--config={cfg}", f"--data_dir={data}",
                                    f"--bert_model_name_or_path={backbone}", *lower, *multi],
             [Path(cfg), *local_files(backbone), *[data / f"{s}.txt" for s in SPLITS]],
             [data / f"{s}.txt.fs" for s in SPLITS]),
        Step("train teacher", ["train.py", f"--config={cfg}", f"--data_dir={data}",
                               f"--bert_model_name_or_path={backbone}", *lower, f"--teacher={teacher}",
                               f"--lr={t.lr}", f"--epochs={t.epochs}", f"--batch_size={t.batch_size}",
                               "--use_transformers_optimizer", f"--warmup_epoch={t.warmup_epoch}",
                               f"--weight_decay={t.weight_decay}", f"--log_dir={runs / 'teacher'}"],
             [Path(cfg), *local_files(backbone), data / "train.txt.fs", data / "valid.txt.fs"],
             [teacher / "train_results.json"]),
    ]


def teacher_eval_steps(config: str, data: Path, teacher: str, out: Path, label_map: str | None,
                       teacher_files: list[Path], latency_sample: int = 0) -> list[Step]:
    """The teacher's test accuracy and latency, as the students' are measured (its results in
    `out`, not in the teacher's directory, which may be the user's). `teacher_files`: the
    files that make it (its weights and config), so a changed teacher is evaluated again;
    `latency_sample`: time only the first N test sentences (the accuracy is over all)."""
    mapping = [f"--label_map={label_map}"] if label_map else []
    sample = [f"--latency_sample={latency_sample}"] if latency_sample else []
    common = ["evaluate.py", f"--config={config}", f"--data_dir={data}", f"--teacher={teacher}",
              "--num_threads=1", *mapping, *sample]
    inputs = [*teacher_files, data / "test.txt", data / "train.txt"]
    return [Step("evaluate teacher", [*common, f"--results_path={out / 'teacher.results.json'}"], inputs,
                 [out / "teacher.results.json"]),
            Step("evaluate teacher (padded)", [*common, "--pad_to_n_ctx",
                                               f"--results_path={out / 'teacher.padded.results.json'}"],
                 inputs, [out / "teacher.padded.results.json"])]


def augment_step(recipe: Recipe, data: Path, mask_token: str, tokenizer: str) -> Step:
    """New sentences from the training sentences (masking, same-POS swaps, n-grams)."""
    return Step("augment", ["augment_data.py", "--input", str(data / "train.txt"), "--output",
                            str(data / AUGMENTED_FILE), f"--n_iter={recipe.n_iter}", f"--mask_token={mask_token}",
                            f"--ngram_mode={recipe.ngram_mode}", f"--tokenizer={tokenizer}", "--parallel",
                            "--seed=42", *([f"--pair_mode={recipe.pair_mode}"] if recipe.pair_mode != "both" else [])],
                [data / "train.txt"], [data / AUGMENTED_FILE])


def label_step(recipe: Recipe, data: Path, student_config: str, teacher: str | None = None,
               teacher_files: list[Path] | None = None, augmented: bool = False, unlabeled: str | None = None,
               teacher_logits: str | None = None, label_map: str | None = None) -> Step:
    """The transfer set, `transfer.txt`: the teacher's scores for the training sentences, the
    augmented ones and the unlabeled text, or the scores of a file (label.py)."""
    mapping = [f"--label_map={label_map}"] if label_map else []
    common = [f"--data_dir={data}", f"--student_config={student_config}", *mapping,
              *(["--multi_label"] if recipe.multi_label else [])]
    splits = [data / f"{s}.txt" for s in SPLITS]
    if teacher_logits:
        return Step("label (scores from a file)", ["label.py", f"--teacher_logits={teacher_logits}", *common],
                    [Path(teacher_logits), Path(student_config), *splits], [data / TRANSFER_FILE])
    sources = (["--augmentations"] if augmented else []) + ([f"--unlabeled={unlabeled}"] if unlabeled else [])
    rescore = [f"--rescore_margin={recipe.label_rescore_margin:g}"] if recipe.label_rescore_margin else []
    inputs = [*(teacher_files or []), Path(student_config), *splits,
              *([data / AUGMENTED_FILE] if augmented else []), *([Path(unlabeled)] if unlabeled else [])]
    return Step("label", ["label.py", f"--teacher={teacher}", *common, *sources,
                          f"--batch_size={recipe.label_batch_size}", f"--amp={recipe.label_amp}",
                          f"--runtime={recipe.label_runtime}", *rescore],
                inputs, [data / TRANSFER_FILE])


def student_data_step(data: Path, config: str, embedding_path: str, tag: str = "", multi_label: bool = False
                      ) -> Step:
    """The GloVe vocabulary over every file, and the students' id files (`multi_label`: label
    sets, recorded in label.json for the later stages)."""
    return Step(f"preprocess students{tag}", ["preprocess.py", f"--config={config}", f"--data_dir={data}",
                                              f"--embedding_path={embedding_path}", "--distill",
                                              *(["--multi_label"] if multi_label else [])],
                [Path(config), Path(embedding_path), data / TRANSFER_FILE, *[data / f"{s}.txt" for s in SPLITS]],
                [data / f"{TRANSFER_FILE}.ids", *[data / f"{s}.txt.ids" for s in SPLITS], data / "vocab.txt"])


def checkpoint_name(name: str, kind: str, seed_index: int = 0) -> str:
    """`cnn-distill.pt`, and for the recipe's further seeds `cnn-distill-seed2.pt`, ..."""
    return f"{name}-{kind}" + (f"-seed{seed_index + 1}" if seed_index else "") + ".pt"


def student_steps(recipe: Recipe, name: str, kind: str, data: Path, checkpoint: Path, runs: Path,
                  transfer: str = "both", seed: int = 42, extra: list[str] | None = None, device: str = "auto",
                  padded: bool = True) -> list[Step]:
    """Train student `name` on gold labels (`kind` "gold") or on the transfer set's teacher
    logits (any other `kind`, learning from the `transfer` sources, with `extra` train.py
    flags instead of the recipe's loss), then evaluate it on test.txt (`padded`: also timed
    the seed's way)."""
    s, cfg = recipe.students[name], recipe.student_config(name)
    distill = kind != "gold"
    criterion = default_criterion(s.criterion, recipe.multi_label)  # null: the default for the data's kind
    own = [f"--criterion={criterion}"] + ([f"--temperature={s.temperature}"] if criterion != "MSELoss" else [])
    # the gold-label weight: the recipe's, or chosen on valid for a small transfer set
    alpha = [f"--alpha={s.alpha:g}"] if s.alpha is not None else ["--alpha=auto",
                                                                  f"--gold_mix_below={recipe.gold_mix_below}"]
    targets = ["--distill", f"--transfer={transfer}", *(extra or [*own, *alpha])] if distill else []
    budget = [f"--{k}={getattr(s, k)}" for k in ("min_steps", "eval_steps", "patience_steps") if getattr(s, k)]
    optimizer = (["--optimizer=sgd", "--warmup_epoch=0"] if s.optimizer == "sgd" else
                 ["--use_transformers_optimizer", "--warmup_epoch=0", "--weight_decay=0.0"])
    train_input = data / (f"{TRANSFER_FILE}.ids" if distill else "train.txt.ids")
    label = f"{name} {kind}" + (f" (seed {seed})" if seed != 42 else "")
    evaluate = ["evaluate.py", f"--config={cfg}", f"--data_dir={data}", f"--model_path={checkpoint}",
                "--num_threads=1", f"--device={device}"]
    steps = [
        Step(f"train {label}", [
            "train.py", f"--config={cfg}", f"--data_dir={data}", f"--save_path={checkpoint}", f"--lr={s.lr}",
            f"--epochs={s.epochs if distill else s.gold_epochs}", f"--batch_size={s.batch_size}", *optimizer,
            f"--amp={s.amp}", f"--device={device}", f"--seed={seed}", f"--log_dir={runs / checkpoint.stem}",
            *[f"--set={o}" for o in s.set], *budget, *targets],
            [Path(cfg), train_input, data / "valid.txt.ids", data / "vocab.txt"],
            [Path(f"{checkpoint}.train_results.json")]),
        Step(f"evaluate {label}", evaluate, [checkpoint, data / "test.txt"], [Path(f"{checkpoint}.results.json")]),
    ]
    if padded:  # latency as the seed timed it (ids padded to n_ctx), for the comparison with its table
        steps.append(Step(f"evaluate {label} (padded)", [*evaluate, "--pad_to_n_ctx"], [checkpoint, data / "test.txt"],
                          [Path(f"{checkpoint}.padded.results.json")]))
    return steps
