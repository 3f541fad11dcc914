"""Run-length encoding of the SIIM-ACR pneumothorax masks.

The SIIM train-rle.csv uses the "relative" RLE of the challenge's mask_functions.py, not the
absolute start/length pairs of most Kaggle competitions: pixels are numbered column by column
(the flat index runs down the first column, then the second...; i.e. row-major over the
transposed image) and each pair is (gap since the end of the previous run, run length). The first
gap counts from pixel 0. An image without pneumothorax is the string "-1".
"""

from __future__ import annotations

import numpy as np

EMPTY = "-1"


def rle_decode(rle: str, height: int, width: int) -> np.ndarray:
    """A relative SIIM RLE string as a bool mask (height, width); "-1" or "" gives an empty mask."""
    mask = np.zeros(height * width, dtype=bool)
    text = rle.strip()
    if text in ("", EMPTY):
        return mask.reshape(height, width)
    numbers = np.array(text.split(), dtype=np.int64)
    if numbers.size % 2:
        raise ValueError(f"RLE has an odd number of values ({numbers.size})")
    gaps, lengths = numbers[0::2], numbers[1::2]
    if (gaps < 0).any() or (lengths <= 0).any():
        raise ValueError("RLE has a negative gap or a non-positive run length")
    # absolute start of run i = sum of gaps[0..i] + sum of lengths[0..i-1]
    starts = np.cumsum(gaps) + np.concatenate(([0], np.cumsum(lengths)[:-1]))
    ends = starts + lengths
    if ends[-1] > mask.size:
        raise ValueError(f"RLE runs past the end of a {height}x{width} image")
    # mark run boundaries and integrate: +1 at a start, -1 at an end
    edges = np.zeros(mask.size + 1, dtype=np.int32)
    np.add.at(edges, starts, 1)
    np.add.at(edges, ends, -1)
    mask = np.cumsum(edges[:-1]) > 0
    # the flat index runs down columns: the flat array is the transposed image
    return mask.reshape(width, height).T


def rle_encode(mask: np.ndarray) -> str:
    """A bool mask (height, width) as a relative SIIM RLE string ("-1" when empty)."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)
    if not flat.any():
        return EMPTY
    padded = np.concatenate(([False], flat, [False])).astype(np.int8)
    changes = np.flatnonzero(np.diff(padded))
    starts, ends = changes[0::2], changes[1::2]
    lengths = ends - starts
    previous_ends = np.concatenate(([0], ends[:-1]))
    gaps = starts - previous_ends
    return " ".join(f"{g} {n}" for g, n in zip(gaps.tolist(), lengths.tolist()))


def rle_area(rle: str) -> int:
    """Pixels in a mask, straight from the run lengths."""
    text = rle.strip()
    if text in ("", EMPTY):
        return 0
    return int(np.array(text.split(), dtype=np.int64)[1::2].sum())
