"""``kdiff_cli.shard``: parsing ``--shard I/N``, torchrun's environment, the interleaved share."""

import pytest

from kdiff_cli import shard
from kdiff_cli.errors import KdiffError


def test_parse_and_take():
    s = shard.parse("2/3")
    assert (s.index, s.count, s.label, s.main, s.distributed) == (1, 3, "2/3", False, False)
    items = list(range(8))
    shares = [shard.parse(f"{i}/3").take(items) for i in (1, 2, 3)]
    assert shares == [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert sorted(sum(shares, [])) == items  # every item exactly once
    assert shard.parse(" 1 / 1 ").take(items) == items


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "2", "a/b", "-1/2", "1/2/3"])
def test_parse_errors(text):
    with pytest.raises(KdiffError, match="--shard"):
        shard.parse(text)


def test_from_env():
    assert shard.from_env({}) is None
    assert shard.from_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    s = shard.from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert (s.index, s.count, s.distributed, s.local_rank, s.label) == (2, 4, True, 0, "3/4")
    with pytest.raises(KdiffError, match="outside 0..1"):
        shard.from_env({"WORLD_SIZE": "2", "RANK": "5"})
    with pytest.raises(KdiffError, match="integers"):
        shard.from_env({"WORLD_SIZE": "two"})


def test_shard_and_torchrun_together_is_an_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(KdiffError, match="use one of them"):
        shard.resolve("1/2")


def test_single_process_device_untouched():
    assert shard.SINGLE.device("cuda") == "cuda" and shard.parse("1/2").device("auto") == "auto"
    assert shard.Shard(1, 2, distributed=True, local_rank=1).device("cpu") == "cpu"
