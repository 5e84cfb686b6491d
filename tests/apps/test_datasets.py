"""Datasets: BSD100 layouts, the seeded protocol, download (local HTTP server), safe extraction,
Levin and folder layouts, export round trip. All on a synthetic stand-in for the BSD images."""

import http.server
import io as stdio
import tarfile
import threading

import numpy as np
import pytest
import torch

from kdiff_cli.apps import datasets
from kdiff_cli import files, plugins
from kdiff_cli.maths import ops, protocol
from kdiff_plugins import ds_bsd100, ds_folder, ds_levin
from kdiff_cli.errors import KdiffError, KdiffWarning

IDS = ds_bsd100.BSD100_IDS[:6]  # the images of fake_bsd (conftest.py)
SMALL = {"crop": 48, "kernel_size": 9, "generator": "borodenko"}


def test_ids_match_the_shared_list():
    assert len(ds_bsd100.BSD100_IDS) == 100 == len(set(ds_bsd100.BSD100_IDS))
    assert ds_bsd100.BSD100_IDS[:3] == ("3096", "8023", "12084") and ds_bsd100.BSD100_IDS[-1] == "385039"


@pytest.mark.parametrize("layout", ["", "BSDS300/images/test", "BSR/BSDS500/data/images/val"])
def test_locate_in_every_layout(tmp_path, fake_bsd, layout):
    d = tmp_path / layout
    d.mkdir(parents=True, exist_ok=True)
    for i in IDS:
        (d / f"{i}.jpg").write_bytes((fake_bsd / f"{i}.jpg").read_bytes())
    (d / "999999.jpg").write_bytes(b"not ours")
    found = ds_bsd100.locate_bsd100(tmp_path)
    assert sorted(found) == sorted(IDS) and all(p.parent == d for p in found.values())


def test_missing_images_are_a_clear_error(fake_bsd):
    refs = ds_bsd100.load_bsd100(fake_bsd, limit=6, **SMALL)
    assert [r.id for r in refs] == list(IDS)
    with pytest.raises(KdiffError, match=r"1 of 7 BSD100 images missing .*21077\.jpg"):
        ds_bsd100.load_bsd100(fake_bsd, limit=7, **SMALL)
    with pytest.raises(KdiffError, match="--data-dir .* does not exist"):
        ds_bsd100.load_bsd100(fake_bsd / "nope", limit=1)


def test_no_data_dir_and_no_cache_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("KDIFF_CACHE_DIR", raising=False)
    with pytest.raises(KdiffError, match="--data-dir .* or --download"):
        ds_bsd100.load_bsd100(None, limit=1)


# --------------------------------------------------------------------------- the protocol


def test_protocol_is_deterministic_and_independent_of_limit(fake_bsd):
    a = [r.load() for r in ds_bsd100.load_bsd100(fake_bsd, limit=4, **SMALL)]
    b = [r.load() for r in ds_bsd100.load_bsd100(fake_bsd, limit=2, **SMALL)]
    for u, v in zip(a, b):
        assert np.array_equal(u.x, v.x) and np.array_equal(u.y, v.y) and np.array_equal(u.k, v.k)
    c = ds_bsd100.load_bsd100(fake_bsd, limit=1, seed=7, **SMALL)[0].load()
    assert not np.array_equal(c.y, a[0].y)
    assert a[0].x.shape == a[0].y.shape == (48, 48, 3) and a[0].k.shape == (9, 9)
    assert a[0].k.sum() == pytest.approx(1.0) and a[0].sigma == 0.01


def test_protocol_rngs_golden_values():
    """SeedSequence + PCG64 streams are platform-independent: pin a few draws."""
    crop, kernel, noise = protocol.protocol_rngs(2023, 3096)
    first = (int(crop.integers(0, 66)), int(crop.integers(0, 226)))
    again = protocol.protocol_rngs(2023, 3096)[0]
    assert first == (int(again.integers(0, 66)), int(again.integers(0, 226)))
    assert first == GOLDEN_CROP
    assert noise.standard_normal() == pytest.approx(GOLDEN_NOISE, abs=1e-15)


GOLDEN_CROP = (22, 24)
GOLDEN_NOISE = -0.8575213110882721


def test_blur_model_matches_ops_conv2d(fake_bsd):
    item = ds_bsd100.load_bsd100(fake_bsd, limit=1, sigma=0.0, **SMALL)[0].load()
    x = torch.from_numpy(item.x.transpose(2, 0, 1)[None].astype(np.float64))
    ref = ops.conv2d(x, torch.from_numpy(item.k)[None, None], "symmetric")[0].numpy().transpose(1, 2, 0)
    assert np.abs(item.y - ref).max() <= 0.5 / 65535 + 1e-7  # stored at 16 bits
    noisy = ds_bsd100.load_bsd100(fake_bsd, limit=1, sigma=0.05, **SMALL)[0].load()
    assert np.std(noisy.y - ref) == pytest.approx(0.05, rel=0.1)


def test_crop_larger_than_image_is_an_error(fake_bsd):
    ref = ds_bsd100.load_bsd100(fake_bsd, limit=1, crop=400, kernel_size=9)[0]
    with pytest.raises(KdiffError, match="smaller than the 400x400 crop"):
        ref.load()


def test_dataset_plugins_registered():
    assert {"bsd100", "levin", "folder"} <= set(plugins.names("dataset"))
    p = plugins.get("dataset", "bsd100").protocol(seed=5)
    assert p == {"dataset": "bsd100", **ds_bsd100.BSD100_DEFAULTS, "seed": 5, "generator_params": {}}


# --------------------------------------------------------------------------- download


def make_archive(members: dict[str, bytes]) -> bytes:
    buf = stdio.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, stdio.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny_jpeg(smooth_texture, jpeg_bytes):
    return jpeg_bytes(smooth_texture(np.random.default_rng(1), 16, 24))


@pytest.fixture(scope="module")
def bsds_archive(tiny_jpeg):
    members = {f"BSDS300/images/test/{i}.jpg": tiny_jpeg for i in ds_bsd100.BSD100_IDS}
    members["BSDS300/images/train/2092.jpg"] = tiny_jpeg
    members["BSDS300/iids_test.txt"] = b"\n".join(i.encode() for i in ds_bsd100.BSD100_IDS)
    return make_archive(members)


class Server:
    """A local HTTP server for one file, with Range support and a request log."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.requests: list[str | None] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                rng = self.headers.get("Range")
                outer.requests.append(rng)
                data, status = outer.payload, 200
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.end_headers()
                        return
                    data, status = data[start:], 206
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/BSDS300-images.tgz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("KDIFF_CACHE_DIR", raising=False)
    return tmp_path / "xdg" / "kdiff" / "bsds300"


def test_download_extract_verify_and_reuse(cache, bsds_archive, monkeypatch):
    with Server(bsds_archive) as srv:
        monkeypatch.setenv("KDIFF_BSDS300_URL", srv.url)
        refs = ds_bsd100.load_bsd100(None, download=True, limit=2, crop=8, kernel_size=3)
        assert srv.requests == [None]
        assert sorted(p.name for p in (cache / "images").iterdir()) == sorted(f"{i}.jpg" for i in ds_bsd100.BSD100_IDS)
        assert not (cache / ds_bsd100.BSDS300_ARCHIVE).exists()  # only the images are kept
        # a second run (with or without --download) uses the cache, no request
        ds_bsd100.load_bsd100(None, download=True, limit=1, crop=8, kernel_size=3)
        ds_bsd100.load_bsd100(None, limit=1, crop=8, kernel_size=3)
        assert srv.requests == [None]
    assert refs[0].load().y.shape == (8, 8, 3)


def test_download_resumes_a_partial_file(cache, bsds_archive, monkeypatch):
    cache.mkdir(parents=True)
    (cache / (ds_bsd100.BSDS300_ARCHIVE + ".part")).write_bytes(bsds_archive[:1000])
    with Server(bsds_archive) as srv:
        monkeypatch.setenv("KDIFF_BSDS300_URL", srv.url)
        ds_bsd100.fetch_bsd100()
        assert srv.requests == ["bytes=1000-"]
    assert len(ds_bsd100.locate_bsd100(cache / "images")) == 100


def test_download_offline_is_a_clear_error(cache, monkeypatch):
    with Server(b"") as srv:
        url = srv.url
    monkeypatch.setenv("KDIFF_BSDS300_URL", url)  # the server is gone: connection refused
    with pytest.raises(KdiffError, match="cannot download .*offline.*--data-dir"):
        ds_bsd100.fetch_bsd100()


def test_corrupt_download_is_discarded(cache, monkeypatch):
    with Server(b"this is not a tar archive") as srv:
        monkeypatch.setenv("KDIFF_BSDS300_URL", srv.url)
        with pytest.raises(KdiffError, match="cannot extract"):
            ds_bsd100.fetch_bsd100()


def test_incomplete_archive_is_rejected(cache, tiny_jpeg, monkeypatch):
    partial = make_archive({f"BSDS300/images/test/{i}.jpg": tiny_jpeg for i in ds_bsd100.BSD100_IDS[:50]})
    with Server(partial) as srv:
        monkeypatch.setenv("KDIFF_BSDS300_URL", srv.url)
        with pytest.raises(KdiffError, match="incomplete or corrupt: 50 of 100"):
            ds_bsd100.fetch_bsd100()
    assert not (cache / ds_bsd100.BSDS300_ARCHIVE).exists()


def test_undecodable_image_in_archive_is_rejected(cache, tiny_jpeg, monkeypatch):
    members = {f"BSDS300/images/test/{i}.jpg": tiny_jpeg for i in ds_bsd100.BSD100_IDS}
    members[f"BSDS300/images/test/{ds_bsd100.BSD100_IDS[3]}.jpg"] = b"garbage"
    with Server(make_archive(members)) as srv:
        monkeypatch.setenv("KDIFF_BSDS300_URL", srv.url)
        with pytest.raises(KdiffError, match="cannot read image"):
            ds_bsd100.fetch_bsd100()


def test_extraction_is_safe_from_path_traversal(tmp_path, tiny_jpeg):
    first = ds_bsd100.BSD100_IDS[0]
    members = {f"../../{first}.jpg": tiny_jpeg, f"/tmp/{ds_bsd100.BSD100_IDS[1]}.jpg": tiny_jpeg}
    members.update({f"ok/{i}.jpg": tiny_jpeg for i in ds_bsd100.BSD100_IDS[2:4]})
    archive = tmp_path / "a" / "evil.tgz"
    archive.parent.mkdir()
    archive.write_bytes(make_archive(members))
    out = tmp_path / "a" / "b" / "images"
    got = ds_bsd100.extract_bsd100(archive, out)
    assert sorted(got) == sorted(ds_bsd100.BSD100_IDS[2:4])
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{i}.jpg" for i in ds_bsd100.BSD100_IDS[2:4])
    assert not list(tmp_path.rglob(f"{first}.jpg"))


def test_data_dir_may_be_the_archive(cache, bsds_archive, tmp_path):
    archive = tmp_path / "BSDS300-images.tgz"
    archive.write_bytes(bsds_archive)
    refs = ds_bsd100.load_bsd100(archive, limit=3, crop=8, kernel_size=3)
    assert len(refs) == 3 and archive.exists()  # the user's archive is never deleted


# --------------------------------------------------------------------------- levin and folder


def _levin(root, smooth_texture, n_images=2, n_kernels=2):
    rng = np.random.default_rng(3)
    (root / "gt").mkdir(parents=True)
    kernels = {}
    for j in range(1, n_kernels + 1):
        k = np.zeros((9, 9))
        k[4, 2 : 3 + 2 * j] = 1.0
        kernels[j] = k / k.sum()
        files.write_image(root / "gt" / f"kernel{j}.png", k / k.max(), bit_depth=16)
    for i in range(1, n_images + 1):
        x = smooth_texture(rng, 40, 40).mean(axis=2, keepdims=True)
        files.write_image(root / "gt" / f"im{i}.png", x)
        for j in range(1, n_kernels + 1):
            y = ops.conv2d(torch.from_numpy(x.transpose(2, 0, 1)[None]), torch.from_numpy(kernels[j])[None, None])
            files.write_image(root / f"im{i}_kernel{j}_img.png", y[0].numpy().transpose(1, 2, 0))
    return kernels


def test_levin_layout(smooth_texture, tmp_path):
    kernels = _levin(tmp_path, smooth_texture)
    refs = ds_levin.load_levin(tmp_path)
    assert [r.id for r in refs] == ["im1_kernel1", "im1_kernel2", "im2_kernel1", "im2_kernel2"]
    item = refs[1].load()
    assert item.x.shape == item.y.shape == (40, 40, 1)
    assert np.allclose(item.k, kernels[2], atol=1e-4)
    assert len(ds_levin.load_levin(tmp_path, limit=3)) == 3
    (tmp_path / "gt" / "kernel2.png").unlink()
    with pytest.raises(KdiffError, match="im1_kernel2_img.png has no gt/kernel2.png"):
        ds_levin.load_levin(tmp_path)
    with pytest.raises(KdiffError, match="no im"):
        ds_levin.load_levin(tmp_path / "gt")


def _asymmetric_kernel() -> np.ndarray:
    k = np.zeros((9, 9))
    k[4, 1:7] = 1.0
    k[1:4, 6] = 0.5
    k[4, 1] = 3.0
    return k / k.sum()


def _blurred(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    return ops.conv2d(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()), torch.from_numpy(k)[None, None])[0].numpy().transpose(1, 2, 0)


def test_levin_kernel_stored_rotated_is_detected_and_corrected(shapes_scene, tmp_path):
    """A Levin copy whose kernel file is stored rotated by 180 degrees (correlation orientation)."""
    k = _asymmetric_kernel()
    x = shapes_scene(np.random.default_rng(2), 64)[0].numpy().transpose(1, 2, 0)
    (tmp_path / "gt").mkdir()
    files.write_image(tmp_path / "gt" / "im1.png", x, bit_depth=16)
    files.write_image(tmp_path / "gt" / "kernel1.png", k[::-1, ::-1] / k.max(), bit_depth=16)  # stored rotated
    files.write_image(tmp_path / "gt" / "kernel2.png", k / k.max(), bit_depth=16)  # stored right
    for j in (1, 2):
        files.write_image(tmp_path / f"im1_kernel{j}_img.png", _blurred(x, k), bit_depth=16)
    rotated, right = (r.load() for r in ds_levin.load_levin(tmp_path))
    assert rotated.meta["kernel_fit"]["rotated"] is True and rotated.meta["kernel_fit"]["corrected"] is True
    assert right.meta["kernel_fit"]["corrected"] is False
    for item in (rotated, right):
        assert np.allclose(item.k, k, atol=1e-4) and item.meta["kernel_fit"]["explained"] is True
    assert plugins.get("dataset", "levin").protocol()["kernel_fit"]["max_shift"] == 10


def test_folder_kernel_shifted_is_recentred(shapes_scene, tmp_path):
    k = _asymmetric_kernel()
    x = shapes_scene(np.random.default_rng(3), 64)[0].numpy().transpose(1, 2, 0)
    files.write_image(tmp_path / "sharp" / "a.png", x, bit_depth=16)
    files.write_image(tmp_path / "blurred" / "a.png", _blurred(x, k), bit_depth=16)
    (tmp_path / "kernels").mkdir()
    np.save(tmp_path / "kernels" / "a.npy", np.roll(k, (-1, 1), axis=(0, 1)))  # stored 1 px up and right
    item = ds_folder.load_folder(tmp_path)[0].load()
    assert item.meta["kernel_fit"]["shift"] == [1, -1] and not item.meta["kernel_fit"]["rotated"]
    assert np.allclose(item.k, k)


def test_folder_layout_and_errors(smooth_texture, tmp_path):
    rng = np.random.default_rng(4)
    for name in ("a", "b"):
        files.write_image(tmp_path / "blurred" / f"{name}.png", smooth_texture(rng, 20, 24))
        files.write_image(tmp_path / "sharp" / f"{name}.jpg", smooth_texture(rng, 20, 24))
    (tmp_path / "kernels").mkdir()
    np.save(tmp_path / "kernels" / "a.npy", np.ones((3, 3)))
    refs = ds_folder.load_folder(tmp_path)
    with pytest.warns(KdiffWarning, match="a: neither orientation of the kernel explains the pair"):  # unrelated images
        a, b = (r.load() for r in refs)
    assert a.k.shape == (3, 3) and a.k.sum() == pytest.approx(1.0) and b.k is None
    files.write_image(tmp_path / "blurred" / "c.png", smooth_texture(rng, 20, 24))
    with pytest.raises(KdiffError, match="blurred/c.png has no partner"):
        ds_folder.load_folder(tmp_path)
    files.write_image(tmp_path / "sharp" / "c.png", smooth_texture(rng, 10, 24))
    with pytest.raises(KdiffError, match="is 24x20 but"):
        ds_folder.load_folder(tmp_path)[2].load()
    with pytest.raises(KdiffError, match="has no blurred/ folder"):
        ds_folder.load_folder(tmp_path / "blurred")


def test_export_reads_back_as_a_folder_dataset(fake_bsd, tmp_path):
    refs = ds_bsd100.load_bsd100(fake_bsd, limit=3, **SMALL)
    datasets.export(refs, tmp_path / "exp", ds_bsd100.bsd100_protocol(**SMALL))
    back = ds_folder.load_folder(tmp_path / "exp")
    assert [r.id for r in back] == [r.id for r in refs]
    for r, s in zip(refs, back):
        u, v = r.load(), s.load()
        assert np.array_equal(u.y, v.y)  # y is stored at 16 bits by the protocol itself
        assert np.abs(u.x - v.x).max() <= 0.5 / 65535 + 1e-7
        assert np.abs(u.k - v.k).max() <= 1e-4
    assert '"seed": 2023' in (tmp_path / "exp" / "protocol.json").read_text()
