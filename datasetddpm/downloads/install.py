"""`datasetddpm download NAME`: fetch a registry entry into `--dir`, then make it usable and check it.

A checkpoint is converted to a model folder `<dir>/<name>` exactly as `convert-adm` converts it (every
tensor of the ADM state dict must map onto the UNet, strictly) and loaded back; the dataset archive is
unpacked (members confined to `--dir`, no links out) and every preset folder in it is read as
`train-ensemble` reads its data. `<dir>/<file>.download.json` records what was fetched (URL, size,
sha256, licence, date); a rerun that finds it, the file and the converted or unpacked result does nothing."""

from __future__ import annotations

import datetime
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

from ..errors import DatasetDDPMError, InputError, OptionError
from ..io import check_output_dir, read_json, run_lock, write_json
from .fetch import fetch
from .registry import Entry, get_entry

RECORD_SUFFIX = ".download.json"


def record_path(directory: Path, entry: Entry) -> Path:
    return directory / f"{entry.filename}{RECORD_SUFFIX}"


def _finished(directory: Path, entry: Entry) -> dict | None:
    """The record of a finished download whose file and result are still in place, else None."""
    path, dest = record_path(directory, entry), directory / entry.filename
    try:
        record = read_json(path)
    except (DatasetDDPMError, OSError):
        return None
    if not dest.is_file() or dest.stat().st_size != record.get("size"):
        return None
    results = record.get("results", [])
    return record if results and all((directory / r).is_dir() for r in results) else None


def download(name: str, directory: str | Path, *, url: str | None = None, retries: int = 3, backoff: float = 2.0,
             progress: bool = True, log=print) -> dict:
    """Fetch, check and convert or unpack one registry entry; returns its record (`already: True` when a
    finished download was found and nothing was done)."""
    entry = get_entry(name)
    if url is not None and not url.startswith(("http://", "https://", "file://")):
        raise OptionError("--url", f"expected an http://, https:// or file:// URL, got {url!r}")
    directory = check_output_dir(directory, option="--dir", need_bytes=entry.size or 0, what=entry.filename)
    done = _finished(directory, entry)
    if done is not None:
        return {**done, "already": True}
    created = not directory.exists()
    try:
        with run_lock(directory):
            record = _fetched(entry, directory, (url,) if url else entry.urls, retries, backoff, progress)
            results = _make_usable(entry, directory)
            record = {"name": entry.name, "file": entry.filename, **record, "licence": entry.licence,
                      "source": entry.source, "date": datetime.date.today().isoformat(), "results": results}
            write_json(record_path(directory, entry), record)
    except BaseException:
        if created:  # a refused first download leaves no empty folder behind (a resumable .part keeps it)
            try:
                directory.rmdir()
            except OSError:
                pass
        raise
    for line in _summary(entry, directory, results):
        log(line)
    return {**record, "already": False}


def _fetched(entry: Entry, directory: Path, urls: tuple[str, ...], retries: int, backoff: float,
             progress: bool) -> dict:
    """The file's {url, size, sha256}: downloaded, or measured when a killed run already placed it (only a
    checked file is ever renamed to its final name)."""
    from .fetch import sha256_of
    dest = directory / entry.filename
    if dest.is_file():
        digest = sha256_of(dest)
        if entry.sha256 is None or digest == entry.sha256.lower():
            return {"url": "(placed by an earlier run)", "size": dest.stat().st_size, "sha256": digest}
        dest.unlink()  # another file of that name: fetch the registry's
    return _fetch_any(entry, directory, urls, retries, backoff, progress)


def _make_usable(entry: Entry, directory: Path) -> list[str]:
    """Convert or unpack the file; one that fails is removed, so nothing of it is ever used."""
    dest = directory / entry.filename
    try:
        return _convert(entry, dest, directory) if entry.kind == "checkpoint" else _unpack(dest, directory, entry)
    except DatasetDDPMError:
        dest.unlink(missing_ok=True)
        raise


def _fetch_any(entry: Entry, directory: Path, urls: tuple[str, ...], retries: int, backoff: float,
               progress: bool) -> dict:
    """The first URL that delivers a file that checks out; a mismatch is refused at once (a mirror serving
    other bytes is not tried around)."""
    from ..progress import progress_bar
    failures = []
    with progress_bar(progress) as bar:
        task = bar.add_task(f"download {entry.name}", total=entry.size, info="")

        def report(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total, info=f"{done / 2**20:.1f} MiB")
        for url in urls:
            try:
                return fetch(url, directory / entry.filename, size=entry.size, sha256=entry.sha256, retries=retries,
                             backoff=backoff, report=report)
            except InputError:
                raise
            except DatasetDDPMError as e:
                failures.append(str(e))
    raise DatasetDDPMError(f"{entry.name}: no URL delivered the file: " + "; ".join(failures))


def _convert(entry: Entry, checkpoint: Path, directory: Path) -> list[str]:
    """`convert-adm --checkpoint <file> --flags <set> --out <dir>/<name>`, then load the folder back."""
    from ..generators.adm import convert_adm
    from ..generators.loading import load_generator
    out = directory / entry.model_dir
    convert_adm(checkpoint, entry.adm_flags, out, overwrite=out.exists())
    try:
        load_generator(str(out))
    except DatasetDDPMError:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return [entry.model_dir]


def _unpack(archive: Path, directory: Path, entry: Entry) -> list[str]:
    """Unpack into a temporary folder, check every preset folder found, then move them into `directory`
    (a folder of that name already there is left as it is)."""
    tmp = Path(tempfile.mkdtemp(prefix=".unpack.", suffix=".tmp", dir=directory))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, filter="data")  # no absolute paths, no links out, no devices
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise InputError(archive, f"not a readable .tar.gz ({e}); refused, removed") from None
        found = {p: folder for p in entry.presets for folder in (tmp / p, tmp / "datasets" / p) if folder.is_dir()}
        if not found:
            raise InputError(archive, f"holds none of the folders {', '.join(entry.presets)}; refused, removed")
        for preset, folder in found.items():
            check_dataset(folder, preset)
        for preset, folder in found.items():
            if not (directory / preset).exists():
                folder.rename(directory / preset)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(found)


def check_dataset(folder: str | Path, preset: str) -> dict[str, int]:
    """A dataset folder in the reference layout, read and validated as `train-ensemble` (real/train),
    `evaluate` (real/test) and the paper's labeller (ddpm/, where present) read it: images per split."""
    from ..data.folders import read_labelled
    from ..presets import get_preset
    p, folder = get_preset(preset), Path(folder)
    counts = {}
    for split, sub in (("train", folder / "real" / "train"), ("test", folder / "real" / "test"), ("ddpm", folder / "ddpm")):
        if split == "ddpm" and not sub.is_dir():
            continue
        counts[split] = len(read_labelled(sub, p.num_classes, p.ignore_label, resolution=p.resolution))
    return counts


def _summary(entry: Entry, directory: Path, results: list[str]) -> list[str]:
    if entry.kind == "checkpoint":
        return [f"{entry.name}: {directory / entry.filename} converted and checked; use --model {directory / results[0]}"]
    return [f"{entry.name}: {', '.join(str(directory / r) for r in results)} unpacked and checked"]
