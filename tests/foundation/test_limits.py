"""Size guards (kdiff_cli/limits.py): the kernel side limit, the memory and disk checks, their
environment overrides and one-line messages naming the limit and how to raise it."""

import os
from collections import namedtuple

import pytest

from kdiff_cli import limits
from kdiff_cli.errors import KdiffError


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch):
    monkeypatch.delenv(limits.KERNEL_SIZE_ENV, raising=False)
    monkeypatch.delenv(limits.MEMORY_ENV, raising=False)


@pytest.mark.parametrize("text, value", [("64G", 64 << 30), ("512m", 512 << 20), ("1.5T", 3 << 39), ("1000", 1000),
                                         ("2GiB", 2 << 30), (" 8 K ", 8 << 10)])
def test_parse_bytes(text, value):
    assert limits.parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "lots", "-1G", "1P", "G"])
def test_parse_bytes_refuses_other_text(text):
    with pytest.raises(KdiffError, match="KDIFF_MEMORY_LIMIT must be a size such as 64G"):
        limits.parse_bytes(text)


def test_human():
    assert [limits.human(n) for n in (512, 1536, 3 << 30, 5 << 40)] == ["512 B", "1.5 KiB", "3.0 GiB", "5.0 TiB"]


def test_kernel_size_limit_and_its_override(monkeypatch):
    assert limits.check_kernel_size(1024, "--size") == 1024
    with pytest.raises(KdiffError) as e:
        limits.check_kernel_size(1025, "--size")
    assert str(e.value) == "--size 1025 is over the kernel size limit of 1024 pixels (set KDIFF_MAX_KERNEL_SIZE=1025 to allow it)"
    monkeypatch.setenv("KDIFF_MAX_KERNEL_SIZE", "2048")
    assert limits.check_kernel_size(2048, "--size") == 2048
    monkeypatch.setenv("KDIFF_MAX_KERNEL_SIZE", "big")
    with pytest.raises(KdiffError, match="KDIFF_MAX_KERNEL_SIZE must be an integer"):
        limits.check_kernel_size(3, "--size")


def test_memory_check_uses_the_override_and_names_the_way_out(monkeypatch):
    monkeypatch.setenv("KDIFF_MEMORY_LIMIT", "1G")
    assert limits.available_memory() == 1 << 30
    limits.check_memory(1 << 30, "--count 1", "lower --count")  # exactly what is there: fine
    with pytest.raises(KdiffError) as e:
        limits.check_memory(3 << 30, "--size 9000", "lower --size")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("--size 9000 needs at least 3.0 GiB of memory, 1.0 GiB is available; lower --size")
    assert msg.endswith("KDIFF_MEMORY_LIMIT=4G)")


def test_memory_reported_by_the_system_is_positive():
    avail = limits.available_memory()
    assert avail is None or avail > 0


def test_disk_check(monkeypatch, tmp_path):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(limits.shutil, "disk_usage", lambda path: usage(100 << 20, 90 << 20, 10 << 20))
    limits.check_disk(tmp_path / "k.npz", 10 << 20, "--count 1", "lower --count")
    with pytest.raises(KdiffError) as e:
        limits.check_disk(tmp_path / "missing" / "deeper" / "k.npz", 20 << 20, "--count 9", "lower --count")
    assert str(e.value) == f"--count 9 writes 20.0 MiB, but {tmp_path} has 10.0 MiB free; lower --count"
    assert not (tmp_path / "missing").exists()


def test_environment_untouched_by_the_checks():
    before = dict(os.environ)
    limits.available_memory()
    limits.max_kernel_size()
    assert dict(os.environ) == before
