"""A kernel bank searched by the blur cue: the nearest kernels to y's gradient autocorrelation.

The autocorrelation of y's gradients is close to the kernel's own autocorrelation
(:mod:`kdiff_cli.maths.cues`), so a bank of kernels from the training generators, each stored
with the cue it would produce (:func:`~kdiff_cli.maths.cues.kernel_autocorrelation`), can be
searched by cosine similarity: ``../shared/docs/kernel-cues.md`` measured MNC 0.52 for the nearest
of 20,000 ``borodenko`` kernels, with no learning. The ``lookup`` sampler starts the reverse
diffusion from the nearest kernels, partly noised (SDEdit), so the learned prior refines a kernel
that is already in the right basin instead of finding the basin from pure noise.

The autocorrelation has no phase: k and k rotated by 180 degrees give the same cue, so a match is
returned in both orientations (the guidance and MAP_k choose).

**Prior ranking** (:func:`prior_rank`, the ``lookup`` sampler's default): the cosine similarity
ignores what the learned prior knows, so the ``RANK_POOL`` nearest kernels are re-ordered by the
prior's own denoising loss ``sum_t ||epsilon - epsilon_theta(k_t, y, t)||^2`` at a few noise levels
``RANK_TIMESTEPS`` (one seeded epsilon shared by the candidates): the kernel the network finds most
probable given y comes first. On the 50 val crops (shipped autocorr prior) the first kernel's MNC
rose from 0.494 (cue order) to 0.541 ranking the nearest 8 (best of them 0.609) and to 0.567
ranking the nearest 16 (best of them 0.643) (docs/kernel-prior.md).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from kdiff_cli import plugins
from kdiff_cli.errors import KdiffError
from kdiff_cli.maths import cues

#: the bank's default content: the kernel prior's training mixture (configs/kernel-diff-autocorr.toml)
GENERATORS = (("borodenko", 0.6), ("boracchi-foi", 0.25), ("linear", 0.1), ("gaussian", 0.05))
#: default bank size (feature matrix count x 2 x S^2 floats: 8,000 x 64 px = 262 MB in memory, half that cached)
BANK_COUNT = 8000
#: the bank's seed (a fixed bank: the same y gives the same candidates in every run)
BANK_SEED = 7
#: version of the bank's content and features (part of the cache file's name)
BANK_VERSION = 1
#: prior ranking: how many of the nearest bank kernels the prior re-orders
RANK_POOL = 16
#: prior ranking: the noise levels t of the denoising loss
RANK_TIMESTEPS = (50, 150, 300, 500)
#: prior ranking: seed of the shared epsilon (the ranking is deterministic)
RANK_SEED = 0


def features(cue: torch.Tensor) -> torch.Tensor:
    """Cue maps (B, 4, S, S) -> unit feature vectors (B, 2 S^2): the horizontal and vertical maps
    averaged (fine and coarse lags), positive part, L2-normalised."""
    if cue.dim() != 4 or cue.shape[1] != cues.CUE_CHANNELS:
        raise KdiffError(f"expected cue maps (B, {cues.CUE_CHANNELS}, S, S), got shape {tuple(cue.shape)}")
    fine, coarse = cue[:, :2].mean(dim=1), cue[:, 2:].mean(dim=1)
    f = torch.cat([fine.flatten(1), coarse.flatten(1)], dim=1).clamp(min=0)
    return f / f.norm(dim=1, keepdim=True).clamp(min=1e-12)


def rot180(k: torch.Tensor) -> torch.Tensor:
    """Kernels (..., S, S) rotated by 180 degrees about the centre index S // 2 (same autocorrelation)."""
    S = k.shape[-1]
    r = k.flip(-2, -1)
    return r.roll((1, 1), dims=(-2, -1)) if S % 2 == 0 else r


@dataclass
class Match:
    """The ``top`` bank kernels nearest to each image: kernels (B, top, S, S), cosine scores (B, top)."""

    k: torch.Tensor
    score: torch.Tensor


class KernelBank:
    """Kernels (N, S, S) and their cue features (computed unless given), searched by cosine similarity."""

    def __init__(self, kernels: torch.Tensor, chunk: int = 1000, feats: torch.Tensor | None = None):
        if kernels.dim() != 3 or kernels.shape[-1] != kernels.shape[-2]:
            raise KdiffError(f"a kernel bank is (N, S, S), got shape {tuple(kernels.shape)}")
        self.kernels = kernels.float()
        self.size = int(kernels.shape[-1])
        if feats is None:
            parts = []
            for i in range(0, len(kernels), chunk):
                k = self.kernels[i : i + chunk, None]
                parts.append(features(cues.kernel_autocorrelation(k, self.size)))
            feats = torch.cat(parts)
        if feats.shape != (len(kernels), 2 * self.size**2):
            raise KdiffError(f"kernel bank features of shape {tuple(feats.shape)} do not match {len(kernels)} kernels")
        # rounded to half precision (what the cache file holds), kept in float32 for the searches
        self.features = feats.half().float()

    def __len__(self) -> int:
        return len(self.kernels)

    def search(self, cue: torch.Tensor, top: int = 1) -> Match:
        """The ``top`` nearest kernels to each cue map (B, 4, S, S) (distinct bank entries)."""
        if cue.shape[-1] != self.size:
            raise KdiffError(f"cue of size {cue.shape[-1]} does not match the bank's kernels ({self.size} px)")
        q = features(cue.float().cpu())
        score = q @ self.features.T  # (B, N)
        s, i = score.topk(min(top, len(self)), dim=1)
        return Match(self.kernels[i], s)


def make_bank(size: int, count: int = BANK_COUNT, seed: int = BANK_SEED, generators=GENERATORS) -> KernelBank:
    """A bank of ``count`` kernels of ``size`` px from ``generators`` ((name, weight), ...), seeded."""
    if size < 3 or count < 1:
        raise KdiffError(f"a kernel bank needs size >= 3 and count >= 1, got {size} and {count}")
    names = [n for n, _ in generators if n in plugins.names("generator")]
    if not names:
        raise KdiffError("no kernel generator of the bank is registered")
    weights = np.array([w for n, w in generators if n in names], dtype=np.float64)
    counts = np.floor(weights / weights.sum() * count).astype(int)
    counts[0] += count - counts.sum()
    rng = np.random.default_rng(seed)
    ks = [plugins.get("generator", n).sample(rng, int(c), size) for n, c in zip(names, counts) if c > 0]
    return KernelBank(torch.from_numpy(np.concatenate(ks)).float())


@functools.lru_cache(maxsize=2)
def default_bank(size: int) -> KernelBank:
    """The shared bank for ``size`` px kernels: loaded from kdiff's cache folder, else built (a few
    seconds on two cores) and cached there (``kernel-bank-*.safetensors``, about 200 MB for 64 px;
    ``$KDIFF_CACHE_DIR`` moves it). An unreadable cache is rebuilt; an unwritable one is skipped."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    from kdiff_cli.files import atomic_path
    from kdiff_cli.items import cache_dir

    mix = "-".join(f"{n}{w:g}" for n, w in GENERATORS)
    path = cache_dir() / f"kernel-bank-v{BANK_VERSION}-{size}px-{BANK_COUNT}-seed{BANK_SEED}-{mix}.safetensors"
    try:
        arrays = load_file(str(path))
        return KernelBank(arrays["kernels"].float(), feats=arrays["features"])
    except (OSError, KeyError, SafetensorError, KdiffError):
        pass
    built = make_bank(size)
    bank = KernelBank(built.kernels.half().float(), feats=built.features)  # exactly what the cache holds
    try:
        with atomic_path(path) as tmp:
            save_file({"kernels": bank.kernels.half(), "features": bank.features.half()}, str(tmp))
    except OSError:
        pass
    return bank


def prior_rank(model, schedule, y: torch.Tensor, kernels: torch.Tensor,
               timesteps: tuple[int, ...] = RANK_TIMESTEPS, seed: int = RANK_SEED) -> torch.Tensor:
    """The prior's denoising loss (N,) of each candidate kernel (N, 1, S, S) given one image ``y`` (1, C, H, W).

    ``sum_t mean ||epsilon - epsilon_theta(sqrt(alpha_bar_t) k + sqrt(1 - alpha_bar_t) epsilon, y, t)||^2``
    over ``timesteps``, with one epsilon per t (seeded, shared by the candidates so that they compare
    on the same noise): lower means more probable under p(k | y).
    """
    from kdiff_cli.maths import diffusion

    if y.dim() != 4 or y.shape[0] != 1:
        raise KdiffError(f"prior ranking takes one image (1, C, H, W), got shape {tuple(y.shape)}")
    n, S = kernels.shape[0], model.kernel_size
    dev = next(model.parameters()).device
    g = torch.Generator().manual_seed(int(seed))
    cond = y if y.shape[1] == model.image_channels else y.expand(-1, model.image_channels, -1, -1)
    with torch.no_grad():
        feats = model.encode_image(diffusion.image_to_condition(cond.to(dev)))
        feats = feats.expand(n, *feats.shape[1:])
        k_d = diffusion.to_diffusion(kernels.to(dev, torch.float32))
        loss = torch.zeros(n, device=dev)
        for t in timesteps:
            eps = torch.randn((1, 1, S, S), generator=g).to(dev).expand(n, -1, -1, -1)
            ab = schedule.alpha_bar_at(int(t), like=k_d)
            e = model(ab.sqrt() * k_d + (1 - ab).sqrt() * eps, None, torch.full((n,), int(t), dtype=torch.long, device=dev),
                      image_features=feats)
            loss += (e.float() - eps).square().flatten(1).mean(1)
    return loss.cpu()


def candidates(y: torch.Tensor, size: int, bank: KernelBank | None = None, model=None, schedule=None,
               pool: int = RANK_POOL) -> torch.Tensor:
    """One starting kernel (B, 1, S, S) per image of ``y`` (B, C, H, W) from the nearest bank kernels.

    Rows of ``y`` that are copies of one image (several samples of it) get the next candidates in
    turn: the nearest kernel, the same rotated by 180 degrees, the second nearest, its rotation, ...
    With ``model`` and ``schedule`` the ``pool`` nearest are first re-ordered by :func:`prior_rank`.
    """
    bank = bank or default_bank(size)
    cue = cues.gradient_autocorrelation(y, size)
    # each row's first copy (the image it repeats) and how many copies of it came before
    first = [next(j for j in range(i + 1) if torch.equal(cue[j], cue[i])) for i in range(len(cue))]
    rank = [first[:i].count(first[i]) for i in range(len(cue))]
    top = max(rank) // 2 + 1
    match = bank.search(cue, top=max(top, pool) if model is not None else top)
    order = {f: torch.arange(match.k.shape[1]) if model is None else
             torch.argsort(prior_rank(model, schedule, y[f : f + 1], match.k[f][:, None]), stable=True)
             for f in dict.fromkeys(first)}
    out = []
    for f, r in zip(first, rank):
        k = match.k[f, order[f][r // 2 % len(order[f])]]
        out.append(k if r % 2 == 0 else rot180(k))
    return torch.stack(out)[:, None].to(y.device)
