"""Kernel database synthesis (``kdiff synth-kernels``): seeded, chunked, parallel, written atomically.

The kernels are made by :mod:`kdiff_cli.apps.synth_chunks` (fixed chunks, each with its own
seed, so the database depends only on (generator, params, count, size, seed), never on the number
of worker processes); forked workers write their chunks straight into the output file.

The ``.npz`` file (written by :class:`kdiff_cli.npz.StoredZip`) holds ``kernels`` ``(N, S, S)``
and ``meta``, a JSON string (generator, params, seed, count, size, dtype, kdiff version). Zip
entries carry a fixed date, so the same request gives a byte-identical file.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from kdiff_cli import __version__
from kdiff_cli import limits, params
from kdiff_cli.apps import synth_chunks
from kdiff_cli.apps.synth_chunks import chunk_rng, default_workers, get_generator, produce, synthesize
from kdiff_cli.errors import KdiffError
from kdiff_cli.maths.kernels import MIN_SIZE
from kdiff_cli.npz import StoredZip, crc32_combine, npy_bytes, npy_header, remove, reserve, tmp_path

#: output dtypes of ``kdiff synth-kernels``
DTYPES = {"float32": np.float32, "float16": np.float16}
#: kernels shown by the preview grid, and its number of columns
PREVIEW_COUNT, PREVIEW_COLUMNS = 64, 8
#: bytes a worker holds per kernel pixel of its chunk while a generator draws it (float64 kernels and
#: the generators' temporaries: measured 1.3x to 3.6x the chunk's float64 array; 4x assumed)
WORKER_BYTES_PER_PIXEL = 32

__all__ = [
    "DTYPES", "Request", "chunk_rng", "default_workers", "get_generator", "load", "make_request",
    "parse_params", "preview_grid", "produce", "run", "synthesize",
]


# --------------------------------------------------------------------------- generator params


def parse_params(generator: Any, items: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Resolve ``["key=value", ...]`` against the generator's ``params`` defaults.

    Returns the defaults updated with the converted values. Unknown keys, a missing ``=`` or a
    repeated key raise :class:`KdiffError`. A generator without ``params`` takes values as strings.
    """
    name, gen = get_generator(generator)
    defaults = dict(getattr(gen, "params", None) or {})
    out, seen = dict(defaults), set()
    for item in items:
        key, value = params.split_pair(item, "--param")
        if key in seen:
            raise KdiffError(f"--param {key} given twice")
        seen.add(key)
        if hasattr(gen, "params") and key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise KdiffError(f"unknown parameter {key!r} for generator {name!r} (known: {known})")
        out[key] = params.convert(value, defaults.get(key, ""), key, "--param", none_words=(*params.NONE_WORDS, "random"))
    return out


# --------------------------------------------------------------------------- preview


def preview_grid(kernels: np.ndarray, columns: int = PREVIEW_COLUMNS, count: int = PREVIEW_COUNT) -> np.ndarray:
    """uint8 image of the first ``count`` kernels, each scaled to its maximum, 1-px gaps.

    Small kernels are enlarged (nearest neighbour) to at least 32 px so that the grid is legible.
    """
    k = np.asarray(kernels[:count], dtype=np.float64)
    n, size = k.shape[0], k.shape[-1]
    zoom = max(1, math.ceil(32 / size))
    tile = size * zoom
    rows = max(1, math.ceil(n / columns))
    cols = min(columns, max(n, 1))
    grid = np.full((rows * (tile + 1) + 1, cols * (tile + 1) + 1), 64, dtype=np.uint8)
    peak = np.maximum(k.max(axis=(1, 2), keepdims=True), 1e-30) if n else k
    tiles = np.rint(255 * np.clip(k / peak, 0, 1)).astype(np.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        t = np.repeat(np.repeat(tiles[i], zoom, axis=0), zoom, axis=1)
        grid[1 + r * (tile + 1) : 1 + r * (tile + 1) + tile, 1 + c * (tile + 1) : 1 + c * (tile + 1) + tile] = t
    return grid


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    with open(path, "wb") as f:
        Image.fromarray(image).save(f, format="PNG")


# --------------------------------------------------------------------------- the command


@dataclass
class Request:
    """A validated ``kdiff synth-kernels`` request."""

    name: str  # generator name
    generator: Any  # the generator component
    count: int  # number of kernels N
    size: int  # kernel side S
    seed: int  # database seed
    out: Path  # the .npz file
    preview: Path | None = None  # optional PNG grid of the first kernels
    workers: int = 1  # worker processes
    dtype: str = "float32"  # stored dtype
    params: dict[str, Any] = field(default_factory=dict)  # resolved generator parameters

    def meta(self) -> dict[str, Any]:
        """The database's ``meta``: generator, the request fields that decide the kernels, chunking, version."""
        fields = {name: getattr(self, name) for name in ("params", "seed", "count", "size", "dtype")}
        return {"generator": self.name, **fields, "chunk": synth_chunks.CHUNK, "kdiff_version": __version__}


def _check_output(path: Path, suffix: str, option: str, overwrite: bool = True) -> Path:
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise KdiffError(f"{option} must be a {suffix} file, got {path}")
    if path.is_dir():
        raise KdiffError(f"{option} {path} is a directory")
    if not overwrite and path.exists():
        raise KdiffError(f"{option} {path} already exists; pass --overwrite to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise KdiffError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise KdiffError(f"cannot write {path}: permission denied")
    return path


def make_request(
    generator: str,
    count: int,
    size: int,
    seed: int,
    out: Path,
    preview: Path | None = None,
    workers: int | None = None,
    dtype: str = "float32",
    params: list[str] | tuple[str, ...] = (),
    overwrite: bool = True,
) -> Request:
    """Validate every argument of ``kdiff synth-kernels`` (before any work) into a :class:`Request`.

    Sizes are checked against what they imply (:mod:`kdiff_cli.limits`): ``size`` against the
    kernel size limit, each worker's chunk against the memory available, the file against the
    free disk space. ``overwrite`` False refuses an existing ``out`` or ``preview``.
    """
    name, gen = get_generator(generator)
    if count <= 0:
        raise KdiffError(f"--count must be >= 1, got {count}")
    if size < MIN_SIZE:
        raise KdiffError(f"--size must be >= {MIN_SIZE}, got {size}")
    limits.check_kernel_size(size, "--size")
    if seed < 0:
        raise KdiffError(f"--seed must be >= 0, got {seed}")
    if workers is not None and workers < 1:
        raise KdiffError(f"--workers must be >= 1, got {workers}")
    if dtype not in DTYPES:
        raise KdiffError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    resolved = parse_params(gen, list(params))
    out = _check_output(out, ".npz", "--out", overwrite)
    if preview is not None:
        preview = _check_output(preview, ".png", "--preview", overwrite)
        if preview.resolve() == out.resolve():
            raise KdiffError("--preview and --out are the same file")
    workers = workers or default_workers()
    check_sizes(count, size, workers, dtype, out)
    return Request(name, gen, count, size, seed, out, preview, workers, dtype, resolved)


def check_sizes(count: int, size: int, workers: int, dtype: str, out: Path) -> None:
    """The memory the workers need and the disk space the file takes, against what there is."""
    busy = min(workers, math.ceil(count / synth_chunks.CHUNK))  # workers that get a chunk
    chunk = min(count, synth_chunks.CHUNK)
    limits.check_memory(
        busy * chunk * size * size * WORKER_BYTES_PER_PIXEL,
        f"--size {size} with {busy} worker(s) drawing {chunk} kernels each",
        "lower --size or --workers",
    )
    limits.check_disk(out, count * size * size * np.dtype(DTYPES[dtype]).itemsize,
                      f"--count {count} --size {size} ({dtype})", "lower --count or --size, or use --dtype float16")


def run(request: Request, callback: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Make the kernels and write ``request.out`` (and the preview); returns the meta data.

    Both files appear only when everything succeeded (temporary files are removed otherwise).
    """
    r = request
    meta = r.meta()
    dtype = np.dtype(DTYPES[r.dtype])
    kernel_bytes = r.size * r.size * dtype.itemsize
    temps = {r.out: tmp_path(r.out)}
    if r.preview is not None:
        temps[r.preview] = tmp_path(r.preview)
    try:
        with open(temps[r.out], "w+b") as f:
            z = StoredZip(f)
            header = npy_header((r.count, r.size, r.size), dtype)
            entry = z.begin("kernels.npy", len(header) + r.count * kernel_bytes)
            f.write(header)
            reserve(f, r.count * kernel_bytes)
            offset = f.tell()
            # the workers write their chunks straight into the file; their CRCs are combined in order
            crc, done, finished = zlib.crc32(header), 0, {}
            for start, n, chunk_crc in produce(r.generator, r.count, r.size, r.seed, r.workers, r.params,
                                               synth_chunks.FileSink(f.fileno(), offset, dtype)):
                finished[start] = (n, chunk_crc)
                while done in finished:
                    m, c = finished.pop(done)
                    crc, done = crc32_combine(crc, c, m * kernel_bytes), done + m
                if callback is not None:
                    callback(n)
            first = os.pread(f.fileno(), min(r.count, PREVIEW_COUNT) * kernel_bytes, offset)
            z.finish(entry, crc)
            z.add("meta.npy", npy_bytes(np.array(json.dumps(meta, sort_keys=True))))
            z.close()
        if r.preview is not None:
            _write_png(temps[r.preview], preview_grid(np.frombuffer(first, dtype).reshape(-1, r.size, r.size)))
        for target, tmp in temps.items():
            os.replace(tmp, target)
    except OSError as e:
        raise KdiffError(f"cannot write output: {e.strerror or e}") from None
    finally:
        for tmp in temps.values():
            remove(tmp)
    return meta


def load(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a database written by :func:`run`: ``(kernels, meta)``."""
    with np.load(path, allow_pickle=False) as f:
        return f["kernels"], json.loads(f["meta"].item())
