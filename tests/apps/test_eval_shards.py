"""``kdiff eval`` across processes: ``--shard I/N`` job arrays and ``torchrun`` with 2 CPU processes
give the single process's metrics.json byte for byte."""

import json
import os
import subprocess
import sys

import pytest

from kdiff_cli import shard
from kdiff_cli.apps import evaluate
from kdiff_plugins import ds_bsd100

SMALL = {"crop": 48, "kernel_size": 9, "sigma": 0.001}
METHODS = "blurred,oracle"


def _run(fake_bsd, out, part=shard.SINGLE, limit=5):
    return evaluate.run("bsd100", {"data_dir": fake_bsd, **SMALL}, methods=METHODS, metrics="psnr,ssim,mnc",
                        limit=limit, out=out, device="cpu", grid=2, shard=part)


def test_job_array_shards_merge_into_the_single_process_metrics(fake_bsd, tmp_path, empty_hub):
    single = _run(fake_bsd, tmp_path / "one")
    first = _run(fake_bsd, tmp_path / "arr", shard.parse("1/2"))
    # shard 1 ran items 0, 2, 4; items 1 and 3 are not stored yet: nothing merged, no metrics.json
    assert first.computed == 3 * 2 and not first.merged and first.pending == list(ds_bsd100.BSD100_IDS[1:5:2])
    assert not (tmp_path / "arr" / "metrics.json").exists()
    second = _run(fake_bsd, tmp_path / "arr", shard.parse("2/2"))
    assert second.computed == 2 * 2 and second.merged and second.shard == "2/2" and not second.pending
    assert (tmp_path / "arr" / "metrics.json").read_bytes() == (tmp_path / "one" / "metrics.json").read_bytes()
    assert (tmp_path / "arr" / "metrics.csv").read_bytes() == (tmp_path / "one" / "metrics.csv").read_bytes()
    assert second.mean == single.mean and second.ids == single.ids
    assert (tmp_path / "arr" / "grid.png").read_bytes() == (tmp_path / "one" / "grid.png").read_bytes()


def test_cli_shard_messages_and_errors(cli, fake_bsd, tmp_path, empty_hub):
    args = ["eval", "bsd100", "--data-dir", fake_bsd, "--limit", "2", "--crop", "48", "--kernel-size", "9",
            "--method", "blurred", "--metric", "psnr", "--out", tmp_path / "R", "--device", "cpu", "--grid", "0"]
    res = cli(*args, "--shard", "1/2")
    assert res.exit_code == 0 and "shard 1/2: 1 runs" in res.output and "1 images are not finished" in res.output
    res = cli(*args, "--shard", "2/2")
    assert res.exit_code == 0 and "merged the results of all shards" in res.output and "PSNR" in res.output
    assert json.loads((tmp_path / "R" / "metrics.json").read_text())["images"] == ["3096", "8023"]
    res = cli(*args, "--shard", "3/2")
    assert res.exit_code == 2 and "--shard 3/2: I must be between 1 and N" in res.output and "Traceback" not in res.output


def test_torchrun_two_processes_equal_one(fake_bsd, tmp_path, empty_hub):
    out1, out2 = tmp_path / "one", tmp_path / "two"
    _run(fake_bsd, out1, limit=3)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_HOME": str(tmp_path / "torch")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "kdiff_cli", "eval", "bsd100", "--data-dir", str(fake_bsd), "--limit", "3", "--crop", "48",
           "--kernel-size", "9", "--sigma", "0.001", "--method", METHODS, "--metric", "psnr,ssim,mnc", "--grid", "2",
           "--device", "cpu", "--out", str(out2)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out2 / "metrics.json").read_bytes() == (out1 / "metrics.json").read_bytes()
    # each rank ran its own share: rank 0 items 0 and 2, rank 1 item 1 (2 methods each)
    assert "shard 2/2: 2 runs" in proc.stderr and "shard 1/2: merged the results of all shards" in proc.stderr
