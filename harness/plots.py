"""PNGs of a run (``nta run --plot DIR``): rates over time, the pool over time, the page map."""

from __future__ import annotations

import os

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(result, out_dir: str, page_map: np.ndarray | None = None) -> list[str]:
    """Write the run's pictures into out_dir; return their paths."""
    plt = _plt()
    rows = result.intervals
    t = [r["t"] for r in rows]
    paths = []

    fig, ax = plt.subplots(figsize=(9, 4.5))
    series = (("sent_pps", "veth tx (replayer)"), ("rx_pps", "XDP seen"), ("meta_pps", "metadata drained"),
              ("alloc_pps", "controller allocations"), ("lost_pps", "ring lost"), ("drop_pps", "veth drops"))
    for key, label in series:
        if rows and key in rows[0]:
            ax.plot(t, [r[key] for r in rows], marker=".", label=label)
    ax.set_xlabel("seconds")
    ax.set_ylabel("packets per second")
    ax.set_title(f"{os.path.basename(result.config.pcap)}: rate at each counting point")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "pps.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    if result.consumer is None:
        return paths
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(t, [r["pages"] for r in rows], marker=".", label="pages held by fragments or handed out")
    ax.plot(t, [r["inflight"] for r in rows], marker=".",
            label="pages mapped (in flight: held, cached, ring)")
    ax2 = ax.twinx()
    ax2.plot(t, [r["frag_pct"] for r in rows], color="grey", linestyle="--", label="fragmentation %")
    ax2.set_ylabel("fragmentation %")
    ax.set_xlabel("seconds")
    ax.set_ylabel("pages")
    ax.set_title(f"page pool, hold {result.config.hold}")
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "pool.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    if page_map is not None:
        from harness.bench import plot_page_maps

        touched = np.flatnonzero((page_map != 0).any(axis=1))
        last = int(touched[-1]) + 1 if touched.size else 1
        paths.append(os.path.join(out_dir, "pagemap.png"))
        shown = page_map[:max(last, 64)]
        held = (shown == 2).sum()
        note = f"{held:,} chunks held by live fragments in {int((shown == 2).any(axis=1).sum()):,} pages"
        plot_page_maps({"pool": shown}, paths[-1], page_map.shape[1], {"pool": note},
                       title=f"the page pool at the end of the run, hold {result.config.hold} "
                             f"({shown.shape[0]} pages, each a tile of 8 x {page_map.shape[1] // 8} chunks)")
    return paths
