"""The BSD100 benchmark of the paper (section 4.2): seeded crops, kernels and noise on BSDS300 test images.

The images: a folder of ``<id>.jpg`` (or the BSDS300 / BSDS500 layout, or the archive itself), or
the user cache, which ``--download`` fills from the official archive (resumable, verified). The
protocol applied to them is :mod:`kdiff_cli.maths.protocol`.
"""

from __future__ import annotations

import json
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Callable

from kdiff_cli import files, limits, plugins
from kdiff_cli.errors import KdiffError
from kdiff_cli.hookspecs import hookimpl
from kdiff_cli.items import Item, ItemRef, cache_dir, first, read_photo
from kdiff_cli.maths import ops
from kdiff_cli.maths.protocol import BSD100_DEFAULTS, bsd100_protocol, synthesize_file  # noqa: F401 (BSD100_DEFAULTS: part of this module's API)

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
DOWNLOAD_CHUNK = 1 << 16
#: bytes per crop pixel while an item is synthesised (3 channels, float64, ~4 arrays at once)
CROP_BYTES_PER_PIXEL = 3 * 8 * 4


# --------------------------------------------------------------------------- finding images


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


# --------------------------------------------------------------------------- download


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
    except tarfile.ReadError:  # its message lists every decompressor tried, over several lines
        raise KdiffError(f"cannot extract {archive}: not a tar archive (plain, gzip, bzip2 or xz) or a corrupt one") from None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise KdiffError(f"cannot extract {archive}: {' '.join(str(e).split())}") from None
    return got


def _verify(images: Path, ids: tuple[str, ...]) -> list[Path]:
    paths = _require(locate_bsd100(images, ids), ids, images)
    for p in paths:
        read_photo(p)  # raises a clear KdiffError for a file that does not decode
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


# --------------------------------------------------------------------------- items


def load_bsd100(
    data_dir: str | os.PathLike | None = None, download: bool = False, limit: int | None = None, **options
) -> list[ItemRef]:
    """Lazy items of the BSD100 protocol (the first ``limit`` ids of the list)."""
    p = bsd100_protocol(**options)
    if p["crop"] < 8 or p["kernel_size"] < 1 or p["sigma"] < 0:
        raise KdiffError("--crop must be >= 8, --kernel-size >= 1 and --sigma >= 0")
    limits.check_kernel_size(p["kernel_size"], "--kernel-size")
    gen = plugins.get("generator", p["generator"])  # unknown: one line listing the generators, before any item
    if getattr(gen, "params", None) is not None:
        plugins.check_options(f"generator {p['generator']!r}", set(gen.params), p["generator_params"])
    if p["kernel_size"] > p["crop"]:
        raise KdiffError(f"--kernel-size {p['kernel_size']} is larger than the {p['crop']}x{p['crop']} crop (--crop)")
    # the blur of one crop: x, y and the convolution's float64 temporaries (~4 copies of 3 channels)
    limits.check_memory(CROP_BYTES_PER_PIXEL * p["crop"] ** 2, f"--crop {p['crop']}", "lower --crop")
    if p["boundary"] not in ops.BOUNDARIES:
        raise KdiffError(f"unknown boundary {p['boundary']!r} (choose from {', '.join(ops.BOUNDARIES)})")
    ids = BSD100_IDS if limit is None else first(list(BSD100_IDS), limit)
    folder = bsd100_dir(data_dir, download)
    paths = _require(locate_bsd100(folder, tuple(ids)), tuple(ids), folder)

    def loader(image_id: str, path: Path) -> Callable[[], Item]:
        return lambda: synthesize_file(path, int(image_id), p, image_id)

    return [ItemRef(i, int(i), loader(i, path)) for i, path in zip(ids, paths)]


class BSD100:
    name = "bsd100"
    description = "100 BSDS300 test images, seeded 256x256 crops blurred by 64x64 kernels, noise 0.01"
    default_metrics = ("psnr", "ssim", "lpips", "fid", "mnc")
    #: options this dataset reads (the CLI passes only these)
    options = ("data_dir", "download", "limit", "seed", "generator", "generator_params", "sigma", "crop", "kernel_size")

    def load(self, **options):
        return load_bsd100(**options)

    def protocol(self, **options) -> dict:
        return {"dataset": self.name, **bsd100_protocol(**options)}


@hookimpl
def register_datasets(register):
    register(BSD100())
