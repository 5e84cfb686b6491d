"""Training configuration: engine defaults + task defaults, a TOML file, then ``--set`` overrides.

A config is a plain nested ``dict`` of TOML-able values (str, int, float, bool, lists of them and
tables). Every key must exist in the defaults, and every value takes the type of its default
(an ``int`` default accepts ``3`` or ``3.0`` but not ``2.5``; a ``float`` default accepts ``3``).
A table whose default is empty (``{}``) is free-form: any keys, values kept as given.

Paths: a key whose name ends in ``_dir``, ``_file`` or ``_path`` is a path. A relative path in a
TOML file is relative to that file's folder; one given with ``--set`` or in the defaults is
relative to the current directory. The resolved config holds absolute paths; an empty string means
"not set".

The resolved config is saved beside every run as ``config.toml`` with a ``[meta]`` table (kdiff
version, task); loading a file that carries ``[meta]`` checks that it is for the same task.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10: the same parser from PyPI (a declared dependency there)
    import tomli as tomllib

from kdiff_cli import params
from kdiff_cli.errors import KdiffError

PATH_SUFFIXES = ("_dir", "_file", "_path")
META = "meta"

#: Engine defaults shared by every task; a task's ``defaults`` are merged over these.
BASE_DEFAULTS: dict[str, Any] = {
    "seed": 0,  # seeds every random generator (model init, crops, kernels, noise)
    "data": {
        "train_dir": "../shared/data/train",  # folder of clean images (JPEG/PNG/...)
        "val_dir": "../shared/data/val",  # folder of clean validation images; "" = no validation
        "crop": 128,  # square training crop P (pixels)
        "batch": 8,  # crops per step (per process under torchrun)
        "flip": True,  # random horizontal and vertical flips
        "kernel_size": 64,  # kernel canvas S (S x S)
        "generators": ["borodenko", "boracchi-foi"],  # kernel generator plugins, mixed
        "generator_weights": [],  # mixture weights (same length as generators); [] = equal
        "generator_params": {},  # per-generator parameters, e.g. {borodenko = {intensity = 0.5}}
        "kernels_file": "",  # .npz from `kdiff synth-kernels` (key "kernels"); replaces generators
        "bank": 0,  # > 0: draw this many kernels once and keep them and the images on the device (GPU)
        "bank_workers": 1,  # processes that draw the bank
        "sigma_min": 0.0,  # noise standard deviation ~ U(sigma_min, sigma_max), images in [0, 1]
        "sigma_max": 0.03,
        "boundary": "symmetric",  # boundary of the blur y = k * x
        "val_count": 16,  # fixed validation crops (drawn once from val_dir with val_seed)
        "val_batch": 8,
        "val_seed": 1234,
    },
    "train": {
        "steps": 10000,  # total optimisation steps
        "lr": 2e-4,  # AdamW peak learning rate
        "weight_decay": 0.0,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "schedule": "cosine",  # cosine | constant | linear (after warmup)
        "warmup": 200,  # linear warmup steps
        "min_lr_ratio": 0.05,  # final lr / peak lr for cosine and linear
        "grad_clip": 1.0,  # max global gradient norm; 0 = off
        "ema_decay": 0.999,  # EMA of the weights (what is exported); warmed up as (1+n)/(10+n)
        "precision": "fp32",  # fp32 | bf16 (CPU autocast or CUDA AMP) | fp16 (CUDA AMP)
        "device": "auto",  # auto | cpu | cuda | mps
        "threads": 0,  # torch.set_num_threads; 0 = torch's default
        "log_every": 10,  # CSV row every N steps
        "val_every": 500,  # validation (and loss-curve PNG) every N steps; 0 = only at the end
        "ckpt_every": 500,  # checkpoint every N steps (and always at the end)
        "keep_every": 0,  # also keep ckpt-<step>.pt every N steps; 0 = only ckpt-latest.pt
        "time_budget_s": 0,  # > 0: fit train.steps to about this many seconds of this session (set after 50 steps)
        "init": "",  # start from these weights (shipped name or .safetensors path); "" = random init
    },
}


# --------------------------------------------------------------------------- merging and typing


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults ``base`` with ``update`` merged in (new keys allowed; no type checks)."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict) and out[key]:
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def defaults_for(task_defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The complete defaults of a task: :data:`BASE_DEFAULTS` with the task's sections merged over."""
    return deep_merge(BASE_DEFAULTS, task_defaults)


def _type_name(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(v), type(v).__name__)


def _is_path_key(key: str) -> bool:
    return key.rsplit(".", 1)[-1].endswith(PATH_SUFFIXES)


def coerce(value: Any, default: Any, key: str, where: str) -> Any:
    """``value`` converted to the type of ``default``; a mismatch raises :class:`KdiffError`."""
    bad = KdiffError(f"{where}: {key} must be {_type_name(default)}, got {value!r}")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise bad
    if isinstance(default, int):
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise bad
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise bad
    if isinstance(default, list):
        if not isinstance(value, list):
            raise bad
        if default:
            return [coerce(v, default[0], f"{key}[{i}]", where) for i, v in enumerate(value)]
        return copy.deepcopy(value)
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise bad
        if not default:  # free-form table
            return copy.deepcopy(value)
        return merge(default, value, where, prefix=key + ".")
    raise KdiffError(f"{where}: {key} has an unsupported default {default!r}")


def merge(base: Mapping[str, Any], update: Mapping[str, Any], where: str, prefix: str = "") -> dict[str, Any]:
    """``base`` updated by ``update``: every key must exist in ``base``, values take its types."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        full = prefix + key
        if key not in base:
            section = f"[{prefix[:-1]}]" if prefix else "the top level"
            raise KdiffError(f"{where}: unknown key {full!r} (valid keys in {section}: {', '.join(sorted(base))})")
        out[key] = coerce(value, base[key], full, where)
    return out


def _parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML value when it parses as one (``3``, ``1e-4``, ``true``, ``[1, 2]``)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _override_value(text: str, default: Any, key: str) -> Any:
    where = "--set"
    if isinstance(default, str):
        return _parse_value(text) if text[:1] in "\"'" else text
    if isinstance(default, bool):
        return params.parse_bool(text, key, where)
    if isinstance(default, list):
        parsed = _parse_value(text)
        if not isinstance(parsed, list):
            parsed = [_parse_value(p.strip()) if not (default and isinstance(default[0], str)) else p.strip()
                      for p in text.split(",") if p.strip()]
        return coerce(parsed, default, key, where)
    if isinstance(default, dict):
        parsed = _parse_value(text)
        return coerce(parsed, default, key, where)
    return coerce(_parse_value(text), default, key, where)


def apply_override(cfg: dict[str, Any], item: str, defaults: Mapping[str, Any]) -> None:
    """Apply one ``key.path=value`` override in place, typed by the default's type."""
    if "=" not in item:
        raise KdiffError(f"--set expects key=value (e.g. train.lr=1e-4), got {item!r}")
    key, text = item.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not all(parts):
        raise KdiffError(f"--set: bad key {key!r}")
    node, dnode = cfg, defaults
    for depth, part in enumerate(parts):
        prefix = ".".join(parts[:depth])
        last = depth == len(parts) - 1
        if isinstance(dnode, dict) and not dnode and depth > 0:  # inside a free-form table
            rest = parts[depth:]
            for p in rest[:-1]:
                node = node.setdefault(p, {})
                if not isinstance(node, dict):
                    raise KdiffError(f"--set: {key} goes through a value that is not a table")
            node[rest[-1]] = _parse_value(text)
            return
        if part not in dnode:
            section = f"[{prefix}]" if prefix else "the top level"
            raise KdiffError(f"--set: unknown key {key!r} (valid keys in {section}: {', '.join(sorted(dnode))})")
        if last:
            value = _override_value(text, dnode[part], key)
            if _is_path_key(key) and value:
                value = str(Path(value).expanduser().resolve())
            node[part] = value
            return
        if not isinstance(dnode[part], dict):
            raise KdiffError(f"--set: {'.'.join(parts[:depth + 1])} is not a table")
        node, dnode = node[part], dnode[part]


def _resolve_paths(cfg: dict[str, Any], base_dir: Path, prefix: str = "") -> None:
    for key, value in cfg.items():
        if isinstance(value, dict):
            _resolve_paths(value, base_dir, prefix + key + ".")
        elif isinstance(value, str) and value and _is_path_key(key):
            p = Path(value).expanduser()
            cfg[key] = str((p if p.is_absolute() else base_dir / p).resolve())


# --------------------------------------------------------------------------- TOML in and out


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a TOML file; a missing or malformed file raises a one-line :class:`KdiffError`."""
    path = Path(path)
    if not path.is_file():
        raise KdiffError(f"config file not found: {path}")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise KdiffError(f"cannot parse config file {path}: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise KdiffError(f"cannot read config file {path}: {e}") from None


def resolve(
    task_name: str,
    task_defaults: Mapping[str, Any],
    config_file: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
    base: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The resolved config of a run.

    ``base`` (a saved config, e.g. when resuming) replaces the defaults as the starting point,
    but is still checked against them. Then ``config_file``, then ``overrides`` (``a.b=value``).
    """
    defaults = defaults_for(task_defaults)
    cfg = copy.deepcopy(defaults)
    _resolve_paths(cfg, Path.cwd())
    if base is not None:
        base = {k: v for k, v in base.items() if k != META}
        cfg = merge(cfg, base, "saved config")
    if config_file is not None:
        data = read_toml(config_file)
        meta = data.pop(META, None)
        if isinstance(meta, dict) and meta.get("task") not in (None, task_name):
            raise KdiffError(f"config file {config_file} is for task {meta.get('task')!r}, not {task_name!r}")
        _resolve_paths(data, Path(config_file).resolve().parent)
        cfg = merge(cfg, data, f"config file {config_file}")
    for item in overrides:
        apply_override(cfg, item, defaults)
    return cfg


_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k, ensure_ascii=False)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise KdiffError(f"cannot write {v!r} to TOML")


def dumps_toml(cfg: Mapping[str, Any], header: str = "") -> str:
    """TOML text for a nested dict: scalars first, then one ``[table]`` per nested dict."""
    lines = [f"# {line}" for line in header.splitlines()]

    def table(d: Mapping[str, Any], name: str) -> None:
        scalars = {k: v for k, v in d.items() if not (isinstance(v, dict) and v)}
        tables = {k: v for k, v in d.items() if isinstance(v, dict) and v}
        if name and (scalars or not tables):
            lines.append("")
            lines.append(f"[{name}]")
        for k, v in scalars.items():
            lines.append(f"{_key(k)} = {_value(v)}")
        for k, v in tables.items():
            table(v, f"{name}.{_key(k)}" if name else _key(k))

    table(cfg, "")
    return "\n".join(lines).lstrip("\n") + "\n"


def save(cfg: Mapping[str, Any], path: str | os.PathLike, meta: Mapping[str, Any] | None = None) -> Path:
    """Write the resolved config (plus a ``[meta]`` table) atomically as TOML."""
    path = Path(path)
    data = dict(cfg)
    if meta:
        data[META] = dict(meta)
    text = dumps_toml(data, header="kdiff resolved training config; reuse with --config or --resume")
    from kdiff_cli.files import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
