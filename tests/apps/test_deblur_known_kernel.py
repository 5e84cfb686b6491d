"""`kdiff deblur --kernel`: the non-blind path on tiny images (bit depths kept, inputs never
overwritten, one-line errors)."""

from __future__ import annotations

import numpy as np
import pytest

from kdiff_cli import files
from kdiff_cli.maths import ops


@pytest.fixture
def images(tmp_path, curved_kernel, textured_image):
    """A tiny blurred 8-bit RGB PNG, a 16-bit gray PNG and a 9x9 kernel (.npy and .png)."""
    k = curved_kernel(9, 9)
    x = textured_image(1, 3, 40, 44, seed=11)
    y = ops.conv2d(x, k)
    files.write_image(tmp_path / "rgb8.png", files.to_numpy(y), 8)
    files.write_image(tmp_path / "gray16.png", files.to_numpy(y.mean(dim=1, keepdim=True)), 16)
    np.save(tmp_path / "k.npy", k[0, 0].numpy().astype(np.float64))
    files.write_image(tmp_path / "k.png", k[0, 0].numpy() / float(k.max()), 8)
    return tmp_path, x


def test_cli_nonblind_wiener_keeps_bit_depth_and_inputs(cli, images):
    d, x = images
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    res = cli("deblur", str(d / "rgb8.png"), str(d / "gray16.png"), "--kernel", str(d / "k.npy"), "--out", str(d), "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.name in before} == before  # inputs untouched
    out8, info8 = files.read_image(d / "rgb8_deblurred.png")
    out16, info16 = files.read_image(d / "gray16_deblurred.png")
    assert (info8.bit_depth, info8.channels, info16.bit_depth, info16.channels) == (8, 3, 16, 1)
    y8, _ = files.read_image(d / "rgb8.png")
    ref = x[0].permute(1, 2, 0).numpy()
    err = lambda a: float(np.mean((a[8:-8, 8:-8] - ref[8:-8, 8:-8]) ** 2))  # noqa: E731
    assert err(out8) < 0.5 * err(y8)  # actually deblurred
    # a kernel stored as a gray PNG works as well
    res = cli("deblur", str(d / "rgb8.png"), "--kernel", str(d / "k.png"), "--out", str(d / "o"), "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert (d / "o" / "rgb8_deblurred.png").is_file()


def test_cli_bad_kernel_missing_kernel_and_bad_input(cli, images):
    d, _ = images
    (d / "bad.npy").write_bytes(b"garbage")
    np.save(d / "k3.npy", np.ones((2, 3, 3)))
    (d / "broken.png").write_bytes(b"not an image")
    for bad in ("bad.npy", "k3.npy", "broken.png", "nothere.npy"):
        res = cli("deblur", str(d / "rgb8.png"), "--kernel", str(d / bad), "--out", str(d / "o"))
        assert res.exit_code == 2 and f"cannot read kernel {d / bad}" in res.output
    res = cli("deblur", str(d / "rgb8.png"), "--out", str(d / "o"), "--weights", "no-such-weights")
    assert res.exit_code == 2 and "no shipped weights named 'no-such-weights'" in res.output
    res = cli("deblur", str(d / "broken.png"), str(d / "rgb8.png"), "--kernel", str(d / "k.npy"), "--out", str(d / "o"), "--device", "cpu")
    assert res.exit_code == 1 and "broken.png" in res.output
    assert (d / "o" / "rgb8_deblurred.png").is_file() and not (d / "o" / "broken_deblurred.png").exists()


def test_cli_never_overwrites_an_input(cli, images):
    d, _ = images
    (d / "rgb8_deblurred.png").write_bytes((d / "rgb8.png").read_bytes())
    before = (d / "rgb8_deblurred.png").read_bytes()
    res = cli("deblur", str(d / "rgb8.png"), str(d / "rgb8_deblurred.png"), "--kernel", str(d / "k.npy"), "--out", str(d))
    assert res.exit_code == 2 and "overwrite an input" in res.output
    assert (d / "rgb8_deblurred.png").read_bytes() == before


def test_cli_learned_solver_without_weights(cli, images, no_shipped):
    d, _ = images
    res = cli("deblur", str(d / "rgb8.png"), "--kernel", str(d / "k.npy"), "--out", str(d / "o"), "--solver", "dwdn")
    assert res.exit_code == 2 and "needs trained weights" in res.output


def test_kernel_center_signal_restores_a_scipy_signal_blur(cli, tmp_path, curved_kernel, textured_image):
    """y blurred by scipy.signal.convolve2d(mode='same') with an even kernel, whose centre is one pixel
    earlier than kdiff's: --kernel-center signal restores it, the default is one pixel off."""
    from scipy.signal import convolve2d

    k = curved_kernel(8, 8)[0, 0].numpy().astype(np.float64)
    x = textured_image(1, 3, 56, 60, seed=5)[0].permute(1, 2, 0).numpy().astype(np.float64)
    y = np.stack([convolve2d(x[..., c], k, mode="same", boundary="symm") for c in range(3)], axis=2)
    files.write_image(tmp_path / "y.png", y, 16)
    np.save(tmp_path / "k.npy", k)
    psnr = {}
    for center in ("ndimage", "signal"):
        res = cli("deblur", tmp_path / "y.png", "--kernel", tmp_path / "k.npy", "--kernel-center", center,
                  "--sigma", "0.001", "--out", tmp_path / center, "--device", "cpu")
        assert res.exit_code == 0, res.output
        out, _ = files.read_image(tmp_path / center / "y_deblurred.png")
        psnr[center] = 10 * np.log10(1 / np.mean((out[10:-10, 10:-10] - x[10:-10, 10:-10]) ** 2))
    assert psnr["signal"] > psnr["ndimage"] + 3, psnr


def test_kernel_center_errors(cli, images):
    d, _ = images
    res = cli("deblur", d / "rgb8.png", "--kernel", d / "k.npy", "--kernel-center", "middle", "--out", d / "o", "--device", "cpu")
    assert res.exit_code == 2 and "unknown kernel centre convention 'middle' (choose from ndimage, signal)" in res.output
    res = cli("deblur", d / "rgb8.png", "--kernel-center", "signal", "--out", d / "o")
    assert res.exit_code == 2 and "--kernel-center applies to a known kernel (--kernel) only" in res.output
