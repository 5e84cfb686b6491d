"""The BSD100 benchmark of the paper (section 4.2): seeded crops, kernels and noise on BSDS300 test images."""

from kdiff_cli.apps import datasets
from kdiff_cli.hookspecs import hookimpl


class BSD100:
    name = "bsd100"
    description = "100 BSDS300 test images, seeded 256x256 crops blurred by 64x64 kernels, noise 0.01"
    default_metrics = ("psnr", "ssim", "lpips", "fid", "mnc")
    #: options this dataset reads (the CLI passes only these)
    options = ("data_dir", "download", "limit", "seed", "generator", "generator_params", "sigma", "crop", "kernel_size")

    def load(self, **options):
        return datasets.load_bsd100(**options)

    def protocol(self, **options) -> dict:
        return {"dataset": self.name, **datasets.bsd100_protocol(**options)}


@hookimpl
def register_datasets(register):
    register(BSD100())
