"""Kernel-Diff at photo scale end to end (tiny weights): the plan in the result, the kernel canvas,
--linear, determinism per seed."""

import torch

from kdiff_cli import plugins
from kdiff_cli.blind import scale
from kdiff_cli.maths import ops


def _photo(n: int = 320) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, n // 8, n // 8, generator=g), size=(n, n), mode="nearest")
    k = torch.zeros(1, 1, 9, 9)
    k[0, 0, 4, :] = 1 / 9
    return ops.conv2d(x, k).clamp(0, 1)


def test_photo_scale_plan_and_kernel(tiny_weights):
    y = _photo()
    method = plugins.get("method", "kernel-diff")
    opts = dict(weights=str(tiny_weights), steps=2, refine_steps=1, seed=3, fallback=False)  # the tiny prior: no fallback
    x, k, info = method.run(y, **opts)
    plan = info["plan"]
    assert plan["how"] == "coarse" and plan["coarse_factor"] == 1 and plan["factor"] == 1
    assert k.shape[-1] == plan["kernel_size"] == scale.odd_side(plan["extent"])
    assert abs(float(k.sum()) - 1) < 1e-5 and float(k.min()) >= 0 and x.shape == y.shape
    assert len(info["scores"]) == 2 and info["kept"] in ("sample", "classical")
    x2, k2, _ = method.run(y, **opts)
    assert torch.equal(x, x2) and torch.equal(k, k2)  # same seed, same result
    xl, _, info_l = method.run(y, linear=True, **opts)
    assert xl.shape == y.shape and float(xl.min()) >= 0 and float(xl.max()) <= 1 and not torch.equal(xl, x)
    assert info_l["settings"]["linear"] is True


def test_given_kernel_size_is_honoured(tiny_weights):
    y = _photo()
    _, k, info = plugins.get("method", "kernel-diff").run(y, weights=str(tiny_weights), steps=2, refine_steps=1, kernel_size=21)
    assert k.shape[-1] == 21 and info["plan"] == {"factor": 2, "kernel_size": 21, "how": "given", "coarse_factor": None, "extent": None, "streaks": None,
                                                             "coarse_scores": None, "spread": False, "coarse_extents": None}


def test_fallback_keeps_the_input_when_no_kernel_sharpens_it(tiny_weights):
    from kdiff_cli.maths import choice

    g = torch.Generator().manual_seed(2)
    sharp = torch.nn.functional.interpolate(torch.rand(1, 3, 40, 40, generator=g), size=(320, 320), mode="nearest")
    method = plugins.get("method", "kernel-diff")
    res = method.run(sharp, weights=str(tiny_weights), steps=2, refine_steps=1)
    x, k, info = res
    assert res.estimate.kept_input_reason == "no estimated kernel made it sharper than the input"
    assert info["kept"] == "none" and info["scores"][2] < 0.95 * min(info["scores"][:2])
    assert torch.equal(x, sharp) and torch.equal(k, choice.delta_like(k)) and isinstance(info["residual"], float)
    off = method.run(sharp, weights=str(tiny_weights), steps=2, refine_steps=1, fallback=False)
    assert off.info["kept"] in ("sample", "classical") and len(off.info["scores"]) == 2 and off.estimate.kept_input_reason is None


def _night_photo(k: torch.Tensor | None = None) -> torch.Tensor:
    """A dark 320 x 320 photo of six point lights, far beyond the sensor's range, blurred by ``k``
    (default: an 11 px zigzag streak) and encoded as a camera would: clipped streaks."""
    from kdiff_cli.maths import camera

    if k is None:
        k = torch.zeros(1, 1, 15, 15)
        for t, r in enumerate([4, 5, 6, 7, 8, 9, 8, 7, 6, 7, 8]):
            k[0, 0, r, 2 + t] = 1.0
    k = ops.normalize_kernel(k)
    x = torch.full((1, 3, 320, 320), 0.003, dtype=torch.float64)
    for i in range(6):
        x[..., 40 + 45 * i, 60 + 40 * (i % 4)] = 50.0
    return camera.to_encoded(ops.conv2d(x, k.double()).clamp(0, 1)).float()


def test_agreeing_light_streaks_give_the_kernel(tiny_weights):
    y = _night_photo()
    _, k_est, info = plugins.get("method", "kernel-diff").run(y, weights=str(tiny_weights), steps=2, refine_steps=1)
    assert info["plan"]["streaks"] >= 3 and len(info["scores"]) == 3  # a candidate of the choice, not trusted blindly
    assert 9 <= info["plan"]["extent"] <= 13  # the streaks' 11 px path


def test_light_streaks_raise_the_noise_floor_and_the_final_solver_decides_the_fallback(tiny_weights):
    """A photo whose lights agreed on a streak: the scores and the final image regularise for noise
    >= lights_sigma, and the input is kept unless the final solver's score of the kernel beats the
    delta's by choice.LIGHTS_MARGIN; lights_sigma=0 is the previous release (noise floor 0.01, the
    wiener fallback)."""
    from kdiff_cli.maths import choice

    y = _night_photo()
    method = plugins.get("method", "kernel-diff")
    opts = dict(weights=str(tiny_weights), steps=2, refine_steps=1)
    info = method.run(y, **opts).info
    assert info["plan"]["streaks"] >= 3 and abs(info["final_sigma"] - 0.03) < 1e-6
    kernel, delta = info["fallback_scores"]
    assert (info["kept"] == "none") == (not delta > (1 + choice.LIGHTS_MARGIN) * kernel)
    off = method.run(y, lights_sigma=0.0, **opts).info
    assert off["fallback_scores"] is None and len(off["scores"]) == 3 and abs(off["final_sigma"] - 0.01) < 1e-6
    assert (off["kept"] == "none") == (off["scores"][2] < (1 - choice.FALLBACK_MARGIN) * min(off["scores"][:2]))
    assert off["scores"] != info["scores"]  # the floor changed what the scores regularise with


def test_light_streaks_kernel_kept_when_the_final_solver_prefers_it(tiny_weights, monkeypatch):
    """With no margin to clear (monkeypatched) the streak photo is deblurred, at the lights floor."""
    from kdiff_cli.maths import choice

    monkeypatch.setattr(choice, "LIGHTS_MARGIN", -0.5)
    k = torch.zeros(1, 1, 15, 15)
    k[0, 0, 7, 2:13] = 1.0  # a straight 11 px streak
    y = _night_photo(k)
    res = plugins.get("method", "kernel-diff").run(y, weights=str(tiny_weights), steps=2, refine_steps=1)
    assert res.info["plan"]["streaks"] >= 3 and res.info["kept"] in ("sample", "classical")
    assert abs(res.info["final_sigma"] - 0.03) < 1e-6 and not torch.equal(res.x, y)


def test_no_streaks_no_lights_floor():
    from kdiff_cli.blind.estimator import lights_floor
    from kdiff_cli.blind.settings import BlindSettings

    assert lights_floor(None, BlindSettings()) == 0.0
    assert lights_floor(4, BlindSettings()) == 0.03
    assert lights_floor(4, BlindSettings(lights_sigma=0.0)) == 0.0


def test_crop_scale_classical_candidate_runs_beside_stage_one(tiny_weights):
    """The crop path runs the classical estimate on a worker thread: the result is the sequential
    one's (per seed), every stage still reports, and the torch thread count is restored."""
    from kdiff_cli.blind import estimator
    from kdiff_cli.maths import alternating

    y = _photo(96)
    model, schedule = estimator.load_kernel_model(str(tiny_weights), torch.device("cpu"))
    solver = plugins.get("solver", "wiener")()
    settings = estimator.BlindSettings(steps=2, refine_steps=1, seed=3, fallback=False)
    n = torch.get_num_threads()
    stages = []
    est = estimator._estimate_at(y, model, schedule, solver, settings, 1, lambda st, i, total, info: stages.append(st))
    assert torch.get_num_threads() == n and {"sampling", "refining", "classical"} <= set(stages)
    assert est.kept in ("sample", "classical") and len(est.scores) == 2
    # the same choice made sequentially from the classical kernel of the same window
    x0, y0, w, h = est.roi
    win = y[..., y0 : y0 + h, x0 : x0 + w]
    k_c = alternating.estimate_kernel(win, alternating.AlternatingSettings(kernel_size=model.kernel_size)).k
    again = estimator._sample_and_refine(win, model, schedule, solver, settings, 1, est.roi, None)
    estimator._weigh_classical(again, win, solver, settings, k_c)
    assert torch.equal(again.k, est.k) and again.scores == est.scores and again.kept == est.kept


def test_no_blur_found_when_every_coarse_kernel_spreads_over_its_canvas(tiny_weights, monkeypatch):
    """Coarse passes returning blobs that fill their canvases: the input is kept without Stage I
    (the plan says ``spread``); ``--no-fallback`` still estimates."""
    from kdiff_cli.blind import estimator

    y = _photo(400)  # short side 400: coarse passes at factors 1 and 2
    seen = []

    def blob(ys, side, callback=None, roi=None, stage="coarse pass"):
        seen.append(side)
        return torch.full((1, 1, side, side), 1.0 / side**2)

    monkeypatch.setattr(scale, "coarse_pass", blob)
    method = plugins.get("method", "kernel-diff")
    stages = []
    res = method.run(y, weights=str(tiny_weights), steps=2, refine_steps=1, callback=lambda st, *a: stages.append(st))
    x, k, info = res
    assert "found no blur" in res.estimate.kept_input_reason  # kdiff deblur says why the output equals the input
    assert len(seen) == 2 and scale.COARSE_CANVAS in seen and info["plan"]["spread"] is True  # factors 1 and 2
    assert info["kept"] == "none" and torch.equal(x, y) and float(k.max()) == 1.0 and k.shape[-1] == info["plan"]["kernel_size"]
    assert "sampling" not in stages and isinstance(info["residual"], float)
    _, _, off = method.run(y, weights=str(tiny_weights), steps=2, refine_steps=1, fallback=False)
    assert off["plan"]["spread"] is True and off["kept"] in ("sample", "classical")
    # one coarse scale: a filled canvas may be a blur as large as the canvas, so it is estimated
    _, _, one = method.run(y, weights=str(tiny_weights), steps=2, refine_steps=1, coarse_scales=1)
    assert one["plan"]["spread"] is False and one["plan"]["coarse_scores"] is None


def test_full_guidance_differentiates_the_solver_itself(tiny_weights, monkeypatch):
    """--full-guidance: Stage I's guidance uses the solver, not its cheaper ``for_guidance`` copy."""
    from kdiff_cli.solvers import load_solver

    WienerSolver = type(load_solver("wiener", device="cpu"))  # the class the registry loads
    calls = []
    original = WienerSolver.for_guidance
    monkeypatch.setattr(WienerSolver, "for_guidance", lambda self: calls.append(1) or original(self))
    y = _photo(96)
    method = plugins.get("method", "kernel-diff")
    opts = dict(weights=str(tiny_weights), steps=2, refine_steps=0, classical=False, fallback=False, seed=1)
    fast = method.run(y, **opts)
    n = len(calls)
    assert n >= 1  # once per estimation pass
    full = method.run(y, fast_guidance=False, **opts)
    assert len(calls) == n, "the full guidance must not ask for the cheaper copy"
    assert full.info["settings"]["fast_guidance"] is False and fast.info["settings"]["fast_guidance"] is True
    assert not torch.equal(fast.k, full.k)  # 3 against 12 boundary CG steps: another guidance gradient
