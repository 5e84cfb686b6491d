"""Weights files: safetensors only (never pickle), with a JSON metadata header.

``save`` writes atomically; ``load`` checks the file and the architecture and raises a one-line
:class:`KdiffError` naming the file when it is truncated, corrupted or does not match the model.
Shipped weights live in ``weights/`` (import name ``kdiff_weights``) and are found by name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from kdiff_cli.errors import KdiffError


def shipped_dir() -> Path:
    import kdiff_weights

    return Path(kdiff_weights.__file__).resolve().parent


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A path as given, or the shipped file ``weights/<name>.safetensors``."""
    p = Path(name_or_path).expanduser()
    if p.suffix == ".safetensors" or p.exists() or os.sep in str(name_or_path):
        if not p.is_file():
            raise KdiffError(f"weights file not found: {p}")
        return p
    cand = shipped_dir() / f"{name_or_path}.safetensors"
    if not cand.is_file():
        known = ", ".join(sorted(f.stem for f in shipped_dir().glob("*.safetensors"))) or "none"
        raise KdiffError(f"no shipped weights named {str(name_or_path)!r} (shipped: {known})")
    return cand


def save(path: str | os.PathLike, state: dict[str, torch.Tensor], metadata: dict) -> Path:
    """Write ``state`` (tensors) and ``metadata`` (JSON-serialisable) atomically."""
    from safetensors.torch import save_file

    from kdiff_cli.files import atomic_path

    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"kdiff": json.dumps(metadata, sort_keys=True)})
    return Path(path)


def read(path: str | os.PathLike, tensors: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """Read tensors (none with ``tensors=False``: the header only) and metadata; a bad file
    raises :class:`KdiffError` naming it."""
    from safetensors import safe_open

    path = resolve(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("kdiff", "{}"))
            state = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except KdiffError:
        raise
    except Exception as e:  # safetensors raises several types for truncated/corrupt headers
        raise KdiffError(f"cannot read weights file {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if bad:
        raise KdiffError(f"weights file {path} holds non-finite values (NaN or inf) in {len(bad)} tensor(s), "
                         f"e.g. {bad[0]}; refusing to load it")
    return state, meta


def load_into(module: torch.nn.Module, path: str | os.PathLike, strict: bool = True) -> dict:
    """Load a weights file into ``module``; a mismatched file raises :class:`KdiffError` naming it."""
    state, meta = read(path)
    load_state(module, state, path, strict)
    return meta


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike,
               strict: bool = True) -> None:
    """Load ``state`` read from ``path`` into ``module``; a mismatch raises :class:`KdiffError` naming it."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else "shape mismatch"
        detail = " ".join(str(e).split())[:200]
        raise KdiffError(f"weights file {resolve(path)} does not match the model: {detail or first}") from None

