"""Scores for the MAP_k choice between kernel candidates that do not reward the no-blur explanation.

The reblur residual ``||y - k * F(y, k)||^2`` is smallest for a near-delta kernel: ``F(y, delta)``
is about ``y``, and a regularised solver cannot invert a long kernel's spectral zeros, so a wide
true kernel always leaves more residual than a dot (measured on lai-uniform windows: the delta's
residual 0.001, the true kernel's 36-363; docs/deblur.md). Choosing by it keeps a dot on real
camera shake.

:func:`normalized_sparsity` scores ``x = F(y, k)`` instead, by the ratio ``||grad x||_1 /
||grad x||_2`` of its luminance gradients (Krishnan, Tay, Fergus, "Blind deconvolution using a
normalized sparsity measure", CVPR 2011). Blur spreads an edge's gradient over many small values
(high ratio); a right kernel gathers them into few large ones (low ratio); a wrong kernel adds
ringing, many small gradients (high ratio again). The ratio is scale-free, and every candidate is
deconvolved with the same regularisation (``sigma`` fixed per image), so candidates compare fairly;
clipped highlights and their surroundings (where any deconvolution rings) are left out.
On 8 lai-uniform windows the true kernel scored lowest of {true, classical estimate, diffusion
sample, delta} on all 8, and the better estimate beat the worse on 6.
"""

from __future__ import annotations

import torch

from kdiff_cli.maths import camera, ops
from kdiff_cli.maths.alternating_steps import luminance

#: pixels cut from each side of ``x`` before scoring (the solver's boundary handling is not the image)
BORDER = 8
#: the lowest noise level the scoring deconvolution regularises with
SIGMA_FLOOR = 0.01
#: the fallback (keep y) wins only when y's own score is lower than the best kernel's by this
#: fraction: deconvolution amplifies a JPEG's noise, which adds small gradients to any ``F(y, k)``
#: (real-blur, 2026-11-30: a visibly sharper boat1 scored 0.3% above its input; the ringing output of
#: a wrong kernel on text3 14% above; 2026-12-01: face's output, visibly sharper, 9% above, so the
#: margin went from 5% to 10%; docs/deblur.md, "The fallback's margin")
FALLBACK_MARGIN = 0.10
#: photos with light streaks (kdiff_cli.blind.estimator.lights_keep_input): the final solver's sparse
#: prior lowers any kernel's score, so a kernel is used only when the input's own score is this
#: fraction above it (real-blur, 2026-12-01: car3's and night5's streak kernels 1.84 and 1.48; the
#: input kept at 1.01-1.15 on istanbul, vase and street2; docs/deblur.md, "Night shots")
LIGHTS_MARGIN = 0.15


def normalized_sparsity(x: torch.Tensor, border: int = BORDER, valid: torch.Tensor | None = None) -> torch.Tensor:
    """``||grad L||_1 / ||grad L||_2`` per image (B,) of the luminance ``L`` of ``x`` (B, C, H, W).

    ``valid`` (B or 1, 1, H, W) bool: the pixels that count (clipped highlights and their
    surroundings excluded, where every deconvolution rings).
    """
    L = luminance(x)
    h = L[..., :, 1:] - L[..., :, :-1]
    v = L[..., 1:, :] - L[..., :-1, :]
    h, v = h[..., :-1, :], v[..., :, :-1]
    if valid is not None:
        keep = valid[..., :-1, :-1].to(h.dtype)
        h, v = h * keep, v * keep
    if border and min(h.shape[-2:]) > 4 * border:
        h, v = h[..., border:-border, border:-border], v[..., border:-border, border:-border]
    mag = (h.square() + v.square()).sqrt().flatten(1)
    return mag.sum(1) / mag.square().sum(1).sqrt().clamp(min=1e-12)


def delta_like(k: torch.Tensor) -> torch.Tensor:
    """The no-blur kernel on ``k``'s canvas: 1 at index size//2 (the fallback candidate)."""
    d = torch.zeros_like(k)
    d[..., k.shape[-2] // 2, k.shape[-1] // 2] = 1
    return d


def sparsity_scores(solver: torch.nn.Module, y: torch.Tensor, kernels: list[torch.Tensor], sigma: torch.Tensor,
                    floor: float = SIGMA_FLOOR) -> torch.Tensor:
    """The normalized sparsity of ``F(y, k)`` for each candidate kernel (len(kernels),); lower is sharper.

    ``y`` (1, C, H, W) the estimation window; ``sigma`` its noise level, floored at ``floor``
    (:data:`SIGMA_FLOOR`) and the same for every candidate.
    """
    s = sigma.reshape(-1)[:1].clamp(min=max(floor, SIGMA_FLOOR))
    reach = max(k.shape[-1] for k in kernels)
    valid = ~camera.clipped(y, grow=reach)
    if valid.float().mean() < 0.2:  # mostly clipped: score everything rather than nothing
        valid = None
    with torch.no_grad():
        xs = [solver(y, ops.normalize_kernel(k.to(y.dtype)), s) for k in kernels]
    return torch.cat([normalized_sparsity(x, valid=valid) for x in xs])


def keep_input(scores: torch.Tensor, margin: float = FALLBACK_MARGIN) -> bool:
    """Whether the last score (the delta's) beats the others' best by more than ``margin`` (relative)."""
    return bool(scores[-1] < (1 - margin) * scores[:-1].min())


def keep_input_lights(pair: torch.Tensor, margin: float | None = None) -> bool:
    """The fallback on a photo with light streaks, scored by the final solver: (kernel, delta)
    ``pair``; the input is kept unless the delta's score exceeds the kernel's by ``margin``
    (:data:`LIGHTS_MARGIN`; that solver's sparse prior lowers any kernel's score)."""
    margin = LIGHTS_MARGIN if margin is None else margin
    return not bool(pair[1] > (1 + margin) * pair[0])


__all__ = ["normalized_sparsity", "sparsity_scores", "delta_like", "keep_input", "keep_input_lights", "SIGMA_FLOOR", "FALLBACK_MARGIN", "LIGHTS_MARGIN"]
