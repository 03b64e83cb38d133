"""What an interface is, from what the kernel reports: its RX queues from ethtool's channels, and the
queue an IRQ serves from its name (harness.nic)."""

import pytest

from harness.figures import modes_text, socket_mode
from harness.nic import irq_queue, rx_queues


@pytest.mark.parametrize("name, queue", [
    ("eth0-TxRx-3", 3), ("i40e-eth1-TxRx-12", 12), ("ice-ens1f0-TxRx-0", 0), ("mlx5_comp3@pci:0000:08:00.0", 3),
    ("virtio0-input.3", 3), ("enp1s0-rx-2", 2), ("bnxt_en-fp-5", 5),
    ("virtio0-output.0", None), ("eth0-tx-2", None), ("virtio0-config", None), ("mlx5_async0@pci:0000:08:00.0", None),
])
def test_the_queue_an_irq_serves_comes_from_its_name(name, queue):
    assert irq_queue(name) == queue


@pytest.mark.parametrize("driver, channels, allocated, queues", [
    ("veth", {"rx": 2, "tx": 2, "combined": 2}, 2, 2),  # veth's combined is min(rx, tx): a view, not queues
    ("veth", {"rx": 1, "tx": 1, "combined": 1}, 1, 1),
    ("mlx5_core", {"rx": 0, "tx": 0, "combined": 8}, 64, 8),
    ("igb", {"rx": 2, "tx": 2, "combined": 0}, 8, 2),
    ("sfc", {"rx": 2, "tx": 0, "combined": 4}, 16, 6),  # RX-only channels and combined ones both receive
    ("virtio_net", {"rx": 0, "tx": 0, "combined": 4}, 0, 4),  # no IFLA_NUM_RX_QUEUES: the channels alone
    ("dummy", None, 1, 1),  # no channels report: the queues it was made with
])
def test_rx_queues_from_the_channels(driver, channels, allocated, queues):
    assert rx_queues(driver, channels, allocated) == queues


def test_socket_modes_in_a_few_words():
    copy = socket_mode({"zerocopy": 0, "zc_errno": 95, "aligned": 0, "unaligned_errno": 0})
    assert copy == {"mode": "copy", "zerocopy_refused": "Operation not supported", "chunks": "unaligned",
                    "unaligned_refused": None}
    zc = socket_mode({"zerocopy": 1, "zc_errno": 0, "aligned": 0, "unaligned_errno": 0})
    assert modes_text([zc]) == "zero-copy mode"
    zc_aligned = socket_mode({"zerocopy": 1, "zc_errno": 0, "aligned": 1, "unaligned_errno": 22})
    assert modes_text([zc_aligned]) == "zero-copy mode, aligned chunks (unaligned refused: Invalid argument)"
    copy_aligned = socket_mode({"zerocopy": 0, "zc_errno": 95, "aligned": 1, "unaligned_errno": 0})
    assert modes_text([copy_aligned]) == "copy mode, aligned chunks (zero-copy refused: Operation not supported)"
    assert modes_text([copy, copy]) == "all sockets copy mode (zero-copy refused: Operation not supported)"
    assert modes_text([zc, copy]) == ("queue 0 zero-copy mode; queue 1 copy mode (zero-copy refused: "
                                      "Operation not supported)")
