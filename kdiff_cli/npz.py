"""Byte-reproducible ``.npy``/``.npz`` writing: a minimal uncompressed ZIP64 writer and npy helpers.

:class:`StoredZip` writes what ``np.load`` reads as ``.npz``. Every entry carries the fixed date
:data:`ZIP_DATE`, so equal contents give equal bytes; unlike :mod:`zipfile`, an entry's data may be
written by others after :meth:`StoredZip.begin` (worker processes writing at known offsets, as
``kdiff synth-kernels`` does), its CRC-32 given to :meth:`StoredZip.finish`
(:func:`crc32_combine` joins the CRCs of chunks written apart).

:func:`npy_bytes` is the one array-to-``.npy``-bytes helper (no pickle); :func:`write_npz` writes
small arrays as an ``.npz``, atomically.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

#: date of every zip entry (the earliest the zip format allows), for byte-identical files
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


# --------------------------------------------------------------------------- temporary files


def tmp_path(path: Path) -> Path:
    """The temporary name beside ``path`` that a file is written under before ``os.replace``."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def reserve(f, nbytes: int) -> None:
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


def remove(path: Path) -> None:
    """Delete ``path`` if it exists."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------- CRC-32 and the zip writer


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


# --------------------------------------------------------------------------- npy and npz


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
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            z = StoredZip(f)
            for key, array in arrays.items():
                z.add(f"{key}.npy", npy_bytes(array))
            z.close()
        os.replace(tmp, path)
    finally:
        remove(tmp)
