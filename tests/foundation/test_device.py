"""CPU thread sharing (kdiff_cli.device.split_threads)."""

from __future__ import annotations

import torch


def test_split_threads_shares_and_restores_the_cpu_threads():
    from kdiff_cli.device import split_threads

    n = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        with split_threads(torch.device("cpu")) as share:
            assert share == 2 == torch.get_num_threads()
            torch.set_num_threads(1)  # code inside (alternating's one-thread pin) may change it
        assert torch.get_num_threads() == 4
        torch.set_num_threads(1)
        with split_threads(torch.device("cpu")) as share:
            assert share == 1 == torch.get_num_threads()
        with split_threads(torch.device("meta")) as share:  # other devices: untouched
            assert share == torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(n)
