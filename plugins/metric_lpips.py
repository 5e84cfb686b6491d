"""LPIPS (AlexNet) of the deblurred image, when the `lpips` package and backbone weights are present.

Never computed from random weights: without ``alexnet-owt-7be5be79.pth`` in the torch hub cache
(or ``--metric-weights DIR``) the column reads ``n/a`` with how to install them.
"""

import numpy as np
import torch

from kdiff_cli.maths import metrics
from kdiff_cli.hookspecs import hookimpl


class LPIPS:
    name = "lpips"
    description = "learned perceptual distance (AlexNet, lpips package; lower is better)"
    target = "image"
    higher_is_better = False

    def __init__(self):
        self._model = None
        self._device = "cpu"

    def available(self, weights_dir=None) -> str | None:
        return metrics.unavailable_reason("lpips", "lpips", metrics.LPIPS_ALEX_FILE, "AlexNet", weights_dir)

    def prepare(self, weights_dir=None, device="cpu") -> None:
        import lpips

        path = metrics.find_weights(metrics.LPIPS_ALEX_FILE, weights_dir)
        with metrics.hub_dir_holding(path):
            self._model = lpips.LPIPS(net="alex", verbose=False).to(device).eval()
        self._device = device

    def compute(self, estimate, reference) -> float:
        a, b = metrics._pair(estimate, reference)
        t = lambda v: torch.from_numpy(np.repeat(v, 3 // v.shape[2], axis=2).transpose(2, 0, 1)[None]).float()  # noqa: E731
        with torch.no_grad():
            d = self._model(t(a).to(self._device) * 2 - 1, t(b).to(self._device) * 2 - 1)
        return float(d.reshape(-1)[0])


@hookimpl
def register_metrics(register):
    register(LPIPS())
