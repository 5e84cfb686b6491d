"""Light streaks: the kernel read directly off a night photo's blurred point lights.

A small light source (a street lamp far away, a car's indicator) in front of a dark background is
nearly a point; camera shake draws it as a streak whose shape *is* the blur kernel (Hu, Cho, Wang,
Yang, "Deblurring low-light images with light streaks", CVPR 2014). Night photos are where the
gradient-based estimators fail (dark, noisy, clipped: the coarse pass returned a dot on
real-blur's night1 while its lights trace a ~40 px zigzag), and where such streaks are plentiful.

:func:`streak_kernel` finds bright connected pieces surrounded by darkness, turns each into a
kernel (the light above the local background, in linear light), and keeps the medoid (the one
most like all others) when at least ``min_streaks`` match it (MNC >= ``agree``): one isolated bright
shape can be a letter or a window, several that share one shape are the kernel. ``None`` when
fewer than ``min_streaks`` agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kdiff_cli.maths import camera, ops
from kdiff_cli.maths.alternating_steps import luminance

#: luminance (encoded) at which a pixel belongs to a light
BRIGHT = 0.85
#: the ring around a streak must be darker than this (encoded luminance, median)
DARK = 0.3
#: how many agreeing streaks make a kernel
MIN_STREAKS = 3
#: MNC with the medoid for a streak to count as agreeing
AGREE = 0.55


@dataclass
class Streaks:
    k: torch.Tensor  # (1, 1, canvas, canvas) the medoid streak as a kernel
    count: int  # streaks that agreed
    found: int  # isolated streaks found
    agreement: float  # the medoid's mean MNC with the other agreeing streaks


def candidates(y: torch.Tensor, canvas: int, limit: int = 40) -> list[np.ndarray]:
    """Kernels (canvas x canvas, sum 1) from the isolated bright pieces of ``y`` (1, C, H, W), largest first."""
    from scipy import ndimage

    y = y[:1].detach().double().cpu()
    L = luminance(y)[0, 0].numpy()
    lin = luminance(camera.to_linear(y))[0, 0].numpy()
    bright = L >= BRIGHT
    labels, n = ndimage.label(bright, structure=np.ones((3, 3)))
    if n == 0:
        return []
    boxes = ndimage.find_objects(labels)
    sizes = ndimage.sum_labels(bright, labels, index=np.arange(1, n + 1))
    out = []
    H, W = L.shape
    for idx in np.argsort(-sizes):
        if len(out) >= limit or sizes[idx] < 3:
            break
        sl = boxes[idx]
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        ext = max(h, w)
        if ext > canvas - 4:
            continue
        m = ext // 2 + 3
        r0, r1 = sl[0].start - m, sl[0].stop + m
        c0, c1 = sl[1].start - m, sl[1].stop + m
        if r0 < 0 or c0 < 0 or r1 > H or c1 > W:
            continue
        lab = labels[r0:r1, c0:c1]
        if np.any((lab != 0) & (lab != idx + 1)):  # another light nearby: not isolated
            continue
        own = ndimage.binary_dilation(lab == idx + 1, iterations=2)
        ring = L[r0:r1, c0:c1][~own]
        if ring.size == 0 or np.median(ring) > DARK:
            continue
        patch = lin[r0:r1, c0:c1] - np.median(lin[r0:r1, c0:c1][~own])
        patch = np.where(own, np.clip(patch, 0, None), 0.0)
        if patch.sum() <= 0:
            continue
        k = torch.from_numpy(patch)[None, None]
        k = ops.center_kernel(ops.normalize_kernel(ops.resize_kernel_canvas(k, canvas)))
        out.append(k[0, 0].numpy())
    return out


def streak_kernel(y: torch.Tensor, canvas: int, min_streaks: int = MIN_STREAKS, agree: float = AGREE) -> Streaks | None:
    """The kernel that several isolated light streaks of ``y`` agree on (None: too few agree)."""
    ks = candidates(y, canvas)
    if len(ks) < min_streaks:
        return None
    from kdiff_cli.maths.metrics import mnc

    n = len(ks)
    sim = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            sim[i, j] = sim[j, i] = mnc(ks[i], ks[j])
    medoid = int(np.argmax(sim.sum(1)))
    good = [j for j in range(n) if sim[medoid, j] >= agree]
    if len(good) < min_streaks:
        return None
    k = torch.from_numpy(ks[medoid]).float()[None, None]
    return Streaks(k, len(good), n, float((sim[medoid, good].sum() - 1) / max(len(good) - 1, 1)))


__all__ = ["Streaks", "candidates", "streak_kernel", "BRIGHT", "DARK", "MIN_STREAKS", "AGREE"]
