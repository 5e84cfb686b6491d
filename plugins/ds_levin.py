"""Levin et al. (2009) benchmark layout, scored by the error ratio and the success rate at ratio <= 3."""

from kdiff_cli.apps import datasets
from kdiff_cli.hookspecs import hookimpl


class Levin:
    name = "levin"
    description = "Levin et al. 2009: im{i}_kernel{j}_img.png, gt/im{i}.png, gt/kernel{j}.png; error ratio"
    default_metrics = ("psnr", "ssim", "mnc", "error-ratio")
    options = ("data_dir", "limit")

    def load(self, **options):
        return datasets.load_levin(**options)

    def protocol(self, **options) -> dict:
        return {"dataset": self.name}


@hookimpl
def register_datasets(register):
    register(Levin())
