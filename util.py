"""What every stage needs: typed configs, seeding, device choice, atomic writes, logging.

Each stage script parses its flags, calls `load_config`, `set_seed` and `resolve_device`,
and writes every output through `atomic_path`, so a killed process never leaves a
half-written file under its final name.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import platform
import random
import sys
import tempfile
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

logger = logging.getLogger(__name__)


class UserError(Exception):
    """A problem with the user's input (file, flag, config): printed as one line, no traceback."""


# ---------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------

# Model families whose tokenizer and encoder come from a Hugging Face directory.
TRANSFORMER_FAMILIES = ("bert", "roberta", "electra", "auto")
GLOVE_FAMILY = "glove"


@dataclass
class CNNConfig:
    """A text CNN: `num_filters` filters per kernel size, max-over-time pooling."""

    num_filters: int = 256
    kernel_sizes: list[int] = field(default_factory=lambda: [2, 3, 4, 5, 6])


@dataclass
class DenseNetConfig:
    """A 1-D DenseNet: a 1x1 conv to `first_num_filters`; one dense layer per entry of
    `kernel_sizes` (its convolution widths, e.g. [3, 5]), each adding `num_filters` channels;
    a 1x1 conv to `last_num_filters`."""

    first_num_filters: int = 200
    num_filters: int = 100
    last_num_filters: int = 400
    kernel_sizes: list[list[int]] = field(
        default_factory=lambda: [[1, 1], [3, 3], [3, 5], [3, 7], [3, 9]]
    )


@dataclass
class DSAConfig:
    """Dynamic Self-Attention (Yoon et al. 2018): `num_attentions` heads of size `dsa_dim`,
    `r` routing iterations."""

    num_attentions: int = 8
    dsa_dim: int = 300
    r: int = 2


@dataclass
class LSTMConfig:
    """A bidirectional LSTM encoder (Tang et al. 2019's student shape)."""

    hidden_size: int = 150
    num_layers: int = 1


@dataclass
class Config:
    """A model config, one per JSON file in `configs/`.

    `emb_class` is `glove` (a student over GloVe vectors) or a transformer family
    (`bert`, `roberta`, `electra`, `auto`: all load through `AutoModel`).
    `enc_class` is the encoder on top: `cnn`, `densenet-cnn`, `densenet-dsa`, `bilstm`
    for students; `cls` (a head over the first token) or `mean` (over the mean of the real
    tokens) for transformers.
    """

    emb_class: str
    enc_class: str
    n_ctx: int = 100
    lowercase: bool = True
    token_emb_dim: int = 50
    pad_token: str = "<pad>"
    unk_token: str = "<unk>"
    pad_token_id: int = 0
    unk_token_id: int = 1
    freeze_emb: bool = False
    dropout: float = 0.1
    fc_hidden_size: int = 256
    cnn: CNNConfig | None = None
    densenet: DenseNetConfig | None = None
    dsa: DSAConfig | None = None
    lstm: LSTMConfig | None = None

    @property
    def is_transformer(self) -> bool:
        return self.emb_class in TRANSFORMER_FAMILIES

    def validate(self, where: str) -> None:
        """Check values the type system cannot: known classes, sections present, sizes > 0."""
        # Imported here: model.py imports this module.
        from model import STUDENTS, TEACHER_HEADS

        families = (GLOVE_FAMILY, *TRANSFORMER_FAMILIES)
        if self.emb_class not in families:
            raise UserError(f"{where}: unknown emb_class {self.emb_class!r}; expected one of {list(families)}")
        encoders = TEACHER_HEADS if self.is_transformer else STUDENTS
        if self.enc_class not in encoders:
            raise UserError(
                f"{where}: unknown enc_class {self.enc_class!r} for emb_class {self.emb_class!r}; "
                f"expected one of {sorted(encoders)}"
            )
        if not self.is_transformer:
            for section in encoders[self.enc_class].required_sections:
                if getattr(self, section) is None:
                    raise UserError(f"{where}: enc_class {self.enc_class!r} needs a {section!r} section")
        for section_name in ("cnn", "densenet", "dsa", "lstm"):
            section = getattr(self, section_name)
            for name, value in (dataclasses.asdict(section) if section is not None else {}).items():
                # sizes are ints, lists of ints or lists of lists of ints: all must be > 0
                flat = [v for item in (value if isinstance(value, list) else [value])
                        for v in (item if isinstance(item, list) else [item])]
                if not flat or any(v <= 0 for v in flat):
                    raise UserError(f"{where}: {section_name}.{name} must be positive, got {value!r}")
        if self.fc_hidden_size < 0:
            raise UserError(f"{where}: fc_hidden_size must be 0 (no hidden layer) or positive")
        if self.pad_token_id != 0 or self.unk_token_id != 1:
            raise UserError(f"{where}: pad_token_id must be 0 and unk_token_id 1")
        if self.n_ctx < 1 or self.token_emb_dim < 1:
            raise UserError(f"{where}: n_ctx and token_emb_dim must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"{where}: dropout must be in [0, 1), got {self.dropout}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check `value` (parsed JSON) against the type hint `tp`; return it, converting
    nested dicts to dataclasses. Raises UserError naming `key`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{where}: key {key!r} must be an object, got {type(value).__name__}")
        return from_dict(tp, value, where, prefix=f"{key}.")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise UserError(f"{where}: key {key!r} must be a list of {_type_name(item_tp)}, got {type(value).__name__}")
        return [_convert(v, item_tp, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: key {key!r} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: key {key!r} must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: key {key!r} must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: key {key!r} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r}")


def from_dict(cls: type, data: dict, where: str, prefix: str = "") -> Any:
    """Build dataclass `cls` from `data`, refusing unknown keys, missing required keys
    and wrong types with a message naming the key and `where`."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"{where}: unknown key {prefix}{unknown[0]!r}; expected one of {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(data[f.name], hints[f.name], prefix + f.name, where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UserError(f"{where}: missing required key {prefix}{f.name!r}")
    return cls(**kwargs)


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a missing file or bad JSON is a UserError naming line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as e:
        raise UserError(f"{path}: file not found") from e
    except IsADirectoryError as e:
        raise UserError(f"{path}: is a directory, expected a JSON file") from e
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from e


def apply_overrides(data: dict, overrides: list[str], where: str) -> dict:
    """Apply `key=value` or `section.key=value` overrides (value parsed as JSON, else a string)."""
    data = json.loads(json.dumps(data))
    for item in overrides or []:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"{where}: --set {key}: {part!r} is not a section")
        node[parts[-1]] = value
    return data


def config_from_dict(data: Any, where: str) -> Config:
    """Validate a parsed config (from a JSON file or a checkpoint) into a `Config`."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a JSON object at the top level")
    config = from_dict(Config, data, where)
    config.validate(where)
    return config


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a model config JSON file."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object at the top level")
    return config_from_dict(apply_overrides(data, overrides or [], str(path)), str(path))


def config_to_dict(config: Any) -> dict:
    """A dataclass as plain JSON-able dicts, `None` sections dropped."""
    return {k: v for k, v in dataclasses.asdict(config).items() if v is not None}


# ---------------------------------------------------------------------------
# Seeding, devices, threads
# ---------------------------------------------------------------------------

def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` picks CUDA when present, else CPU; `cuda` without a GPU is a UserError.
    Under torchrun each process takes the GPU of its `local_rank`."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and torch.cuda.is_available():
        return torch.device(f"cuda:{local_rank}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available here; use --device cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UserError(f"--device {name!r}: expected auto, cpu or cuda")
    return torch.device(name)


@dataclass
class DistContext:
    """Where this process stands in a `torchrun` job (a plain run is rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> DistContext:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): NCCL on CUDA,
    gloo on CPU. A plain `python train.py` returns a one-process context and starts nothing."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistContext(rank, world_size, local_rank)


def run_in_group(ctx: DistContext, run: Callable[[], int]) -> int:
    """`run()` (returns an exit code), then leave the process group. After a success every
    rank first waits for the others: a rank that tore gloo down while rank 0 was still writing
    its output was seen to abort (`terminate called without an active exception`). A failed
    run leaves at once, since the other ranks may never arrive."""
    succeeded = False
    try:
        code = run()
        succeeded = code == 0
        return code
    finally:
        if ctx.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                if succeeded:
                    dist.barrier()
                dist.destroy_process_group()


def amp_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `--amp`; fp16 only on CUDA."""
    if name == "fp16" and device.type != "cuda":
        raise UserError("--amp fp16 needs --device cuda; use --amp bf16 or none on CPU")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def set_threads(num_threads: int | None) -> None:
    """Set torch's intra-op thread count once (None or 0: leave torch's default)."""
    if num_threads:
        torch.set_num_threads(num_threads)


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, on error remove it.

    A process killed mid-write leaves the old file (or none), never a partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def require_file(path: str | Path, what: str) -> Path:
    """Return `path` if it is a non-empty file, else raise a UserError saying what it should be."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found (expected {what})")
    if not path.is_file():
        raise UserError(f"{path}: not a file (expected {what})")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: file is empty (expected {what})")
    return path


# ---------------------------------------------------------------------------
# Logging and entry points
# ---------------------------------------------------------------------------

def setup_logging(level: int = logging.INFO) -> None:
    """Handlers for a stage's `main`: `LEVEL:logger:message`, the seed's log format."""
    logging.basicConfig(level=level, format="%(levelname)s:%(name)s:%(message)s", force=True)


def run_main(body: Callable[[], int], log: logging.Logger) -> int:
    """Run a stage body; a UserError becomes one `ERROR:` line and exit code 1."""
    try:
        return body()
    except UserError as e:
        log.error("%s", e)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


def positive(kind: type) -> Callable[[str], Any]:
    """An argparse type accepting only values > 0."""
    import argparse

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from e
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions() -> dict:
    """Versions recorded in results files."""
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    try:
        import transformers

        versions["transformers"] = transformers.__version__
    except ImportError:
        pass
    return versions


def eprint(*args: Any) -> None:
    """Print to stderr (for messages before logging is set up)."""
    print(*args, file=sys.stderr)
