"""SIGTERM and SIGHUP are handled like Ctrl-C: temporary files removed, worker processes ended,
a one-line message and exit 128 + the signal number (143 for SIGTERM, 129 for SIGHUP)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"), pytest.mark.slow]


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if text in (d / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(d.name))
        except OSError:
            pass
    return found


def _start(args, cwd, wait_for):
    """Start ``python -m kdiff_cli ARGS`` and return it once ``wait_for()`` is true (at most 120 s)."""
    env = {**os.environ, "KDIFF_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "kdiff_cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not wait_for():
        if proc.poll() is not None:
            pytest.fail(f"finished before the signal: {proc.communicate()}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("never reached the state to interrupt")
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_synth_kernels_terminated_cleans_up_and_ends_workers(tmp_path, sig, code):
    out = tmp_path / f"k-{sig.name}.npz"
    proc = _start(["synth-kernels", "--generator", "borodenko", "--count", "400000", "--size", "48", "--workers", "2", "--out", str(out)],
                  tmp_path, lambda: any(tmp_path.glob(".*tmp-*")))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == f"error: terminated ({sig.name})"
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no database, no temp file
    time.sleep(0.5)
    assert _processes_mentioning(str(out)) == []  # no orphaned worker


def test_train_terminated_exits_143_without_temp_files(tmp_path):
    run = tmp_path / "run"
    data = tmp_path / "data"
    data.mkdir()
    import numpy as np

    from kdiff_cli import files

    rng = np.random.default_rng(0)
    for i in range(2):
        files.write_image(data / f"{i}.png", rng.random((40, 40, 3)).astype(np.float32), 8)
    args = ["train", "dwdn", "--out", str(run), "--set", f"data.train_dir={data}", "--set", "data.val_dir=",
            "--set", "data.crop=32", "--set", "data.kernel_size=8", "--set", "data.batch=1",
            "--set", "model.features=4", "--set", "model.widths=[8, 8, 8]", "--set", "train.steps=100000",
            "--set", "train.ckpt_every=1", "--set", "train.threads=1"]
    proc = _start(args, tmp_path, lambda: (run / "ckpt-latest.pt").exists())
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "error: terminated (SIGTERM)" and "Traceback" not in err
    assert not [p for p in run.iterdir() if ".tmp-" in p.name]


def _tiny_photo(path, seed=0, h=64, w=64):
    import numpy as np

    from kdiff_cli import files

    base = np.random.default_rng(seed).random((h // 8, w // 8, 3)).astype(np.float32)
    files.write_image(path, np.kron(base, np.ones((8, 8, 1), np.float32)), 8)
    return path


def test_deblur_terminated_keeps_finished_outputs_and_leaves_no_temp_file(tmp_path, tiny_weights):
    """The first image is deblurred; the second is a named pipe that blocks on reading, where
    SIGTERM arrives: the finished outputs stay, nothing half-written, no process left."""
    first = _tiny_photo(tmp_path / "a.png")
    os.mkfifo(tmp_path / "b.png")
    out = tmp_path / "out"
    args = ["deblur", str(first), str(tmp_path / "b.png"), "--out", str(out), "--weights", str(tiny_weights),
            "--steps", "2", "--refine-steps", "1", "--downscale", "1", "--device", "cpu", "--no-fallback"]  # stderr: only the error
    proc = _start(args, tmp_path, lambda: (out / "report.json").exists())
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == ["error: terminated (SIGTERM)"]
    assert sorted(p.name for p in out.iterdir()) == ["a_deblurred.png", "a_kernel.npy", "a_kernel.png", "report.json"]
    time.sleep(0.5)
    assert _processes_mentioning(str(out)) == []


def test_eval_terminated_mid_sampling_exits_143_without_temp_files(tmp_path, tiny_weights):
    """Two kernel-diff columns: the first finishes the item (its record is the signal to go), the
    second is sampling 1000 DDPM steps when SIGTERM arrives."""
    for sub in ("blurred", "sharp"):
        (tmp_path / "ds" / sub).mkdir(parents=True)
        _tiny_photo(tmp_path / "ds" / sub / "a.png")
    out = tmp_path / "R"
    quick = f"kernel-diff:weights={tiny_weights}:steps=2:refine_steps=1:downscale=1"
    slow = f"kernel-diff:weights={tiny_weights}:sampler=ddpm:steps=1000:downscale=1"
    args = ["eval", "folder", "-d", str(tmp_path / "ds"), "--method", f"{quick},{slow}", "--metric", "psnr",
            "--out", str(out), "--device", "cpu"]
    proc = _start(args, tmp_path, lambda: any(out.glob("*/a.json")))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == ["error: terminated (SIGTERM)"]
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert not (out / "metrics.json").exists()  # no report of a run that did not finish
    assert len(list(out.glob("*/a.json"))) == 1  # the finished column stays cached for a re-run
    time.sleep(0.5)
    assert _processes_mentioning(str(out)) == []
