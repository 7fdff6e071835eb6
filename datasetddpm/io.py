"""Small file helpers shared by every writer: atomic writes, JSON, safetensors round trips."""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import pickle
import re
import shutil
import signal
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from .errors import DatasetDDPMError, InputError


KILL_ENV = "DATASETDDPM_KILL_AT_WRITE"  # tests: SIGKILL this process at its N-th atomic write, tmp written
_writes = [0]


WRITES_LOG_ENV = "DATASETDDPM_WRITES_LOG"  # tests: append one line per atomic write to this file


def _maybe_killed() -> None:
    """Fault injection for the kill-anywhere tests: die with the temporary file written but not renamed."""
    log = os.environ.get(WRITES_LOG_ENV)
    if log:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
    at = os.environ.get(KILL_ENV)
    if at:
        _writes[0] += 1
        if _writes[0] == int(at):
            os.kill(os.getpid(), signal.SIGKILL)


LIBRARY_TEMPORARY = re.compile(r"\.tmp[A-Za-z0-9_]{6,}")  # Rust's `tempfile` (safetensors' own writes, older versions)


def is_stale_temporary(name: str) -> bool:
    """A temporary file name of an atomic write (`.<name>.*.tmp`) or of a library writing beside its target
    (`.tmpXXXXXX`): what a command killed mid-write leaves behind."""
    return fnmatch.fnmatchcase(name, ".*.tmp") or LIBRARY_TEMPORARY.fullmatch(name) is not None


def remove_stale_temporaries(directory: str | Path) -> None:
    """Delete the temporary files that atomic writes (ours, or a library's) of a killed command left in
    `directory` (not recursive). Call it only while holding the folder's run lock."""
    directory = Path(directory)
    if directory.is_dir():
        for p in directory.glob(".*"):
            if p.is_file() and is_stale_temporary(p.name):
                p.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; on success fsync it and rename it into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary files
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # a writer that replaced the file (safetensors does) left mkstemp's 0600
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _maybe_killed()
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, InputError):
            raise write_error(path, e) from None
        raise


def write_error(path: str | Path, error: OSError) -> InputError:
    """An OS error while writing output (disk full, read-only, not a directory, permissions) as one line."""
    return InputError(path, f"cannot write: {write_reason(error)}")


def write_reason(error: OSError) -> str:
    """Why a write failed, in words (the errno's, for the usual causes)."""
    return {errno.ENOSPC: "no space left on the device", errno.EROFS: "read-only file system",
            errno.EACCES: "permission denied", errno.ENOTDIR: "a parent is not a directory",
            errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file too large (file system or process limit)",
            errno.EIO: "input/output error"}.get(error.errno, error.strerror or type(error).__name__)


def check_output_dir(path: str | Path, need_bytes: int = 0, option: str = "--out", what: str = "the first shard") -> Path:
    """Refuse an output location that cannot be written, before anything is created: a file where a folder
    should be, a read-only or missing-permission parent, or a disk without `need_bytes` free."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(path, f"{option} must be a directory, but a file of that name exists")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(existing, f"is not a directory, so {option} {path} cannot be created under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(existing, f"not writable (permissions or a read-only file system); choose another {option}")
    try:
        probe = tempfile.NamedTemporaryFile(dir=existing, prefix=".datasetddpm-probe-")
        probe.close()
    except OSError as e:
        raise InputError(existing, f"cannot write here ({e.strerror}); choose another {option}") from None
    if need_bytes:
        free = shutil.disk_usage(existing).free
        if free < need_bytes:
            raise InputError(existing, f"only {free / 2**20:.0f} MiB free, {need_bytes / 2**20:.0f} MiB needed for {what}; "
                                       f"free some space or choose another {option}")
    return path


LOCK_NAME = ".datasetddpm.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_held_locks: dict[Path, int] = {}  # folders this process holds the lock of (a holder may call another writer)


def _lock_holder(path: Path) -> dict | None:
    """The live holder recorded in a lock file, or None when there is none (no file, or a stale one: its
    process is gone on this host, or it died while writing the lock)."""
    try:
        holder = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        holder = {}
    pid, where = holder.get("pid"), holder.get("host")
    if not holder or where == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
        return None
    return holder


def _in_use(directory: Path, holder: dict) -> DatasetDDPMError:
    return DatasetDDPMError(f"{directory}: in use by another command (pid {holder.get('pid')} on {holder.get('host')}); "
                            f"wait for it to finish, or delete {directory / LOCK_NAME} if that process no longer exists")


def check_unlocked(directory: str | Path) -> None:
    """Refuse a folder another live command holds the lock of, without taking it (a reader's check)."""
    directory = Path(directory)
    if directory.resolve() in _held_locks:
        return
    holder = _lock_holder(directory / LOCK_NAME)
    if holder is not None:
        raise _in_use(directory, holder)


def live_part_locks(directory: Path) -> list[tuple[str, dict]]:
    """(part, holder) of every live part lock (`.datasetddpm.lock.<part>`: torchrun ranks or batch tasks that
    write one run together)."""
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob(LOCK_NAME + ".*")):
        holder = _lock_holder(path)
        if holder is not None:
            found.append((path.name[len(LOCK_NAME) + 1:], holder))
    return found


def _refuse_parts(directory: Path) -> None:
    parts = live_part_locks(directory)
    if parts:
        names = ", ".join(part for part, _ in parts)
        raise DatasetDDPMError(f"{directory}: in use by {len(parts)} process(es) writing it together ({names}); wait "
                               f"for them to finish, or delete {directory / LOCK_NAME}.<part> of a process that no "
                               "longer exists")


def _take_lock(directory: Path, create: bool) -> None:
    _refuse_parts(directory)
    path = directory / LOCK_NAME
    try:
        if create:
            directory.mkdir(parents=True, exist_ok=True)
        elif not directory.is_dir():
            raise InputError(directory, "not found" if not directory.exists() else "not a directory")
        holder = create_lock_file(path)
    except OSError as e:  # a read-only run, no permission: nothing was written
        raise InputError(directory, f"cannot take the run lock ({write_reason(e)}); "
                                    "a command that writes here needs a writable folder") from None
    if holder is not None:
        raise _in_use(directory, holder)


def create_lock_file(path: Path) -> dict | None:
    """Create the lock file `path` holding this process's pid and host; None when taken, else the live holder
    that has it. A lock left by a process that died is taken over."""
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _lock_holder(path)
            if holder is not None:
                return holder
            path.unlink(missing_ok=True)  # stale: its process is gone (or it died while writing the lock)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
        return None
    raise DatasetDDPMError(f"{path}: could not take the lock")


@contextmanager
def run_lock(directory: str | Path, enabled: bool = True, *, create: bool = True):
    """One writer per output folder: `directory/.datasetddpm.lock` holds the writer's pid and host.

    Every command that writes or deletes in a run or model folder takes it first, then validates, then
    writes. A second command on the same folder is refused with one line naming the holder. A lock left
    by a process that died (same host, pid gone) is taken over. A writer that calls another writer on the
    folder it holds (`verify --repair` regenerating shards) keeps its lock. `create=False`: the folder
    must exist (nothing is created). The lock is removed on exit, so a finished folder holds no trace of it."""
    if not enabled:
        yield
        return
    directory = Path(directory)
    key = directory.resolve()
    if key in _held_locks:
        _held_locks[key] += 1
        try:
            yield
        finally:
            _held_locks[key] -= 1
        return
    _take_lock(directory, create)
    _held_locks[key] = 1
    try:
        yield
    finally:
        del _held_locks[key]
        (directory / LOCK_NAME).unlink(missing_ok=True)


def write_json(path: str | Path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(path, f"not valid JSON ({e})") from None


def read_jsonl(path: str | Path, keys: tuple[str, ...] = ()) -> list[dict]:
    """One JSON object per line, each holding `keys`; a damaged line is one error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    rows = []
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise InputError(path, "not UTF-8 text") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(path, f"line {n} is not valid JSON ({e.msg}); `datasetddpm verify --repair` rewrites "
                                   "an index") from None
        missing = [k for k in keys if not isinstance(row, dict) or k not in row]
        if missing:
            raise InputError(path, f"line {n} lacks {', '.join(missing)}")
        rows.append(row)
    return rows


TENSORS_KILL_ENV = "DATASETDDPM_KILL_IN_TENSORS_WRITE"  # tests: SIGKILL halfway through the N-th safetensors write
_tensor_writes = [0]


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """A safetensors file, written like every other output: serialised in memory, then through `atomic_path`.
    safetensors' `save_file` would write its own `.tmpXXXXXX` beside the target (left behind by a kill) and
    raise its own error type for a full disk; this way a write error is the same OSError one line as any."""
    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    with atomic_path(path) as tmp:
        view, half = memoryview(data), len(data) // 2  # slices of a memoryview copy nothing
        with open(tmp, "wb") as f:
            f.write(view[:half])
            _maybe_killed_in_tensors_write()
            f.write(view[half:])


def _maybe_killed_in_tensors_write() -> None:
    at = os.environ.get(TENSORS_KILL_ENV)
    if at:
        _tensor_writes[0] += 1
        if _tensor_writes[0] == int(at):
            os.kill(os.getpid(), signal.SIGKILL)


def load_tensors(path: str | Path, meta: bool = False) -> dict[str, torch.Tensor]:
    """Load a safetensors file (never a pickle); `meta`: tensors on the meta device, from the header alone
    (shapes and dtypes to validate a model with, no weight bytes read)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        if meta:
            from safetensors import safe_open
            with safe_open(str(path), framework="pt") as f:
                return {k: _meta_like(f.get_slice(k)) for k in f.keys()}
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for damaged headers
        raise InputError(path, f"not a readable safetensors file ({e})") from None


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source, *, assign: bool = False) -> None:
    """load_state_dict that names missing/unexpected keys and shape mismatches in one line.
    assign=True adopts the given tensors (for modules built on the meta device, no copy)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        for name, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", wrong)):
            if keys:
                shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
                parts.append(f"{name}: {shown}")
        raise InputError(source, "checkpoint does not match the model config; " + "; ".join(parts))
    module.load_state_dict(state, strict=True, assign=assign)


_STATE_WRAPPERS = ("state_dict", "model", "ema", "ema_model", "model_ema")  # training-script checkpoint dicts


def _is_tensor_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and torch.is_tensor(v)
                                                       for k, v in obj.items())


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                       "BOOL": torch.bool}


def _meta_like(view) -> torch.Tensor:
    return torch.empty(view.get_shape(), dtype=_SAFETENSORS_DTYPES.get(view.get_dtype(), torch.float32), device="meta")


def load_state_dict_file(path: str | Path, meta: bool = False) -> dict[str, torch.Tensor]:
    """A state dict from `.safetensors`, or from a PyTorch file with `torch.load(weights_only=True)` only.

    A pickle that needs arbitrary classes is refused: unpickling runs code named by the file. A dict that
    wraps exactly one tensor dict under a usual key ("state_dict", "model", "ema", ...) is unwrapped, and
    a "module." prefix on every key (DistributedDataParallel) is dropped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    if path.suffix == ".safetensors":
        return load_tensors(path, meta)
    try:
        obj = _torch_load(path, meta)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" (it references {found.group(1)})" if found else ""
        raise InputError(path, f"needs arbitrary unpickling{what}; refusing to run code from a checkpoint - "
                               "save a plain state dict (torch.save(model.state_dict(), ...)) or safetensors") from None
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(path, f"not a readable PyTorch checkpoint ({reason})") from None
    if not _is_tensor_dict(obj) and isinstance(obj, dict):
        inner = [k for k in _STATE_WRAPPERS if _is_tensor_dict(obj.get(k))]
        if len(inner) > 1:
            raise InputError(path, f"holds several state dicts ({', '.join(inner)}); save the one to use on its own")
        if inner:
            obj = obj[inner[0]]
    if not _is_tensor_dict(obj):
        raise InputError(path, "not a state dict of named tensors")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    if meta:  # memory-mapped storages become shapes: their pages are never read
        obj = {k: v.to("meta") for k, v in obj.items()}
    return obj


def _torch_load(path: Path, meta: bool):
    """torch.load, weights only; memory-mapped when only the shapes are wanted (a zip checkpoint; the legacy
    format cannot be mapped and is read)."""
    if meta:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
    return torch.load(path, map_location="cpu", weights_only=True)


def json_tensor(data) -> torch.Tensor:
    """Small JSON metadata stored inside a safetensors file (as uint8 bytes)."""
    return torch.tensor(list(json.dumps(data).encode()), dtype=torch.uint8)


def tensor_json(t: torch.Tensor):
    return json.loads(bytes(t.tolist()).decode())


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str = "opt.") -> dict[str, torch.Tensor]:
    """An optimizer's state as flat tensors (safetensors holds no pickles)."""
    sd = opt.state_dict()
    out, names = {}, {}
    for i, s in sd["state"].items():
        names[str(i)] = list(s)
        for n, v in s.items():
            out[f"{prefix}{i}.{n}"] = v if torch.is_tensor(v) else torch.tensor(v)
    out[prefix + "meta"] = json_tensor({"param_groups": sd["param_groups"], "tensor_names": names})
    return out


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str = "opt.") -> None:
    meta = tensor_json(tensors[prefix + "meta"])
    state = {int(i): {n: tensors[f"{prefix}{i}.{n}"] for n in names} for i, names in meta["tensor_names"].items()}
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def write_checkpoint(directory: str | Path, weights: dict[str, torch.Tensor], *, meta_file: str, weights_file: str,
                     fmt: str, body: dict) -> None:
    """A checkpoint folder: safetensors weights + a JSON file naming its format (tuples become lists)."""
    directory = Path(directory)
    save_tensors(directory / weights_file, weights)
    write_json(directory / meta_file, {"format": fmt, "version": 1, **body})


def read_checkpoint_meta(directory: str | Path, meta_file: str, fmt: str, what: str) -> dict:
    path = Path(directory) / meta_file
    meta = read_json(path)
    if meta.get("format") != fmt:
        raise InputError(path, f"not a DatasetDDPM {what} (format={meta.get('format')!r})")
    return meta


# A folder written whole or not at all (exports, imported annotations): files are fsynced, the folder is
# built in a hidden sibling and renamed into place. The sibling's name keeps its `.export-` tag for every
# user so that a killed command's leftovers are recognised and cleaned the same as before.
def write_synced(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # the rename into place must not publish files still in the page cache only


def _staging_prefix(out: Path) -> str:
    return f".{out.name}.export-"


def _remove_stale_staging(out: Path) -> None:
    """Delete the staging folders that killed exports to `out` left (this host, their process gone)."""
    host, prefix = socket.gethostname(), _staging_prefix(out)
    for path in out.parent.glob(".*.export-*"):
        if not path.name.startswith(prefix):
            continue  # another folder's
        owner, _, kind = path.name[len(prefix):].rpartition(".")
        where, _, pid = owner.rpartition("-")
        if kind in ("partial", "old") and where == host and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _shown_path(error: OSError, staging: Path, out: Path) -> Path:
    """The path an OS error is about as the user knows it: inside DIR, not the hidden staging folder."""
    if not error.filename:
        return out
    path = Path(error.filename)
    return out / path.relative_to(staging) if staging in path.parents else path


@contextmanager
def staged_folder(shown: Path):
    """Yield a hidden sibling of `shown` (the --out path) to write into; on success it replaces the folder
    by renames, so it is either the old folder or the whole new export, never part of one."""
    out = shown.resolve()  # `.` or `x/..` have no name to put a sibling beside
    stem = f"{_staging_prefix(out)}{socket.gethostname()}-{os.getpid()}"
    staging, old = out.with_name(stem + ".partial"), out.with_name(stem + ".old")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(out)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        yield staging
        _maybe_killed()
        if out.exists() and any(out.iterdir()):  # --overwrite (checked before): move the old one aside first
            os.replace(out, old)
        os.replace(staging, out)  # rename(2) also replaces an empty directory
        shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        raise write_error(_shown_path(e, staging, shown), e) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
