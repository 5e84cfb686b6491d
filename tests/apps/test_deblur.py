"""`kdiff deblur` blind path end to end with a tiny kernel-diff weights file (no shipped weights needed);
report.json's fields (the blind settings, final step and typed results: blind/; `--kernel`:
test_deblur_known_kernel.py; the help screen: face/test_help.py)."""

import json

import numpy as np
import pytest

from kdiff_cli import files

@pytest.fixture
def run(cli):
    """``run(*args)``: ``kdiff deblur ARGS``."""
    return lambda *args: cli("deblur", *args)


FAST = ["--steps", "3", "--refine-steps", "2", "--solver", "wiener", "--device", "cpu", "--downscale", "1"]


def test_blind_outputs_depth_and_report(run, tiny_weights, photos):
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


def test_same_seed_same_output_and_glob(run, tiny_weights, photos):
    o1, o2 = photos / "o1", photos / "o2"
    assert run(str(photos / "a.*"), "--out", o1, "--weights", tiny_weights, "--seed", "5", *FAST).exit_code == 0
    assert run(photos / "a.png", "--out", o2, "--weights", tiny_weights, "--seed", "5", *FAST).exit_code == 0
    assert (o1 / "a_deblurred.png").read_bytes() == (o2 / "a_deblurred.png").read_bytes()
    assert np.array_equal(np.load(o1 / "a_kernel.npy"), np.load(o2 / "a_kernel.npy"))


def test_bad_file_skipped_exit_1(run, tiny_weights, photos):
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
        (["--kernel-size", "2"], "--kernel-size must be >= 3"),
        (["--choice", "nosuch"], "--choice must be sparsity or reblur"),
        (["--downscale", "x"], "--downscale must be auto or an integer"),
        (["--method", "nosuch"], "unknown method"),
        (["--refiner", "nosuch"], "unknown refiner 'nosuch'"),
        (["--sampler", "nosuch"], "unknown sampler 'nosuch'"),
        (["--refine-steps", "-1"], "--refine-steps must be >= 0"),
        (["--kernel-uncertainty", "-0.1"], "--kernel-uncertainty must be >= 0"),
        (["--final-solver", "nosuch"], "unknown solver 'nosuch'"),
        (["--coarse-scales", "0"], "--coarse-scales must be >= 1, got 0"),
        (["--guidance-loss", "phase"], "--guidance-loss must be one of auto, reblur, latent"),
        (["--refiner", "reblur", "--discrepancy", "1"], "--discrepancy applies to --guidance-loss reblur only"),
        (["--final-solver", "hqs", "--method", "alternating"], "--final-solver applies to --method kernel-diff and unguided"),
    ],
)
def test_bad_options_one_line_error(run, tiny_weights, photos, args, message):
    extra = [] if "--weights" in args else ["--weights", tiny_weights]
    r = run(photos / "a.png", "--out", photos / "o4", *extra, *FAST, *args)
    assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output


def test_corrupt_weights_named(run, photos):
    bad = photos / "broken.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    r = run(photos / "a.png", "--out", photos / "o5", "--weights", bad, *FAST)
    assert r.exit_code != 0 and "broken.safetensors" in r.output


def test_unguided_and_alternating_methods(run, tiny_weights, photos):
    r = run(photos / "a.png", "--out", photos / "o6", "--weights", tiny_weights, "--method", "unguided", *FAST)
    assert r.exit_code == 0, r.output
    rep = json.loads((photos / "o6" / "report.json").read_text())
    assert rep["a.png"]["settings"]["guidance"] is False  # the chosen sampler, without the reblur guidance
    # the same kernel as the unguided sampler (DDIM without guidance) gives
    r = run(photos / "a.png", "--out", photos / "o6b", "--weights", tiny_weights, "--sampler", "unguided", *FAST)
    assert r.exit_code == 0, r.output
    assert np.array_equal(np.load(photos / "o6" / "a_kernel.npy"), np.load(photos / "o6b" / "a_kernel.npy"))


def test_downscaled_pass_doubles_kernel_canvas(run, tiny_weights, photos):
    out = photos / "o7"
    r = run(photos / "a.png", "--out", out, "--weights", tiny_weights, *FAST, "--downscale", "2")
    assert r.exit_code == 0, r.output
    k = np.load(out / "a_kernel.npy")
    assert k.shape == (32, 32) and abs(k.sum() - 1) < 1e-5
    assert json.loads((out / "report.json").read_text())["a.png"]["scale"] == 2


def test_alternating_method_through_deblur(run, photos):
    out = photos / "o8"
    r = run(photos / "a.png", "--out", out, "--method", "alternating", "--kernel-size", "15", "--device", "cpu")
    assert r.exit_code == 0, r.output
    k = np.load(out / "a_kernel.npy")
    assert k.shape == (15, 15) and abs(k.sum() - 1) < 1e-5
    assert json.loads((out / "report.json").read_text())["a.png"]["method"] == "alternating"


def test_discrepancy_option_reaches_the_pipeline_and_changes_the_kernel(run, tiny_weights, photos):
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
def test_refiner_option_reaches_the_report(run, tiny_weights, photos, refiner):
    out = photos / f"ref-{refiner}"
    r = run(photos / "a.png", "--out", out, "--weights", tiny_weights, *FAST, "--refiner", refiner)
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())["a.png"]
    assert rep["settings"]["refiner"] == refiner and rep["settings"]["refine_steps"] == 2
    # --guidance-loss auto: the latent loss for the paper's pipeline, the paper's loss for the default
    assert rep["settings"]["guidance_loss"] == {"reblur": "latent", "alternating": "reblur"}[refiner]
    k = np.load(out / "a_kernel.npy")
    assert abs(k.sum() - 1) < 1e-5 and k.min() >= 0


def test_default_refine_steps_recorded(run, tiny_weights, photos):
    out = photos / "ref-default"
    fast = [a for a in FAST if a not in ("--refine-steps", "2")]
    r = run(photos / "a.png", "--out", out, "--weights", tiny_weights, *fast, "--refiner", "reblur")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "report.json").read_text())["a.png"]["settings"]["refine_steps"] == 50


def test_classical_candidate_in_the_map_k_choice(run, tiny_weights, photos):
    out, off = photos / "cls", photos / "nocls"
    assert run(photos / "a.png", "--out", out, "--weights", tiny_weights, "--choice", "reblur", *FAST).exit_code == 0
    assert run(photos / "a.png", "--out", off, "--weights", tiny_weights, "--no-classical", "--choice", "reblur", *FAST).exit_code == 0
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


def test_sparsity_choice_keeps_the_lowest_score(run, tiny_weights, photos):
    """The default --choice sparsity: the kept candidate has the lowest normalized sparsity of F(y, k)
    (sample, classical, and the delta of the fallback); the residual rule no longer decides."""
    out = photos / "sp"
    assert run(photos / "a.png", "--out", out, "--weights", tiny_weights, *FAST).exit_code == 0
    entry = json.loads((out / "report.json").read_text())["a.png"]
    scores = entry["scores"]
    assert len(scores) == 3
    if scores[2] < 0.95 * min(scores[:2]):  # the fallback's margin
        assert entry["kept"] == "none"
    else:
        assert entry["kept"] == ["sample", "classical"][int(np.argmin(scores[:2]))]
    assert entry["settings"]["choice"] == "sparsity" and entry["settings"]["fallback"] is True


# --------------------------------------------------------------------------- --quality presets


def test_quality_reaches_the_report_and_explicit_steps_win(run, tiny_weights, photos):
    out = photos / "q-fast"
    fast = [a for a in FAST if a not in ("--steps", "3")]  # steps from the preset, --refine-steps 2 given
    r = run(photos / "a.png", "--out", out, "--weights", tiny_weights, *fast, "--quality", "fast")
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())["a.png"]
    assert rep["quality"] == "fast"
    assert (rep["settings"]["steps"], rep["settings"]["refine_steps"], rep["settings"]["samples"]) == (10, 2, 1)
    bad = run(photos / "a.png", "--out", out, "--weights", tiny_weights, *FAST, "--quality", "ultra")
    assert bad.exit_code == 2 and "ultra" in bad.output


def test_default_quality_changes_nothing(run, tiny_weights, photos):
    plain, named = photos / "q-none", photos / "q-default"
    assert run(photos / "a.png", "--out", plain, "--weights", tiny_weights, *FAST).exit_code == 0
    assert run(photos / "a.png", "--out", named, "--weights", tiny_weights, *FAST, "--quality", "default").exit_code == 0
    assert (plain / "a_deblurred.png").read_bytes() == (named / "a_deblurred.png").read_bytes()
    assert np.array_equal(np.load(plain / "a_kernel.npy"), np.load(named / "a_kernel.npy"))
    a, b = (json.loads((d / "report.json").read_text())["a.png"] for d in (plain, named))
    assert a["quality"] == b["quality"] == "default" and a["settings"] == b["settings"]


# --------------------------------------------------------------------------- typed results and report.json


#: report.json entry fields and their one type each (docs/report-json.md); None: null allowed
REPORT_TYPES = {
    "input": (str,), "output": (str,), "kernel": (str,), "method": (str,), "quality": (str,), "settings": (dict,),
    "kernel_size": (list,), "residual": (float, None), "residuals": (list, None), "round_residuals": (list, None),
    "kept": (str, None), "classical_residual": (float, None), "agreement": (float, None),
    "final_sigma": (float, None), "roi": (list, None), "scale": (int, None), "plan": (dict, None), "scores": (list, None), "fallback_scores": (list, None), "polish": (dict, None), "seconds": (float,), "warnings": (list,),
}


def _check_types(entry):
    assert list(entry) == list(REPORT_TYPES)
    for name, value in entry.items():
        kinds = REPORT_TYPES[name]
        assert (value is None and None in kinds) or isinstance(value, tuple(k for k in kinds if k is not None)), (name, value)
        assert not isinstance(value, bool) or name == "settings"


def test_report_fields_have_one_type_each(run, tiny_weights, photos):
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
    assert kd["plan"]["how"] == "given" and kd["plan"]["factor"] == 1  # FAST passes --downscale 1
    assert len(kd["scores"]) == 3 and all(isinstance(v, float) for v in kd["scores"])


def test_report_json_doc_lists_every_field(repo_root):
    from dataclasses import fields

    from kdiff_cli.apps.deblur_report import ReportEntry

    doc = (repo_root / "docs" / "report-json.md").read_text()
    assert [f.name for f in fields(ReportEntry)] == list(REPORT_TYPES)
    for name in REPORT_TYPES:
        assert f"| `{name}` |" in doc, f"{name} missing from docs/report-json.md"


def test_final_solver_changes_only_the_final_image(run, tiny_weights, photos):
    common = [photos / "a.png", "--weights", tiny_weights, "--seed", "2", "--no-fallback", *FAST]
    assert run(*common, "--out", photos / "w").exit_code == 0
    r = run(*common, "--out", photos / "h", "--final-solver", "hqs")
    assert r.exit_code == 0, r.output
    assert np.array_equal(np.load(photos / "w" / "a_kernel.npy"), np.load(photos / "h" / "a_kernel.npy"))
    xw, _ = files.read_image(photos / "w" / "a_deblurred.png")
    xh, _ = files.read_image(photos / "h" / "a_deblurred.png")
    assert np.abs(xw - xh).max() > 1e-3
    rep = json.loads((photos / "h" / "report.json").read_text())["a.png"]
    assert rep["settings"]["final_solver"] == "hqs" and rep["settings"]["solver"] == "wiener"


def test_no_blur_found_writes_the_input_and_says_why(run, tiny_weights, tmp_path, monkeypatch):
    """A photo whose coarse passes find no blur (kernels spread over the canvas at both scales):
    exit 0, the input written unchanged, one warning line, and the reason in report.json."""
    import torch

    from kdiff_cli import files
    from kdiff_cli.blind import scale

    g = np.random.default_rng(3)
    img = np.kron(g.random((50, 50, 3)), np.ones((8, 8, 1)))[:400, :400].astype(np.float32)
    files.write_image(tmp_path / "p.png", img, 16)
    monkeypatch.setattr(scale, "coarse_pass", lambda ys, side, *a, **kw: torch.full((1, 1, side, side), 1.0 / side**2))
    out = tmp_path / "o"
    r = run(tmp_path / "p.png", "--out", out, "--weights", tiny_weights, "--steps", "2", "--refine-steps", "1", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert f"warning: {tmp_path / 'p.png'}: the coarse passes found no blur" in r.output and "--no-fallback" in r.output
    entry = json.loads((out / "report.json").read_text())["p.png"]
    assert entry["kept"] == "none" and entry["plan"]["spread"] is True and any("no blur" in w for w in entry["warnings"])
    assert np.abs(files.read_image(out / "p_deblurred.png")[0] - files.read_image(tmp_path / "p.png")[0]).max() <= 1
