"""NumPy kernel utilities shared by the kernel generators: batched rasterisation, centring, statistics.

Generators describe each kernel k as weighted points (a sampled trajectory); :func:`rasterize`
splats all points of all kernels at once with one ``np.bincount`` over flattened
``(kernel, pixel)`` indices, moves each kernel's centre of mass to the centre pixel
``(size // 2, size // 2)`` by an integer shift, and normalises to sum 1.

Coordinates are in pixels of the ``size x size`` kernel: ``(row, col)`` = ``(y, x)``, pixel ``i``
covers ``[i - 0.5, i + 0.5)``.
"""

from __future__ import annotations

import math

import numpy as np

from kdiff_cli.errors import KdiffError

#: smallest kernel size accepted by the generators and ``kdiff synth-kernels``
MIN_SIZE = 3


# --------------------------------------------------------------------------- argument checks


def check_count_size(count: int, size: int) -> tuple[int, int]:
    """Validate ``count >= 0`` and ``size >= MIN_SIZE``; return them as ints."""
    if int(count) != count or count < 0:
        raise KdiffError(f"count must be a nonnegative integer, got {count}")
    if int(size) != size or size < MIN_SIZE:
        raise KdiffError(f"kernel size must be an integer >= {MIN_SIZE}, got {size}")
    return int(count), int(size)


def check_range(name: str, value: float | None, lo: float, hi: float, *, open_lo: bool = False) -> float | None:
    """Validate a numeric parameter in ``[lo, hi]`` (``(lo, hi]`` if ``open_lo``); ``None`` passes."""
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise KdiffError(f"parameter {name} must be a number, got {value!r}") from None
    bad = (v <= lo if open_lo else v < lo) or v > hi or not math.isfinite(v)
    if bad:
        lo_b = "(" if open_lo else "["
        raise KdiffError(f"parameter {name} must be in {lo_b}{lo:g}, {hi:g}], got {value!r}")
    return v


def per_kernel(rng: np.random.Generator, value: float | None, lo: float, hi: float, count: int) -> np.ndarray:
    """``value`` for every kernel, or ``U(lo, hi)`` per kernel when ``value`` is ``None``."""
    if value is None:
        return rng.uniform(lo, hi, count)
    return np.full(count, float(value))


# --------------------------------------------------------------------------- rasterisation


#: range of the point variance (px^2) that the three-tap footprint of :func:`_taps` can represent
SPREAD_RANGE = (0.25, 0.75)


def _taps(c: np.ndarray, spread: float | None) -> tuple[np.ndarray, np.ndarray]:
    """First tap (pixel index) and ``(P, taps)`` weights spreading each point coordinate ``c``.

    ``spread=None``: bilinear splatting (the two pixels around ``c``). ``spread=V``: the three
    pixels nearest ``c`` get weights with sum 1, mean ``c`` and variance exactly ``V`` px^2 for every
    sub-pixel position ``d = c - round(c)``: ``w(+-1) = (V + d^2 +- d) / 2``, ``w(0) = 1 - V - d^2``
    (nonnegative for V in ``SPREAD_RANGE``). V = 1/4 is the quadratic B-spline (three unit boxes:
    a point blurred by a near-Gaussian and integrated over the pixel).
    """
    if spread is None:
        lo = np.floor(c)
        f = c - lo
        return lo.astype(np.int64), np.stack([1.0 - f, f], axis=1)
    if not SPREAD_RANGE[0] <= spread <= SPREAD_RANGE[1]:
        raise ValueError(f"spread must be in {SPREAD_RANGE}, got {spread}")
    r = np.rint(c)
    d = c - r
    even = 0.5 * (spread + d * d)
    return r.astype(np.int64) - 1, np.stack([even - 0.5 * d, 1.0 - spread - d * d, even + 0.5 * d], axis=1)


def rasterize(
    kid: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    count: int,
    size: int,
    *,
    spread: float | None = None,
    center: bool = True,
) -> np.ndarray:
    """Splat weighted points into ``count`` kernels of ``size x size``; ``(count, size, size)`` float64.

    kid: kernel index of each point (int, ``0 <= kid < count``); y, x: point rows/columns in
    pixels (any real value); w: point weights (mass, >= 0).
    spread: footprint of each point: ``None`` bilinear, else its variance in px^2 over three
    pixels per axis (see :func:`_taps`).
    center: first drop the points outside the grid, then shift each kernel by whole pixels so
    that the centre of mass of its points falls on the pixel nearest ``(size // 2, size // 2)``
    (two passes, so that points shifted off the grid are accounted for); finally
    :func:`center_kernels` fixes the few kernels whose border losses moved the centre of mass to
    another pixel.

    Mass falling outside the grid is dropped; each kernel is then normalised to sum 1. A kernel
    with no mass left becomes a delta at the centre pixel.
    """
    kid = np.asarray(kid, dtype=np.int64)
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if kid.size and np.any(kid[1:] < kid[:-1]):
        order = np.argsort(kid, kind="stable")
        kid, y, x, w = kid[order], y[order], x[order], w[order]
    if center:
        for _ in range(2):
            inside = (y >= -0.5) & (y < size - 0.5) & (x >= -0.5) & (x < size - 0.5)
            if not inside.all():
                kid, y, x, w = kid[inside], y[inside], x[inside], w[inside]
            mass = np.bincount(kid, w, minlength=count)
            safe = np.where(mass > 0, mass, 1.0)
            dy = np.rint(size // 2 - np.bincount(kid, w * y, minlength=count) / safe)
            dx = np.rint(size // 2 - np.bincount(kid, w * x, minlength=count) / safe)
            y = y + dy[kid]
            x = x + dx[kid]
    out = np.empty((count, size, size))
    com = np.empty((2, count))
    # blocks of kernels small enough for the caches; points are sorted by kernel
    block = max(1, BLOCK_PIXELS // (size * size))
    bounds = np.searchsorted(kid, np.arange(0, count + block, block))
    for j, b0 in enumerate(range(0, count, block)):
        b1 = min(b0 + block, count)
        sl = slice(bounds[j], bounds[j + 1])
        com[:, b0:b1] = _splat(out[b0:b1], kid[sl] - b0, y[sl], x[sl], w[sl], spread)
    return center_kernels(out, com=(com[0], com[1])) if center else out


#: pixels rasterised at once by :func:`rasterize` (a cache-sized block of kernels)
BLOCK_PIXELS = 1 << 18


def _splat(
    out: np.ndarray, kid: np.ndarray, y: np.ndarray, x: np.ndarray, w: np.ndarray, spread: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise the points of ``out.shape[0]`` kernels into ``out``, normalise each to sum 1, and
    return their centres of mass ``(rows, cols)``."""
    count, size = out.shape[0], out.shape[1]
    y0, wy = _taps(y, spread)
    x0, wx = _taps(x, spread)
    n = wy.shape[1]
    pad = n  # a point whose first tap is beyond the pad has no tap on the grid
    side = size + 2 * pad
    keep = (y0 >= -pad) & (y0 < size + pad - n) & (x0 >= -pad) & (x0 < size + pad - n)
    if not keep.all():
        kid, y0, x0, w, wy, wx = kid[keep], y0[keep], x0[keep], w[keep], wy[keep], wx[keep]
    base = (kid * side + (y0 + pad)) * side + (x0 + pad)
    offs = (np.arange(n)[:, None] * side + np.arange(n)[None, :]).ravel()
    idx = (base[:, None] + offs[None, :]).ravel()
    weights = ((w[:, None] * wy)[:, :, None] * wx[:, None, :]).ravel()
    canvas = np.bincount(idx, weights, minlength=count * side * side).reshape(count, side, side)
    k = canvas[:, pad : pad + size, pad : pad + size]
    row_mass, col_mass = k.sum(axis=2), k.sum(axis=1)
    total = row_mass.sum(axis=1)
    empty = total <= 1e-300
    total = np.where(empty, 1.0, total)
    np.divide(k, total[:, None, None], out=out)
    index = np.arange(size, dtype=np.float64)
    rows, cols = row_mass @ index / total, col_mass @ index / total
    if empty.any():
        out[empty] = 0.0
        out[empty, size // 2, size // 2] = 1.0
        rows[empty] = cols[empty] = size // 2
    return rows, cols


def normalize(k: np.ndarray) -> np.ndarray:
    """Clamp to >= 0 and scale each kernel of ``(N, h, w)`` to sum 1 (all-zero kernels become deltas)."""
    k = np.maximum(k, 0.0)
    s = k.sum(axis=(1, 2))
    empty = s <= 1e-300
    out = k / np.where(empty, 1.0, s)[:, None, None]
    if empty.any():
        out[empty] = 0.0
        out[empty, k.shape[1] // 2, k.shape[2] // 2] = 1.0
    return out


def center_kernels(k: np.ndarray, com: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Shift (in place, zero fill) each kernel of ``(N, h, w)`` whose centre of mass is not nearest
    the centre pixel ``(h // 2, w // 2)`` by whole pixels to it, and renormalise those; returns ``k``.

    com: the centres of mass ``(rows, cols)`` when already known.
    """
    h, w = k.shape[1:]
    r, c = center_of_mass(k) if com is None else com
    dy = np.rint(h // 2 - r).astype(np.int64)
    dx = np.rint(w // 2 - c).astype(np.int64)
    for i in np.flatnonzero((dy != 0) | (dx != 0)):
        src = k[i].copy()
        k[i] = 0.0
        sy, sx = int(dy[i]), int(dx[i])
        if abs(sy) >= h or abs(sx) >= w:
            continue
        k[i, max(sy, 0) : h + min(sy, 0), max(sx, 0) : w + min(sx, 0)] = src[max(-sy, 0) : h - max(sy, 0), max(-sx, 0) : w - max(sx, 0)]
        total = k[i].sum()
        if total > 0:
            k[i] /= total
        else:
            k[i, h // 2, w // 2] = 1.0
    return k


def center_of_mass(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre of mass ``(row, col)`` of each kernel of ``(N, h, w)`` (kernels assumed >= 0)."""
    s = np.maximum(k.sum(axis=(1, 2)), 1e-300)
    rows = (k.sum(axis=2) * np.arange(k.shape[1])).sum(axis=1) / s
    cols = (k.sum(axis=1) * np.arange(k.shape[2])).sum(axis=1) / s
    return rows, cols


# --------------------------------------------------------------------------- statistics


def kernel_stats(k: np.ndarray, threshold: float = 0.05) -> dict[str, np.ndarray]:
    """Per-kernel statistics of ``(N, h, w)`` kernels (each summing to 1), used to compare generators.

    area: number of pixels above ``threshold`` times the kernel's maximum (support area, px);
    max: the maximum value; extent: the larger side (px) of the bounding box of that support
    (the path extent).
    """
    k = np.asarray(k, dtype=np.float64)
    peak = k.max(axis=(1, 2))
    support = k > threshold * peak[:, None, None]
    area = support.sum(axis=(1, 2))

    def side(mask: np.ndarray) -> np.ndarray:
        idx = np.arange(mask.shape[1])
        lo = np.where(mask, idx, mask.shape[1]).min(axis=1)
        hi = np.where(mask, idx, -1).max(axis=1)
        return np.maximum(hi - lo + 1, 0)

    extent = np.maximum(side(support.any(axis=2)), side(support.any(axis=1)))
    return {"area": area, "max": peak, "extent": extent}
