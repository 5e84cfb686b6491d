"""Shared fixtures: CPU-only, one thread, deterministic.

The test folders mirror the package's layers: ``face/`` (the command line itself), ``apps/``,
``blind/``, ``maths/``, ``foundation/`` and ``plugins/``; ``test_layering.py`` and ``test_cuda.py``
stay at the top. Test modules never import each other: what several of them use lives here, as
fixtures (helpers that take arguments are fixtures that return the helper). Every fixture builds
its data from fixed seeds, exactly as the test modules did before they shared it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

os.environ.setdefault("KDIFF_PROGRESS", "0")
torch.set_num_threads(1)
if "KDIFF_CACHE_DIR" not in os.environ:  # caches (the lookup sampler's kernel bank) never touch the user's
    import tempfile

    os.environ["KDIFF_CACHE_DIR"] = tempfile.mkdtemp(prefix="kdiff-test-cache-")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def device():
    """Tests always run on the CPU (CI has no GPU)."""
    return torch.device("cpu")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository checkout (docs/, configs/ and shared/ are found from here)."""
    return ROOT


# --------------------------------------------------------------------------- the command line


@pytest.fixture
def cli():
    """Run ``kdiff`` in-process: ``cli("deblur", path, "--out", out)`` returns click's ``Result``
    (``exit_code``, ``output``). Arguments are turned into strings, so paths may be passed as they
    are; keyword arguments go to ``CliRunner.invoke`` (``terminal_width=80``, for one)."""
    from typer.testing import CliRunner

    from kdiff_cli.cli import app

    runner = CliRunner()

    def invoke(*args, **kwargs):
        return runner.invoke(app, [str(a) for a in args], **kwargs)

    return invoke


# --------------------------------------------------------------------------- the tiny kernel-diff U-Net

#: a kernel-diff U-Net small enough for the CPU: two levels on each side, no attention
TINY_UNET = dict(
    model_channels=8, channel_mult=(1, 2), image_model_channels=8, image_channel_mult=(1, 2),
    image_res_blocks=(0, 1), attention_resolutions=(), num_heads=1, norm_groups=4,
)


def _tiny_unet(kernel_size: int = 16, **overrides):
    from kdiff_cli.maths.unet import KernelUNet

    torch.manual_seed(0)
    return KernelUNet(kernel_size=kernel_size, **{**TINY_UNET, **overrides})


def _save_tiny_weights(path: Path, kernel_size: int = 16) -> Path:
    from kdiff_cli import weights
    from kdiff_cli.maths.schedule import NoiseSchedule

    model = _tiny_unet(kernel_size)
    meta = {"task": "kernel-diff", "unet": model.config, "schedule": NoiseSchedule().to_dict()}
    return weights.save(path, model.state_dict(), meta)


@pytest.fixture(scope="session")
def tiny_unet():
    """Factory ``tiny_unet(kernel_size=16, **overrides)``: the tiny U-Net, untrained, built right
    after ``torch.manual_seed(0)`` (so always the same weights); in training mode, as built."""
    return _tiny_unet


@pytest.fixture(scope="session")
def save_tiny_weights():
    """Factory ``save_tiny_weights(path, kernel_size=16) -> path``: the untrained tiny U-Net as a
    kernel-diff weights file (what ``--weights`` takes)."""
    return _save_tiny_weights


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A kernel-diff weights file of the tiny U-Net for 16 x 16 kernels (no shipped weights needed)."""
    return _save_tiny_weights(tmp_path_factory.mktemp("w") / "tiny.safetensors")


# --------------------------------------------------------------------------- tiny images


@pytest.fixture
def photos(tmp_path) -> Path:
    """A folder of tiny photos: ``a.png`` (16-bit) and ``b.jpg`` (8-bit), the same 80 x 72 RGB
    picture of 8-pixel blocks, and ``bad.png`` (not an image)."""
    from kdiff_cli import files

    g = np.random.default_rng(0)
    base = g.random((12, 12, 3)).astype(np.float32)
    img = np.kron(base, np.ones((8, 8, 1), np.float32))[:80, :72]
    files.write_image(tmp_path / "a.png", img, 16)
    files.write_image(tmp_path / "b.jpg", img, 8)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    return tmp_path


def _smooth_texture(rng: np.random.Generator, h: int = 321, w: int = 481) -> np.ndarray:
    import cv2

    a = rng.random((h // 8 + 1, w // 8 + 1, 3))
    return np.clip(cv2.resize(a, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1)


def _jpeg_bytes(a: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", (a[..., ::-1] * 255).round().astype(np.uint8))
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="session")
def smooth_texture():
    """Function ``smooth_texture(rng, h=321, w=481)``: a smooth random-texture RGB image in [0, 1],
    float64 (h, w, 3): what a natural photo looks like to a blur."""
    return _smooth_texture


@pytest.fixture(scope="session")
def jpeg_bytes():
    """Function ``jpeg_bytes(rgb)``: an RGB image in [0, 1] encoded as JPEG bytes."""
    return _jpeg_bytes


@pytest.fixture(scope="session")
def fake_bsd(tmp_path_factory) -> Path:
    """A stand-in for BSD100 with the real layout: the first six BSD100 ids as 321 x 481 /
    481 x 321 (alternating) random-texture JPEGs in one flat folder. Read-only."""
    from kdiff_plugins import ds_bsd100

    root = tmp_path_factory.mktemp("bsd")
    rng = np.random.default_rng(0)
    for n, i in enumerate(ds_bsd100.BSD100_IDS[:6]):
        (root / f"{i}.jpg").write_bytes(_jpeg_bytes(_smooth_texture(rng, *((321, 481) if n % 2 == 0 else (481, 321)))))
    return root


@pytest.fixture(scope="session")
def line_kernel():
    """Function ``line_kernel(size=32, length=13, horizontal=True)``: a centred straight line
    (horizontal or vertical) of ``length`` pixels on a ``size`` x ``size`` canvas, (1, 1, S, S), sum 1."""

    def make(size: int = 32, length: int = 13, horizontal: bool = True) -> torch.Tensor:
        k = torch.zeros(1, 1, size, size)
        c = size // 2
        if horizontal:
            k[..., c, c - length // 2 : c + length // 2 + 1] = 1
        else:
            k[..., c - length // 2 : c + length // 2 + 1, c] = 1
        return k / k.sum()

    return make


@pytest.fixture(scope="session")
def smooth_image():
    """Function ``smooth_image(H=32, W=32, C=3, seed=0)``: (1, C, H, W) uniform noise at a quarter
    of the size, bilinearly upsampled (a smooth texture with detail at every scale a small kernel sees)."""

    def make(H: int = 32, W: int = 32, C: int = 3, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(1, C, H // 4, W // 4, generator=g)
        return torch.nn.functional.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)

    return make


# --------------------------------------------------------------------------- kernels for the diffusion maths


@pytest.fixture(scope="session")
def random_kernels():
    """Function ``random_kernels(B, S, seed=0, dtype=float64)``: sparse-ish nonnegative kernels
    (B, 1, S, S) summing to 1 (a few bright pixels over zeros, the first row exactly 0)."""
    from kdiff_cli.maths import ops

    def make(B: int, S: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        k = torch.rand(B, 1, S, S, generator=g, dtype=dtype) ** 8
        k[..., 0, :] = 0  # some exact zeros (background)
        return ops.normalize_kernel(k)

    return make


# --------------------------------------------------------------------------- the classical blind problem


def _shapes_scene(rng: np.random.Generator, size: int = 96, shapes: int = 30) -> torch.Tensor:
    x = np.full((size, size), 0.5)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(shapes):
        v = rng.uniform(0, 1)
        if rng.random() < 0.5:
            r0, c0 = rng.integers(0, size, 2)
            h, w = rng.integers(6, 30, 2)
            x[r0 : r0 + h, c0 : c0 + w] = v
        else:
            r0, c0 = rng.uniform(0, size, 2)
            x[(yy - r0) ** 2 + (xx - c0) ** 2 < rng.uniform(4, 14) ** 2] = v
    return torch.from_numpy(x)[None, None]


def _linear_motion_kernel(size: int = 15) -> torch.Tensor:
    from kdiff_cli import plugins

    gen = plugins.get("generator", "linear")
    k = gen.sample(np.random.default_rng(0), 1, size, length_min=11, length_max=11, angle=30.0)[0]
    return torch.from_numpy(k)[None, None]


def _gaussian_kernel(size: int, s: float) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-0.5 * r**2 / s**2)
    return (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]


@pytest.fixture(scope="session")
def shapes_scene():
    """Function ``shapes_scene(rng, size=96, shapes=30)``: a piecewise-constant test image
    (rectangles and disks), (1, 1, size, size) float64."""
    return _shapes_scene


@pytest.fixture(scope="session")
def linear_motion_kernel():
    """Function ``linear_motion_kernel(size=15)``: a linear motion kernel of 11 px at 30 degrees,
    (1, 1, size, size) float64, from the ``linear`` generator."""
    return _linear_motion_kernel


@pytest.fixture(scope="session")
def hook_kernel() -> torch.Tensor:
    """An asymmetric 15 x 15 kernel (a ramp and a hook), float32, centred, sum 1: its 180-degree
    rotation is a different kernel with the same Fourier magnitude (the phase tests of the
    guidance losses)."""
    from kdiff_cli.maths import ops

    k = torch.zeros(1, 1, 15, 15)
    k[0, 0, 7, 3:11] = torch.arange(1.0, 9.0)  # a ramp ...
    k[0, 0, 8:13, 10] = 8.0  # ... and a hook: no symmetry
    return ops.center_kernel(ops.normalize_kernel(k))


@pytest.fixture(scope="session")
def gaussian_kernel():
    """Function ``gaussian_kernel(size, s)``: an isotropic Gaussian of std ``s``, (1, 1, size, size) float64, sum 1."""
    return _gaussian_kernel


@pytest.fixture(scope="session")
def soft_kernel():
    """Function ``soft_kernel(k)``: ``k`` smeared by a Gaussian (5 x 5, std 1.2): a rough estimate
    with the right support (MNC ~0.78 for the linear motion kernel)."""
    from kdiff_cli.maths import ops

    def soft(k: torch.Tensor) -> torch.Tensor:
        return ops.normalize_kernel(torch.nn.functional.conv2d(k, _gaussian_kernel(5, 1.2), padding=2))

    return soft


class MotionProblem(NamedTuple):
    x: torch.Tensor  #: the sharp scene, (1, 1, 96, 96) float64
    k_true: torch.Tensor  #: the 15 x 15 linear motion kernel, float64
    y: torch.Tensor  #: the blurred, noisy observation, float32


@pytest.fixture(scope="session")
def motion_problem() -> MotionProblem:
    """``(x, k_true, y)``: a shapes scene (seed 1) blurred by ``linear_motion_kernel(15)`` plus
    noise of std 0.005. Shared by the tests of the session: never modify its tensors."""
    from kdiff_cli.maths import ops

    x = _shapes_scene(np.random.default_rng(1))
    k_true = _linear_motion_kernel()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    y = ops.conv2d(x, k_true) + 0.005 * noise
    return MotionProblem(x, k_true, y.float())


# --------------------------------------------------------------------------- non-blind solvers

#: small architectures so that the learned solvers' tests stay fast
SMALL_SOLVERS = {
    "wiener": {},
    "hqs": {},
    "dwdn": {"features": 4, "feature_blocks": 1, "widths": [8, 8, 8], "blocks": [0, 1, 1]},
    "unrolled": {"stages": 2, "widths": [4, 8], "blocks": 1},
}


@pytest.fixture(scope="session")
def small_solver_kwargs() -> dict:
    """Per solver name, the small architecture ``make_solver`` builds (the weights files' ``model`` metadata)."""
    return {name: dict(kwargs) for name, kwargs in SMALL_SOLVERS.items()}


@pytest.fixture(scope="session")
def make_solver():
    """Factory ``make_solver(name, seed=0, randomize=False, dtype=float32)``: a small solver in eval
    mode, built after ``torch.manual_seed(seed)``; ``randomize`` also overwrites the zero-initialised
    output convolutions (adds seeded noise to every parameter)."""
    from kdiff_cli import plugins

    def make(name: str, seed: int = 0, randomize: bool = False, dtype=torch.float32) -> torch.nn.Module:
        torch.manual_seed(seed)
        m = plugins.get("solver", name)(**SMALL_SOLVERS[name]).to(dtype)
        if randomize:
            g = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        return m.eval()

    return make


@pytest.fixture(scope="session")
def curved_kernel():
    """Function ``curved_kernel(h, w, dtype=float32)``: a deterministic curved stroke (1, 1, h, w), sum 1, centred."""
    from kdiff_cli.maths import ops

    def make(h: int, w: int, dtype=torch.float32) -> torch.Tensor:
        k = torch.zeros(1, 1, h, w, dtype=dtype)
        n = max(h, w)
        for i in range(n):
            t = i / max(n - 1, 1)
            k[0, 0, round(t * (h - 1)), round((0.15 + 0.7 * t * t) * (w - 1))] += 1  # a curved stroke
        return ops.center_kernel(k / k.sum())

    return make


@pytest.fixture(scope="session")
def textured_image():
    """Function ``textured_image(B=1, C=3, H=48, W=48, seed=0, dtype=float32)``: a seeded synthetic
    texture in [0, 1]: a smooth random field plus a few sharp-edged rectangles."""

    def make(B: int = 1, C: int = 3, H: int = 48, W: int = 48, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        x = torch.nn.functional.avg_pool2d(torch.rand(B, C, H + 4, W + 4, generator=g, dtype=dtype), 5, 1)
        x = 0.3 + 0.4 * (x - x.amin()) / (x.amax() - x.amin())
        for _ in range(4):
            r, c = torch.randint(0, H - 8, (2,), generator=g).tolist()
            x[..., r : r + 8, c : c + 12] += 0.25 * (2 * torch.rand(1, generator=g).item() - 1)
        return x.clamp(0, 1)

    return make


@pytest.fixture(scope="session")
def psnr():
    """Function ``psnr(estimate, reference)``: PSNR in dB over the whole tensor, the estimate clamped to [0, 1]."""

    def value(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(10 * torch.log10(1 / (a.clamp(0, 1) - b).square().mean()))

    return value


# --------------------------------------------------------------------------- isolation from the user's files


@pytest.fixture
def no_shipped(tmp_path, monkeypatch) -> Path:
    """An empty shipped-weights folder, so tests do not depend on what weights/ holds."""
    from kdiff_cli import weights

    folder = tmp_path / "shipped"
    folder.mkdir()
    monkeypatch.setattr(weights, "shipped_dir", lambda: folder)
    return folder


@pytest.fixture
def empty_hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache (``TORCH_HOME`` and ``torch.hub``'s folder under tmp_path), so the
    LPIPS / FID weights are certainly absent; yields tmp_path."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch" / "hub"))
    yield tmp_path
    torch.hub.set_dir(previous)


# --------------------------------------------------------------------------- training data


def _write_blocky_png(path: Path, h: int, w: int, seed: int) -> None:
    import cv2

    rng = np.random.default_rng(seed)
    base = rng.random((h // 4 + 1, w // 4 + 1, 3))
    img = np.kron(base, np.ones((4, 4, 1)))[:h, :w]  # blocky: edges to deblur
    assert cv2.imwrite(str(path), (img * 255).round().astype(np.uint8))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict[str, Path]:
    """A tiny training set: train/ (three blocky 40x48 PNGs and one smaller than the crop), val/ (two),
    and a kernels.npz of six 7x7 kernels (training tests)."""
    root = tmp_path_factory.mktemp("data")
    (root / "train").mkdir()
    (root / "val").mkdir()
    for i in range(3):
        _write_blocky_png(root / "train" / f"im{i}.png", 40, 48, i)
    _write_blocky_png(root / "train" / "small.png", 20, 24, 9)  # smaller than the crop: mirror-padded
    for i in range(2):
        _write_blocky_png(root / "val" / f"v{i}.png", 36, 36, 10 + i)
    rng = np.random.default_rng(0)
    np.savez(root / "kernels.npz", kernels=rng.random((6, 7, 7)))  # 7x7, put on the 9x9 canvas
    return {"train": root / "train", "val": root / "val", "kernels": root / "kernels.npz", "root": root}
