"""kdiff_cli.blind.settings: validation with one-line errors, the settings written to report.json,
the --quality presets (and explicit options over them); --roi parsing."""

import pytest

from kdiff_cli.blind.settings import QUALITY, BlindSettings, quality_options, settings_dict
from kdiff_cli.blind.window import parse_roi
from kdiff_cli.cli_deblur import Quality
from kdiff_cli.errors import KdiffError


def test_settings_and_roi_validation():
    with pytest.raises(KdiffError):
        BlindSettings(samples=0).validate()
    with pytest.raises(KdiffError):
        BlindSettings(route="x").validate()
    # `kdiff eval --method kernel-diff:downscale=1` passes a number
    assert BlindSettings(downscale=1).downscale == "1"
    BlindSettings(downscale=2).validate()
    with pytest.raises(KdiffError, match="--downscale"):
        BlindSettings(downscale=17).validate()
    with pytest.raises(KdiffError, match="classical must be true or false"):
        BlindSettings(classical="maybe").validate()
    # out-of-range values are refused, never replaced silently
    with pytest.raises(KdiffError, match="--steps must be >= 1, got 0"):
        BlindSettings(steps=0).validate()
    with pytest.raises(KdiffError, match="--tile must be >= 1, got 0"):
        BlindSettings(tile=0).validate()
    for bad in (-0.1, 1.0):
        with pytest.raises(KdiffError, match="--kernel-threshold must be in"):
            BlindSettings(kernel_threshold=bad).validate()
    for bad in (-0.01, 1.5, float("nan")):
        with pytest.raises(KdiffError, match="--lights-sigma must be in"):
            BlindSettings(lights_sigma=bad).validate()
    # the guidance solver: the cheaper copy, except for the paper's pipeline (reblur Stage II); given, it wins
    assert BlindSettings().effective_fast_guidance() and not BlindSettings(refiner="reblur").effective_fast_guidance()
    assert BlindSettings(refiner="reblur", fast_guidance=True).effective_fast_guidance()
    assert not BlindSettings(fast_guidance=False).effective_fast_guidance()
    assert settings_dict(BlindSettings(refiner="reblur"))["fast_guidance"] is False
    with pytest.raises(KdiffError, match="fast_guidance must be true or false"):
        BlindSettings(fast_guidance="sometimes").validate()
    with pytest.raises(KdiffError, match="kernel-threshold must be a number"):
        BlindSettings(kernel_threshold="x").validate()
    with pytest.raises(KdiffError, match="--coarse-scales must be >= 1, got 0"):
        BlindSettings(coarse_scales=0).validate()
    assert BlindSettings(steps=7).effective_steps() == 7 and BlindSettings().effective_steps() == 25
    # options of `kdiff eval --method kernel-diff:...` arrive untyped: one-line errors, not TypeErrors
    for field, value, message in [("kernel_uncertainty", "abc", "kernel-uncertainty must be a number"),
                                  ("final_sigma_floor", "x", "final-sigma-floor must be a number"),
                                  ("steps", 2.5, "--steps must be an integer"), ("samples", True, "samples must be"),
                                  ("guidance_scale", float("nan"), "--guidance-scale must be >= 0"),
                                  ("final_sigma_floor", float("nan"), "--final-sigma-floor must be >= 0"),
                                  ("sigma", "0.1", "sigma must be a number")]:
        with pytest.raises(KdiffError, match=message):
            BlindSettings(**{field: value}).validate()
    BlindSettings(kernel_uncertainty=None, sigma=0.02, steps=10, guidance_scale=3).validate()  # None where allowed, ints as floats
    assert parse_roi("1,2,300,400") == (1, 2, 300, 400)
    with pytest.raises(KdiffError, match="--roi"):
        parse_roi("1,2,3")


@pytest.mark.parametrize(
    "opts, steps, refine_steps",
    [({}, 25, 10), ({"sampler": "ddpm", "refiner": "reblur"}, 1000, 50), ({"steps": 7, "refine_steps": 0}, 7, 0)],
)
def test_reported_settings_name_the_step_counts_run(opts, steps, refine_steps):
    d = settings_dict(BlindSettings(**opts))
    assert (d["steps"], d["refine_steps"]) == (steps, refine_steps)


def test_quality_presets_and_explicit_options_win():
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


def test_the_guidance_loss_follows_the_refiner_unless_given():
    """``auto``: the latent loss for the paper's pipeline (``reblur`` Stage II), the paper's reblur
    loss for the default (``alternating``); a given loss wins; reports name the loss used."""
    assert BlindSettings().effective_guidance_loss() == "reblur"
    assert BlindSettings(refiner="reblur").effective_guidance_loss() == "latent"
    assert BlindSettings(refiner="reblur", guidance_loss="reblur").effective_guidance_loss() == "reblur"
    assert BlindSettings(guidance_loss="latent").effective_guidance_loss() == "latent"
    assert settings_dict(BlindSettings(refiner="reblur"))["guidance_loss"] == "latent"
    with pytest.raises(KdiffError, match="--guidance-loss must be one of auto, reblur, latent, got 'phase'"):
        BlindSettings(guidance_loss="phase").validate()
    # the discrepancy penalty is defined on the reblur residual of y only
    BlindSettings(refiner="reblur", guidance_loss="reblur", discrepancy=1.0).validate()
    with pytest.raises(KdiffError, match="--discrepancy applies to --guidance-loss reblur only"):
        BlindSettings(refiner="reblur", discrepancy=1.0).validate()
