"""Image reading and writing: PNG, JPEG, TIFF and BMP; 8- and 16-bit; gray, RGB and RGBA.

* :func:`read_image` returns ``(H, W, C)`` float32 in [0, 1] (C = 1 gray or 3 RGB) and an
  :class:`ImageInfo`. 16-bit files keep all 16 bits (OpenCV decodes them unchanged; imageio's
  default Pillow plugin would silently reduce 16-bit RGB PNG to 8 bits); floating-point TIFF is
  read as float (``bit_depth`` 32), its values outside [0, 1] clipped with an :class:`ImageWarning`.
  An alpha channel is dropped with an :class:`ImageWarning`; the EXIF orientation tag is applied
  (OpenCV's ``IMREAD_UNCHANGED`` ignores it, so we read it with Pillow and transpose ourselves).
* :func:`write_image` clips and rounds to 8 or 16 bits, or writes float32 TIFF (``bit_depth`` 32),
  atomically (temp file beside the target, then ``os.replace``); JPEG at quality 95.
* :func:`to_tensor` / :func:`to_numpy` convert between the NumPy IO layout ``(H, W, C)`` and the
  torch layout ``(1, C, H, W)``.

Unreadable, corrupt or non-image files and unwritable targets raise a one-line :class:`KdiffError`.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from kdiff_cli.errors import KdiffError, KdiffWarning

#: extension -> format name, for the formats we read and write
FORMATS = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".bmp": "bmp",
}
#: formats that can store 16 bits per channel
SIXTEEN_BIT_FORMATS = ("png", "tiff")
#: formats that can store float32 pixels (``bit_depth`` 32)
FLOAT_FORMATS = ("tiff",)
JPEG_QUALITY = 95
EXIF_ORIENTATION_TAG = 0x0112
PNG_GRAY_ALPHA = 4


class ImageWarning(KdiffWarning):
    """Something about an image the user should know (alpha dropped, values clipped, bit depth reduced)."""


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`read_image` found in a file."""

    path: Path
    format: str  # "png", "jpeg", "tiff", "bmp" (from the extension; "" if unknown)
    bit_depth: int  # 8, 16, or 32 for float pixels: bits per channel in the file (write back at this depth)
    channels: int  # 1 (gray) or 3 (RGB), after dropping alpha
    had_alpha: bool  # the file had an alpha channel, which was dropped
    orientation: int = 1  # EXIF orientation tag that was applied (1 = none)


# --------------------------------------------------------------------------- reading


def _decode(data: bytes, path: Path) -> np.ndarray:
    """Decode with OpenCV (all bits, no colour conversion); TIFF falls back to tifffile."""
    img = None
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    except cv2.error:
        img = None
    if img is not None:
        if img.ndim == 3 and img.shape[2] >= 3:  # OpenCV is BGR(A); make it RGB(A)
            img = np.concatenate([img[..., 2::-1], img[..., 3:]], axis=2)
        if img.ndim == 3 and img.shape[2] == 4 and _png_color_type(data) == PNG_GRAY_ALPHA:
            img = img[..., [0, 3]]  # OpenCV expands gray + alpha to BGRA; keep it gray
        return img
    if FORMATS.get(path.suffix.lower()) == "tiff" or data[:4] in (b"II*\x00", b"MM\x00*"):
        try:
            import tifffile

            return np.asarray(tifffile.imread(path, key=0))  # tifffile keeps RGB order
        except Exception as e:  # noqa: BLE001 - any decoder failure is a bad file
            raise KdiffError(f"cannot read image {path}: {e}") from None
    raise KdiffError(f"cannot read image {path}: not a decodable image (corrupt or unsupported format)")


def _png_color_type(data: bytes) -> int | None:
    """The colour type from a PNG's IHDR chunk (0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) > 25:
        return data[25]
    return None


def _exif_orientation(path: Path) -> int:
    """The EXIF orientation tag (1..8), or 1 when absent or unreadable."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            value = int(im.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - no EXIF, or a file Pillow cannot parse
        return 1
    return value if 1 <= value <= 8 else 1


def apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """Transpose ``a`` (H, W[, C]) as EXIF ``orientation`` asks (same as PIL's exif_transpose)."""
    if orientation == 2:
        a = a[:, ::-1]
    elif orientation == 3:
        a = a[::-1, ::-1]
    elif orientation == 4:
        a = a[::-1]
    elif orientation == 5:
        a = a.swapaxes(0, 1)
    elif orientation == 6:
        a = np.rot90(a, -1)
    elif orientation == 7:
        a = np.rot90(a, 1)[:, ::-1]
    elif orientation == 8:
        a = np.rot90(a, 1)
    return np.ascontiguousarray(a)


def _to_unit(img: np.ndarray, path: Path) -> tuple[np.ndarray, int]:
    """Integer or float pixels -> float32 in [0, 1], and the file's bit depth (8, 16, or 32 for float)."""
    if img.dtype == np.bool_:
        return img.astype(np.float32), 8
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0, 8
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0, 16
    if np.issubdtype(img.dtype, np.floating):
        x = img.astype(np.float32)
        if not np.isfinite(x).all():
            raise KdiffError(f"cannot read image {path}: contains NaN or infinite values")
        outside = int(np.count_nonzero((x < 0) | (x > 1)))
        if outside:
            warnings.warn(f"{path}: {outside} float pixel values outside [0, 1] clipped", ImageWarning, stacklevel=3)
        return np.clip(x, 0.0, 1.0), 32
    raise KdiffError(f"cannot read image {path}: unsupported pixel type {img.dtype}")


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, ImageInfo]:
    """Read an image as ``(H, W, C)`` float32 in [0, 1] with C = 1 (gray) or 3 (RGB).

    Alpha is dropped with an :class:`ImageWarning`; EXIF orientation is applied; the returned
    :class:`ImageInfo` says the file's bit depth so results can be written back at it.
    """
    path = Path(path)
    if not path.exists():
        raise KdiffError(f"cannot read image {path}: no such file")
    if path.is_dir():
        raise KdiffError(f"cannot read image {path}: is a directory")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise KdiffError(f"cannot read image {path}: {e.strerror or e}") from None
    if not data:
        raise KdiffError(f"cannot read image {path}: empty file")
    img = _decode(data, path)

    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[2] not in (1, 2, 3, 4) or img.shape[0] == 0 or img.shape[1] == 0:
        raise KdiffError(f"cannot read image {path}: unsupported shape {img.shape}")
    had_alpha = img.shape[2] in (2, 4)
    if had_alpha:
        warnings.warn(f"{path}: alpha channel dropped", ImageWarning, stacklevel=2)
        img = img[..., : img.shape[2] - 1]

    orientation = _exif_orientation(path)
    img = apply_orientation(img, orientation)
    x, bit_depth = _to_unit(img, path)
    info = ImageInfo(
        path=path,
        format=FORMATS.get(path.suffix.lower(), ""),
        bit_depth=bit_depth,
        channels=int(x.shape[2]),
        had_alpha=had_alpha,
        orientation=orientation,
    )
    return np.ascontiguousarray(x, dtype=np.float32), info


# --------------------------------------------------------------------------- writing


def quantize(x: np.ndarray, bit_depth: int) -> np.ndarray:
    """Float in [0, 1] -> uint8 / uint16, clipped and rounded to the nearest level."""
    if bit_depth not in (8, 16):
        raise KdiffError(f"bit depth must be 8 or 16, got {bit_depth}")
    top = 255 if bit_depth == 8 else 65535
    x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0)
    q = np.rint(np.clip(x, 0.0, 1.0) * top)
    return q.astype(np.uint8 if bit_depth == 8 else np.uint16)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (``os.replace``).

    On any error the temporary file is removed and ``path`` is untouched: nothing half-written is
    ever visible under the target name. The parent folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as e:
        raise KdiffError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def write_image(path: str | os.PathLike, x: np.ndarray, bit_depth: int = 8) -> Path:
    """Write ``x`` ((H, W, C) with C in {1, 3}, or (H, W); float in [0, 1]) as an image file.

    The format follows the extension (png, jpg/jpeg, tif/tiff, bmp). ``bit_depth`` 16 is kept
    for PNG and TIFF; JPEG and BMP store 8 bits (with an :class:`ImageWarning` when 16 was asked).
    ``bit_depth`` 32 writes float32 TIFF (clipped to [0, 1]); other formats are then quantised to
    16 bits (PNG) or 8, with an :class:`ImageWarning`.
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise KdiffError(
            f"cannot write image {path}: unsupported extension {path.suffix or '(none)'!r} "
            f"(use one of {', '.join(sorted(FORMATS))})"
        )
    a = np.asarray(x)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)) or a.shape[0] == 0 or a.shape[1] == 0:
        raise KdiffError(f"cannot write image {path}: expected (H, W), (H, W, 1) or (H, W, 3), got {a.shape}")
    if bit_depth == 32 and fmt not in FLOAT_FORMATS:
        depth = 16 if fmt in SIXTEEN_BIT_FORMATS else 8
        warnings.warn(f"{path}: {fmt} stores no float pixels; float output quantised to {depth} bits", ImageWarning, stacklevel=2)
        bit_depth = depth
    if bit_depth == 16 and fmt not in SIXTEEN_BIT_FORMATS:
        warnings.warn(f"{path}: {fmt} stores 8 bits per channel; writing 8-bit", ImageWarning, stacklevel=2)
        bit_depth = 8
    if bit_depth == 32:
        q = np.clip(np.nan_to_num(np.asarray(a, dtype=np.float32), nan=0.0), 0.0, 1.0)
    else:
        q = quantize(a, bit_depth)
    if q.ndim == 3:
        q = np.ascontiguousarray(q[..., ::-1])  # RGB -> BGR for OpenCV
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if fmt == "jpeg" else []
    try:
        ok, buf = cv2.imencode(path.suffix.lower(), q, params)
    except cv2.error as e:
        raise KdiffError(f"cannot write image {path}: {str(e).strip().splitlines()[-1]}") from None
    if not ok:
        raise KdiffError(f"cannot write image {path}: encoder failed")
    return atomic_write_bytes(path, buf.tobytes())


# --------------------------------------------------------------------------- numpy <-> torch


def to_tensor(x: np.ndarray) -> torch.Tensor:
    """``(H, W, C)`` (or ``(H, W)``) NumPy image -> ``(1, C, H, W)`` float32 torch tensor."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise KdiffError(f"expected an (H, W, C) image, got shape {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """``(1, C, H, W)`` (or ``(C, H, W)``) torch tensor -> ``(H, W, C)`` float32 NumPy image."""
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise KdiffError(f"expected a single image (1, C, H, W), got shape {tuple(x.shape)}")
        x = x[0]
    if x.dim() != 3:
        raise KdiffError(f"expected a (1, C, H, W) image, got shape {tuple(x.shape)}")
    return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy().transpose(1, 2, 0))
