"""Resumable, atomic HTTP download (standard library only).

Bytes go to `.<file>.part` in the destination folder, resumed with an HTTP Range request after a dropped
connection or a killed command; only a file whose size (and sha256, where known) checks out is fsynced
and renamed to its final name, so a partial file is never used. A mismatch removes the partial file."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DatasetDDPMError, InputError

CHUNK = 1 << 20
GIVE_UP_STATUSES = (400, 401, 403, 404, 410)  # the file is not there for us: retrying cannot help


class Interrupted(OSError):
    """The connection ended before the announced length: resumable."""


def part_path(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.part"


def _part_meta(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.part.json"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _total_from(resp, status: int, start: int) -> int | None:
    """The whole file's length from a 206's Content-Range or a 200's Content-Length."""
    if status == 206:
        m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
        if not m or int(m.group(1)) != start:
            raise Interrupted(f"server answered the range request with {resp.headers.get('Content-Range')!r}")
        return None if m.group(2) == "*" else int(m.group(2))
    length = resp.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _range_done(error: urllib.error.HTTPError, have: int) -> bool:
    """A 416 to `Range: bytes=<have>-` whose `bytes */<total>` says the partial file is already whole."""
    m = re.match(r"bytes \*/(\d+)", error.headers.get("Content-Range", "") if error.headers else "")
    return bool(m) and int(m.group(1)) == have


def _transfer(url: str, part: Path, timeout: float, report) -> None:
    """One request: append to `part` from its current length (or restart when the server sends it whole)."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "datasetddpm"} | ({"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have and _range_done(e, have):
            return
        if e.code == 416:  # the partial file does not fit the server's file: start again
            part.unlink()
            raise Interrupted("the partial file is longer than the server's file") from None
        raise
    with resp:
        status = getattr(resp, "status", None) or 200  # file:// answers carry no status
        if status != 206:
            have = 0  # the server ignored the range: the whole file follows
        total = _total_from(resp, status, have)
        report(have, total)
        with open(part, "ab" if have else "wb") as f:
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                have += len(chunk)
                report(have, total)
            f.flush()
            os.fsync(f.fileno())
    if total is not None and have < total:
        raise Interrupted(f"connection closed at byte {have} of {total}")


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error) or type(error).__name__


def _claim_part(dest: Path, url: str) -> Path:
    """The partial file for `url`: bytes of another URL (another server's copy) are never spliced in."""
    part, meta = part_path(dest), _part_meta(dest)
    try:
        same = json.loads(meta.read_text()).get("url") == url
    except (OSError, ValueError, AttributeError):
        same = False
    if not same:
        part.unlink(missing_ok=True)
        meta.write_text(json.dumps({"url": url}))
    return part


def fetch(url: str, dest: str | Path, *, size: int | None = None, sha256: str | None = None, retries: int = 3,
          timeout: float = 60.0, backoff: float = 2.0, report=lambda done, total: None) -> dict:
    """Download `url` to `dest` (resuming a partial file of the same URL), check it, rename it into place.
    Returns {"url", "size", "sha256"}. Raises DatasetDDPMError after `retries` failed resumes (the partial
    file stays for a rerun) and InputError on a size or checksum mismatch (the partial file is removed)."""
    dest = Path(dest)
    part = _claim_part(dest, url)
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, timeout, report)
            break
        except urllib.error.HTTPError as e:
            if e.code in GIVE_UP_STATUSES or attempt == retries:
                raise DatasetDDPMError(f"{url}: {_reason(e)}") from None
        except (OSError, http.client.HTTPException) as e:
            if attempt == retries:
                have = part.stat().st_size if part.exists() else 0
                raise DatasetDDPMError(f"{url}: download interrupted ({_reason(e)}) with {have} bytes kept in "
                                       f"{part}; rerun the same command to resume") from None
        time.sleep(min(backoff * 2 ** attempt, 30.0))
    return _verify_and_place(url, part, dest, size, sha256)


def _verify_and_place(url: str, part: Path, dest: Path, size: int | None, sha256: str | None) -> dict:
    got_size, digest = part.stat().st_size, sha256_of(part)
    problem = None
    if size is not None and got_size != size:
        problem = f"size is {got_size} bytes but the registry says {size}"
    elif sha256 is not None and digest != sha256.lower():
        problem = f"has sha256 {digest} but the registry says {sha256.lower()}"
    if problem:
        part.unlink(missing_ok=True)
        _part_meta(dest).unlink(missing_ok=True)
        raise InputError(url, f"{problem}; refused, nothing kept")
    os.replace(part, dest)
    _part_meta(dest).unlink(missing_ok=True)
    fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a crash
    finally:
        os.close(fd)
    return {"url": url, "size": got_size, "sha256": digest}
