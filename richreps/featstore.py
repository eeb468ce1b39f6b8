"""Feature arrays read in row blocks: one `.npy` file per (member, split) on disk, and CATn as a view over them.

    rows = StoredRows(path)                       # (N, d) float16, nothing read yet
    cat = ConcatRows([rows_a, rows_b])            # CAT2: (N, 2d), a view
    for start, x in BlockReader(cat, block_rows(cat.shape[1])):
        ...                                       # float32 rows, one reused buffer of <= budget / 4

Why: ImageNet's probe training split is 1.26M images. At 2,048 float16 features a member's array is 5.1 GB
and CAT5's is 26 GB; held whole in RAM, and copied to float32 by the probe, that is hundreds of GB. Here an
array is written by appending chunks to a `.npy` file and read back in blocks, so the RAM that extraction and
probing use is bounded by one setting, `ram_budget()` (`RICHREPS_RAM_GB`, default 4 GB), whatever the number
of images.

Blocks are read with plain file reads into a buffer, not through a memory map: the pages of a map that have
been touched count towards the process's resident memory until it is unmapped, so reading a 26 GB map from
start to end grows the resident set to 26 GB. The files stay ordinary `.npy` files that
`numpy.load(path, mmap_mode="r")` opens, and `take` (a few rows, for few-shot probes) maps them briefly.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

RAM_ENV = "RICHREPS_RAM_GB"
DEFAULT_RAM_GB = 4.0
BLOCK_SHARE = 4  # a streamed block takes at most budget / 4
# per feature value of a block: its float16 read, its float32 copy, and room for a solver's copy (kept at 10
# bytes when the minibatch solver went: the block size, and so the streamed statistics, stay as they were)
BYTES_PER_VALUE = 10
HASH_BLOCK = 64 << 20  # bytes hashed at a time when a file is verified


def ram_budget(ram_bytes: float | None = None) -> int:
    """Bytes of RAM that feature buffers and probe blocks may use: `ram_bytes` when given, else the
    environment variable RICHREPS_RAM_GB (in GB), else 4 GB. The Python interpreter, torch and the
    members' weights come on top."""
    if ram_bytes is not None:
        if not ram_bytes > 0:
            raise ValueError(f"ram_bytes must be > 0, got {ram_bytes}")
        return int(ram_bytes)
    raw = os.environ.get(RAM_ENV, "")
    if not raw:
        return int(DEFAULT_RAM_GB * 1e9)
    try:
        gb = float(raw)
    except ValueError:
        gb = float("nan")
    if not gb > 0:
        raise ValueError(f"environment variable {RAM_ENV}={raw!r}: expected a positive number of GB")
    return int(gb * 1e9)


def block_rows(dim: int, ram_bytes: float | None = None) -> int:
    """Rows per streamed block of `dim` features, so that one block stays within budget / BLOCK_SHARE."""
    return max(1, ram_budget(ram_bytes) // (BLOCK_SHARE * BYTES_PER_VALUE * max(1, dim)))


# ---------------------------------------------------------------- reading


class Rows:
    """(N, d) feature rows read in blocks: in RAM (`InMemory`), one file (`StoredRows`) or a CATn view
    (`ConcatRows`). `tensor()` reads them all into RAM: for small data and tests only."""

    shape: tuple[int, int]

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * self.dtype.itemsize

    def read(self, start: int, stop: int) -> torch.Tensor:
        raise NotImplementedError

    def take(self, index: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def blocks(self, rows: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, block) for consecutive blocks of `rows` rows."""
        for start in range(0, len(self), rows):
            yield start, self.read(start, min(start + rows, len(self)))

    def tensor(self) -> torch.Tensor:
        return self.read(0, len(self))

    def __getitem__(self, item: slice) -> torch.Tensor:
        if not isinstance(item, slice) or item.step not in (None, 1):
            raise TypeError("feature rows take a contiguous slice; use take() for chosen rows")
        start, stop, _ = item.indices(len(self))
        return self.read(start, max(start, stop))


class InMemory(Rows):
    """Rows held in a tensor (probes on small data; the same block code as the files)."""

    def __init__(self, tensor: torch.Tensor):
        if tensor.dim() != 2:
            raise ValueError(f"features must be 2-D (N, d), got shape {tuple(tensor.shape)}")
        self.data = tensor
        self.shape = (int(tensor.shape[0]), int(tensor.shape[1]))

    @property
    def dtype(self) -> torch.dtype:
        return self.data.dtype

    def read(self, start: int, stop: int) -> torch.Tensor:
        return self.data[start:stop]

    def take(self, index: torch.Tensor) -> torch.Tensor:
        return self.data[index]


class CacheError(ValueError):
    """A feature file that cannot be trusted; the message names the file."""


def npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, offset of the data) of a `.npy` file, checking that its size holds the data."""
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }
            if version not in read_header:
                raise ValueError(f"format version {version}")
            shape, fortran, dtype = read_header[version](f)
        except (ValueError, OSError, SyntaxError) as e:
            raise CacheError(f"{path}: not a .npy file ({e})") from None
        offset = f.tell()
    if fortran or dtype.hasobject:
        raise CacheError(f"{path}: expected a C-ordered numeric array")
    need = offset + int(np.prod(shape)) * dtype.itemsize
    if path.stat().st_size != need:
        raise CacheError(f"{path}: {path.stat().st_size} bytes where the header says {need}")
    return shape, dtype, offset


class StoredRows(Rows):
    """One member's float16 features on one split: a `.npy` file read in row blocks."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        shape, dtype, self.offset = npy_layout(self.path)
        if len(shape) != 2 or dtype != np.float16:
            raise CacheError(f"{self.path}: expected (N, d) float16 features, got {shape} {dtype}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.row_bytes = self.shape[1] * 2

    def read(self, start: int, stop: int) -> torch.Tensor:
        out = np.empty((max(0, stop - start), self.shape[1]), np.float16)
        self.readinto(start, out)
        return torch.from_numpy(out)

    def readinto(self, start: int, out: np.ndarray) -> None:
        """Fill `out`, a C-contiguous (m, d) float16 array, with rows start .. start + m."""
        view, got = memoryview(out).cast("B"), 0
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self.offset + start * self.row_bytes)
            while got < out.nbytes:  # one read returns at most ~2 GB on Linux
                n = f.readinto(view[got:])
                if not n:
                    break
                got += n
        if got != out.nbytes:
            raise CacheError(f"{self.path}: rows from {start} cut short ({got} of {out.nbytes} bytes)")

    def take(self, index: torch.Tensor) -> torch.Tensor:
        mm = np.load(self.path, mmap_mode="r")
        try:
            return torch.from_numpy(np.ascontiguousarray(mm[np.asarray(index, dtype=np.int64)]))
        finally:
            del mm  # unmapped: the touched pages leave the resident set


class ConcatRows(Rows):
    """CATn: its members' rows side by side, read part by part; nothing is concatenated on disk."""

    def __init__(self, parts: Sequence[Rows]):
        if not parts:
            raise ValueError("a CAT needs at least one member")
        rows = {len(p) for p in parts}
        if len(rows) != 1:
            raise ValueError(f"members' features have different numbers of rows: {sorted(rows)}")
        self.parts = list(parts)
        self.shape = (len(parts[0]), sum(p.shape[1] for p in parts))

    @property
    def dtype(self) -> torch.dtype:
        return self.parts[0].dtype

    def read(self, start: int, stop: int) -> torch.Tensor:
        return torch.cat([p.read(start, stop) for p in self.parts], 1)

    def take(self, index: torch.Tensor) -> torch.Tensor:
        return torch.cat([p.take(index) for p in self.parts], 1)


def _leaves(rows: Rows) -> list[Rows]:
    return [leaf for p in rows.parts for leaf in _leaves(p)] if isinstance(rows, ConcatRows) else [rows]


class BlockReader:
    """Consecutive blocks of `rows` as float32, read into one buffer that every block reuses.

    No memory is allocated per block (fresh multi-megabyte buffers cost a page fault per 4 kB), and the
    arithmetic is the same whether the rows are in RAM, in a file or in a CAT view. A block returned by
    `read` is overwritten by the next read.
    """

    def __init__(self, rows: Rows, block: int, device: torch.device | str = "cpu"):
        self.rows, self.block = rows, max(1, min(block, len(rows)))
        self.parts, offset = [], 0
        for p in _leaves(rows):
            scratch = np.empty((self.block, p.shape[1]), np.float16) if isinstance(p, StoredRows) else None
            self.parts.append((p, offset, scratch))
            offset += p.shape[1]
        self.out = torch.empty(self.block, rows.shape[1], device=device)  # on the GPU: rows held there

    def starts(self) -> range:
        return range(0, len(self.rows), self.block)

    def read(self, start: int) -> torch.Tensor:
        stop = min(start + self.block, len(self.rows))
        out = self.out[: stop - start]
        for p, offset, scratch in self.parts:
            if scratch is not None:
                p.readinto(start, scratch[: stop - start])
                src = torch.from_numpy(scratch[: stop - start])
            else:
                src = p.read(start, stop)
            out[:, offset : offset + p.shape[1]].copy_(src)
        return out

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        for start in self.starts():
            yield start, self.read(start)


def column_stats(rows: Rows, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation (unbiased) of every column, in float32: each block's in float32,
    merged in float64 (Chan et al.'s pairwise merge of means and sums of squared deviations). Rows
    that fit one block get torch's own mean and std, as the probe computed them before it streamed."""
    if 0 < len(rows) <= block:
        x = next(iter(BlockReader(rows, block)))[1]
        return x.mean(0), x.std(0).clamp_min(1e-6)
    n_total, mean, m2 = 0, None, None
    for _, x in BlockReader(rows, block):
        nb = x.shape[0]
        bmean = x.sum(0) / nb
        bm2 = x.sub_(bmean).square_().sum(0).double()  # in the reader's buffer: no copy
        bmean = bmean.double()
        if mean is None:
            n_total, mean, m2 = nb, bmean, bm2
            continue
        delta = bmean - mean
        n_new = n_total + nb
        mean = mean + delta * (nb / n_new)
        m2 = m2 + bm2 + delta**2 * (n_total * nb / n_new)
        n_total = n_new
    if mean is None:
        raise ValueError("no rows to standardise")
    std = (m2 / max(1, n_total - 1)).sqrt()
    return mean.float(), std.float().clamp_min(1e-6)


# ---------------------------------------------------------------- writing


def file_digests(path: Path, offset: int, ends: Sequence[int], row_bytes: int) -> list[str]:
    """sha256 of each chunk of rows [previous end, end) of a file, read HASH_BLOCK bytes at a time."""
    out, start = [], 0
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        for end in ends:
            h, left = hashlib.sha256(), (end - start) * row_bytes
            while left:
                data = f.read(min(left, HASH_BLOCK))
                if not data:
                    break
                h.update(data)
                left -= len(data)
            out.append(h.hexdigest() if not left else "cut short")
            start = end
    return out


def npy_header(dtype: np.dtype, dim: int | None, rows: int) -> bytes:
    """The `.npy` header of `rows` x `dim` values (`dim` None: a vector), with numpy's room to grow."""
    buf = io.BytesIO()
    shape = (rows,) if dim is None else (rows, dim)
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


class GrowingArray:
    """A `.npy` file written by appending row chunks; its header's row count is set when it closes.

    numpy leaves room in every header to grow the first axis in place, so the final header has the
    same length as the empty one and the rows never move.
    """

    def __init__(self, path: Path, dtype: np.dtype, dim: int | None, keep_rows: int = 0):
        self.path, self.dtype, self.dim = Path(path), np.dtype(dtype), dim
        self.row_bytes = self.dtype.itemsize * (dim or 1)
        self.offset = len(self._header(0))
        if keep_rows and self.path.exists():
            self.file = open(self.path, "r+b")  # noqa: SIM115 - closed by close()
            self.file.truncate(self.offset + keep_rows * self.row_bytes)
            self.file.seek(0, os.SEEK_END)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "wb")  # noqa: SIM115 - closed by close()
            self.file.write(self._header(0))
        self.rows = keep_rows

    def _header(self, rows: int) -> bytes:
        return npy_header(self.dtype, self.dim, rows)

    def append(self, arrays: Sequence[np.ndarray]) -> str:
        """Append the rows of `arrays`, in order; return the sha256 of their bytes."""
        h = hashlib.sha256()
        for array in arrays:
            array = np.ascontiguousarray(array, dtype=self.dtype)
            view = memoryview(array).cast("B")
            self.file.write(view)
            h.update(view)
            self.rows += array.shape[0]
        return h.hexdigest()

    def sync(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self, finish: bool) -> None:
        """Close; when `finish`, write the final row count into the header first."""
        if finish:
            header = self._header(self.rows)
            if len(header) != self.offset:
                raise RuntimeError(f"{self.path}: .npy header grew from {self.offset} to {len(header)} bytes")
            self.file.seek(0)
            self.file.write(header)
            self.sync()
        self.file.close()
