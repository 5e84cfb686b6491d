"""Image IO: round trips at 8 and 16 bits, alpha, EXIF orientation, clear errors, atomic writes."""

import os
import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from kdiff_cli import files
from kdiff_cli.errors import KdiffError


def _rgb(h=12, w=17, seed=0):
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


@pytest.mark.parametrize("ext", [".png", ".tif", ".bmp"])
def test_round_trip_8bit_rgb(tmp_path, ext):
    x = _rgb()
    p = files.write_image(tmp_path / f"a{ext}", x, bit_depth=8)
    y, info = files.read_image(p)
    assert y.shape == (12, 17, 3) and y.dtype == np.float32
    assert info.bit_depth == 8 and info.channels == 3 and not info.had_alpha
    assert np.array_equal(y, files.quantize(x, 8) / np.float32(255))
    assert np.abs(y - x).max() <= 0.5 / 255 + 1e-7


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_round_trip_16bit_rgb(tmp_path, ext):
    x = _rgb(seed=1)
    p = files.write_image(tmp_path / f"a{ext}", x, bit_depth=16)
    y, info = files.read_image(p)
    assert info.bit_depth == 16 and info.channels == 3
    assert np.array_equal(files.quantize(y, 16), files.quantize(x, 16))
    assert np.abs(y - x).max() <= 0.5 / 65535 + 1e-7


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_round_trip_gray(tmp_path, bit_depth):
    x = np.random.default_rng(2).random((9, 11), dtype=np.float32)
    p = files.write_image(tmp_path / "g.png", x, bit_depth=bit_depth)
    y, info = files.read_image(p)
    assert y.shape == (9, 11, 1) and info.channels == 1 and info.bit_depth == bit_depth
    assert np.array_equal(files.quantize(y[..., 0], bit_depth), files.quantize(x, bit_depth))


def test_16bit_precision_is_kept(tmp_path):
    """16-bit RGB values that are not multiples of 257 (i.e. not 8-bit values) survive exactly.

    The file is written by OpenCV directly so the reader is checked independently of our writer;
    imageio's default Pillow plugin would return these reduced to 8 bits.
    """
    rng = np.random.default_rng(3)
    q = rng.integers(0, 65536, size=(8, 10, 3), dtype=np.uint16)
    q[q % 257 == 0] += 1
    p = tmp_path / "deep.png"
    assert cv2.imwrite(str(p), q[..., ::-1])  # BGR on disk
    y, info = files.read_image(p)
    assert info.bit_depth == 16
    assert np.array_equal(np.rint(y.astype(np.float64) * 65535).astype(np.uint16), q)
    # and our writer stores all 16 bits too
    p2 = files.write_image(tmp_path / "deep2.png", y, bit_depth=16)
    back = cv2.imread(str(p2), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and np.array_equal(back[..., ::-1], q)


def test_16bit_tiff_written_by_tifffile(tmp_path):
    import tifffile

    q = np.random.default_rng(4).integers(0, 65536, size=(6, 7, 3), dtype=np.uint16)
    p = tmp_path / "t.tiff"
    tifffile.imwrite(p, q, photometric="rgb")
    y, info = files.read_image(p)
    assert info.bit_depth == 16 and info.format == "tiff"
    assert np.array_equal(files.quantize(y, 16), q)


def test_float_tiff_read_as_float_and_written_back_as_float32(tmp_path):
    import tifffile
    import warnings

    x = np.random.default_rng(12).random((6, 7, 3), dtype=np.float32)
    p = tmp_path / "f.tif"
    tifffile.imwrite(p, x, photometric="rgb")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # values in [0, 1]: nothing to say
        y, info = files.read_image(p)
    assert info.bit_depth == 32 and np.array_equal(y, x)
    back = tifffile.imread(files.write_image(tmp_path / "g.tif", y, info.bit_depth))
    assert back.dtype == np.float32 and np.array_equal(back, x)  # not quantised


def test_float_tiff_out_of_range_clipped_with_warning(tmp_path):
    import tifffile

    x = np.array([[[-0.25], [0.5], [1.5]]], np.float32)
    tifffile.imwrite(tmp_path / "r.tif", x[..., 0])
    with pytest.warns(files.ImageWarning, match="2 float pixel values outside"):
        y, _ = files.read_image(tmp_path / "r.tif")
    assert y[..., 0].tolist() == [[0.0, 0.5, 1.0]]


def test_float_to_png_warns_and_quantises(tmp_path):
    with pytest.warns(files.ImageWarning, match="float output quantised to 16 bits"):
        p = files.write_image(tmp_path / "q.png", _rgb(), bit_depth=32)
    assert files.read_image(p)[1].bit_depth == 16


def test_rgba_alpha_dropped_with_warning(tmp_path):
    rgba = np.random.default_rng(5).integers(0, 256, size=(5, 6, 4), dtype=np.uint8)
    p = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(p)
    with pytest.warns(files.ImageWarning, match="alpha"):
        y, info = files.read_image(p)
    assert info.had_alpha and info.channels == 3 and y.shape == (5, 6, 3)
    assert np.array_equal(files.quantize(y, 8), rgba[..., :3])


def test_gray_alpha_dropped(tmp_path):
    la = np.random.default_rng(6).integers(0, 256, size=(5, 6, 2), dtype=np.uint8)
    p = tmp_path / "la.png"
    Image.fromarray(la, "LA").save(p)
    with pytest.warns(files.ImageWarning):
        y, info = files.read_image(p)
    assert info.had_alpha and info.channels == 1
    assert np.array_equal(files.quantize(y[..., 0], 8), la[..., 0])


def test_no_warning_without_alpha(tmp_path):
    p = files.write_image(tmp_path / "a.png", _rgb())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        files.read_image(p)


def test_exif_orientation_6_jpeg(tmp_path):
    """A JPEG stored 24 x 40 with orientation 6 (rotate 90 clockwise) reads as 40 x 24."""
    stored = np.zeros((24, 40, 3), np.uint8)
    stored[:4, :6] = 255  # a white block at the stored top-left corner
    exif = Image.Exif()
    exif[files.EXIF_ORIENTATION_TAG] = 6
    p = tmp_path / "o6.jpg"
    Image.fromarray(stored).save(p, exif=exif, quality=100)
    y, info = files.read_image(p)
    assert info.orientation == 6 and info.format == "jpeg"
    assert y.shape == (40, 24, 3)
    # rotating clockwise moves the stored top-left corner to the top-right
    assert y[:6, -4:].mean() > 0.9 and y[:6, :4].mean() < 0.1
    ref = np.asarray(ImageOps.exif_transpose(Image.open(p)), dtype=np.float32) / 255
    assert np.abs(y - ref).mean() < 2 / 255


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_orientations_match_pillow(tmp_path, orientation):
    stored = np.random.default_rng(orientation).integers(0, 256, size=(5, 8, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[files.EXIF_ORIENTATION_TAG] = orientation
    p = tmp_path / "o.png"
    Image.fromarray(stored).save(p, exif=exif)
    y, info = files.read_image(p)
    ref = np.asarray(ImageOps.exif_transpose(Image.open(p)))
    assert info.orientation == orientation
    assert np.array_equal(files.quantize(y, 8), ref)


def test_corrupt_and_non_image_files(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(np.random.default_rng(7).bytes(500))
    with pytest.raises(KdiffError, match=r"cannot read image .*junk\.png"):
        files.read_image(junk)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image\n")
    with pytest.raises(KdiffError, match="cannot read image"):
        files.read_image(text)
    good = files.write_image(tmp_path / "good.png", _rgb(64, 64))
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(good.read_bytes()[:100])
    with pytest.raises(KdiffError, match="cannot read image"):
        files.read_image(trunc)
    jpg = files.write_image(tmp_path / "good.jpg", _rgb(64, 64))
    (tmp_path / "half.jpg").write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])
    with pytest.raises(KdiffError, match="cannot read image"):
        files.read_image(tmp_path / "half.jpg")
    with pytest.raises(KdiffError, match="no such file"):
        files.read_image(tmp_path / "missing.png")
    with pytest.raises(KdiffError, match="empty file"):
        (tmp_path / "empty.png").write_bytes(b"")
        files.read_image(tmp_path / "empty.png")


def test_write_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(KdiffError, match="cannot write"):
        files.write_image(blocker / "sub" / "a.png", _rgb())  # parent is a file
    with pytest.raises(KdiffError, match="unsupported extension"):
        files.write_image(tmp_path / "a.gif", _rgb())
    with pytest.raises(KdiffError, match="expected"):
        files.write_image(tmp_path / "a.png", np.zeros((4, 4, 2)))
    with pytest.raises(KdiffError, match="bit depth"):
        files.write_image(tmp_path / "a.png", _rgb(), bit_depth=12)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_write_to_read_only_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(KdiffError, match="cannot write"):
            files.write_image(ro / "a.png", _rgb())
    finally:
        ro.chmod(0o700)


def test_atomic_write_creates_parents_and_leaves_no_temp(tmp_path):
    target = tmp_path / "deep" / "er" / "out.jpg"
    files.write_image(target, _rgb())
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.jpg"]
    files.write_image(target, _rgb(seed=9))  # overwrite in place
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.jpg"]


def test_16bit_to_jpeg_warns_and_writes_8bit(tmp_path):
    with pytest.warns(files.ImageWarning, match="8 bits"):
        p = files.write_image(tmp_path / "a.jpg", _rgb(), bit_depth=16)
    assert files.read_image(p)[1].bit_depth == 8


def test_write_clips_and_rounds(tmp_path):
    x = np.array([[-0.5, 0.0, 0.5 / 255 + 1e-4, 1.0, 2.0]], np.float32)
    y, _ = files.read_image(files.write_image(tmp_path / "c.png", x))
    assert np.array_equal(files.quantize(y[..., 0], 8), np.array([[0, 0, 1, 255, 255]], np.uint8))


def test_tensor_round_trip():
    x = _rgb(5, 7)
    t = files.to_tensor(x)
    assert t.shape == (1, 3, 5, 7) and t.dtype == torch.float32
    assert torch.equal(t[0, 1], torch.from_numpy(x[..., 1]))
    assert np.array_equal(files.to_numpy(t), x)
    assert files.to_tensor(x[..., 0]).shape == (1, 1, 5, 7)
    with pytest.raises(KdiffError):
        files.to_numpy(torch.zeros(2, 3, 4, 4))
