"""``kdiff eval``: method/option parsing, end-to-end runs on a synthetic BSD100 stand-in, identical
metrics.json per seed, resume from the --out cache, n/a for weightless metrics, Levin's error ratio."""

import json

import cv2
import numpy as np
import pytest
import torch

from kdiff_cli.apps import evaluate
from kdiff_cli.apps.evaluate.specs import resolve_metrics
from kdiff_cli.items import Item
from kdiff_plugins import ds_bsd100, ds_levin
from kdiff_cli import files, plugins
from kdiff_cli.maths import metrics, ops
from kdiff_cli.maths.metrics import Result
from kdiff_cli.errors import KdiffError, KdiffWarning

SMALL = {"crop": 48, "kernel_size": 9}
needs_wiener = pytest.mark.skipif("wiener" not in plugins.names("solver"), reason="the wiener solver is not registered yet")


# --------------------------------------------------------------------------- parsing


def test_parse_value():
    assert [evaluate.parse_value(v) for v in ("25", "0.5", "true", "False", "none", "ddim")] == [25, 0.5, True, False, None, "ddim"]


def test_parse_methods_inline_and_global_options():
    specs = evaluate.parse_methods("blurred,oracle:solver=wiener", ["oracle.weights=w.safetensors"])
    assert [(s.label, s.name, s.options) for s in specs] == [
        ("blurred", "blurred", {}),
        ("oracle:solver=wiener", "oracle", {"solver": "wiener", "weights": "w.safetensors"}),
    ]
    assert specs[1].slug == "oracle_solver_wiener"
    # an unscoped option goes to the methods that take it (not to blurred)
    specs = evaluate.parse_methods("blurred,oracle", ["solver=wiener"])
    assert specs[0].options == {} and specs[1].options == {"solver": "wiener"}


@pytest.mark.parametrize(
    "text,opts,message",
    [
        ("nope", [], "unknown method 'nope'"),
        ("blurred:steps=3", [], "method 'blurred' takes no option 'steps'"),
        ("blurred", ["steps=3"], "no method in --method takes option 'steps'"),
        ("blurred", ["oracle.solver=x"], "no method 'oracle' in --method"),
        ("blurred", ["steps"], "KEY=VALUE"),
        ("blurred,blurred", [], "given twice"),
        (",", [], "at least one"),
    ],
)
def test_parse_methods_errors(text, opts, message):
    with pytest.raises(KdiffError, match=message):
        evaluate.parse_methods(text, opts)


def test_context_reaches_only_methods_that_name_it(monkeypatch):
    """The true kernel goes to a method only through an explicit ``k_true`` parameter."""
    seen = {}

    class Peek:
        name = "peek"

        def run(self, y, **options):
            seen.update(options)
            return y, None, {"note": "x", "t": torch.tensor(2.0), "big": torch.zeros(3)}

    class Named:
        def run(self, y, *, k_true=None, sigma=None, generator=None):
            seen.update(k_true=k_true, sigma=sigma, generator=generator)
            return y[0, 0], torch.from_numpy(k_true)[None, None], {}

    item = Item("a", x=np.zeros((8, 8, 3), np.float32), y=np.full((8, 8, 3), 0.5, np.float32), k=np.ones((3, 3)) / 9, sigma=0.01)
    monkeypatch.setattr(evaluate.MethodSpec, "method", property(lambda self: Peek() if self.name == "peek" else Named()))
    result, _ = evaluate.run_method(evaluate.MethodSpec("peek", "peek", {"steps": 2}), item, seed=1, key=2, device="cpu")
    assert seen == {"steps": 2}
    assert result.k is None and np.allclose(result.x, 0.5, atol=1e-5) and result.info == {"note": "x", "t": 2.0}
    seen.clear()
    result, _ = evaluate.run_method(evaluate.MethodSpec("named", "named"), item, seed=1, key=2, device="cpu")
    assert np.array_equal(seen["k_true"], item.k) and seen["sigma"] == 0.01 and isinstance(seen["generator"], torch.Generator)
    assert result.x.shape == (8, 8, 1) and np.allclose(result.k, 1 / 9)


def test_method_generator_is_seeded():
    a = torch.rand(3, generator=evaluate.method_generator(1, 3096))
    assert torch.equal(a, torch.rand(3, generator=evaluate.method_generator(1, 3096)))
    assert not torch.equal(a, torch.rand(3, generator=evaluate.method_generator(1, 8023)))


# --------------------------------------------------------------------------- end to end


def _run(fake_bsd, out, methods="blurred", limit=3, metrics=None, **options):
    opts = {"data_dir": fake_bsd, **SMALL, **options}
    return evaluate.run("bsd100", opts, methods=methods, metrics=metrics, limit=limit, out=out, device="cpu", grid=2)


def test_blurred_end_to_end_and_outputs(fake_bsd, tmp_path, empty_hub):
    report = _run(fake_bsd, tmp_path / "R")
    out = tmp_path / "R"
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["images"] == list(ds_bsd100.BSD100_IDS[:3])
    assert doc["protocol"]["seed"] == 2023 and doc["protocol"]["generator"] == "borodenko"
    assert set(doc["versions"]) >= {"kdiff", "numpy", "torch", "scikit-image"}
    # PSNR of the blurred input recomputed independently from the protocol
    items = [r.load() for r in ds_bsd100.load_bsd100(fake_bsd, limit=3, **SMALL)]
    psnrs = [10 * np.log10(1 / np.mean((it.y.astype(np.float64) - it.x) ** 2)) for it in items]
    assert doc["mean"]["blurred"]["psnr"] == pytest.approx(np.mean(psnrs), abs=1e-3)
    assert doc["per_image"]["3096"]["blurred"]["mnc"] is None  # no kernel estimate
    # LPIPS / FID: no weights -> null with a note, "n/a" in the table and the CSV, never a number
    assert doc["metrics"]["lpips"]["available"] is False and "--metric-weights" in doc["metrics"]["lpips"]["note"]
    assert doc["mean"]["blurred"]["lpips"] is None and doc["mean"]["blurred"]["fid"] is None
    header, row = report.table_header(), report.table_rows()[0]
    assert row[header.index("LPIPS ↓")] == "n/a" and row[header.index("FID ↓")] == "n/a"
    assert any("lpips: n/a" in n for n in report.notes())
    csv = (out / "metrics.csv").read_text().splitlines()
    assert csv[0] == "image,method,psnr,psnr_aligned,ssim,ssim_aligned,lpips,fid,mnc" and len(csv) == 1 + 3 + 1
    assert csv[-1].startswith("mean,blurred,") and ",n/a,n/a," in csv[-1]
    # grid: header band + 2 rows of 256 px tiles; columns: blurred (true kernel), ground truth
    grid, _ = files.read_image(out / "grid.png")
    assert grid.shape == (22 + 2 * 256, 2 * 256, 3)


def test_same_seed_identical_metrics_json_and_resume(fake_bsd, tmp_path, empty_hub):
    a = _run(fake_bsd, tmp_path / "A", metrics="psnr,ssim")
    b = _run(fake_bsd, tmp_path / "B", metrics="psnr,ssim")
    assert (tmp_path / "A" / "metrics.json").read_bytes() == (tmp_path / "B" / "metrics.json").read_bytes()
    assert a.computed == 3 and a.cached == 0
    rec = tmp_path / "A" / "blurred" / "3096.json"
    stamp = rec.stat().st_mtime_ns
    again = _run(fake_bsd, tmp_path / "A", metrics="psnr,ssim")
    assert again.computed == 0 and again.cached == 3 and rec.stat().st_mtime_ns == stamp
    assert (tmp_path / "A" / "metrics.json").read_bytes() == (tmp_path / "B" / "metrics.json").read_bytes()
    # one more image: only it runs
    more = _run(fake_bsd, tmp_path / "A", metrics="psnr,ssim", limit=4)
    assert more.computed == 1 and more.cached == 3
    # another seed: a different protocol, so everything runs again and the numbers change
    other = _run(fake_bsd, tmp_path / "A", metrics="psnr,ssim", seed=5)
    assert other.computed == 3
    assert other.mean["blurred"]["psnr"] != a.mean["blurred"]["psnr"]


def test_metric_added_on_rerun_is_scored_from_the_cache(fake_bsd, tmp_path, empty_hub):
    _run(fake_bsd, tmp_path / "R", metrics="psnr", limit=2)
    report = _run(fake_bsd, tmp_path / "R", metrics="psnr,ssim", limit=2)
    assert report.computed == 0 and report.mean["blurred"]["ssim"] is not None
    fresh = _run(fake_bsd, tmp_path / "F", metrics="psnr,ssim", limit=2)
    assert fresh.mean == report.mean


@needs_wiener
def test_oracle_beats_blurred_and_has_mnc_one(fake_bsd, tmp_path, empty_hub):
    report = _run(fake_bsd, tmp_path / "R", methods="blurred,oracle", metrics="psnr,ssim,mnc", limit=2, sigma=0.001)
    m = report.mean
    assert m["oracle"]["psnr"] > m["blurred"]["psnr"] + 1.0
    assert m["oracle"]["mnc"] == pytest.approx(1.0) and m["blurred"]["mnc"] is None
    assert np.load(tmp_path / "R" / "oracle" / "3096_k.npy").shape == (9, 9)
    grid, _ = files.read_image(tmp_path / "R" / "grid.png")
    assert grid.shape[1] == 3 * 256  # blurred, oracle, ground truth


@needs_wiener
def test_levin_error_ratio_is_one_for_the_true_kernel(tmp_path, empty_hub):
    rng = np.random.default_rng(3)
    (tmp_path / "gt").mkdir()
    k = np.zeros((9, 9))
    k[4, 1:8] = 1
    k /= k.sum()
    files.write_image(tmp_path / "gt" / "kernel1.png", k / k.max(), bit_depth=16)
    x = cv2.resize(rng.random((9, 9)), (48, 48), interpolation=cv2.INTER_CUBIC)[..., None].clip(0, 1)
    files.write_image(tmp_path / "gt" / "im1.png", x, bit_depth=16)
    y = ops.conv2d(torch.from_numpy(x.transpose(2, 0, 1)[None]), torch.from_numpy(k)[None, None])
    files.write_image(tmp_path / "im1_kernel1_img.png", y[0].numpy().transpose(1, 2, 0), bit_depth=16)
    report = evaluate.run("levin", {"data_dir": tmp_path}, methods="blurred,oracle", out=tmp_path / "R", device="cpu", grid=1)
    assert report.mean["oracle"]["error-ratio"] == pytest.approx(1.0)
    assert report.mean["oracle"]["success@3"] == 1.0
    assert report.mean["blurred"]["error-ratio"] is None
    assert "success@3 ↑" in report.table_header()


def test_aligned_columns_options_and_rescoring(fake_bsd, tmp_path, empty_hub):
    """PSNR and SSIM as is and aligned, side by side; the table says which; new alignment options
    rescore the cached estimates without running the methods again."""
    report = _run(fake_bsd, tmp_path / "R", metrics="psnr,ssim", limit=2)
    assert report.table_header() == ["method", "PSNR ↑", "PSNR aligned ↑", "SSIM ↑", "SSIM aligned ↑", "s/img"]
    assert "aligned (psnr_aligned, ssim_aligned): scored after the best integer shift within 10 px, 15 px border cropped" in report.notes()[0]
    doc = json.loads((tmp_path / "R" / "metrics.json").read_text())
    assert doc["metrics"]["psnr"]["params"] == {"border": 15, "max_shift": 10}
    assert doc["metrics"]["psnr"]["columns"] == ["psnr", "psnr_aligned"]
    items = [r.load() for r in ds_bsd100.load_bsd100(fake_bsd, limit=2, **SMALL)]
    expected = np.mean([metrics.psnr_aligned(it.y, it.x) for it in items])
    assert doc["mean"]["blurred"]["psnr_aligned"] == pytest.approx(expected, abs=1e-9)
    assert set(doc["per_image"]["3096"]["blurred"]) == {"psnr", "psnr_aligned", "ssim", "ssim_aligned"}
    again = evaluate.run("bsd100", {"data_dir": fake_bsd, **SMALL}, methods="blurred", metrics="psnr,ssim:border=4",
                         metric_opts=["max_shift=2"], limit=2, out=tmp_path / "R", device="cpu", grid=0)
    assert again.computed == 0 and again.mean["blurred"]["psnr"] == report.mean["blurred"]["psnr"]
    assert again.mean["blurred"]["psnr_aligned"] == pytest.approx(np.mean([metrics.psnr_aligned(it.y, it.x, 2, 15) for it in items]), abs=1e-9)
    assert again.mean["blurred"]["ssim_aligned"] == pytest.approx(np.mean([metrics.ssim_aligned(it.y, it.x, 2, 4) for it in items]), abs=1e-9)
    rec = json.loads((tmp_path / "R" / "blurred" / "3096.json").read_text())
    assert rec["metric_params"]["ssim"] == {"border": 4, "max_shift": 2}
    assert [n for n in again.notes() if n.startswith("aligned")] == [
        "aligned (psnr_aligned): scored after the best integer shift within 2 px, 15 px border cropped (--metric-opt max_shift=N, --metric-opt border=N)",
        "aligned (ssim_aligned): scored after the best integer shift within 2 px, 4 px border cropped (--metric-opt max_shift=N, --metric-opt border=N)",
    ]


@pytest.mark.parametrize(
    "names,opts,message",
    [
        (["psnr:radius=2"], [], r"^metric 'psnr' takes no option 'radius' \(valid: border, max_shift\)$"),
        (["mnc"], ["border=3"], r"no metric in --metric takes option 'border' \(valid: mnc: none\)$"),
        (["psnr"], ["ssim.border=3"], "no metric 'ssim' in --metric"),
        (["psnr", "mnc"], ["mnc.border=3"], r"^metric 'mnc' takes no option 'border' \(valid: none\)$"),
        (["psnr", "psnr:border=20"], [], "metric 'psnr' given twice"),
        (["psnr"], ["border"], "KEY=VALUE"),
        (["ssim"], ["max_shift=16"], r"border \(15\) must be at least max_shift \(16\)"),
        (["error-ratio:max_shift=-1"], [], "max_shift must be an integer >= 0"),
    ],
)
def test_metric_option_errors(names, opts, message):
    with pytest.raises(KdiffError, match=message):
        resolve_metrics(names, None, "cpu", opts)


def _levin_rotated(root, shapes_scene):
    """A Levin copy with one 64 x 64 image and its 9 x 9 asymmetric kernel stored rotated by 180 degrees."""
    k = np.zeros((9, 9))
    k[4, 1:7] = 1.0
    k[1:4, 6] = 0.5
    k[4, 1] = 3.0
    k /= k.sum()
    x = shapes_scene(np.random.default_rng(5), 64)[0].numpy().transpose(1, 2, 0)
    (root / "gt").mkdir(parents=True)
    files.write_image(root / "gt" / "im1.png", x, bit_depth=16)
    files.write_image(root / "gt" / "kernel1.png", k[::-1, ::-1] / k.max(), bit_depth=16)
    y = ops.conv2d(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()), torch.from_numpy(k)[None, None])
    files.write_image(root / "im1_kernel1_img.png", y[0].numpy().transpose(1, 2, 0), bit_depth=16)
    return k


@needs_wiener
def test_levin_rotated_kernel_corrected_recorded_and_used_by_the_error_ratio(tmp_path, shapes_scene, empty_hub):
    k = _levin_rotated(tmp_path / "D", shapes_scene)
    report = evaluate.run("levin", {"data_dir": tmp_path / "D"}, methods="blurred,oracle", out=tmp_path / "R", device="cpu", grid=0)
    doc = json.loads((tmp_path / "R" / "metrics.json").read_text())
    fit = doc["ground_truth"]["im1_kernel1"]
    assert fit["rotated"] is True and fit["corrected"] is True and fit["explained"] is True
    assert fit["residual"] < 0.01 < fit["residual_as_stored"]
    assert doc["protocol"]["kernel_fit"] == {"max_shift": 10, "orientation": ["as stored", "rotated 180"], "threshold": 0.15}
    assert any(n.startswith("ground truth: 1 of 1 kernels corrected to fit their pairs (rotated 180 degrees: im1_kernel1)") for n in report.notes())
    assert np.allclose(np.load(tmp_path / "R" / "oracle" / "im1_kernel1_k.npy"), k, atol=1e-4)  # the oracle got the fitted kernel
    assert report.mean["oracle"]["psnr"] > report.mean["blurred"]["psnr"] + 5
    # the error ratio's denominator is the corrected kernel: the true kernel scores 1, the stored one worse
    item = ds_levin.load_levin(tmp_path / "D")[0].load()
    ratio = plugins.get("metric", "error-ratio")
    assert ratio.compute(Result(item.x, k), item) == pytest.approx(1.0, abs=1e-3)
    assert ratio.compute(Result(item.x, k[::-1, ::-1].copy()), item) > 1.5
    # a cached re-run loads no item and writes the same metrics.json, fits included
    before = (tmp_path / "R" / "metrics.json").read_bytes()
    again = evaluate.run("levin", {"data_dir": tmp_path / "D"}, methods="blurred,oracle", out=tmp_path / "R", device="cpu", grid=0)
    assert again.computed == 0 and (tmp_path / "R" / "metrics.json").read_bytes() == before


def test_levin_unexplained_pair_is_a_warning_and_a_note(tmp_path, shapes_scene, empty_hub):
    _levin_rotated(tmp_path / "D", shapes_scene)
    k = np.zeros((9, 9))
    k[1:8, 4] = 1  # a vertical line: not the blur of the pair
    files.write_image(tmp_path / "D" / "gt" / "kernel1.png", k, bit_depth=16)
    with pytest.warns(KdiffWarning, match="im1_kernel1: neither orientation of the kernel explains the pair"):
        report = evaluate.run("levin", {"data_dir": tmp_path / "D"}, methods="blurred", metrics="psnr", out=tmp_path / "R", device="cpu", grid=0)
    assert report.ground_truth["im1_kernel1"]["explained"] is False
    assert "warning: 1 pairs not explained by their kernel in either orientation (im1_kernel1): wrong kernel or spatially varying blur" in report.notes()


# --------------------------------------------------------------------------- the command


def test_cli_eval_and_export(cli, fake_bsd, tmp_path, empty_hub):
    args = ["eval", "bsd100", "--data-dir", fake_bsd, "--limit", "2", "--crop", "48", "--kernel-size", "9"]
    res = cli(*args, "--method", "blurred", "--metric", "psnr,ssim", "--out", tmp_path / "R", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "PSNR" in res.output and "blurred" in res.output and (tmp_path / "R" / "metrics.json").is_file()
    res = cli(*args, "--export", tmp_path / "E")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "E" / "blurred").iterdir()) == ["3096.png", "8023.png"]
    assert (tmp_path / "E" / "kernels" / "3096.png").is_file() and (tmp_path / "E" / "protocol.json").is_file()
    assert not (tmp_path / "E" / "metrics.json").exists()  # export alone evaluates nothing


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--method", "nope"], "unknown method 'nope'"),
        (["--metric", "nope"], "unknown metric 'nope'"),
        (["--crop", "4"], "--crop must be >= 8"),
        (["--generator", "nope"], "unknown generator 'nope'"),
        (["--metric", "psnr", "--metric-opt", "border=3", "--metric-opt", "max_shift=5"], "border (3) must be at least max_shift (5)"),
        (["--metric-opt", "radius=3"], "no metric in --metric takes option 'radius'"),
    ],
)
def test_cli_errors_are_one_line(cli, fake_bsd, tmp_path, extra, message):
    res = cli("eval", "bsd100", "--data-dir", fake_bsd, "--limit", "1", "--method", "blurred", "--out", tmp_path / "R", *extra)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_cli_metric_options(cli, fake_bsd, tmp_path, empty_hub):
    res = cli("eval", "bsd100", "--data-dir", fake_bsd, "--limit", "1", "--crop", "48", "--kernel-size", "9", "--method", "blurred",
              "--metric", "psnr,ssim:border=6", "--metric-opt", "max_shift=3", "--metric-opt", "psnr.border=5",
              "--out", tmp_path / "R", "--device", "cpu", "--grid", "0")
    assert res.exit_code == 0, res.output
    assert "within 3 px, 5 px border cropped" in res.output and "within 3 px, 6 px border cropped" in res.output
    doc = json.loads((tmp_path / "R" / "metrics.json").read_text())
    assert doc["metrics"]["psnr"]["params"] == {"border": 5, "max_shift": 3}
    assert doc["metrics"]["ssim"]["params"] == {"border": 6, "max_shift": 3}


def test_cli_option_that_does_not_apply(cli, tmp_path):
    res = cli("eval", "levin", "--data-dir", tmp_path, "--sigma", "0.1")
    assert res.exit_code == 2 and "--sigma does not apply to dataset 'levin'" in res.output


# --------------------------------------------------------------------------- LPIPS / FID plumbing


def _fake_module(monkeypatch, name, **attrs):
    import importlib.machinery
    import types

    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for k, v in attrs.items():
        setattr(mod, k, v)
    monkeypatch.setitem(__import__("sys").modules, name, mod)
    return mod


def test_weights_found_means_numbers_from_the_real_backbone_path(fake_bsd, tmp_path, empty_hub, monkeypatch):
    """With the packages importable and the weight files present (in --metric-weights), LPIPS and
    FID are computed through the packages, which find the files where torch.hub looks for them.
    The packages are stand-ins here: they check the file is in the hub cache, as torchvision does."""
    from kdiff_cli.maths import metrics

    seen = []

    def hub_has(filename):
        assert (metrics.hub_checkpoints_dir() / filename).read_bytes() == b"weights"
        seen.append(filename)

    class FakeLPIPS(torch.nn.Module):
        def __init__(self, net, verbose):
            super().__init__()
            hub_has(metrics.LPIPS_ALEX_FILE)

        def forward(self, a, b):  # inputs in [-1, 1]: mean absolute difference as the "distance"
            assert a.min() >= -1 and a.max() <= 1 and a.shape[1] == 3
            return (a - b).abs().mean().reshape(1, 1, 1, 1)

    class FakeInception(torch.nn.Module):
        BLOCK_INDEX_BY_DIM = {2048: 3}

        def __init__(self, blocks):
            super().__init__()
            hub_has(metrics.FID_INCEPTION_FILE)

        def forward(self, x):  # 4 "features": channel means and the overall std
            f = torch.cat([x.mean(dim=(2, 3)), x.std(dim=(1, 2, 3))[:, None]], dim=1)
            return [f[:, :, None, None]]

    _fake_module(monkeypatch, "lpips", LPIPS=FakeLPIPS)
    _fake_module(monkeypatch, "pytorch_fid")
    _fake_module(monkeypatch, "pytorch_fid.inception", InceptionV3=FakeInception)
    wdir = tmp_path / "w"
    wdir.mkdir()
    for f in (metrics.LPIPS_ALEX_FILE, metrics.FID_INCEPTION_FILE):
        (wdir / f).write_bytes(b"weights")
    opts = {"data_dir": fake_bsd, **SMALL}
    report = evaluate.run("bsd100", opts, methods="blurred", metrics="lpips,fid", metric_weights=wdir, limit=3, out=tmp_path / "R", device="cpu", grid=0)
    assert seen == [metrics.LPIPS_ALEX_FILE, metrics.FID_INCEPTION_FILE]
    items = [r.load() for r in ds_bsd100.load_bsd100(fake_bsd, limit=3, **SMALL)]
    expected = np.mean([np.abs(2 * it.y.astype(np.float64) - 2 * it.x).mean() for it in items])
    assert report.mean["blurred"]["lpips"] == pytest.approx(expected, rel=1e-3)
    assert report.mean["blurred"]["fid"] is not None and report.mean["blurred"]["fid"] > 0
    assert not report.notes()
