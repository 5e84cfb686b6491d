"""The training log of a run folder: ``log.csv``, its plot ``loss.png``, and the machine record
stored in the weights metadata.
"""

from __future__ import annotations

import contextlib
import csv
import os
import platform
from pathlib import Path
from typing import Any

import torch

from kdiff_cli.files import atomic_path

LOG_NAME = "log.csv"
PLOT_NAME = "loss.png"
TRAIN_FIELDS = ["step", "loss", "lr", "grad_norm", "it_per_s", "elapsed_s"]


class CsvLog:
    """``log.csv``: training rows every ``log_every`` steps, validation columns when measured.

    Opening it for a resumed run drops rows past the resumed step (written after the
    checkpoint by the interrupted session) and widens the header when new columns appear.
    """

    def __init__(self, path: Path, start_step: int):
        self.path = path
        self.fields: list[str] = list(TRAIN_FIELDS)
        self.rows: list[dict[str, str]] = []
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                self.fields = list(reader.fieldnames or TRAIN_FIELDS)
                self.rows = [r for r in reader if r.get("step", "").isdigit() and int(r["step"]) <= start_step]
        self._rewrite()

    def _rewrite(self) -> None:
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, self.fields, extrasaction="ignore")
                w.writeheader()
                w.writerows(self.rows)

    @property
    def val_names(self) -> list[str]:
        return [f[4:] for f in self.fields if f.startswith("val_")]

    def write(self, row: dict[str, Any]) -> None:
        text = {k: (f"{v:.6g}" if isinstance(v, float) else str(v)) for k, v in row.items()}
        self.rows.append(text)
        new = [k for k in text if k not in self.fields]
        if new:
            self.fields += new
            self._rewrite()
            return
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(text)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        steps, values = [], []
        for r in self.rows:
            if r.get(key) not in (None, ""):
                steps.append(int(r["step"]))
                values.append(float(r[key]))
        return steps, values


def plot_log(log: CsvLog, path: Path, title: str) -> Path:
    """The loss curve (log scale) and the headline validation metric, as a PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    s, v = log.series("loss")
    if s:
        ax.plot(s, v, color="tab:blue", lw=1, label="train loss")
        if min(v) > 0:
            ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss", color="tab:blue")
    ax.set_title(title)
    names = log.val_names
    if names:
        vs, vv = log.series("val_" + names[0])
        if vs:
            ax2 = ax.twinx()
            ax2.plot(vs, vv, "o-", color="tab:orange", ms=3, label=f"val {names[0]}")
            ax2.set_ylabel(f"val {names[0]}", color="tab:orange")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def machine_info(device: torch.device, world_size: int) -> dict[str, Any]:
    """Where the weights were trained: platform, CPU, torch version, device, threads, processes."""
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "world_size": world_size,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
