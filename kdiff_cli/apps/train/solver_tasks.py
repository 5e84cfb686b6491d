"""The non-blind solver tasks (``kdiff train dwdn`` / ``unrolled``): a solver plugin
``F(y, k, sigma) -> x`` trained with an image loss against ``x``.
"""

from __future__ import annotations

from typing import Any

import torch

from kdiff_cli.apps.train.task_base import Task, constructor_defaults, image_loss, psnr
from kdiff_cli.errors import KdiffError


class SolverTask(Task):
    """Train a non-blind solver plugin ``F(y, k, sigma) -> x`` with an image loss against ``x``.

    The model is ``plugins.get("solver", <solver>)(**cfg["model"])``; the ``model`` section's keys
    are the solver class's constructor arguments with simple defaults. Validation: mean PSNR.
    """

    solver: str = ""
    _loss_args: dict[str, Any] = {"kind": "l1", "eps": 1e-3}  # set from [loss] by build_model

    def _solver_cls(self) -> Any:
        from kdiff_cli import plugins

        return plugins.get("solver", self.solver)

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        try:
            model = constructor_defaults(self._solver_cls())
        except KdiffError:
            model = {}  # the plugin is missing: build_model raises the clear error
        return {
            "model": model,
            "loss": {
                "kind": "l1",  # l1 | l2 | charbonnier
                "eps": 1e-3,  # charbonnier epsilon
            },
        }

    def build_model(self, cfg: dict) -> torch.nn.Module:
        loss = dict(cfg.get("loss", {}))
        image_loss(torch.zeros(1), torch.zeros(1), **loss)  # checks loss.kind before training starts
        self._loss_args = loss
        cls = self._solver_cls()
        try:
            model = cls(**cfg.get("model", {}))
        except TypeError as e:
            raise KdiffError(f"cannot build solver {self.solver!r} from [model] {cfg.get('model')}: {e}") from None
        if not any(p.requires_grad for p in model.parameters()):
            raise KdiffError(f"solver {self.solver!r} has no trainable parameters")
        return model

    def loss(self, model, batch, generator):
        x_hat = model(batch["y"], batch["k"], batch["sigma"])
        return image_loss(x_hat, batch["x"], **self._loss_args)

    def validate(self, model, batches, cfg, generator):
        values = []
        for b in batches:
            values.append(psnr(model(b["y"], b["k"], b["sigma"]).detach(), b["x"]))
        return {"psnr": float(torch.cat(values).mean())} if values else {}

    def weights_metadata(self, cfg: dict) -> dict:
        return {"solver": self.solver, "model": dict(cfg.get("model", {}))}


class DwdnTask(SolverTask):
    name = "dwdn"
    description = "Deep Wiener Deconvolution Network (DWDN), the paper's non-blind solver F(y, k)"
    solver = "dwdn"


class UnrolledTask(SolverTask):
    name = "unrolled"
    description = "Unrolled half-quadratic-splitting solver with a learned denoiser"
    solver = "unrolled"
