"""Fuzzing the readers of user files: whatever the bytes, a reader returns a valid value or raises the
toolkit's one-line error (never another exception, never unpickles). Bounded in examples and time."""

import io
import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasetddpm.data.images import read_mask
from datasetddpm.errors import DatasetDDPMError
from datasetddpm.io import read_json
from datasetddpm.pipeline.config import SampleConfig

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
NPY_HEADER = b"\x93NUMPY\x01\x00"


def _valid_npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.arange(16, dtype=np.uint8).reshape(4, 4))
    return buf.getvalue()


def _png() -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _mutations(seed: bytes):
    """Random bytes, and a valid file with bytes flipped, cut or appended."""
    return st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=200).map(lambda b: NPY_HEADER + b),
        st.tuples(st.integers(0, len(seed) - 1), st.integers(1, 255)).map(
            lambda t: seed[:t[0]] + bytes([seed[t[0]] ^ t[1]]) + seed[t[0] + 1:]),
        st.integers(0, len(seed)).map(lambda n: seed[:n]),
        st.binary(max_size=50).map(lambda b: seed + b))


def _check_mask_reader(path, data):
    path.write_bytes(data)
    try:
        mask = read_mask(path)
    except DatasetDDPMError as e:
        assert "\n" not in str(e) and str(path) in str(e)
    else:
        assert mask.ndim == 2 and mask.dtype == np.int64


@FUZZ
@given(data=_mutations(_valid_npy()))
def test_npy_mask_reader(tmp_path, data):
    _check_mask_reader(tmp_path / "m.npy", data)


@FUZZ
@given(data=_mutations(_png()))
def test_png_mask_reader(tmp_path, data):
    _check_mask_reader(tmp_path / "m.png", data)


@FUZZ
@given(data=st.one_of(st.binary(max_size=200),
                      st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                                   lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c,
                                                                                        max_size=3),
                                   max_leaves=10).map(lambda v: json.dumps(v).encode())))
def test_json_reader_and_run_config(tmp_path, data):
    path = tmp_path / "manifest.json"
    path.write_bytes(data)
    try:
        value = read_json(path)
    except DatasetDDPMError as e:
        assert "\n" not in str(e) and str(path) in str(e)
        return
    if isinstance(value, dict):  # a manifest's config that parses must validate or be refused in one line
        try:
            SampleConfig(**{k: v for k, v in value.items() if k in SampleConfig.__dataclass_fields__}).validate()
        except DatasetDDPMError as e:
            assert "\n" not in str(e)
        except TypeError:
            pass  # a wrong type in a field: checked by validate() for the numeric fields below
