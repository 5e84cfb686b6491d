"""``kdiff deblur`` across processes: ``--shard I/N`` splits the inputs (per-shard reports), torchrun
with 2 CPU processes writes the outputs and one merged report.json of a single process."""

import json
import os
import subprocess
import sys

import numpy as np

FAST = ["--steps", "3", "--refine-steps", "2", "--solver", "wiener", "--device", "cpu", "--downscale", "1"]
TIMING = ("seconds",)  # and the paths, which name the --out folder
PATHS = ("output", "kernel")


def _entries(path):
    return {name: {k: v for k, v in e.items() if k not in TIMING + PATHS} for name, e in json.loads(path.read_text()).items()}


def test_shards_split_inputs_and_match_one_process(cli, tiny_weights, photos):
    inputs = [photos / "a.png", photos / "b.jpg"]
    common = ["--weights", tiny_weights, "--seed", "3", *FAST]
    assert cli("deblur", *inputs, "--out", photos / "one", *common).exit_code == 0
    for i in (1, 2):
        r = cli("deblur", *inputs, "--out", photos / "arr", "--shard", f"{i}/2", *common)
        assert r.exit_code == 0, r.output
    one, arr = photos / "one", photos / "arr"
    assert _entries(arr / "report.1-of-2.json").keys() == {"a.png"}
    assert _entries(arr / "report.2-of-2.json").keys() == {"b.jpg"}
    assert not (arr / "report.json").exists()
    single = _entries(one / "report.json")
    assert {**_entries(arr / "report.1-of-2.json"), **_entries(arr / "report.2-of-2.json")} == single
    for name in ("a_deblurred.png", "b_deblurred.jpg"):
        assert (arr / name).read_bytes() == (one / name).read_bytes()
    assert np.array_equal(np.load(arr / "b_kernel.npy"), np.load(one / "b_kernel.npy"))
    # a shard's outputs exist: refused without --overwrite, like any other output
    r = cli("deblur", *inputs, "--out", arr, "--shard", "2/2", *common)
    assert r.exit_code == 2 and "b_deblurred.jpg exists (and 3 more)" in r.output


def test_shard_option_errors(cli, tiny_weights, photos):
    r = cli("deblur", photos / "a.png", "--out", photos / "o", "--shard", "0/2", "--weights", tiny_weights, *FAST)
    assert r.exit_code == 2 and "--shard 0/2: I must be between 1 and N" in r.output and "Traceback" not in r.output


def test_torchrun_two_processes_one_report(tiny_weights, photos, tmp_path):
    common = ["--weights", str(tiny_weights), "--seed", "3", *FAST]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "kdiff_cli", "deblur", str(photos / "a.png"), str(photos / "b.jpg"),
                             "--out", str(tmp_path / "one"), *common], env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "kdiff_cli",
           "deblur", str(photos / "a.png"), str(photos / "b.jpg"), "--out", str(tmp_path / "two"), *common]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = tmp_path / "two"
    assert sorted(p.name for p in two.glob("report*.json")) == ["report.json"]
    assert list(json.loads((two / "report.json").read_text())) == ["a.png", "b.jpg"]  # input order
    assert _entries(two / "report.json") == _entries(tmp_path / "one" / "report.json")
    for name in ("a_deblurred.png", "b_deblurred.jpg"):
        assert (two / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
