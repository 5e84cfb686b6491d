"""Evaluation datasets for ``kdiff eval``: items, the BSD100 protocol, Levin et al., user folders.

A dataset component (kind ``dataset``) provides ``load(**options) -> list[ItemRef]`` and
``protocol(**options) -> dict``. An :class:`ItemRef` is a cheap handle (id, seed key, loader); its
``load()`` returns the :class:`Item` arrays, so a re-run whose results are cached never decodes or
synthesises anything.

The BSD100 protocol (paper, section 4.2): for each BSDS300 test image, a seeded random 256x256
crop ``x``, a seeded 64x64 kernel ``k`` from a generator (default ``borodenko``), the symmetric
boundary, Gaussian noise ``sigma`` (default 0.01), RGB; ``y = k * x + sigma n`` clipped to [0, 1]
and stored at 16 bits. Every random draw comes from ``np.random.default_rng`` children of
``SeedSequence([seed, int(image_id)])`` (crop, kernel, noise): the same on every run and machine,
and independent of ``--limit`` and of the order in which images are visited.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
import torch

from kdiff_cli import files
from kdiff_cli.maths import ops
from kdiff_cli.errors import KdiffError

# The 100 image ids of BSD100 (the BSDS300 test split), in the order of bsd100_ids.txt.
BSD100_IDS = (
    "3096", "8023", "12084", "14037", "16077", "19021", "21077", "24077", "33039", "37073", "38082",
    "38092", "41033", "41069", "42012", "42049", "43074", "45096", "54082", "55073", "58060",
    "62096", "65033", "66053", "69015", "69020", "69040", "76053", "78004", "85048", "86000",
    "86016", "86068", "87046", "89072", "97033", "101085", "101087", "102061", "103070", "105025",
    "106024", "108005", "108070", "108082", "109053", "119082", "123074", "126007", "130026",
    "134035", "143090", "145086", "147091", "148026", "148089", "156065", "157055", "159008",
    "160068", "163085", "167062", "167083", "170057", "175032", "175043", "182053", "189080",
    "196073", "197017", "208001", "210088", "216081", "219090", "220075", "223061", "227092",
    "229036", "236037", "241004", "241048", "253027", "253055", "260058", "271035", "285079",
    "291000", "295087", "296007", "296059", "299086", "300091", "302008", "304034", "304074",
    "306005", "351093", "361010", "376043", "385039",
)


#: the official BSDS300 images archive; override with KDIFF_BSDS300_URL (tests use a local server)
BSDS300_URL = "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/bsds/BSDS300-images.tgz"
BSDS300_ARCHIVE = "BSDS300-images.tgz"
#: the paper's protocol; the default seed is distinct from every training seed (those start at 0)
BSD100_DEFAULTS = {
    "seed": 2023,
    "generator": "borodenko",
    "sigma": 0.01,
    "crop": 256,
    "kernel_size": 64,
    "boundary": "symmetric",
}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
KERNEL_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp", ".npy")
DOWNLOAD_CHUNK = 1 << 16


@dataclass
class Item:
    """One evaluation image: sharp ``x`` and blurred ``y`` (H, W, C) float32 in [0, 1], true
    kernel ``k`` (h, w) float64 summing to 1 (or None), noise level ``sigma`` (or None)."""

    id: str
    x: np.ndarray
    y: np.ndarray
    k: np.ndarray | None = None
    sigma: float | None = None
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ItemRef:
    """A lazy handle on an :class:`Item`: ``key`` (an int) seeds everything random about it."""

    id: str
    key: int
    loader: Callable[[], Item]

    def load(self) -> Item:
        return self.loader()


# --------------------------------------------------------------------------- small helpers


def cache_dir() -> Path:
    """kdiff's user cache: ``$KDIFF_CACHE_DIR``, else ``$XDG_CACHE_HOME/kdiff``, else ``~/.cache/kdiff``."""
    if os.environ.get("KDIFF_CACHE_DIR"):
        return Path(os.environ["KDIFF_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "kdiff"


def _rgb(a: np.ndarray) -> np.ndarray:
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


def _read(path: Path) -> np.ndarray:
    import warnings

    with warnings.catch_warnings():  # dataset images: alpha, if any, is dropped silently
        warnings.simplefilter("ignore", files.ImageWarning)
        return files.read_image(path)[0]


def read_kernel(path: Path) -> np.ndarray:
    """A kernel file (image or ``.npy``) as (h, w) float64, nonnegative, summing to 1."""
    if path.suffix.lower() == ".npy":
        try:
            k = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise KdiffError(f"cannot read kernel {path}: {e}") from None
    else:
        k = _read(path).mean(axis=2)
    k = np.clip(np.asarray(k, dtype=np.float64).squeeze(), 0.0, None)
    if k.ndim != 2 or k.sum() <= 0:
        raise KdiffError(f"cannot read kernel {path}: expected a nonzero 2-D kernel, got shape {k.shape}")
    return k / k.sum()


def _find(folder: Path, stem: str, extensions: tuple[str, ...]) -> Path | None:
    for ext in extensions:
        for cand in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
            if cand.is_file():
                return cand
    return None


def natural_key(name: str) -> list:
    """Sort key that orders ``im2`` before ``im10`` (digit runs compare as numbers)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t]


def _limit(refs: list[ItemRef], limit: int | None) -> list[ItemRef]:
    if limit is not None and limit < 1:
        raise KdiffError(f"--limit must be at least 1, got {limit}")
    return refs if limit is None else refs[:limit]


# --------------------------------------------------------------------------- BSD100: finding images


def locate_bsd100(data_dir: Path, ids: tuple[str, ...] = BSD100_IDS) -> dict[str, Path]:
    """Map BSD100 ids to ``<id>.jpg`` files anywhere under ``data_dir`` (a flat folder, or the
    BSDS300 ``images/test`` / BSDS500 ``data/images/{val,test}`` layouts)."""
    if not data_dir.is_dir():
        raise KdiffError(f"--data-dir {data_dir} is not a folder")
    wanted = set(ids)
    found: dict[str, Path] = {}
    for p in sorted(data_dir.rglob("*")):
        if p.suffix.lower() in (".jpg", ".jpeg") and p.stem in wanted and p.is_file():
            found.setdefault(p.stem, p)
    return found


def _require(found: dict[str, Path], ids: tuple[str, ...], where: Path) -> list[Path]:
    missing = [i for i in ids if i not in found]
    if missing:
        shown = ", ".join(f"{i}.jpg" for i in missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise KdiffError(
            f"{len(missing)} of {len(ids)} BSD100 images missing in {where} ({shown}); "
            "pass a folder of <id>.jpg or the BSDS300 layout, or use --download"
        )
    return [found[i] for i in ids]


# --------------------------------------------------------------------------- BSD100: download


def _download(url: str, dest: Path, progress: Callable[[int, int | None], None] | None = None) -> None:
    """Fetch ``url`` to ``dest``, resuming a partial ``dest.part`` with an HTTP Range request."""
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=30)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to fetch: the partial file is complete
            os.replace(part, dest)
            return
        raise KdiffError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise KdiffError(
            f"cannot download {url}: {reason} (offline? fetch {BSDS300_ARCHIVE} elsewhere and "
            "pass --data-dir with the archive or its extracted folder)"
        ) from None
    with resp:
        resumed = resp.status == 206
        length = resp.headers.get("Content-Length")
        total = (int(length) + (have if resumed else 0)) if length else None
        done = have if resumed else 0
        try:
            with open(part, "ab" if resumed else "wb") as f:
                while chunk := resp.read(DOWNLOAD_CHUNK):
                    f.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
        except OSError as e:
            raise KdiffError(
                f"download of {url} interrupted after {done} bytes ({e}); run again to resume"
            ) from None
    if total is not None and done != total:
        raise KdiffError(f"download of {url} interrupted after {done} of {total} bytes; run again to resume")
    os.replace(part, dest)


def _safe_member(name: str) -> bool:
    p = PurePosixPath(name)
    return not p.is_absolute() and ".." not in p.parts and "\\" not in name


def extract_bsd100(archive: Path, images: Path, ids: tuple[str, ...] = BSD100_IDS) -> list[str]:
    """Copy the ``<id>.jpg`` members of a BSDS tar archive into ``images/`` (flat).

    Only regular files with a safe relative name (no absolute path, no ``..``) whose file name is
    a wanted id are read, and each is written to a path built here, so nothing lands outside
    ``images/``. Returns the ids extracted.
    """
    wanted = set(ids)
    images.mkdir(parents=True, exist_ok=True)
    got = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            for m in tar:
                stem = PurePosixPath(m.name).stem
                if not (m.isreg() and _safe_member(m.name) and m.name.lower().endswith(".jpg") and stem in wanted):
                    continue
                f = tar.extractfile(m)
                if f is None:
                    continue
                files.atomic_write_bytes(images / f"{stem}.jpg", f.read())
                got.append(stem)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise KdiffError(f"cannot extract {archive}: {e}") from None
    return got


def _verify(images: Path, ids: tuple[str, ...]) -> list[Path]:
    paths = _require(locate_bsd100(images, ids), ids, images)
    for p in paths:
        _read(p)  # raises a clear KdiffError for a file that does not decode
    return paths


def fetch_bsd100(
    url: str | None = None,
    root: Path | None = None,
    archive: Path | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Make sure the 100 BSD100 images are in the cache (download, extract, verify); return the folder.

    Restartable: a finished, verified cache is reused; an interrupted download resumes. With
    ``archive`` a local copy of the archive is extracted instead of downloading.
    """
    url = url or os.environ.get("KDIFF_BSDS300_URL") or BSDS300_URL
    root = root or cache_dir() / "bsds300"
    images = root / "images"
    marker = root / "complete.json"
    if marker.is_file() and len(locate_bsd100(images)) == len(BSD100_IDS):
        return images
    root.mkdir(parents=True, exist_ok=True)
    if archive is None:
        archive = root / BSDS300_ARCHIVE
        if not archive.is_file():
            _download(url, archive, progress)
    extract_bsd100(archive, images)
    try:
        _verify(images, BSD100_IDS)
    except KdiffError as e:
        if archive.parent == root:
            archive.unlink(missing_ok=True)  # a bad download: fetch it afresh next time
        raise KdiffError(f"the BSDS300 archive is incomplete or corrupt: {e}") from None
    files.atomic_write_bytes(marker, json.dumps({"url": url, "ids": len(BSD100_IDS)}).encode())
    if archive.parent == root:
        archive.unlink(missing_ok=True)  # the images are what we keep
    return images


def bsd100_dir(data_dir: str | os.PathLike | None, download: bool) -> Path:
    """The folder holding the BSD100 images: ``data_dir`` (a folder, or an archive file to unpack
    into the cache), the cache (``download`` fetches it there), or a one-line error."""
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        if d.is_file() and (d.name.endswith((".tgz", ".tar.gz", ".tar"))):
            return fetch_bsd100(archive=d)
        if not d.exists():
            raise KdiffError(f"--data-dir {d} does not exist")
        return d
    cached = cache_dir() / "bsds300"
    if download or (cached / "complete.json").is_file():
        return fetch_bsd100(root=cached)
    raise KdiffError(
        "BSD100 images not found: pass --data-dir DIR (a folder of <id>.jpg, or the BSDS300/BSDS500 "
        f"layout) or --download (into {cached})"
    )


# --------------------------------------------------------------------------- BSD100: the protocol


def protocol_rngs(seed: int, key: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent (crop, kernel, noise) generators for one image, from ``SeedSequence([seed, key])``."""
    children = np.random.SeedSequence([int(seed), int(key)]).spawn(3)
    return tuple(np.random.default_rng(s) for s in children)  # type: ignore[return-value]


def blur(x: np.ndarray, k: np.ndarray, sigma: float, rng: np.random.Generator, boundary: str = "symmetric") -> np.ndarray:
    """``y = k * x + sigma n`` (``n`` from ``rng``), clipped to [0, 1] and quantised to 16 bits."""
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float64))[None]
    kt = torch.from_numpy(np.asarray(k, dtype=np.float64))[None, None]
    y = ops.conv2d(xt, kt, boundary)[0].numpy().transpose(1, 2, 0)
    y = y + float(sigma) * rng.standard_normal(y.shape)
    return (files.quantize(y, 16).astype(np.float32) / np.float32(65535)).astype(np.float32)


def sample_kernel(generator: str, rng: np.random.Generator, size: int, params: dict | None = None) -> np.ndarray:
    """One kernel from a registered generator, as (size, size) float64 summing to 1."""
    from kdiff_cli import plugins

    gen = plugins.get("generator", generator)
    k = np.asarray(gen.sample(rng, 1, int(size), **(params or {})), dtype=np.float64)[0]
    k = np.clip(k, 0.0, None)
    if k.sum() <= 0:
        raise KdiffError(f"generator {generator!r} returned an all-zero kernel")
    return k / k.sum()


def synthesize(
    x_full: np.ndarray, key: int, *, seed: int, generator: str, sigma: float, crop: int, kernel_size: int,
    generator_params: dict | None = None, boundary: str = "symmetric", image_id: str = "",
) -> Item:
    """The protocol for one image: seeded crop, seeded kernel, blur with ``boundary``, noise."""
    r_crop, r_kernel, r_noise = protocol_rngs(seed, key)
    x_full = _rgb(x_full)
    H, W = x_full.shape[:2]
    if H < crop or W < crop:
        raise KdiffError(f"image {image_id} is {H}x{W}, smaller than the {crop}x{crop} crop")
    top = int(r_crop.integers(0, H - crop + 1))
    left = int(r_crop.integers(0, W - crop + 1))
    x = np.ascontiguousarray(x_full[top : top + crop, left : left + crop])
    k = sample_kernel(generator, r_kernel, kernel_size, generator_params)
    y = blur(x, k, sigma, r_noise, boundary)
    return Item(id=image_id, x=x, y=y, k=k, sigma=float(sigma), meta={"crop_top": top, "crop_left": left})


def protocol_items(folder: str | os.PathLike, limit: int | None = None, **options) -> list[Item]:
    """The BSD100 protocol applied to every photo of ``folder`` (sorted by name), first ``limit``.

    Photos named by a number are seeded by it (as BSD100 ids), others by the CRC32 of their stem.
    """
    import zlib

    p = bsd100_protocol(**options)
    folder = Path(folder)
    if not folder.is_dir():
        raise KdiffError(f"{folder} is not a folder of photos")
    images = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)[:limit]
    if not images:
        raise KdiffError(f"no images in {folder}")
    items = []
    for f in images:
        key = int(f.stem) if f.stem.isdigit() else zlib.crc32(f.stem.encode())
        items.append(
            synthesize(
                _read(f), key, seed=p["seed"], generator=p["generator"], sigma=p["sigma"], crop=p["crop"],
                kernel_size=p["kernel_size"], generator_params=p["generator_params"], boundary=p["boundary"],
                image_id=f.stem,
            )
        )
    return items


def bsd100_protocol(**options) -> dict:
    """The resolved protocol options (what fully determines the synthetic set)."""
    p = {key: options.get(key) if options.get(key) is not None else d for key, d in BSD100_DEFAULTS.items()}
    p["generator_params"] = dict(options.get("generator_params") or {})
    p["seed"], p["crop"], p["kernel_size"], p["sigma"] = int(p["seed"]), int(p["crop"]), int(p["kernel_size"]), float(p["sigma"])
    return p


def load_bsd100(
    data_dir: str | os.PathLike | None = None, download: bool = False, limit: int | None = None, **options
) -> list[ItemRef]:
    """Lazy items of the BSD100 protocol (the first ``limit`` ids of the list)."""
    p = bsd100_protocol(**options)
    if p["crop"] < 8 or p["kernel_size"] < 1 or p["sigma"] < 0:
        raise KdiffError("--crop must be >= 8, --kernel-size >= 1 and --sigma >= 0")
    if p["boundary"] not in ops.BOUNDARIES:
        raise KdiffError(f"unknown boundary {p['boundary']!r} (choose from {', '.join(ops.BOUNDARIES)})")
    ids = BSD100_IDS if limit is None else _limit(list(BSD100_IDS), limit)
    folder = bsd100_dir(data_dir, download)
    paths = _require(locate_bsd100(folder, tuple(ids)), tuple(ids), folder)

    def loader(image_id: str, path: Path) -> Callable[[], Item]:
        def load() -> Item:
            return synthesize(
                _read(path), int(image_id), seed=p["seed"], generator=p["generator"], sigma=p["sigma"],
                crop=p["crop"], kernel_size=p["kernel_size"], generator_params=p["generator_params"],
                boundary=p["boundary"], image_id=image_id,
            )

        return load

    return [ItemRef(i, int(i), loader(i, path)) for i, path in zip(ids, paths)]


# --------------------------------------------------------------------------- Levin et al. 2009

LEVIN_PATTERN = re.compile(r"^im(\d+)_kernel(\d+)_img$")


def load_levin(data_dir: str | os.PathLike | None = None, limit: int | None = None, **_) -> list[ItemRef]:
    """Levin et al. (2009) layout: ``im{i}_kernel{j}_img.png`` blurred, ``gt/im{i}.png``, ``gt/kernel{j}.png``."""
    if data_dir is None:
        raise KdiffError("the levin dataset needs --data-dir (a folder with im{i}_kernel{j}_img.png and gt/)")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise KdiffError(f"--data-dir {root} is not a folder")
    found = []
    for p in root.iterdir():
        m = LEVIN_PATTERN.match(p.stem)
        if m and p.suffix.lower() in IMAGE_EXTENSIONS:
            found.append((int(m.group(1)), int(m.group(2)), p))
    if not found:
        raise KdiffError(f"no im{{i}}_kernel{{j}}_img.png files in {root}")
    found.sort()
    refs = []
    for i, j, blurred in found:
        sharp = _find(root / "gt", f"im{i}", IMAGE_EXTENSIONS)
        kernel = _find(root / "gt", f"kernel{j}", KERNEL_EXTENSIONS)
        if sharp is None or kernel is None:
            missing = f"gt/im{i}.png" if sharp is None else f"gt/kernel{j}.png"
            raise KdiffError(f"{blurred.name} has no {missing} in {root}")
        refs.append(ItemRef(f"im{i}_kernel{j}", i * 1000 + j, _pair_loader(f"im{i}_kernel{j}", blurred, sharp, kernel)))
    return _limit(refs, limit)


def _pair_loader(item_id: str, blurred: Path, sharp: Path, kernel: Path | None) -> Callable[[], Item]:
    def load() -> Item:
        y, x = _read(blurred), _read(sharp)
        if y.shape[:2] != x.shape[:2]:
            raise KdiffError(f"{blurred} is {y.shape[1]}x{y.shape[0]} but {sharp} is {x.shape[1]}x{x.shape[0]}")
        if y.shape[2] != x.shape[2]:
            y, x = _rgb(y), _rgb(x)
        return Item(id=item_id, x=x, y=y, k=read_kernel(kernel) if kernel is not None else None)

    return load


# --------------------------------------------------------------------------- a user folder


def load_folder(data_dir: str | os.PathLike | None = None, limit: int | None = None, **_) -> list[ItemRef]:
    """Paired ``blurred/<name>.*`` and ``sharp/<name>.*`` images, optional ``kernels/<name>.*``."""
    if data_dir is None:
        raise KdiffError("the folder dataset needs --data-dir (with blurred/ and sharp/ folders)")
    root = Path(data_dir).expanduser()
    for sub in ("blurred", "sharp"):
        if not (root / sub).is_dir():
            raise KdiffError(f"{root} has no {sub}/ folder (expected blurred/, sharp/, optional kernels/)")
    blurred = sorted(
        (p for p in (root / "blurred").iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
        key=lambda p: natural_key(p.stem),
    )
    if not blurred:
        raise KdiffError(f"no images in {root / 'blurred'}")
    refs = []
    for b in blurred:
        sharp = _find(root / "sharp", b.stem, IMAGE_EXTENSIONS)
        if sharp is None:
            raise KdiffError(f"blurred/{b.name} has no partner in {root / 'sharp'} (same name, any image extension)")
        kernel = _find(root / "kernels", b.stem, KERNEL_EXTENSIONS) if (root / "kernels").is_dir() else None
        refs.append(ItemRef(b.stem, zlib.crc32(b.stem.encode()), _pair_loader(b.stem, b, sharp, kernel)))
    return _limit(refs, limit)


# --------------------------------------------------------------------------- export


def export(refs: list[ItemRef], out: str | os.PathLike, protocol: dict) -> Path:
    """Write ``blurred/`` and ``sharp/`` (16-bit PNG), ``kernels/`` (16-bit PNG scaled to peak 1;
    readers normalise to sum 1) and ``protocol.json``: a folder ``kdiff eval folder`` reads back."""
    out = Path(out).expanduser()
    for ref in refs:
        item = ref.load()
        files.write_image(out / "blurred" / f"{ref.id}.png", item.y, bit_depth=16)
        files.write_image(out / "sharp" / f"{ref.id}.png", item.x, bit_depth=16)
        if item.k is not None:
            files.write_image(out / "kernels" / f"{ref.id}.png", item.k / item.k.max(), bit_depth=16)
    meta = {"protocol": protocol, "ids": [r.id for r in refs]}
    files.atomic_write_bytes(out / "protocol.json", (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    return out
