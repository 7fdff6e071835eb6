"""`datasetddpm download`: a local HTTP server on 127.0.0.1 (Range support, a mode that drops the
connection mid-file) serves small files; resume, refusal, mirrors, reruns and the registry's shape."""

import hashlib
import io
import json
import tarfile
import threading
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest

from conftest import one_line_error, run, tree_state
from datasetddpm.downloads import registry
from datasetddpm.downloads.fetch import fetch, part_path
from datasetddpm.downloads.install import download
from datasetddpm.errors import DatasetDDPMError, InputError

PAYLOAD = bytes(range(256)) * 40  # 10240 bytes


class FileServer:
    """Files by path; `drop_after[path] = n` cuts the connection after n bytes of the next GET of it."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.drop_after, self.requests = files, {}, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = server.files.get(self.path)
                server.requests.append((self.path, self.headers.get("Range")))
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                cut = server.drop_after.pop(self.path, None)
                self.wfile.write(body[start:] if cut is None else body[start:start + cut])
                if cut is not None:
                    self.wfile.flush()
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path


@contextmanager
def serving(files):
    server = FileServer(files)
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        thread.join()


@pytest.fixture()
def server():
    with serving({"/f.bin": PAYLOAD}) as s:
        yield s


def test_a_dropped_connection_is_resumed_with_a_range_request(server, tmp_path):
    server.drop_after["/f.bin"] = 3000
    got = fetch(server.url("/f.bin"), tmp_path / "f.bin", retries=2, backoff=0)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert got["sha256"] == hashlib.sha256(PAYLOAD).hexdigest() and got["size"] == len(PAYLOAD)
    assert server.requests == [("/f.bin", None), ("/f.bin", "bytes=3000-")]
    assert not part_path(tmp_path / "f.bin").exists()


def test_an_interrupted_download_keeps_only_a_partial_file_that_a_rerun_resumes(server, tmp_path):
    server.drop_after["/f.bin"] = 4096
    with pytest.raises(DatasetDDPMError, match="rerun the same command to resume"):
        fetch(server.url("/f.bin"), tmp_path / "f.bin", retries=0, backoff=0)
    assert not (tmp_path / "f.bin").exists()  # a partial file is never under the final name
    assert part_path(tmp_path / "f.bin").stat().st_size == 4096
    fetch(server.url("/f.bin"), tmp_path / "f.bin", retries=0, backoff=0)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/f.bin", "bytes=4096-")


def test_a_complete_partial_file_left_by_a_kill_is_checked_and_placed(server, tmp_path):
    fetch(server.url("/f.bin"), tmp_path / "a.bin", retries=0)
    part_path(tmp_path / "f.bin").write_bytes(PAYLOAD)  # killed after the last byte, before the rename
    (tmp_path / ".f.bin.part.json").write_text(json.dumps({"url": server.url("/f.bin")}))
    fetch(server.url("/f.bin"), tmp_path / "f.bin", retries=0, sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD and server.requests[-1] == ("/f.bin", "bytes=10240-")


@pytest.mark.parametrize("what", ["sha256", "size"])
def test_a_wrong_checksum_or_size_is_refused_and_nothing_is_kept(server, tmp_path, what):
    wrong = {"sha256": "0" * 64} if what == "sha256" else {"size": len(PAYLOAD) + 1}
    with pytest.raises(InputError, match=f"{what} .*refused, nothing kept"):
        fetch(server.url("/f.bin"), tmp_path / "f.bin", retries=0, **wrong)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_file_is_one_line_without_retries(server, tmp_path):
    with pytest.raises(DatasetDDPMError, match="HTTP 404"):
        fetch(server.url("/nope.bin"), tmp_path / "f.bin", retries=5, backoff=100)
    assert server.requests == [("/nope.bin", None)]


def _dataset_archive(tmp_path) -> bytes:
    """The reference archive's layout: <preset>/real/{train,test} (embedded procedural data stands in)."""
    from datasetddpm.data.folders import write_procedural_dataset
    write_procedural_dataset(tmp_path / "src" / "embedded", train=2, test=2)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tmp_path / "src" / "embedded", arcname="embedded")
    return buf.getvalue()


@pytest.fixture()
def dataset_entry(monkeypatch, tmp_path):
    """A registry entry `testdata` for an archive holding the embedded preset's folder."""
    archive = _dataset_archive(tmp_path)
    entry = replace(registry.REGISTRY["datasets"], name="testdata", urls=("https://example.invalid/d.tar.gz",),
                    presets=("embedded",), sha256=hashlib.sha256(archive).hexdigest(), size=len(archive))
    monkeypatch.setitem(registry.REGISTRY, "testdata", entry)
    return entry, archive


def test_cli_url_mirror_unpacks_checks_and_a_rerun_does_nothing(dataset_entry, tmp_path):
    entry, archive = dataset_entry
    with serving({"/mirror/d.tar.gz": archive}) as s:
        dest = tmp_path / "datasets"
        r = run("download", "testdata", "--dir", dest, "--url", s.url("/mirror/d.tar.gz"), "--quiet")
        assert r.exit_code == 0, r.output
        assert sorted(p.name for p in (dest / "embedded" / "real" / "train").iterdir()) == [
            "train_00000.npy", "train_00000.png", "train_00001.npy", "train_00001.png"]
        record = json.loads((dest / "datasets.tar.gz.download.json").read_text())
        assert record["sha256"] == entry.sha256 and record["url"] == s.url("/mirror/d.tar.gz")
        before, requests = tree_state(dest), len(s.requests)
        r = run("download", "testdata", "--dir", dest, "--url", s.url("/mirror/d.tar.gz"), "--quiet")
        assert r.exit_code == 0 and "nothing to do" in r.output
        assert tree_state(dest) == before and len(s.requests) == requests


def test_cli_wrong_checksum_is_one_line_and_leaves_no_folder(dataset_entry, monkeypatch, tmp_path):
    entry, archive = dataset_entry
    monkeypatch.setitem(registry.REGISTRY, "testdata", replace(entry, sha256="f" * 64))
    with serving({"/d.tar.gz": archive}) as s:
        r = run("download", "testdata", "--dir", tmp_path / "dl", "--url", s.url("/d.tar.gz"), "--quiet")
    one_line_error(r, "sha256", "refused, nothing kept")
    assert not (tmp_path / "dl").exists()


def test_a_dataset_that_train_ensemble_would_refuse_is_removed(monkeypatch, tmp_path):
    from datasetddpm.data.folders import write_procedural_dataset
    write_procedural_dataset(tmp_path / "src" / "embedded", train=2, test=2)
    (tmp_path / "src" / "embedded" / "real" / "test" / "test_00001.npy").unlink()  # an image without its mask
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tmp_path / "src" / "embedded", arcname="embedded")
    entry = replace(registry.REGISTRY["datasets"], name="testdata", presets=("embedded",))
    monkeypatch.setitem(registry.REGISTRY, "testdata", entry)
    with serving({"/d.tar.gz": buf.getvalue()}) as s:
        with pytest.raises(InputError, match="test_00001"):
            download("testdata", tmp_path / "dl", url=s.url("/d.tar.gz"), progress=False)
    assert not (tmp_path / "dl").exists()


def test_a_checkpoint_is_converted_and_checked_as_convert_adm_does(monkeypatch, tmp_path):
    import torch
    from test_adm import TINY, build_adm
    from datasetddpm.generators.loading import load_generator
    flags = tmp_path / "tiny_flags.json"
    flags.write_text(json.dumps(TINY.to_dict()))
    buf = io.BytesIO()
    torch.save(build_adm(TINY).state_dict(), buf)
    entry = replace(registry.REGISTRY["lsun_cat"], name="tiny_adm", filename="tiny_adm.pt", adm_flags=str(flags))
    monkeypatch.setitem(registry.REGISTRY, "tiny_adm", entry)
    with serving({"/tiny_adm.pt": buf.getvalue(), "/bad.pt": buf.getvalue()[:5000]}) as s:
        record = download("tiny_adm", tmp_path / "ck", url=s.url("/tiny_adm.pt"), progress=False)
        assert record["results"] == ["tiny_adm"]
        assert load_generator(str(tmp_path / "ck" / "tiny_adm")).resolution == 32
        with pytest.raises(InputError, match="not a readable PyTorch checkpoint"):
            download("tiny_adm", tmp_path / "bad", url=s.url("/bad.pt"), progress=False)
    assert not (tmp_path / "bad").exists()


def test_registry_entries_have_published_https_urls_a_licence_and_typed_sizes():
    from datasetddpm.presets import PAPER_PRESETS
    for entry in registry.REGISTRY.values():
        assert entry.urls and all(urlparse(u).scheme == "https" and urlparse(u).netloc for u in entry.urls)
        assert all(u.rstrip("/").endswith(entry.filename) for u in entry.urls)
        assert entry.licence.strip() and entry.source.strip()
        assert entry.size is None or (isinstance(entry.size, int) and entry.size > 0)
        assert entry.sha256 is None or (len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0)
        assert entry.kind in ("checkpoint", "dataset")
        assert (entry.adm_flags is not None) == (entry.kind == "checkpoint")
    # every paper preset's checkpoint and dataset can be downloaded
    for p in PAPER_PRESETS:
        assert registry.checkpoint_for(p.checkpoint).adm_flags == p.adm_flags
        assert p.name in registry.REGISTRY["datasets"].presets


def test_unknown_name_and_bad_url_are_one_line(tmp_path):
    one_line_error(run("download", "lsun_dog", "--dir", tmp_path / "x"), "NAME", "lsun_dog", "lsun_bedroom")
    one_line_error(run("download", "ffhq", "--dir", tmp_path / "x", "--url", "ftp://h/ffhq.pt"), "--url", "ftp://")
    assert not (tmp_path / "x").exists()
