"""FID (Inception v3, pytorch-fid) between the deblurred set and the ground-truth set.

A set-level metric. Never computed from random weights: without
``pt_inception-2015-12-05-6726825d.pth`` in the torch hub cache (or ``--metric-weights DIR``)
the column reads ``n/a`` with how to install them.
"""

import numpy as np
import torch

from kdiff_cli.maths import metrics
from kdiff_cli.hookspecs import hookimpl


class FID:
    name = "fid"
    description = "Frechet Inception distance of the image set (pytorch-fid; lower is better)"
    target = "image"
    higher_is_better = False
    set_level = True
    batch_size = 16

    def __init__(self):
        self._model = None
        self._device = "cpu"

    def available(self, weights_dir=None) -> str | None:
        return metrics.unavailable_reason("pytorch-fid", "pytorch_fid", metrics.FID_INCEPTION_FILE, "Inception v3", weights_dir)

    def prepare(self, weights_dir=None, device="cpu") -> None:
        from pytorch_fid.inception import InceptionV3

        path = metrics.find_weights(metrics.FID_INCEPTION_FILE, weights_dir)
        with metrics.hub_dir_holding(path):
            self._model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()
        self._device = device

    def _features(self, images) -> np.ndarray:
        feats = []
        for i in range(0, len(images), self.batch_size):
            batch = [np.repeat(v, 3 // v.shape[2], axis=2) if v.ndim == 3 else np.repeat(v[..., None], 3, 2)
                     for v in images[i : i + self.batch_size]]
            t = torch.from_numpy(np.stack([np.clip(v, 0, 1).transpose(2, 0, 1) for v in batch])).float()
            with torch.no_grad():
                feats.append(self._model(t.to(self._device))[0].reshape(len(batch), -1).cpu().double().numpy())
        return np.concatenate(feats)

    def compute_set(self, estimates, references) -> float:
        a, b = self._features(estimates), self._features(references)
        return metrics.frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


@hookimpl
def register_metrics(register):
    register(FID())
