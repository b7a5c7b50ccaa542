"""What the stages need: the user-error type, seeding, device choice, torchrun groups,
atomic writes, the stages' logging and argparse value types.

A stage script parses its flags, loads its config (`config.py`), seeds itself with
`set_seed` when it draws random numbers (training, augmentation, labeling), picks its device
with `resolve_device`, runs its body through `run_main` (its logging, one-line errors), and
writes every output through `atomic_path`, so a killed process never leaves a half-written
file under its final name. This module imports no other module of ours, and torch only
inside the functions that need it, so `predict.py --bundle` runs without torch.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import platform
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


class UserError(Exception):
    """A problem with the user's input (file, flag, config): printed as one line, no traceback."""


# ---------------------------------------------------------------------------
# Seeding, devices, threads, torchrun
# ---------------------------------------------------------------------------

def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` picks CUDA when present, else CPU; `cuda` without a GPU is a UserError.
    Under torchrun each process takes the GPU of its `local_rank`."""
    import torch

    if name not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device {name!r}: expected auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device(f"cuda:{local_rank}")


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
    import torch
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistContext(rank, world_size, local_rank)


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (a no-op in a plain run)."""
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()


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


def exit_stage(code: int) -> None:
    """End a stage script's process with `code` (its `if __name__ == "__main__"` line).

    A torchrun worker (WORLD_SIZE > 1) has left its process group in `run_in_group` by now;
    it flushes logging, stdout and stderr and ends with `os._exit`, skipping the interpreter's
    teardown. In that teardown a 2-process gloo run was seen to abort now and then (SIGABRT,
    `terminate called without an active exception`, exit -6) after writing correct output,
    which torchrun reports as a failed job: gloo's C++ threads can still hold tensors when
    Python shuts down (pytorch/pytorch#179291). Every output is written and closed before
    `main` returns, so nothing is lost. A plain run exits the usual way."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def amp_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `--amp`; fp16 only on CUDA."""
    import torch

    if name == "fp16" and device.type != "cuda":
        raise UserError("--amp fp16 needs --device cuda; use --amp bf16 or none on CPU")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def set_threads(num_threads: int | None) -> None:
    """Set torch's intra-op thread count once (None or 0: leave torch's default)."""
    import torch

    if num_threads:
        torch.set_num_threads(num_threads)


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, on error remove it.

    A process killed mid-write leaves the old file (or none), never a partial one. The file
    gets the permissions a plain `open` would give it (0666 less the umask), not mkstemp's
    0600, so a bundle copied into a service image is readable by the service's user.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~current_umask())
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


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, or of a directory's files (names and bytes, sorted by name)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# Logging, entry points, argparse types
# ---------------------------------------------------------------------------

@contextlib.contextmanager
def stage_logging() -> Iterator[None]:
    """While a stage's `main` runs: `LEVEL:logger:message` lines (the seed's format) on stderr,
    INFO and up (WARNING and up on torchrun ranks other than 0, so one process logs). The
    root logger is put back as it was afterwards, so a program that calls `main()` keeps its
    own logging."""
    root = logging.getLogger()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def run_main(body: Callable[[], int], log: logging.Logger) -> int:
    """Run a stage body with the stage's logging; a UserError becomes one `ERROR:` line and
    exit code 1."""
    with stage_logging():
        try:
            return body()
        except UserError as e:
            log.error("%s", e)
            return 1
        except KeyboardInterrupt:
            log.error("interrupted")
            return 130


def bounded(kind: type, low: float, low_inclusive: bool = False, high: float | None = None) -> Callable[[str], Any]:
    """An argparse type: `kind` values above `low` (or at it, when inclusive) and at most `high`."""
    low_word = f">= {low:g}" if low_inclusive else f"> {low:g}"
    what = f"a {kind.__name__} {low_word}" + (f" and <= {high:g}" if high is not None else "")

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from e
        if (value < low if low_inclusive else value <= low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what
    return parse


def positive(kind: type) -> Callable[[str], Any]:
    """An argparse type accepting only values > 0."""
    return bounded(kind, 0)


def non_negative(kind: type) -> Callable[[str], Any]:
    """An argparse type accepting values >= 0."""
    return bounded(kind, 0, low_inclusive=True)


def probability(text: str) -> float:
    """An argparse type for a probability in [0, 1]."""
    return bounded(float, 0, low_inclusive=True, high=1)(text)


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
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    try:
        import transformers

        versions["transformers"] = transformers.__version__
    except ImportError:
        pass
    return versions
