"""Bad inputs, table-driven: every case gives its exit code and one line naming the problem (and,
for a limit, how to raise it), never a traceback, and leaves no temporary file (issue 18).

Sizes are checked against the memory they imply with ``KDIFF_MEMORY_LIMIT`` set, so the cases do
not depend on the machine. Then the warnings (input altered: stderr and report.json), the
``--overwrite`` rule, the removal of a failed input's files and ``kdiff eval`` skipping a bad item.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from kdiff_cli import files

FAST = ["--steps", "2", "--refine-steps", "1", "--device", "cpu", "--downscale", "1"]
SMALL = ["--crop", "48", "--kernel-size", "9", "--limit", "1"]

#: (id, arguments, environment, files to create first, exit code, text the error line holds);
#: {d}: the test's folder (photos: a.png, b.jpg, bad.png), {w}: tiny kernel-diff weights, {bsd}: a BSD100 stand-in
CASES = [
    # --- sizes against their limits (the kernel side, the memory, the disk)
    ("synth-size", ["synth-kernels", "--generator", "gaussian", "--count", "1", "--size", "100000", "--out", "{d}/k.npz"], {}, [], 2,
     "--size 100000 is over the kernel size limit of 1024 pixels (set KDIFF_MAX_KERNEL_SIZE=100000 to allow it)"),
    ("synth-size-env", ["synth-kernels", "--generator", "gaussian", "--count", "1", "--size", "33", "--out", "{d}/k.npz"],
     {"KDIFF_MAX_KERNEL_SIZE": "32"}, [], 2, "over the kernel size limit of 32 pixels"),
    ("synth-memory", ["synth-kernels", "--generator", "gaussian", "--count", "1000", "--size", "256", "--workers", "2", "--out", "{d}/k.npz"],
     {"KDIFF_MEMORY_LIMIT": "64M"}, [], 2,
     "--size 256 with 2 worker(s) drawing 512 kernels each needs at least 2.0 GiB of memory, 64.0 MiB is available; lower --size or --workers"),
    ("synth-memory-env-bad", ["synth-kernels", "--generator", "gaussian", "--count", "1", "--size", "8", "--out", "{d}/k.npz"],
     {"KDIFF_MEMORY_LIMIT": "lots"}, [], 2, "KDIFF_MEMORY_LIMIT must be a size such as 64G"),
    ("deblur-kernel-size", ["deblur", "{d}/a.png", "--out", "{d}/o", "--method", "alternating", "--kernel-size", "5000"], {}, [], 2,
     "--kernel-size 5000 is over the kernel size limit of 1024 pixels"),
    ("deblur-known-kernel-size", ["deblur", "{d}/a.png", "--out", "{d}/o", "--kernel", "{d}/k9.npy"], {"KDIFF_MAX_KERNEL_SIZE": "8"}, ["k9.npy"], 2,
     "side 9 is over the kernel size limit of 8 pixels"),
    ("deblur-samples", ["deblur", "{d}/a.png", "--out", "{d}/o", "--weights", "{w}", *FAST, "--samples", "100000"],
     {"KDIFF_MEMORY_LIMIT": "1G"}, [], 2, "--samples 100000 (16x16 kernels, 256x256 window) needs at least"),
    ("deblur-tile", ["deblur", "{d}/a.png", "--out", "{d}/o", "--kernel", "{d}/k9.npy", "--tile", "4096"],
     {"KDIFF_MEMORY_LIMIT": "1M"}, ["k9.npy"], 1, "a.png (72x80) in tiles of 4096 needs at least"),
    ("eval-kernel-size", ["eval", "bsd100", "-d", "{bsd}", "--crop", "2048", "--kernel-size", "2000", "--method", "blurred", "--out", "{d}/R"],
     {}, [], 2, "--kernel-size 2000 is over the kernel size limit of 1024 pixels"),
    ("eval-kernel-over-crop", ["eval", "bsd100", "-d", "{bsd}", "--crop", "48", "--kernel-size", "64", "--method", "blurred", "--out", "{d}/R"],
     {}, [], 2, "--kernel-size 64 is larger than the 48x48 crop"),
    ("eval-crop-memory", ["eval", "bsd100", "-d", "{bsd}", "--crop", "4000", "--kernel-size", "9", "--method", "blurred", "--out", "{d}/R"],
     {"KDIFF_MEMORY_LIMIT": "64M"}, [], 2, "--crop 4000 needs at least"),
    ("eval-samples", ["eval", "bsd100", "-d", "{bsd}", *SMALL, "--method", "kernel-diff:weights={w}:samples=100000",
                      "--out", "{d}/R", "--device", "cpu"], {"KDIFF_MEMORY_LIMIT": "1G"}, [], 2, "--samples 100000"),
    ("train-kernel-size", ["train", "dwdn", "--out", "{d}/run", "--set", "data.kernel_size=5000"], {}, [], 2,
     "data.kernel_size 5000 is over the kernel size limit of 1024 pixels"),
    ("train-memory", ["train", "dwdn", "--out", "{d}/run", "--set", "data.crop=100000"], {"KDIFF_MEMORY_LIMIT": "1G"}, [], 2,
     "lower data.batch, data.crop, data.bank or data.val_count"),
    # --- options checked against what the component declares, one line listing the valid keys
    ("eval-kernel-diff-nokey", ["eval", "bsd100", "-d", "{bsd}", *SMALL, "--method", "kernel-diff:nokey=3", "--out", "{d}/R"], {}, [], 2,
     "method 'kernel-diff' takes no option 'nokey' (valid: choice, classical, coarse_scales, device, discrepancy,"),
    ("eval-unguided-nokey", ["eval", "bsd100", "-d", "{bsd}", *SMALL, "--method", "unguided:nokey=3", "--out", "{d}/R"], {}, [], 2,
     "method 'unguided' takes no option 'nokey' (valid: choice, classical, coarse_scales, device, discrepancy,"),
    ("eval-method-opt-nokey", ["eval", "bsd100", "-d", "{bsd}", *SMALL, "--method", "blurred,kernel-diff", "--method-opt", "nokey=3",
                               "--out", "{d}/R"], {}, [], 2,
     "--method-opt 'nokey=3': no method in --method takes option 'nokey' (valid: blurred: none; kernel-diff: choice, classical,"),
    ("eval-scoped-nokey", ["eval", "bsd100", "-d", "{bsd}", *SMALL, "--method", "blurred,oracle", "--method-opt", "oracle.nokey=3",
                           "--out", "{d}/R"], {}, [], 2, "method 'oracle' takes no option 'nokey' (valid: device, sigma, solver, weights)"),
    ("eval-metric-nokey", ["eval", "bsd100", "-d", "{bsd}", *SMALL, "--method", "blurred", "--metric", "psnr:x=1", "--out", "{d}/R"],
     {}, [], 2, "metric 'psnr' takes no option 'x' (valid: border, max_shift)"),
    ("eval-metric-opt-nokey", ["eval", "bsd100", "-d", "{bsd}", *SMALL, "--method", "blurred", "--metric", "psnr,mnc",
                               "--metric-opt", "x=1", "--out", "{d}/R"], {}, [], 2,
     "--metric-opt 'x=1': no metric in --metric takes option 'x' (valid: psnr: border, max_shift; mnc: none)"),
    ("eval-metric-scoped-nokey", ["eval", "bsd100", "-d", "{bsd}", *SMALL, "--method", "blurred", "--metric", "psnr,mnc",
                                  "--metric-opt", "mnc.border=3", "--out", "{d}/R"], {}, [], 2, "metric 'mnc' takes no option 'border' (valid: none)"),
    ("eval-dataset-option", ["eval", "folder", "-d", "{d}", "--crop", "64", "--method", "blurred", "--out", "{d}/R"], {}, [], 2,
     "--crop does not apply to dataset 'folder' (its options: --data-dir)"),
    # --- out of range: refused, never replaced (these passed before; kept passing)
    ("deblur-steps-0", ["deblur", "{d}/a.png", "--out", "{d}/o", "--weights", "{w}", "--steps", "0"], {}, [], 2, "--steps must be >= 1"),
    ("deblur-kernel-threshold-1", ["deblur", "{d}/a.png", "--out", "{d}/o", "--weights", "{w}", "--kernel-threshold", "1"], {}, [], 2,
     "--kernel-threshold must be in [0, 1), got 1.0"),
    ("deblur-lights-sigma-negative", ["deblur", "{d}/a.png", "--out", "{d}/o", "--weights", "{w}", "--lights-sigma", "-0.5"], {}, [], 2,
     "--lights-sigma must be in [0, 1], got -0.5"),
    ("deblur-polish-negative", ["deblur", "{d}/a.png", "--out", "{d}/o", "--weights", "{w}", "--polish", "-1"], {}, [], 2,
     "--polish must be >= 0, got -1"),
    ("deblur-tile-0", ["deblur", "{d}/a.png", "--out", "{d}/o", "--kernel", "{d}/k9.npy", "--tile", "0"], {}, ["k9.npy"], 2,
     "--tile must be at least 16 pixels"),
    ("deblur-tile-under-kernel", ["deblur", "{d}/a.png", "--out", "{d}/o", "--kernel", "{d}/k9.npy", "--tile", "16"], {}, ["k9.npy"], 2,
     "--tile must be at least 2 x the kernel size + 1 = 19 pixels, got 16"),
    # --- existing outputs: refused unless --overwrite; inputs never
    ("deblur-output-exists", ["deblur", "{d}/a.png", "--out", "{d}/o", "--kernel", "{d}/k9.npy"], {}, ["k9.npy", "o/a_deblurred.png"], 2,
     "output {d}/o/a_deblurred.png exists; pass --overwrite to replace it, or choose another --out folder"),
    ("deblur-report-exists", ["deblur", "{d}/a.png", "--out", "{d}/o", "--weights", "{w}", *FAST], {}, ["o/report.json"], 2,
     "output {d}/o/report.json exists; pass --overwrite"),
    ("deblur-output-is-input", ["deblur", "{d}/a.png", "{d}/o/a_deblurred.png", "--out", "{d}/o", "--kernel", "{d}/k9.npy", "--overwrite"],
     {}, ["k9.npy", "o/a_deblurred.png"], 2, "would overwrite an input"),
    ("synth-output-exists", ["synth-kernels", "--generator", "gaussian", "--count", "2", "--size", "8", "--out", "{d}/k.npz"], {}, ["k.npz"], 2,
     "--out {d}/k.npz already exists; pass --overwrite to replace it"),
    ("eval-export-exists", ["eval", "bsd100", "-d", "{bsd}", *SMALL, "--export", "{d}/E"], {}, ["E/protocol.json"], 2,
     "--export would overwrite {d}/E/protocol.json; pass --overwrite to replace, or choose another folder"),
    # --- multi-line errors made one line
    ("bad-int", ["synth-kernels", "--generator", "gaussian", "--count", "1e9", "--out", "{d}/k.npz"], {}, [], 2,
     "invalid value for '--count'"),
    ("unknown-option", ["deblur", "{d}/a.png", "--out", "{d}/o", "--bogus", "1"], {}, [], 2, "no such option: --bogus"),
    ("unknown-command", ["nope"], {}, [], 2, "no such command 'nope'"),
    ("bsd100-not-a-tar", ["eval", "bsd100", "-d", "{d}/fake.tgz", *SMALL, "--method", "blurred", "--out", "{d}/R"],
     {"KDIFF_CACHE_DIR": "{d}/cache"}, ["fake.tgz"], 2, "cannot extract {d}/fake.tgz: not a tar archive (plain, gzip, bzip2 or xz) or a corrupt one"),
]


def _make(path, name):
    path.parent.mkdir(parents=True, exist_ok=True)
    if name == "k9.npy":
        k = np.zeros((9, 9))
        k[4, 2:7] = 1
        np.save(path, k)
    elif name.endswith(".png"):
        files.write_image(path, np.full((4, 4, 3), 0.5, np.float32), 8)
    else:
        path.write_bytes(b"not what it should be\n" * 4)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(cli, photos, tiny_weights, fake_bsd, monkeypatch, case):
    _, args, env, make, code, message = case
    fmt = {"d": photos, "w": tiny_weights, "bsd": fake_bsd}
    for name in make:
        _make(photos / name, name)
    before = {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()}
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(**fmt))
    res = cli(*[a.format(**fmt) for a in args])
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and message.format(**fmt) in errors[0], res.output
    if code == 2:  # refused before any work: that one line is all
        assert lines == errors, res.output
    else:  # an input failed: its line, then the count
        assert lines[-1] == "1 of 1 inputs failed", res.output
    assert not [p for p in photos.rglob("*") if ".tmp-" in p.name]
    assert all(p.read_bytes() == data for p, data in before.items())  # nothing existing was changed


# --------------------------------------------------------------------------- input altered: a warning, never silence


def test_negative_kernel_entries_clipped_with_a_warning(cli, photos):
    k = np.zeros((9, 9))
    k[4, 2:7] = 1
    k[0, 0] = -0.5
    np.save(photos / "kneg.npy", k)
    res = cli("deblur", photos / "a.png", "--out", photos / "o", "--kernel", photos / "kneg.npy", "--device", "cpu")
    assert res.exit_code == 0, res.output
    warn = [line for line in res.output.splitlines() if line.startswith("warning: ")]
    assert warn == [f"warning: kernel {photos / 'kneg.npy'}: 1 negative entries (9.1% of its absolute mass) clipped to 0"]


def test_alpha_dropped_is_a_warning_in_report_json(cli, photos, tiny_weights):
    a, _ = files.read_image(photos / "a.png")
    from PIL import Image

    rgba = np.concatenate([files.quantize(a, 8), np.full(a.shape[:2] + (1,), 128, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(photos / "t.png")
    res = cli("deblur", photos / "t.png", photos / "a.png", "--out", photos / "o", "--weights", tiny_weights, *FAST,
              "--no-fallback")  # the tiny prior's fallback would add its own note
    assert res.exit_code == 0, res.output
    assert f"warning: {photos / 't.png'}: alpha channel dropped" in res.output.splitlines()
    rep = json.loads((photos / "o" / "report.json").read_text())
    assert rep["t.png"]["warnings"] == [f"{photos / 't.png'}: alpha channel dropped"]
    assert rep["a.png"]["warnings"] == []


def test_float_tiff_comes_back_as_float_tiff(cli, photos):
    import tifffile

    a, _ = files.read_image(photos / "a.png")
    tifffile.imwrite(photos / "f.tif", a * 1.1, photometric="rgb")  # some values over 1
    k = np.zeros((9, 9))
    k[4, 2:7] = 1
    np.save(photos / "k9.npy", k)
    res = cli("deblur", photos / "f.tif", "--out", photos / "o", "--kernel", photos / "k9.npy", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert [line for line in res.output.splitlines() if line.startswith("warning: ")] == [
        f"warning: {photos / 'f.tif'}: {int((a * 1.1 > 1).sum())} float pixel values outside [0, 1] clipped"]
    out = tifffile.imread(photos / "o" / "f_deblurred.tif")
    assert out.dtype == np.float32 and out.shape == a.shape
    assert not np.allclose(out * 65535, np.rint(out * 65535), atol=1e-3)  # not quantised to 16 bits


# --------------------------------------------------------------------------- --overwrite, and a failed input's files


def test_overwrite_replaces_what_an_earlier_run_wrote(cli, photos):
    k = np.zeros((9, 9))
    k[4, 2:7] = 1
    np.save(photos / "k9.npy", k)
    args = ["deblur", photos / "a.png", "--out", photos / "o", "--kernel", photos / "k9.npy", "--device", "cpu"]
    assert cli(*args).exit_code == 0
    first = (photos / "o" / "a_deblurred.png").read_bytes()
    (photos / "o" / "a_deblurred.png").write_bytes(b"stale")
    assert cli(*args).exit_code == 2
    assert (photos / "o" / "a_deblurred.png").read_bytes() == b"stale"
    res = cli(*args, "--overwrite")
    assert res.exit_code == 0, res.output
    assert (photos / "o" / "a_deblurred.png").read_bytes() == first


def test_failed_blind_input_leaves_no_kernel_files(cli, photos, tiny_weights):
    out = photos / "o"
    (out / "a_deblurred.png").mkdir(parents=True)  # the image cannot be written there
    res = cli("deblur", photos / "a.png", photos / "b.jpg", "--out", out, "--weights", tiny_weights, *FAST, "--overwrite")
    assert res.exit_code == 1, res.output
    assert f"error: cannot write {out / 'a_deblurred.png'}" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["a_deblurred.png", "b_deblurred.jpg", "b_kernel.npy", "b_kernel.png", "report.json"]
    assert list(json.loads((out / "report.json").read_text())) == ["b.jpg"]


# --------------------------------------------------------------------------- kdiff eval skips a bad item


def test_eval_skips_an_unreadable_item_reports_it_and_exits_1(cli, tmp_path, smooth_texture):
    rng = np.random.default_rng(3)
    for sub in ("blurred", "sharp"):
        (tmp_path / "ds" / sub).mkdir(parents=True)
    for name in ("a", "b", "c"):
        x = smooth_texture(rng, 40, 48).astype(np.float32)
        files.write_image(tmp_path / "ds" / "sharp" / f"{name}.png", x, 8)
        files.write_image(tmp_path / "ds" / "blurred" / f"{name}.png", 0.9 * x + 0.05, 8)
    (tmp_path / "ds" / "blurred" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "R"
    res = cli("eval", "folder", "-d", tmp_path / "ds", "--method", "blurred", "--metric", "psnr", "--out", out, "--device", "cpu")
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: item b skipped: cannot read image {tmp_path / 'ds' / 'blurred' / 'b.png'}: "
                      "not a decodable image (corrupt or unsupported format)"]
    assert res.output.splitlines()[-1] == "1 of 3 items failed (listed in metrics.json)"
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["images"] == ["a", "c"] and list(doc["failed"]) == ["b"]
    assert sorted(doc["per_image"]) == ["a", "c"] and doc["mean"]["blurred"]["psnr"] is not None
    assert sorted(p.name for p in (out / "blurred").iterdir()) == ["a.json", "a.png", "c.json", "c.png"]
