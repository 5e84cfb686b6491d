"""Kernel database synthesis (``kdiff synth-kernels``): seeded, chunked, parallel, written atomically.

Kernels are made in fixed chunks of :data:`CHUNK`; chunk ``i`` draws from
``np.random.default_rng(np.random.SeedSequence([seed, i]))``, so the database depends only on
(generator, params, count, size, seed), never on the number of worker processes. Workers are
forked processes handing their chunks to a sink: :func:`synthesize` has them fill a shared
anonymous memory map (the array returned), ``kdiff synth-kernels`` has them write straight into
the output file and return the chunk's CRC-32 (no kernels are pickled or copied between processes).

The ``.npz`` file holds ``kernels`` ``(N, S, S)`` and ``meta``, a JSON string (generator, params,
seed, count, size, dtype, kdiff version). Zip entries carry a fixed date, so the same request gives
a byte-identical file.
"""

from __future__ import annotations

import concurrent.futures as cf
import errno
import functools
import gc
import io
import json
import math
import mmap
import multiprocessing
import os
import signal
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from kdiff_cli import __version__
from kdiff_cli import params
from kdiff_cli.errors import KdiffError
from kdiff_cli.maths.kernels import MIN_SIZE

#: kernels per chunk (each chunk has its own seed; changing this changes every database)
CHUNK = 512
#: output dtypes of ``kdiff synth-kernels``
DTYPES = {"float32": np.float32, "float16": np.float16}
#: kernels shown by the preview grid, and its number of columns
PREVIEW_COUNT, PREVIEW_COLUMNS = 64, 8
#: date of every zip entry (the earliest the zip format allows), for byte-identical files
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


# --------------------------------------------------------------------------- generators and params


def get_generator(generator: Any) -> tuple[str, Any]:
    """``(name, component)`` for a registered generator name or a generator object."""
    if isinstance(generator, str):
        from kdiff_cli import plugins

        return generator, plugins.get("generator", generator)
    if not callable(getattr(generator, "sample", None)):
        raise KdiffError(f"{generator!r} is not a kernel generator (it has no sample method)")
    return str(getattr(generator, "name", type(generator).__name__)), generator


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


# --------------------------------------------------------------------------- synthesis


def chunk_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of chunk ``index`` of a database with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def _chunks(count: int) -> list[tuple[int, int, int]]:
    """``(index, start, n)`` of the chunks of a database of ``count`` kernels."""
    return [(i, start, min(CHUNK, count - start)) for i, start in enumerate(range(0, count, CHUNK))]


def _make_chunk(gen: Any, name: str, seed: int, index: int, count: int, size: int, params: dict) -> np.ndarray:
    k = np.asarray(gen.sample(chunk_rng(seed, index), count, size, **params))
    if k.shape != (count, size, size):
        raise KdiffError(f"generator {name!r} returned shape {k.shape}, expected {(count, size, size)}")
    if not np.isfinite(k.sum()):  # a NaN or infinity anywhere makes the sum non-finite
        raise KdiffError(f"generator {name!r} produced non-finite values")
    return k


class ArraySink:
    """Puts each chunk into ``out`` (shared memory when filled by forked workers)."""

    def __init__(self, out: np.ndarray):
        self.out = out

    def __call__(self, start: int, k: np.ndarray) -> None:
        self.out[start : start + len(k)] = k


class FileSink:
    """Writes each chunk, as ``dtype``, into an open file at ``offset`` (``os.pwrite``: from any
    process, in any order); returns the chunk's CRC-32."""

    def __init__(self, fd: int, offset: int, dtype: np.dtype):
        self.fd, self.offset, self.dtype = fd, offset, np.dtype(dtype)

    def __call__(self, start: int, k: np.ndarray) -> int:
        data = np.ascontiguousarray(k, dtype=self.dtype)
        raw = memoryview(data.reshape(-1)).cast("B")
        pos = self.offset + start * (raw.nbytes // max(len(k), 1))
        view = raw
        while view.nbytes:
            written = os.pwrite(self.fd, view, pos)
            view, pos = view[written:], pos + written
        return zlib.crc32(raw)


# The running job, inherited by the forked workers (the generator and sink need not pickle).
_JOB: dict[str, Any] = {}


#: signals the CLI turns into an exception (errors.handle_termination); held back while forking,
#: where an exception raised in an at-fork hook would be swallowed and the signal lost
_TERMINATING = {getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)}


def _worker_init() -> None:
    """Workers leave Ctrl-C and a hang-up to the parent, which cancels the pool and cleans up; a
    SIGTERM (the parent ending them) ends a worker at once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _TERMINATING)  # blocked in the parent while it forked


def _worker(index: int, start: int, count: int) -> Any:
    job = _JOB
    k = _make_chunk(job["gen"], job["name"], job["seed"], index, count, job["size"], job["params"])
    return job["sink"](start, k)


def default_workers() -> int:
    """CPUs available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _effective_workers(workers: int, count: int) -> int:
    workers = max(1, min(int(workers), len(_chunks(count))))
    if workers > 1 and "fork" not in multiprocessing.get_all_start_methods():
        return 1  # pragma: no cover - parallel workers need fork (Linux, macOS)
    return workers


def _check_args(count: int, size: int, seed: int) -> tuple[int, int, int]:
    if int(count) != count or count < 0:
        raise KdiffError(f"count must be a nonnegative integer, got {count}")
    if int(size) != size or size < MIN_SIZE:
        raise KdiffError(f"kernel size must be an integer >= {MIN_SIZE}, got {size}")
    if int(seed) != seed or seed < 0:
        raise KdiffError(f"seed must be a nonnegative integer, got {seed}")
    return int(count), int(size), int(seed)


def produce(
    generator: Any,
    count: int,
    size: int,
    seed: int,
    workers: int,
    params: dict[str, Any] | None,
    sink: Callable[[int, np.ndarray], Any],
) -> Iterator[tuple[int, int, Any]]:
    """Make the kernels chunk by chunk, handing each to ``sink(start, kernels)``.

    Yields ``(start, n, sink result)`` as chunks finish (in any order when ``workers > 1``). With
    several workers, the sink runs in forked processes: it must write to shared memory or a file.
    """
    name, gen = get_generator(generator)
    count, size, seed = _check_args(count, size, seed)
    params = dict(params or {})
    chunks = _chunks(count)
    workers = _effective_workers(workers, count)
    if workers == 1:
        for i, start, n in chunks:
            yield start, n, sink(start, _make_chunk(gen, name, seed, i, n, size, params))
        return
    _JOB.update(gen=gen, name=name, seed=seed, size=size, params=params, sink=sink)
    gc.freeze()  # the workers' garbage collector then skips (and does not copy) the parent's objects
    pool = None
    try:
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _TERMINATING)  # delivered once the workers exist
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
                pool = cf.ProcessPoolExecutor(
                    workers, mp_context=multiprocessing.get_context("fork"), initializer=_worker_init
                )
                futures = {pool.submit(_worker, i, start, n): (start, n) for i, start, n in chunks}
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for fut in cf.as_completed(futures):
            yield (*futures[fut], fut.result())
    except cf.process.BrokenProcessPool as e:
        raise KdiffError(f"a kernel worker process died ({e}); try --workers 1") from None
    except BaseException:  # interrupted or terminated: end the workers now, not after their chunks
        if pool is not None:  # SIGKILL: a worker still starting has the parent's Python handlers
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.kill()
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        gc.unfreeze()
        _JOB.clear()


def synthesize(
    generator: Any,
    count: int,
    size: int,
    seed: int,
    workers: int = 1,
    params: dict[str, Any] | None = None,
    callback: Callable[[int], None] | None = None,
    dtype: Any = np.float64,
) -> np.ndarray:
    """``count`` kernels ``(count, size, size)`` of ``dtype`` from a generator (name or object).

    seed: nonnegative int; chunk i of :data:`CHUNK` kernels is drawn with :func:`chunk_rng`.
    workers: processes (forked; 1 runs in this process); the result does not depend on it.
    params: generator parameters (keyword arguments of its ``sample``).
    callback: called with the number of kernels finished, after each chunk.
    """
    count, size, seed = _check_args(count, size, seed)
    dtype = np.dtype(dtype)
    if _effective_workers(workers, count) == 1:
        out = np.empty((count, size, size), dtype=dtype)
    else:  # shared anonymous memory, inherited by the forked workers; the array keeps it alive
        buffer = mmap.mmap(-1, count * size * size * dtype.itemsize)
        out = np.frombuffer(buffer, dtype=dtype).reshape(count, size, size)
    for _, n, _ in produce(generator, count, size, seed, workers, params, ArraySink(out)):
        if callback is not None:
            callback(n)
    return out


# --------------------------------------------------------------------------- files


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _reserve(f, nbytes: int) -> None:
    """Extend ``f`` by ``nbytes`` after its position, allocating the disk space now (a full disk is
    then an error before any work, not in the middle of the workers' writes)."""
    f.flush()
    start = f.tell()
    try:
        os.posix_fallocate(f.fileno(), start, nbytes)
    except (AttributeError, OSError) as e:
        if isinstance(e, OSError) and e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        f.truncate(start + nbytes)  # no fallocate here: a sparse file
    f.seek(start)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _gf2_times(matrix: list[int], vector: int) -> int:
    out, i = 0, 0
    while vector:
        if vector & 1:
            out ^= matrix[i]
        vector >>= 1
        i += 1
    return out


@functools.lru_cache(maxsize=8)
def _crc_zeros_operator(nbytes: int) -> tuple[int, ...]:
    """The GF(2) matrix that advances a CRC-32 over ``nbytes`` zero bytes (zlib's crc32_combine)."""
    op = [0xEDB88320] + [1 << n for n in range(31)]  # one zero bit
    for _ in range(3):  # eight zero bits: one byte
        op = [_gf2_times(op, col) for col in op]
    total = list(1 << n for n in range(32))  # identity
    while nbytes:
        if nbytes & 1:
            total = [_gf2_times(op, col) for col in total]
        nbytes >>= 1
        if nbytes:
            op = [_gf2_times(op, col) for col in op]
    return tuple(total)


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of ``a + b`` from ``crc1 = crc32(a)``, ``crc2 = crc32(b)`` and ``len2 = len(b)``."""
    return _gf2_times(list(_crc_zeros_operator(len2)), crc1) ^ crc2


class StoredZip:
    """A minimal writer of uncompressed ZIP64 archives (what ``np.load`` reads as ``.npz``).

    Every entry has a fixed date, so equal contents give equal bytes. Unlike :mod:`zipfile`, an
    entry's data may be written by others after :meth:`begin` (e.g. worker processes writing at
    known offsets), its CRC-32 given to :meth:`finish`.
    """

    _CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
    _END64 = struct.Struct("<4sQ2H2L4Q")
    _LOCATOR64 = struct.Struct("<4sLQL")
    _END = struct.Struct("<4s4H2LH")
    _LIMIT = (1 << 31) - 1

    def __init__(self, f) -> None:
        self.f = f  # binary file opened for writing and seeking
        self.entries: list[zipfile.ZipInfo] = []

    def _header(self, info: zipfile.ZipInfo) -> bytes:
        return info.FileHeader(zip64=True)  # zip64 sizes in the local header: fixed length

    def begin(self, name: str, size: int) -> zipfile.ZipInfo:
        """Write the local header of an entry of ``size`` bytes (CRC filled in by :meth:`finish`)."""
        info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
        info.compress_type = zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        info.file_size = info.compress_size = size
        info.CRC = 0
        info.header_offset = self.f.tell()
        self.f.write(self._header(info))
        self.entries.append(info)
        return info

    def finish(self, info: zipfile.ZipInfo, crc: int) -> None:
        """Set the entry's CRC-32 and move to the end of its data."""
        info.CRC = crc
        header = self._header(info)
        self.f.seek(info.header_offset)
        self.f.write(header)
        self.f.seek(info.header_offset + len(header) + info.file_size)

    def add(self, name: str, data: bytes) -> None:
        info = self.begin(name, len(data))
        self.f.write(data)
        self.finish(info, zlib.crc32(data))

    def close(self) -> None:
        """Write the central directory and the (ZIP64) end records."""
        f, start = self.f, self.f.tell()
        for info in self.entries:
            dosdate = (info.date_time[0] - 1980) << 9 | info.date_time[1] << 5 | info.date_time[2]
            dostime = info.date_time[3] << 11 | info.date_time[4] << 5 | info.date_time[5] // 2
            extra, size, offset = [], info.file_size, info.header_offset
            if size > self._LIMIT:
                extra += [size, size]
                size = 0xFFFFFFFF
            if offset > self._LIMIT:
                extra.append(offset)
                offset = 0xFFFFFFFF
            extra_data = struct.pack("<HH" + "Q" * len(extra), 1, 8 * len(extra), *extra) if extra else b""
            name = info.filename.encode("utf-8")
            f.write(self._CENTRAL.pack(b"PK\x01\x02", 45, info.create_system, 45, 0, 0, 0, dostime, dosdate,
                                       info.CRC, size, size, len(name), len(extra_data), 0, 0, 0,
                                       info.external_attr, offset))
            f.write(name + extra_data)
        end = f.tell()
        count, cd_size, cd_offset = len(self.entries), end - start, start
        if count > 0xFFFF or cd_offset > self._LIMIT or cd_size > self._LIMIT:
            f.write(self._END64.pack(b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset))
            f.write(self._LOCATOR64.pack(b"PK\x06\x07", 0, end, 1))
            count, cd_size, cd_offset = min(count, 0xFFFF), min(cd_size, 0xFFFFFFFF), min(cd_offset, 0xFFFFFFFF)
        f.write(self._END.pack(b"PK\x05\x06", 0, 0, count, count, cd_size, cd_offset, 0))


def npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The ``.npy`` header of a C-order array of ``shape`` and ``dtype``."""
    buf = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """A small array as ``.npy`` bytes (no pickle)."""
    array = np.asarray(array)
    if not array.flags.c_contiguous:
        array = array.copy(order="C")
    return npy_header(array.shape, array.dtype) + array.tobytes()


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write small arrays as an uncompressed ``.npz``, byte-reproducibly and atomically."""
    path = Path(path)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            z = StoredZip(f)
            for key, array in arrays.items():
                z.add(f"{key}.npy", npy_bytes(array))
            z.close()
        os.replace(tmp, path)
    finally:
        _remove(tmp)


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
        return {
            "generator": self.name,
            "params": self.params,
            "seed": self.seed,
            "count": self.count,
            "size": self.size,
            "dtype": self.dtype,
            "chunk": CHUNK,
            "kdiff_version": __version__,
        }


def _check_output(path: Path, suffix: str, option: str) -> Path:
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise KdiffError(f"{option} must be a {suffix} file, got {path}")
    if path.is_dir():
        raise KdiffError(f"{option} {path} is a directory")
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
) -> Request:
    """Validate every argument of ``kdiff synth-kernels`` (before any work) into a :class:`Request`."""
    name, gen = get_generator(generator)
    if count <= 0:
        raise KdiffError(f"--count must be >= 1, got {count}")
    if size < MIN_SIZE:
        raise KdiffError(f"--size must be >= {MIN_SIZE}, got {size}")
    if seed < 0:
        raise KdiffError(f"--seed must be >= 0, got {seed}")
    if workers is not None and workers < 1:
        raise KdiffError(f"--workers must be >= 1, got {workers}")
    if dtype not in DTYPES:
        raise KdiffError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    resolved = parse_params(gen, list(params))
    out = _check_output(out, ".npz", "--out")
    if preview is not None:
        preview = _check_output(preview, ".png", "--preview")
        if preview.resolve() == out.resolve():
            raise KdiffError("--preview and --out are the same file")
    return Request(name, gen, count, size, seed, out, preview, workers or default_workers(), dtype, resolved)


def run(request: Request, callback: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Make the kernels and write ``request.out`` (and the preview); returns the meta data.

    Both files appear only when everything succeeded (temporary files are removed otherwise).
    """
    r = request
    meta = r.meta()
    dtype = np.dtype(DTYPES[r.dtype])
    kernel_bytes = r.size * r.size * dtype.itemsize
    temps = {r.out: _tmp_path(r.out)}
    if r.preview is not None:
        temps[r.preview] = _tmp_path(r.preview)
    try:
        with open(temps[r.out], "w+b") as f:
            z = StoredZip(f)
            header = npy_header((r.count, r.size, r.size), dtype)
            entry = z.begin("kernels.npy", len(header) + r.count * kernel_bytes)
            f.write(header)
            _reserve(f, r.count * kernel_bytes)
            offset = f.tell()
            # the workers write their chunks straight into the file; their CRCs are combined in order
            crc, done, finished = zlib.crc32(header), 0, {}
            for start, n, chunk_crc in produce(r.generator, r.count, r.size, r.seed, r.workers, r.params,
                                               FileSink(f.fileno(), offset, dtype)):
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
            _remove(tmp)
    return meta


def load(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a database written by :func:`run`: ``(kernels, meta)``."""
    with np.load(path, allow_pickle=False) as f:
        return f["kernels"], json.loads(f["meta"].item())
