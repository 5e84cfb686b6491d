"""`kdiff deblur` blind path end to end with a tiny kernel-diff weights file (no shipped weights needed)."""

import json
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kdiff_cli import files, weights
from kdiff_cli.cli import app
from kdiff_cli.maths.schedule import NoiseSchedule
from kdiff_cli.maths.unet import KernelUNet

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = KernelUNet(
        kernel_size=16, model_channels=8, channel_mult=(1, 2), image_model_channels=8,
        image_channel_mult=(1, 2), image_res_blocks=(0, 1), attention_resolutions=(), num_heads=1, norm_groups=4,
    )
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    weights.save(path, model.state_dict(), {"task": "kernel-diff", "unet": model.config, "schedule": NoiseSchedule().to_dict()})
    return path


@pytest.fixture
def photos(tmp_path):
    g = np.random.default_rng(0)
    base = g.random((12, 12, 3)).astype(np.float32)
    img = np.kron(base, np.ones((8, 8, 1), np.float32))[:80, :72]
    files.write_image(tmp_path / "a.png", img, 16)
    files.write_image(tmp_path / "b.jpg", img, 8)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    return tmp_path


def run(*args):
    return runner.invoke(app, ["deblur", *map(str, args)])


FAST = ["--steps", "3", "--refine-steps", "2", "--solver", "wiener", "--device", "cpu", "--downscale", "1"]


def test_blind_outputs_depth_and_report(tiny_weights, photos):
    out = photos / "out"
    r = run(photos / "a.png", photos / "b.jpg", "--out", out, "--weights", tiny_weights, *FAST)
    assert r.exit_code == 0, r.output
    for stem, ext in (("a", "png"), ("b", "jpg")):
        assert (out / f"{stem}_deblurred.{ext}").is_file()
        k = np.load(out / f"{stem}_kernel.npy")
        assert k.dtype == np.float32 and k.shape == (16, 16) and abs(k.sum() - 1) < 1e-5 and k.min() >= 0
        assert (out / f"{stem}_kernel.png").is_file()
    _, info = files.read_image(out / "a_deblurred.png")
    assert info.bit_depth == 16
    rep = json.loads((out / "report.json").read_text())
    assert set(rep) == {"a.png", "b.jpg"}
    assert rep["a.png"]["kernel_size"] == [16, 16] and rep["a.png"]["residual"] > 0
    assert rep["a.png"]["settings"]["steps"] == 3


def test_same_seed_same_output_and_glob(tiny_weights, photos):
    o1, o2 = photos / "o1", photos / "o2"
    assert run(str(photos / "a.*"), "--out", o1, "--weights", tiny_weights, "--seed", "5", *FAST).exit_code == 0
    assert run(photos / "a.png", "--out", o2, "--weights", tiny_weights, "--seed", "5", *FAST).exit_code == 0
    assert (o1 / "a_deblurred.png").read_bytes() == (o2 / "a_deblurred.png").read_bytes()
    assert np.array_equal(np.load(o1 / "a_kernel.npy"), np.load(o2 / "a_kernel.npy"))


def test_bad_file_skipped_exit_1(tiny_weights, photos):
    out = photos / "o3"
    r = run(photos / "bad.png", photos / "a.png", "--out", out, "--weights", tiny_weights, *FAST)
    assert r.exit_code == 1
    assert "bad.png" in r.output and "Traceback" not in r.output
    assert (out / "a_deblurred.png").is_file()
    assert not list(out.glob(".*tmp*"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--samples", "0"], "--samples"),
        (["--roi", "1,2"], "--roi"),
        (["--weights", "nope"], "no shipped weights"),
        (["--kernel-size", "32"], "--kernel-size 32"),
        (["--method", "nosuch"], "unknown method"),
        (["--refiner", "nosuch"], "unknown refiner 'nosuch'"),
        (["--sampler", "nosuch"], "unknown sampler 'nosuch'"),
        (["--refine-steps", "-1"], "--refine-steps must be >= 0"),
        (["--kernel-uncertainty", "-0.1"], "--kernel-uncertainty must be >= 0"),
    ],
)
def test_bad_options_one_line_error(tiny_weights, photos, args, message):
    extra = [] if "--weights" in args else ["--weights", tiny_weights]
    r = run(photos / "a.png", "--out", photos / "o4", *extra, *FAST, *args)
    assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output


def test_corrupt_weights_named(photos):
    bad = photos / "broken.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    r = run(photos / "a.png", "--out", photos / "o5", "--weights", bad, *FAST)
    assert r.exit_code != 0 and "broken.safetensors" in r.output


def test_unguided_and_alternating_methods(tiny_weights, photos):
    r = run(photos / "a.png", "--out", photos / "o6", "--weights", tiny_weights, "--method", "unguided", *FAST)
    assert r.exit_code == 0, r.output
    rep = json.loads((photos / "o6" / "report.json").read_text())
    assert rep["a.png"]["settings"]["sampler"] == "unguided"


def test_downscaled_pass_doubles_kernel_canvas(tiny_weights, photos):
    out = photos / "o7"
    r = run(photos / "a.png", "--out", out, "--weights", tiny_weights, *FAST, "--downscale", "2")
    assert r.exit_code == 0, r.output
    k = np.load(out / "a_kernel.npy")
    assert k.shape == (32, 32) and abs(k.sum() - 1) < 1e-5
    assert json.loads((out / "report.json").read_text())["a.png"]["scale"] == 2


def test_alternating_method_through_deblur(photos):
    out = photos / "o8"
    r = run(photos / "a.png", "--out", out, "--method", "alternating", "--kernel-size", "15", "--device", "cpu")
    assert r.exit_code == 0, r.output
    k = np.load(out / "a_kernel.npy")
    assert k.shape == (15, 15) and abs(k.sum() - 1) < 1e-5
    assert json.loads((out / "report.json").read_text())["a.png"]["method"] == "alternating"


def test_discrepancy_option_reaches_the_pipeline_and_changes_the_kernel(tiny_weights, photos):
    plain, disc = photos / "plain", photos / "disc"
    # the test photo is noise-free: give the penalty a noise level to aim at; the sampled kernels only
    noisy = ["--sigma", "0.05", "--no-classical"]
    assert run(photos / "a.png", "--out", plain, "--weights", tiny_weights, *noisy, *FAST).exit_code == 0
    r = run(photos / "a.png", "--out", disc, "--weights", tiny_weights, "--discrepancy", "1", *noisy, *FAST)
    assert r.exit_code == 0, r.output
    assert json.loads((plain / "report.json").read_text())["a.png"]["settings"]["discrepancy"] is None
    assert json.loads((disc / "report.json").read_text())["a.png"]["settings"]["discrepancy"] == 1.0
    assert not np.array_equal(np.load(plain / "a_kernel.npy"), np.load(disc / "a_kernel.npy"))
    for value in ("nan", "-1"):
        bad = run(photos / "a.png", "--out", photos / "x", "--weights", tiny_weights, "--discrepancy", value, *FAST)
        assert bad.exit_code == 2 and "--discrepancy must be > 0" in bad.output
    assert not (photos / "x").exists() or not any((photos / "x").iterdir())


@pytest.mark.parametrize("refiner", ["reblur", "alternating"])
def test_refiner_option_reaches_the_report(tiny_weights, photos, refiner):
    out = photos / f"ref-{refiner}"
    r = run(photos / "a.png", "--out", out, "--weights", tiny_weights, *FAST, "--refiner", refiner)
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())["a.png"]
    assert rep["settings"]["refiner"] == refiner and rep["settings"]["refine_steps"] == 2
    k = np.load(out / "a_kernel.npy")
    assert abs(k.sum() - 1) < 1e-5 and k.min() >= 0


def test_default_refine_steps_recorded(tiny_weights, photos):
    out = photos / "ref-default"
    fast = [a for a in FAST if a not in ("--refine-steps", "2")]
    r = run(photos / "a.png", "--out", out, "--weights", tiny_weights, *fast, "--refiner", "reblur")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "report.json").read_text())["a.png"]["settings"]["refine_steps"] == 20


def test_classical_candidate_in_the_map_k_choice(tiny_weights, photos):
    out, off = photos / "cls", photos / "nocls"
    assert run(photos / "a.png", "--out", out, "--weights", tiny_weights, *FAST).exit_code == 0
    assert run(photos / "a.png", "--out", off, "--weights", tiny_weights, "--no-classical", *FAST).exit_code == 0
    on = json.loads((out / "report.json").read_text())["a.png"]
    no = json.loads((off / "report.json").read_text())["a.png"]
    assert no["kept"] == "sample" and no["classical_residual"] is None and no["settings"]["classical"] is False
    assert on["settings"]["classical"] is True and on["classical_residual"] > 0
    # the kept kernel is the candidate with the lowest reblur residual, and the report says which
    candidates = {"sample": min(on["residuals"]), "classical": on["classical_residual"]}
    assert on["kept"] == min(candidates, key=candidates.get)
    assert on["residual"] == pytest.approx(candidates[on["kept"]])
    # the sampled kernels themselves do not depend on the extra candidate
    assert on["residuals"] == pytest.approx(no["residuals"])
    if on["kept"] == "sample":
        assert np.array_equal(np.load(out / "a_kernel.npy"), np.load(off / "a_kernel.npy"))
    # the final deconvolution's noise level: the floor without the candidate, the disagreement with it
    assert no["agreement"] is None and no["final_sigma"] >= 0.03 - 1e-6
    assert 0 <= on["agreement"] <= 1
    assert on["final_sigma"] ** 2 >= 0.006 * (1 - on["agreement"]) - 1e-9


def test_final_sigma_grows_with_the_candidates_disagreement():
    from kdiff_cli.blind.final import final_sigma
    from kdiff_cli.blind.settings import BlindSettings

    s = BlindSettings()
    sigma = torch.tensor([0.01])
    assert float(final_sigma(sigma, None, s)) == pytest.approx(0.03)  # no second estimate: the floor
    assert float(final_sigma(torch.tensor([0.05]), None, s)) == pytest.approx(0.05)  # noisier than the floor
    assert float(final_sigma(sigma, 1.0, s)) == pytest.approx(0.01)  # agreeing candidates: the noise alone
    values = [float(final_sigma(sigma, a, s)) for a in (1.0, 0.9, 0.7, 0.3)]
    assert values == sorted(values) and values[-1] == pytest.approx((0.01**2 + 0.006 * 0.7) ** 0.5)
    assert float(final_sigma(sigma, 0.2, BlindSettings(kernel_uncertainty=0.0))) == pytest.approx(0.01)
    assert float(final_sigma(sigma, 0.2, BlindSettings(kernel_uncertainty=None))) == pytest.approx(0.03)


# --------------------------------------------------------------------------- --quality presets


def test_quality_presets_and_explicit_options_win():
    from kdiff_cli.blind.settings import QUALITY, BlindSettings, quality_options
    from kdiff_cli.cli import Quality
    from kdiff_cli.errors import KdiffError

    assert [q.value for q in Quality] == list(QUALITY) == ["fast", "default", "best"]
    # default: exactly the defaults of the settings (outputs unchanged when --quality is not given)
    d = BlindSettings()
    assert quality_options("default") == {"sampler": d.sampler, "steps": d.steps, "samples": d.samples, "refine_steps": d.refine_steps}
    assert quality_options("fast") == {"sampler": "ddim", "steps": 10, "samples": 1, "refine_steps": 5}
    assert quality_options("best") == {"sampler": "ddim", "steps": 50, "samples": 4, "refine_steps": None}
    # an option given explicitly overrides its field of the preset, the others stay
    assert quality_options("best", steps=7, sampler="ddpm") == {"sampler": "ddpm", "steps": 7, "samples": 4, "refine_steps": None}
    assert quality_options("fast", refine_steps=0, samples=2) == {"sampler": "ddim", "steps": 10, "samples": 2, "refine_steps": 0}
    with pytest.raises(KdiffError, match="--quality must be one of fast, default, best"):
        quality_options("ultra")


def test_quality_reaches_the_report_and_explicit_steps_win(tiny_weights, photos):
    out = photos / "q-fast"
    fast = [a for a in FAST if a not in ("--steps", "3")]  # steps from the preset, --refine-steps 2 given
    r = run(photos / "a.png", "--out", out, "--weights", tiny_weights, *fast, "--quality", "fast")
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())["a.png"]
    assert rep["quality"] == "fast"
    assert (rep["settings"]["steps"], rep["settings"]["refine_steps"], rep["settings"]["samples"]) == (10, 2, 1)
    bad = run(photos / "a.png", "--out", out, "--weights", tiny_weights, *FAST, "--quality", "ultra")
    assert bad.exit_code == 2 and "ultra" in bad.output


def test_default_quality_changes_nothing(tiny_weights, photos):
    plain, named = photos / "q-none", photos / "q-default"
    assert run(photos / "a.png", "--out", plain, "--weights", tiny_weights, *FAST).exit_code == 0
    assert run(photos / "a.png", "--out", named, "--weights", tiny_weights, *FAST, "--quality", "default").exit_code == 0
    assert (plain / "a_deblurred.png").read_bytes() == (named / "a_deblurred.png").read_bytes()
    assert np.array_equal(np.load(plain / "a_kernel.npy"), np.load(named / "a_kernel.npy"))
    a, b = (json.loads((d / "report.json").read_text())["a.png"] for d in (plain, named))
    assert a["quality"] == b["quality"] == "default" and a["settings"] == b["settings"]


def test_everyday_options_fit_one_screen(monkeypatch):
    """`kdiff deblur --help` at 80x24: usage and the everyday options before the research panel."""
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("TERMINAL_WIDTH", raising=False)
    r = runner.invoke(app, ["deblur", "--help"], terminal_width=80)
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    research = next(i for i, line in enumerate(lines) if "Research options" in line)
    assert research <= 24, "\n".join(lines[:research])
    everyday, rest = "\n".join(lines[:research]), "\n".join(lines[research:])

    def has(text, option):  # an option's own row (not a mention in another's help)
        return re.search(rf"^\S\s{{1,4}}(\*\s+)?{option}(?![-\w])", text, re.M) is not None

    for option in ("--out", "--kernel", "--method", "--solver", "--quality", "--seed"):
        assert has(everyday, option) and not has(rest, option), option
    for option in ("--sampler", "--steps", "--samples", "--refine-steps", "--guidance-scale", "--tile"):
        assert has(rest, option) and not has(everyday, option), option
    for command in ("eval", "train"):
        assert "Research options" in runner.invoke(app, [command, "--help"], terminal_width=80).output


# --------------------------------------------------------------------------- typed results and report.json


#: report.json entry fields and their one type each (docs/report-json.md); None: null allowed
REPORT_TYPES = {
    "input": (str,), "output": (str,), "kernel": (str,), "method": (str,), "quality": (str,), "settings": (dict,),
    "kernel_size": (list,), "residual": (float, None), "residuals": (list, None), "round_residuals": (list, None),
    "kept": (str, None), "classical_residual": (float, None), "agreement": (float, None),
    "final_sigma": (float, None), "roi": (list, None), "scale": (int, None), "seconds": (float,),
}


def _check_types(entry):
    assert list(entry) == list(REPORT_TYPES)
    for name, value in entry.items():
        kinds = REPORT_TYPES[name]
        assert (value is None and None in kinds) or isinstance(value, tuple(k for k in kinds if k is not None)), (name, value)
        assert not isinstance(value, bool) or name == "settings"


def test_report_fields_have_one_type_each(tiny_weights, photos):
    blind, alt = photos / "types-kd", photos / "types-alt"
    assert run(photos / "a.png", "--out", blind, "--weights", tiny_weights, *FAST).exit_code == 0
    r = run(photos / "a.png", "--out", alt, "--method", "alternating", "--kernel-size", "15", "--device", "cpu")
    assert r.exit_code == 0, r.output
    kd = json.loads((blind / "report.json").read_text())["a.png"]
    al = json.loads((alt / "report.json").read_text())["a.png"]
    for entry in (kd, al):
        _check_types(entry)
        assert isinstance(entry["residual"], float) and all(isinstance(v, float) for v in entry["residuals"])
    # alternating: the one candidate's residual, and the per-round curve apart (the two were swapped)
    assert al["residuals"] == [al["residual"]] and len(al["round_residuals"]) > 1
    assert kd["round_residuals"] is None and kd["scale"] == 1 and len(kd["roi"]) == 4


def test_report_json_doc_lists_every_field():
    from dataclasses import fields
    from pathlib import Path

    from kdiff_cli.apps.deblur_report import ReportEntry

    doc = (Path(__file__).parents[1] / "docs" / "report-json.md").read_text()
    assert [f.name for f in fields(ReportEntry)] == list(REPORT_TYPES)
    for name in REPORT_TYPES:
        assert f"| `{name}` |" in doc, f"{name} missing from docs/report-json.md"


def test_method_result_unpacks_and_carries_typed_fields(tiny_weights, photos):
    from kdiff_cli import plugins
    from kdiff_cli.blind.result import KernelEstimate, MethodResult

    y = files.to_tensor(files.read_image(photos / "a.png")[0])
    res = plugins.get("method", "kernel-diff").run(y, weights=str(tiny_weights), steps=2, refine_steps=1, downscale="1")
    assert isinstance(res, MethodResult) and isinstance(res, tuple) and len(res) == 3
    x, k, info = res
    assert x is res.x and k is res.k and info is res.info and x.shape == y.shape and k.shape == (1, 1, 16, 16)
    assert isinstance(res.estimate, KernelEstimate) and res.estimate.k is k
    assert res.residual == info["residual"] and res.residuals == info["residuals"] and res.settings == info["settings"]
    assert isinstance(res.final_sigma, float) and res.round_residuals is None
    # a third-party method may still return a plain tuple: typed fields are filled only with the right type
    plain = MethodResult.of((x, k, {"residual": [1.0, 2.0], "residuals": 3.0, "final_sigma": 0.1}))
    assert (plain.residual, plain.residuals, plain.final_sigma, plain.info["residual"]) == (None, None, 0.1, [1.0, 2.0])
    assert MethodResult.of(res) is res
