"""Label Studio's brush RLE: the run-length packing of thi.ng's `rle-pack` over a mask's RGBA bytes.

A brush mask of H x W pixels is H*W*4 values (R, G, B, A per pixel, row by row). The packed bits,
most significant first: the value count (32 bits), the word size minus 1 (5 bits), four run-length
field sizes minus 1 (4 bits each), then chunks until the count is reached: a repeat flag (1 bit), a
field-size index (2 bits), the run length minus 1 (in that many bits), then one word (repeat) or as
many words as the run is long (literal). The last byte is padded with zeros. Label Studio reads the
alpha channel as the mask; we write every channel of a painted pixel as 255, as its converter does.
"""

from __future__ import annotations

import numpy as np

from ..errors import DatasetDDPMError

WORD_BITS = 8
RUN_FIELD_BITS = (3, 4, 8, 16)  # the sizes Label Studio's own encoder uses
MAX_RUN = 1 << RUN_FIELD_BITS[-1]


class RLEError(DatasetDDPMError):
    """A brush RLE that does not decode (truncated, or a length that does not match the image)."""


def _bits(value: int, width: int) -> str:
    return format(value, f"0{width}b")


def encode_values(values: np.ndarray) -> list[int]:
    """Pack a flat array of byte values as Label Studio's RLE (repeat chunks only: exact and compact for
    masks, whose runs are at least 4 values long)."""
    values = np.asarray(values, dtype=np.uint8).ravel()
    parts = [_bits(len(values), 32), _bits(WORD_BITS - 1, 5)] + [_bits(s - 1, 4) for s in RUN_FIELD_BITS]
    if len(values):
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        lengths = np.diff(np.r_[starts, len(values)])
        for start, length in zip(starts.tolist(), lengths.tolist()):
            word = _bits(int(values[start]), WORD_BITS)
            while length:
                n = min(length, MAX_RUN)
                index = next(i for i, s in enumerate(RUN_FIELD_BITS) if n - 1 < 1 << s)
                parts.append("1" + _bits(index, 2) + _bits(n - 1, RUN_FIELD_BITS[index]) + word)
                length -= n
    bits = "".join(parts)
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]


class _BitReader:
    def __init__(self, data: list[int]):
        try:
            self.bits = np.unpackbits(np.asarray(data, dtype=np.uint8))
        except (ValueError, OverflowError, TypeError):
            raise RLEError("the brush RLE is not a list of bytes (0-255)") from None
        self.pos = 0

    def read(self, width: int) -> int:
        end = self.pos + width
        if end > len(self.bits):
            raise RLEError("the brush RLE is truncated")
        value = int(self.bits[self.pos:end].astype(np.int64) @ (1 << np.arange(width - 1, -1, -1, dtype=np.int64)))
        self.pos = end
        return value


def decode_values(data: list[int]) -> np.ndarray:
    """Unpack Label Studio's RLE (repeat and literal chunks, any word size up to 32 bits) to a flat array."""
    reader = _BitReader(data)
    count, word = reader.read(32), reader.read(5) + 1
    sizes = [reader.read(4) + 1 for _ in range(4)]
    out = np.zeros(count, dtype=np.uint32)
    i = 0
    while i < count:
        repeat = reader.read(1)
        j = min(count, i + 1 + reader.read(sizes[reader.read(2)]))
        if repeat:
            out[i:j] = reader.read(word)
        else:
            out[i:j] = [reader.read(word) for _ in range(j - i)]
        i = j
    return out


def encode_mask(mask: np.ndarray) -> list[int]:
    """A boolean H x W mask as Label Studio brush RLE (RGBA, painted pixels 255 in every channel)."""
    return encode_values(np.repeat(np.asarray(mask, dtype=bool).ravel().astype(np.uint8) * 255, 4))


def decode_mask(data: list[int], height: int, width: int) -> np.ndarray:
    """A brush RLE as a boolean H x W mask: the alpha channel, painted where it is at least half opaque
    (brush strokes drawn in the browser have soft edges)."""
    values = decode_values(data)
    if len(values) != height * width * 4:
        raise RLEError(f"the brush RLE holds {len(values)} values, not {height}x{width}x4 = {height * width * 4}")
    return values.reshape(height, width, 4)[:, :, 3] >= 128
