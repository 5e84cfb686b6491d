"""The final step every ``kdiff deblur`` method ends with: ``x = F(y, k)`` on the whole image.

:func:`deconvolve` runs the non-blind solver tile by tile (with overlap, so memory stays bounded
on large photos); one kernel is shared by all colour channels. :func:`final_sigma` is the noise
level an *estimated* kernel is deconvolved with (a known kernel uses the noise level itself).
"""

from __future__ import annotations

import torch

from kdiff_cli.blind.settings import BlindSettings
from kdiff_cli.maths.deconv import solve_tiled

#: memory of the final step, lower bounds: per pixel and channel of a tile, the solver's working
#: set (measured: wiener ~135 bytes, dwdn ~590 bytes); per pixel and channel of the whole image,
#: y, x and the blending sums (float32)
TILE_BYTES_PER_PIXEL = 1024
IMAGE_BYTES_PER_PIXEL = 16
#: tile side of solvers that do not declare theirs (the learned ones: their feature maps are large)
DEFAULT_TILE = 512


def solver_tile(solver, tile: int | None = None) -> tuple[int, int]:
    """(tile side, bytes per pixel and channel of a tile) for ``solver`` (a module, its class or a
    registered name): ``tile`` when given, else the solver's ``tile`` attribute (2048 for the FFT
    solvers ``wiener`` and ``hqs``, so that a photo of up to 4 MP is solved in one piece) or
    :data:`DEFAULT_TILE`."""
    if isinstance(solver, str):
        from kdiff_cli import plugins

        solver = plugins.get("solver", solver)
    return (tile or getattr(solver, "tile", DEFAULT_TILE),
            getattr(solver, "tile_bytes_per_pixel", TILE_BYTES_PER_PIXEL))


def memory_estimate(shape: tuple[int, ...], tile: int, tile_bytes_per_pixel: int = TILE_BYTES_PER_PIXEL) -> int:
    """Bytes :func:`deconvolve` needs at least for an image of ``shape`` (..., C, H, W) in tiles of ``tile``."""
    C, H, W = shape[-3:]
    return C * (tile_bytes_per_pixel * min(tile, H) * min(tile, W) + IMAGE_BYTES_PER_PIXEL * H * W)


#: photo scale (kdiff_cli.blind.scale): the final deconvolution regularises as if sigma were at least this
PHOTO_SIGMA_FLOOR = 0.01


def final_sigma(sigma: torch.Tensor, agreement: float | None, settings: BlindSettings, photo: bool = False,
                floor: float = 0.0) -> torch.Tensor:
    """Noise level the final ``x = F(y, k)`` regularises with: an estimated kernel is never exact.

    With two independent estimates (the diffusion sample and the classical candidate), their
    disagreement ``1 - MNC`` measures how uncertain the kernel is, and the kernel error enters as
    extra noise: ``sigma_final^2 = sigma^2 + u (1 - agreement)`` (``u`` = ``kernel_uncertainty``).
    Two estimates that agree get the noise's own regularisation, which a right kernel needs for
    detail; two that disagree get more, which a wrong kernel needs against ringing. Without the
    second estimate (``--no-classical``), or with ``kernel_uncertainty`` None (the previous release):
    ``sigma`` clamped at ``final_sigma_floor``.

    ``photo``: the estimate was made at photo scale, where the classical candidate comes from the
    coarse pass and the prior's 64 px sample is no independent check of it (they disagreed at MNC
    0.5-0.75 while the coarse kernel was at 0.9 on lai-uniform): ``sigma`` clamped at
    :data:`PHOTO_SIGMA_FLOOR` (measured on 9 lai-uniform photos: 19.51 dB against 18.30 with the
    disagreement term; docs/deblur.md). ``floor``: a further lower bound (a photo with light streaks:
    ``settings.lights_sigma``, :func:`kdiff_cli.blind.estimator.lights_floor`).
    """
    if photo:
        return sigma.clamp(min=max(PHOTO_SIGMA_FLOOR, floor))
    if agreement is None or settings.kernel_uncertainty is None:
        return sigma.clamp(min=settings.final_sigma_floor)
    return (sigma.square() + settings.kernel_uncertainty * (1.0 - float(agreement))).sqrt()


def deconvolve(solver: torch.nn.Module, y: torch.Tensor, k: torch.Tensor, sigma=None, tile: int | None = None) -> torch.Tensor:
    """``x = F(y, k)`` for ``y`` (1, C, H, W), clipped to [0, 1].

    ``sigma``: noise std (None: estimated from ``y``; a float or a (1,) tensor). Tiles of
    ``tile`` pixels (None: the solver's, :func:`solver_tile`; at least twice the kernel plus one),
    each solved with a halo of twice the kernel size (:func:`kdiff_cli.maths.deconv.solve_tiled`).
    """
    tile, _ = solver_tile(solver, tile)
    with torch.no_grad():
        x = solve_tiled(solver, y, k, sigma, tile=max(tile, 2 * max(k.shape[-2:]) + 1))
    return x.clamp(0, 1)


__all__ = ["final_sigma", "deconvolve", "memory_estimate", "solver_tile", "DEFAULT_TILE"]
