"""Any paired set: blurred/, sharp/ and optional kernels/ folders, matched by file name."""

from kdiff_cli.apps import datasets
from kdiff_cli.hookspecs import hookimpl


class Folder:
    name = "folder"
    description = "a user set: blurred/<name>, sharp/<name>, optional kernels/<name> (image or .npy)"
    default_metrics = ("psnr", "ssim", "lpips", "fid", "mnc")
    options = ("data_dir", "limit")

    def load(self, **options):
        return datasets.load_folder(**options)

    def protocol(self, **options) -> dict:
        return {"dataset": self.name}


@hookimpl
def register_datasets(register):
    register(Folder())
