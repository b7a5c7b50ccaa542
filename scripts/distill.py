"""Run the whole distillation recipe on a data set and write its results table.

    python scripts/distill.py                                   # `make distill`: SST-2, the offline default
    python scripts/distill.py --demo                            # `make demo`: a 3,000-sentence subset
    python scripts/distill.py --data_dir /data/snips --models cnn,bilstm
    python scripts/distill.py --data_dir /data/snips --teacher my-finetuned-roberta   # a classifier: used as is
    python scripts/distill.py --data_dir /data/snips --teacher embeddings/roberta-base \
        --teacher_config configs/config-roberta-cls.json      # an encoder: fine-tuned first
    python scripts/distill.py --data_dir /data/snips --teacher my-classifier --unlabeled tickets.txt
    python scripts/distill.py --data_dir /data/snips --teacher_logits llm-scores.jsonl

DATA is any directory with `train.txt`, `valid.txt` and `test.txt` (`sentence<TAB>label`,
any string labels). Its name names the run: the stages work in `data/<name>/` (the splits
are copied there when DATA is elsewhere), checkpoints go to `checkpoints/<name>/` and the
table to `results/<name>.md`. The teacher is a fine-tuned classifier (a directory from
train.py or any Hugging Face `*ForSequenceClassification`, used as is, its labels matched to
the data's by name), an encoder to fine-tune first with the recipe's teacher config, or a
file of scores made elsewhere. Its own tokenizer decides the mask token and the lower-casing.
Each stage is one of the toolkit's command lines, printed before it runs, and reruns only
when its command or the content of its inputs changed (pipeline.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config import STUDENT_KINDS, Recipe, check_student_data, config_to_dict, load_config, load_recipe  # noqa: E402
from dataset import TRANSFER_CHOICES, build_labels, read_examples, read_labels, read_splits  # noqa: E402
from pipeline import (  # noqa: E402
    SPLITS,
    TEACHER_CONFIGS,
    Pipeline,
    Step,
    augment_step,
    checkpoint_name,
    label_step,
    local_files,
    student_data_step,
    student_steps,
    teacher_eval_steps,
    teacher_steps,
)
from teachers import (is_teacher, load_hf_tokenizer, parse_label_map, teacher_columns, teacher_labels,  # noqa: E402
                      teacher_multi_label, teacher_summary, tokenizer_lowercases)
from util import UserError, atomic_write_text, cpu_model, read_json, run_main, write_json  # noqa: E402

logger = logging.getLogger(__name__)
DEFAULT_TEACHER = "embeddings/all-MiniLM-L6-v2"
# Keys every student of one run must share: they read the same id files.
SHARED_KEYS = ("tokenizer", "lowercase", "token_emb_dim", "n_ctx", "pad_token", "unk_token")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_dir", default="data/sst2", help="train/valid/test.txt (default: SST-2 from `make data`)")
    p.add_argument("--teacher", help="a fine-tuned classifier (used as is) or an encoder to fine-tune: a Hugging Face "
                                     f"directory or hub name (default {DEFAULT_TEACHER})")
    p.add_argument("--teacher_config", help="the head to fine-tune an encoder with (default: the recipe's)")
    p.add_argument("--teacher_logits", help="teacher scores made elsewhere (JSONL, see label.py); no teacher runs")
    p.add_argument("--unlabeled", help="unlabeled text for the transfer set, one sentence a line")
    p.add_argument("--label_map", help="the teacher's label names to the data's, e.g. NEGATIVE=0,POSITIVE=1")
    p.add_argument("--transfer", help="what the students learn from: augmented, unlabeled or both; a comma list "
                                      "trains each student once per choice, side by side in the table (default: "
                                      "the recipe's; else both with --unlabeled, else augmented)")
    p.add_argument("--recipe", help="recipe JSON (default configs/recipe-sst2.json, recipe-demo.json with --demo; "
                                     "multi-label: recipe-goemotions.json, recipe-goemotions-demo.json)")
    p.add_argument("--models", default=os.environ.get("MODELS") or None,
                   help="comma-separated students (default $MODELS, else the recipe's)")
    p.add_argument("--seeds", type=int, default=int(os.environ.get("SEEDS") or 0) or None,
                   help="seeds per student, overriding the recipe's `seeds` (default $SEEDS, else the recipe's)")
    p.add_argument("--embedding_path", help="GloVe text file (default embeddings/glove.6B.<dim>d.txt)")
    p.add_argument("--demo", action="store_true", help="a seeded subset of the training set (the recipe's size)")
    p.add_argument("--name", help="the run's name (default: DATA's directory name, plus -demo)")
    p.add_argument("--work_dir", help="where the stages work (default data/<name>)")
    p.add_argument("--out_dir", help="checkpoints (default checkpoints/<name>)")
    p.add_argument("--results", help="the table (default results/<name>.md)")
    p.add_argument("--force", action="store_true", help="rerun every stage")
    p.add_argument("--multi_label", action="store_true",
                   help="multi-label data ('sentence<TAB>label1,label2'; MULTI_LABEL=1, or the recipe's multi_label)")
    return p


def check_data(source: Path, multi_label: bool = False) -> bool:
    """Each split is there and parses, all in one format (a bad line is named by
    read_examples); returns whether they are sentence pairs."""
    for split in SPLITS:
        path = source / f"{split}.txt"
        if not path.is_file():
            raise UserError(f"{path}: missing; DATA needs train.txt, valid.txt and test.txt (sentence<TAB>label, or "
                            "sentence_a<TAB>sentence_b<TAB>label)")
    return read_splits(source, multi_label=multi_label)["train"][0].pair


def prepare_work_dir(source: Path, work: Path, subset: int, seed: int = 42) -> None:
    """The splits in `work`, written only when their bytes change (so later stages stay up to
    date); with `subset`, a seeded subset of that many training lines."""
    work.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        text = (source / f"{split}.txt").read_text(encoding="utf-8")
        if split == "train" and subset:
            lines = text.splitlines(keepends=True)
            chosen = sorted(random.Random(seed).sample(range(len(lines)), min(subset, len(lines))))
            text = "".join(lines[i] if lines[i].endswith("\n") else lines[i] + "\n" for i in chosen)
        target = work / f"{split}.txt"
        if source.resolve() != work.resolve() or split == "train" and subset:
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                atomic_write_text(target, text)


@dataclass
class TeacherPlan:
    """Where the teacher's scores come from: `finetune` (an encoder, fine-tuned here), `ready`
    (a fine-tuned classifier, used as is) or `file` (scores made elsewhere)."""

    kind: str
    source: str  # the encoder, the classifier, or the scores file
    name: str  # for the table
    lowercase: bool = False
    mask_token: str | None = None
    config: str | None = None  # the teacher config evaluate.py expects


def plan_teacher(args: argparse.Namespace, recipe: Recipe, labels: list[str]) -> TeacherPlan:
    """What `--teacher`/`--teacher_logits` give, with the teacher tokenizer's own lower-casing
    and mask token (the recipe's mask_token wins). A ready teacher's labels must map to the
    data's `labels` by name: checked here, before anything is written."""
    if args.teacher_logits:
        if args.teacher or args.teacher_config:
            raise UserError("--teacher_logits brings the teacher's scores: --teacher/--teacher_config would not run")
        if args.unlabeled:
            raise UserError("--unlabeled text needs a teacher to score it; put it in --teacher_logits instead")
        if not Path(args.teacher_logits).is_file():
            raise UserError(f"{args.teacher_logits}: not found (--teacher_logits)")
        return TeacherPlan("file", args.teacher_logits, f"scores from {Path(args.teacher_logits).name}")
    teacher = args.teacher or DEFAULT_TEACHER
    ready = is_teacher(teacher)
    if ready and args.teacher_config:
        raise UserError(f"{teacher}: a fine-tuned classifier, used as it is; --teacher_config is the head for "
                        "fine-tuning an encoder")
    if not ready and args.label_map:
        raise UserError(f"{teacher}: an encoder, fine-tuned here on the data's own labels; --label_map is for a "
                        "classifier with label names of its own")
    tokenizer = load_hf_tokenizer(teacher)
    mask = recipe.mask_token or tokenizer.mask_token
    if not mask:
        raise UserError(f"{teacher}: its tokenizer has no mask token; set mask_token in the recipe")
    if ready:
        teacher_columns(teacher_labels(teacher), labels, parse_label_map(args.label_map), teacher)
        head, lowercase = teacher_summary(teacher, tokenizer)
        return TeacherPlan("ready", teacher, Path(teacher).name, lowercase, mask, TEACHER_CONFIGS[head])
    return TeacherPlan("finetune", teacher, Path(teacher).name, tokenizer_lowercases(tokenizer), mask,
                       args.teacher_config or recipe.teacher.config)


def resolve_transfer(args: argparse.Namespace, recipe: Recipe, teacher: TeacherPlan) -> list[str]:
    """What the students learn from (one or more choices); a choice that needs an input not
    given, or an input no choice uses, is refused."""
    given = args.transfer or recipe.transfer
    transfers = [t.strip() for t in given.split(",") if t.strip()] if given else []
    for t in transfers:
        if t not in TRANSFER_CHOICES:
            raise UserError(f"unknown transfer {t!r} in --transfer/TRANSFER; expected some of "
                            f"{list(TRANSFER_CHOICES)}")
    if len(set(transfers)) != len(transfers):
        raise UserError(f"--transfer/TRANSFER {given!r} names a choice twice")
    if teacher.kind == "file":
        if transfers and transfers != ["both"] and transfers != ["unlabeled"]:
            raise UserError("transfer 'augmented' needs a teacher to score augmented sentences; --teacher_logits "
                            "brings its own sentences")
        return ["both"]
    if not transfers:
        return ["both"] if args.unlabeled else ["augmented"]
    if any(t in ("unlabeled", "both") for t in transfers) and not args.unlabeled:
        raise UserError(f"transfer {given!r} learns from unlabeled text: give --unlabeled (UNLABELED=)")
    if transfers == ["augmented"] and args.unlabeled:
        raise UserError("--unlabeled text would not be used with transfer 'augmented'; use 'unlabeled' or 'both'")
    return transfers


def student_config_for_data(recipe: Recipe, models: list[str]) -> str:
    """The config preprocess builds the shared vocabulary with; all students must agree on
    the keys that shape the id files."""
    for m in models:
        for item in recipe.students[m].set:
            if item.split("=", 1)[0] in SHARED_KEYS:
                raise UserError(f"students.{m}.set: {item!r} changes the id files the students share; change the "
                                "config file of every student instead")
    configs = {m: config_to_dict(load_config(ROOT / recipe.student_config(m))) for m in models}
    first = models[0]
    for m in models[1:]:
        for key in SHARED_KEYS:
            if configs[m].get(key) != configs[first].get(key):
                raise UserError(f"{recipe.student_config(m)}: {key} {configs[m].get(key)!r} differs from "
                                f"{recipe.student_config(first)}'s {configs[first].get(key)!r}; the students of one "
                                "run share their id files")
    return recipe.student_config(first)


def default_recipe(demo: bool, multi_label: bool) -> str:
    """The recipe when none is given: SST-2's (or the demo's), or for multi-label data
    GoEmotions' (sigmoid losses, and a budget measured on 28 labels)."""
    if multi_label:
        return "configs/recipe-goemotions-demo.json" if demo else "configs/recipe-goemotions.json"
    return "configs/recipe-demo.json" if demo else "configs/recipe-sst2.json"


def read_results(path: Path) -> dict | None:
    return read_json(path) if path.exists() else None


def mean_std(values: list[float]) -> str:
    """`mean ± std (n seeds: a, b, c)`, or the one value."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    mean = sum(values) / len(values)
    std = (sum((a - mean) ** 2 for a in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.2f} ± {std:.2f} ({len(values)} seeds: {', '.join(f'{a:.2f}' for a in values)})"


def score_cells(results: list[dict], multi_label: bool) -> list[str]:
    """Single-label: the test accuracy, with `(correct/total)` for one run. Multi-label: macro-F1 (the headline),
    micro-F1 and exact match, each a mean ± std over the seeds."""
    if multi_label:
        return [mean_std([100 * r[k] for r in results]) for k in ("macro_f1", "micro_f1", "exact_match")]
    if len(results) == 1:
        r = results[0]
        return [f"{100 * r['accuracy']:.2f} ({r['correct']}/{r['total']})"]
    return [mean_std([100 * r["accuracy"] for r in results])]


def budget_cell(trained: list[dict]) -> str:
    """The first run's budget as used: best step / steps run (stop reason), and a chosen alpha."""
    if not trained or "steps" not in trained[0]:
        return ""
    t = trained[0]
    tried = ", ".join(f"{a['alpha']:g}" for a in t.get("alpha_trials", []))
    alpha = f"; alpha {t['alpha']:g} of {tried}" if tried else ""
    return f"{t['best_step']:,} / {t['steps']:,} ({t['stop']}){alpha}"


def ece_cell(res: dict) -> str:
    """The test ECE before and after the model's temperature (results from before calibration: none)."""
    if "ece" not in res:
        return ""
    return f"{res['ece']:.3f} -> {res['ece_calibrated']:.3f} ({res['temperature']:.2f})"


def transfer_summary(work: Path, transfers: list[str], unit: str = "sentence") -> str:
    """A sentence on the transfer set: its sources and what was dropped (from label.py's results)."""
    res = read_results(work / "transfer.txt.results.json")
    if res is None:
        return ""
    src = res["sources"]
    kept = ", ".join(f"{s} {c['kept']:,}" for s, c in src.items())
    dups = sum(c["duplicates"] for c in src.values())
    held = sum(c["in_valid_or_test"] for c in src.values())
    return (f"Transfer set: {res['sentences']:,} {unit}s ({kept}); dropped {dups:,} duplicates and {held:,} lines "
            f"that are valid or test sentences. The students learn from " + ", ".join(f"`{t}`" for t in transfers) + ".")


def write_table(path: Path, title: str, out: Path, data: Path, teacher: TeacherPlan, recipe: Recipe,
                models: list[str], record: dict, recipe_path: str, transfers: list[str]) -> None:
    """The results table, from the runs' results files (nothing typed by hand)."""
    multi = recipe.multi_label
    scores = ["test macro-F1 %", "test micro-F1 %", "test exact match %"] if multi else ["test accuracy %"]
    header = ["model", "trained on", *scores, "ms/example", "padded ms/example", "parameters", "without embeddings",
              "train min", "steps: best / run (stop)", "ECE: T = 1 -> calibrated (T)"]
    n_columns = len(header)

    def row(name: str, trained_on: str, results: list[dict], train_results: list[Path], padded: Path | None) -> str:
        if not results:
            return f"| {name} | {trained_on} | (not run yet) |" + " |" * (n_columns - 3)
        res = results[0]
        trained = [t for t in map(read_results, train_results) if t]
        train_s = [t["seconds"] for t in trained]
        pad = read_results(padded) if padded else None
        return (f"| {name} | {trained_on} | {' | '.join(score_cells(results, multi))} | {res['ms_per_example']:.3f} | "
                f"{'' if pad is None else format(pad['ms_per_example'], '.3f')} | "
                f"{res['parameters']:,} | {res['parameters_without_embeddings']:,} | "
                f"{f'{sum(train_s) / len(train_s) / 60:.1f}' if train_s else ''} | {budget_cell(trained)} | "
                f"{ece_cell(res)} |")

    if teacher.kind == "file":
        rows = [f"| teacher: {teacher.name} | (scores from a file; no teacher ran) |" + " |" * (n_columns - 2)]
    else:
        teacher_res = read_results(out / "teacher.results.json")
        rows = [row(f"{teacher.name} teacher", "gold labels (fine-tuned here)" if teacher.kind == "finetune"
                    else "as given (its own head)", [teacher_res] if teacher_res else [],
                    [out / "teacher" / "train_results.json"], out / "teacher.padded.results.json")]
    for m in models:
        s = recipe.students[m]
        kinds = (("gold", "gold labels"),) if s.gold_epochs else ()
        for kind, trained_on in (*kinds, *distill_kinds(transfers)):
            ckpts = [out / checkpoint_name(m, kind, i) for i in range(s.seeds)]
            results = [r for r in (read_results(Path(f"{c}.results.json")) for c in ckpts) if r]
            rows.append(row(STUDENT_KINDS[m].title, trained_on, results,
                            [Path(f"{c}.train_results.json") for c in ckpts], Path(f"{ckpts[0]}.padded.results.json")))
    test = read_examples(data / "test.txt")
    n_test, unit = len(test), "sentence pair" if test[0].pair else "sentence"
    n_labels = len(read_labels(data / "label.txt")) if (data / "label.txt").exists() else "?"
    stages = ", ".join(f"{k} {v['seconds'] / 60:.1f}" for k, v in record.items())
    total = sum(v["seconds"] for v in record.values())
    teacher_recipe = (f", teacher `{teacher.config}` fine-tuned {recipe.teacher.epochs} epochs at lr "
                      f"{recipe.teacher.lr:g}" if teacher.kind == "finetune" else "")
    lines = [
        f"# {title}", "",
        f"Test set: `{data.name}/test.txt` ({n_test:,} {unit}s, {n_labels} labels). Latency: `evaluate.py` at batch "
        f"size 1, 1 CPU thread, PyTorch eager, after 10 warm-up {unit}s, on {cpu_model()} ({os.cpu_count()} "
        f"cores): *ms/example* from the raw {unit} (tokenization included), *padded* from ids padded to n_ctx "
        "(`--pad_to_n_ctx`, the seed's method). With several seeds: mean ± standard deviation of each test score, "
        "the latency of the first seed's model.",
        f"Recipe: `{recipe_path}`{teacher_recipe}, augmentation n_iter {recipe.n_iter}"
        + (f", training subset {recipe.train_subset:,} sentences" if recipe.train_subset else "")
        + "; the students' epochs and learning rates are in the recipe.",
        transfer_summary(data, transfers, unit), "",
        "| " + " | ".join(header) + " |", "|" + " --- |" * n_columns, *rows, "",
        "*steps*: the optimizer step of the checkpoint kept (best on valid) and the steps run, with why training "
        "stopped (`budget`: the recipe's epochs, at least its min_steps; `early stop`: no gain on valid for "
        "patience_steps), and the gold-label weight alpha when it was chosen on valid; first seed's run. *ECE*: "
        "expected calibration error on test (15 bins) of the probabilities as they are and divided by the model's "
        "temperature T, fitted on valid in training (first seed's run).", "",
        f"Wall time of the stages that ran: {total / 60:.1f} min ({stages}).", "",
    ]
    atomic_write_text(path, "\n".join(lines))


def distill_kinds(transfers: list[str]) -> list[tuple[str, str]]:
    """(checkpoint kind, table text) of each distilled run: `distill`, or with several
    transfer choices `distill-<choice>`."""
    if len(transfers) == 1:
        return [("distill", "teacher logits (distilled)")]
    return [(f"distill-{t}", f"teacher logits, transfer `{t}`") for t in transfers]


def build_steps(args: argparse.Namespace, recipe: Recipe, teacher: TeacherPlan, transfers: list[str],
                models: list[str], work: Path, out: Path) -> list[Step]:
    """The run's stages, in order (pipeline.py's builders)."""
    student_config = student_config_for_data(recipe, models)
    config = load_config(ROOT / student_config)
    embedding = args.embedding_path or f"embeddings/glove.6B.{config.token_emb_dim}d.txt"
    runs = out / "runs"
    steps: list[Step] = []
    teacher_path, teacher_files = teacher.source, local_files(teacher.source)
    if teacher.kind == "finetune":
        teacher_path = str(out / "teacher")
        teacher_files = [out / "teacher" / "model.safetensors", out / "teacher" / "config.json"]
        recipe.teacher.config = teacher.config
        steps += teacher_steps(recipe, work, teacher.source, out / "teacher", teacher.lowercase, runs)
    augmented = teacher.kind != "file" and any(t in ("augmented", "both") for t in transfers)
    if teacher.kind != "file":
        steps += teacher_eval_steps(teacher.config, work, teacher_path, out, args.label_map, teacher_files,
                                    recipe.latency_sample)
    if augmented:
        steps.append(augment_step(recipe, work, teacher.mask_token, config.tokenizer))
    if teacher.kind == "file":
        steps.append(label_step(recipe, work, student_config, teacher_logits=teacher.source,
                                label_map=args.label_map))
    else:
        steps.append(label_step(recipe, work, student_config, teacher_path, teacher_files, augmented,
                                args.unlabeled, label_map=args.label_map))
    steps.append(student_data_step(work, student_config, embedding, multi_label=recipe.multi_label))
    for m in models:
        s = recipe.students[m]
        for i in range(s.seeds):
            first = i == 0
            if s.gold_epochs:
                steps += student_steps(recipe, m, "gold", work, out / checkpoint_name(m, "gold", i), runs,
                                       seed=42 + i, padded=first)
            for (kind, _), transfer in zip(distill_kinds(transfers), transfers):
                steps += student_steps(recipe, m, kind, work, out / checkpoint_name(m, kind, i), runs, transfer,
                                       42 + i, padded=first)
    return steps


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        # MULTI_LABEL=1, the recipe, or a brought multi-label classifier (its problem_type) switch it on
        brought = args.teacher and not args.teacher_logits and is_teacher(args.teacher)
        wants_multi = bool(args.multi_label or (brought and teacher_multi_label(args.teacher)))
        recipe_path = args.recipe or default_recipe(args.demo, wants_multi)
        recipe = load_recipe(ROOT / recipe_path if not Path(recipe_path).is_absolute() else recipe_path)
        models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else recipe.models
        if args.seeds is not None:
            if args.seeds < 1:
                raise UserError(f"--seeds/SEEDS must be at least 1, got {args.seeds}")
            for s in recipe.students.values():
                s.seeds = args.seeds
        for m in models:
            if m not in recipe.students:
                raise UserError(f"unknown student {m!r} in --models/MODELS; {recipe_path} has "
                                f"{sorted(recipe.students)}")
        source = Path(args.data_dir)
        if not recipe.multi_label and wants_multi:
            recipe.multi_label = True
            recipe.validate(f"{recipe_path} (multi-label: e.g. configs/recipe-goemotions.json)")  # its losses
        pairs = check_data(source, recipe.multi_label)
        for m in models:
            check_student_data(m, pairs, f"{source}: --models/MODELS ({recipe_path})")
        if args.unlabeled and not Path(args.unlabeled).is_file():
            raise UserError(f"{args.unlabeled}: not found (--unlabeled)")
        teacher = plan_teacher(args, recipe, build_labels(read_examples(source / "train.txt",
                                                                          multi_label=recipe.multi_label),
                                                            recipe.multi_label))
        transfers = resolve_transfer(args, recipe, teacher)
        name = args.name or (source.resolve().name + ("-demo" if args.demo else ""))
        work = Path(args.work_dir) if args.work_dir else ROOT / "data" / name
        out = Path(args.out_dir) if args.out_dir else ROOT / "checkpoints" / name
        results = Path(args.results) if args.results else ROOT / "results" / f"{name}.md"
        steps = build_steps(args, recipe, teacher, transfers, models, work, out)
        prepare_work_dir(source, work, recipe.train_subset if args.demo or recipe.train_subset else 0)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "recipe.json", {"recipe": config_to_dict(recipe), "path": recipe_path, "models": models,
                                         "teacher": dataclasses.asdict(teacher), "transfer": transfers,
                                         "unlabeled": args.unlabeled, "label_map": args.label_map})
        pipeline = Pipeline(out / "pipeline.json", sys.executable, ROOT, args.force)
        title = f"{name}: distillation from {teacher.name}"
        start = time.time()
        for step in steps:
            pipeline.run(step)
            write_table(results, title, out, work, teacher, recipe, models, pipeline.record, recipe_path, transfers)
        logger.info("[Pipeline] finished in %.1f min; table: %s", (time.time() - start) / 60, results)
        print(results.read_text(encoding="utf-8"))
        return 0

    return run_main(body, logger)


if __name__ == "__main__":
    sys.exit(main())
