"""The full-resolution polish of a photo's kernel (``--polish N``).

At photo scale (:mod:`kdiff_cli.blind.scale`) the kernel is estimated on a 256 px window at the
estimation scale, then upsampled and put on its full-resolution canvas: a coarse kernel's path
comes back thick, its dwell points smeared. The polish refines it where the data is richest: on
the ``WINDOW`` px window of the full-resolution image with the strongest edges, ``rounds``
alternations of the classical estimator's polish step (:mod:`kdiff_cli.maths.alternating`: the
x-step with the L0 gradient prior, then the least-squares fit of the gradients on the observed
pixels, warm-started from the kernel and confined to its support), with a lighter gradient prior
than the coarse estimate's (``LAMBDA`` instead of 2e-3: the kernel is already in its basin, and
the x-step now has to keep detail, not find it) and a lower clean-up threshold (``THRESHOLD``:
recorded shake has bright dwell points and a faint path between them, which 10% of the peak cuts
into pieces).

The polished kernel is kept only when it deconvolves that window more sparsely than the kernel it
started from (the MAP_k score, :func:`kdiff_cli.maths.choice.sparsity_scores`): a wrong kernel
can be polished into a worse one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdiff_cli.blind.window import select_window
from kdiff_cli.maths import choice, deconv
from kdiff_cli.maths.alternating import AlternatingSettings
from kdiff_cli.maths.alternating_steps import alternations, luminance

#: side of the full-resolution window the polish fits (at least twice the kernel's side; the whole image when smaller)
WINDOW = 512
#: weight of ||grad x||_0 in the polish's first x-step (then decaying as the estimator's, by 1/1.1 per round)
LAMBDA = 2e-4
#: the polish's kernel clean-up: values below this x the peak are zeroed
THRESHOLD = 0.04


@dataclass
class Polish:
    """What the polish did (report.json's ``polish``)."""

    rounds: int
    kept: bool  # the polished kernel replaced the estimate
    scores: list[float]  # normalized sparsity of F(y, k) on the window: (before, after)
    window: tuple[int, int, int, int]  # x, y, w, h (full-resolution pixels)

    def report(self) -> dict:
        return {"rounds": self.rounds, "kept": self.kept, "scores": self.scores, "window": list(self.window)}


def polish_kernel(y: torch.Tensor, k: torch.Tensor, rounds: int, lam: float = LAMBDA,
                  threshold: float = THRESHOLD) -> torch.Tensor:
    """``rounds`` alternations (x-step, window k-step) of ``k`` (1, 1, s, s) on the luminance of
    ``y`` (1, C, H, W): nonnegative, sum 1, centred, the same canvas as ``k``."""
    settings = AlternatingSettings(kernel_size=k.shape[-1], threshold=threshold)
    gray = luminance(y.detach().float())
    s = k.shape[-1]
    pads = deconv.canvas_pads(*gray.shape[-2:], s, s, margin=1.0)
    y_canvas = deconv.pad_taper(gray, pads)
    k = k.detach().float()
    for _, _, k in alternations(y_canvas, k, pads, rounds, lam, settings, window=True):
        pass
    return k


def polish(y: torch.Tensor, k: torch.Tensor, rounds: int, solver: torch.nn.Module, sigma: torch.Tensor,
           floor: float = choice.SIGMA_FLOOR) -> tuple[torch.Tensor, Polish]:
    """The polished kernel of ``y`` (1, C, H, W) if it scores sparser than ``k``, else ``k``; and
    what was done. ``sigma``: the noise level both candidates are scored with (floored at ``floor``)."""
    x0, y0, w, h = select_window(y, max(WINDOW, 2 * k.shape[-1]))  # a kernel over WINDOW / 2 gets a larger window
    win = y[..., y0 : y0 + h, x0 : x0 + w]
    k_new = polish_kernel(win, k, rounds).to(k.dtype)
    scores = choice.sparsity_scores(solver, win, [k, k_new], sigma, floor=floor)
    kept = bool(scores[1] < scores[0])
    return (k_new if kept else k), Polish(rounds, kept, [float(v) for v in scores], (x0, y0, w, h))


__all__ = ["polish", "polish_kernel", "Polish", "WINDOW", "LAMBDA", "THRESHOLD"]
