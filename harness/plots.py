"""PNGs of a run (``nta run --plot DIR``): rates over time, the pool over time, the page map."""

from __future__ import annotations

import os

import numpy as np

from harness.nta import CELLS


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(doc: dict, out_dir: str, page_map: np.ndarray | None = None) -> list[str]:
    """Write the pictures of a run (its document, harness.run.RunResult.as_dict) into out_dir; return
    their paths."""
    plt = _plt()
    rows = doc["intervals"]
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
    ax.set_title(f"{os.path.basename(doc['config']['pcap'])}: rate at each counting point")
    if ax.get_legend_handles_labels()[0]:  # a run shorter than an interval has no line
        ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "pps.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    if doc["controller"] is None:
        return paths
    hold = doc["controller"]["hold"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(t, [r["pages"] for r in rows], marker=".", label="pages held by fragments or handed out")
    ax.plot(t, [r["inflight"] for r in rows], marker=".",
            label="pages mapped (in flight: held, cached, ring)")
    ax2 = ax.twinx()
    ax2.plot(t, [r["frag_pct"] for r in rows], color="grey", linestyle="--", label="fragmentation %")
    ax2.set_ylabel("fragmentation %")
    ax.set_xlabel("seconds")
    ax.set_ylabel("pages")
    ax.set_title(f"page pool, hold {hold}")
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "pool.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    lat = doc["controller"].get("latency_us") or {}
    if lat.get("samples"):
        paths.append(plot_latency(lat, os.path.join(out_dir, "latency.png"), hold))

    if page_map is not None:
        touched = np.flatnonzero((page_map != 0).any(axis=1))
        last = int(touched[-1]) + 1 if touched.size else 1
        paths.append(os.path.join(out_dir, "pagemap.png"))
        shown = page_map[:max(last, 64)]
        used = shown == CELLS["used"]
        note = f"{used.sum():,} chunks held by live fragments in {int(used.any(axis=1).sum()):,} pages"
        plot_page_maps({"pool": shown}, paths[-1], page_map.shape[1], {"pool": note},
                       title=f"the page pool at its peak, hold {hold}, allocator "
                             f"{doc['controller']['allocator']} "
                             f"({shown.shape[0]} pages, each a tile of 8 x {page_map.shape[1] // 8} chunks)")
    return paths


def plot_page_maps(maps: dict[str, np.ndarray], path: str, chunks_per_page: int,
                   notes: dict | None = None, title: str | None = None) -> None:
    """Each page a tile of 8 rows of chunks, 64 pages across; one panel per map."""
    plt = _plt()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    cells = {"untouched": ("#ffffff", "untouched"), "free": ("#f3e3c3", "free"),
             "used": ("#1f3b73", "used (asked for)"), "cached": ("#7fb3d5", "cached, in the ring, or pinned"),
             "large": ("#6c3483", "large block"), "slack": ("#d9534f", "slack (handed out, not asked for)")}
    colours, names = ["#ffffff"] * (max(CELLS.values()) + 1), [""] * (max(CELLS.values()) + 1)
    for name, value in CELLS.items():
        colours[value], names[value] = cells[name]
    fig, axes = plt.subplots(1, len(maps), figsize=(max(6 * len(maps), 9), 7.5), squeeze=False)
    for ax, (name, m) in zip(axes[0], maps.items(), strict=True):
        pages, cols = m.shape[0], 64
        rows = -(-pages // cols)
        th, tw = 8, chunks_per_page // 8
        img = np.zeros((rows * th, cols * tw), dtype=np.uint8)
        for p in range(pages):
            r, c = divmod(p, cols)
            img[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = m[p].reshape(th, tw)
        ax.imshow(img, cmap=ListedColormap(colours), vmin=0, vmax=len(colours) - 1, interpolation="nearest",
                  aspect="auto")
        ax.set_title(f"{name}: {(notes or {}).get(name, '')}")
        ax.set_xticks([])
        ax.set_yticks([])
    seen = set().union(*(np.unique(m).tolist() for m in maps.values()))
    shown = [Patch(color=colours[v], label=names[v]) for v in sorted(seen) if v < len(names)]
    fig.legend(handles=shown, loc="lower center", ncol=3, frameon=False)
    pages = maps[next(iter(maps))].shape[0]
    fig.suptitle(title or f"page maps ({pages} pages, each a tile of 8 x {chunks_per_page // 8} chunks)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pressure(doc: dict, path: str) -> str:
    """``nta bench pressure``: the frames each allocator dropped against the pages its pool may hold, from
    every probe of the bisection, a line per allocator; each one's zero-drop budget marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4.8))
    for al, d in doc["allocators"].items():
        pts = sorted({p["budget"]: 100.0 * p["dropped"] / p["handled"] for p in
                      [*d["budget_probes"], {"budget": doc["budget"], **d["at_budget"]}]}.items())
        line = ax.plot([b for b, _ in pts], [x for _, x in pts], marker="o", label=f"{al}: nothing dropped from "
                       f"{d['zero_drop_budget']:,} pages")[0]
        ax.axvline(d["zero_drop_budget"], color=line.get_color(), linestyle=":", alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("budget: pages a pool may hold (log scale)")
    ax.set_ylabel("frames dropped, % of those handled")
    ax.set_title(f"{os.path.basename(doc['pcap'])} x{doc['loops']}, hold {doc['hold']}: drops at the memory limit")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_latency(lat: dict, path: str, hold: str) -> str:
    """The wait of every record from XDP's timestamp to the controller's drain, as a histogram (records per
    microsecond, log scale), its p50, p99 and p99.9 marked."""
    plt = _plt()
    h = lat["histogram"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.bar(h["us"], h["records"], width=1.0, color="#1f3b73")
    for q, style in (("p50", "-"), ("p99", "--"), ("p999", ":")):
        ax.axvline(lat[q], color="#d9534f", linestyle=style, label=f"{q.replace('p999', 'p99.9')} {lat[q]:.0f} us")
    ax.set_yscale("log")
    ax.set_xlabel("microseconds from XDP to the controller")
    ax.set_ylabel("records")
    ax.set_title(f"latency XDP -> controller, hold {hold}: {lat['samples']:,} records, max {lat['max']:.0f} us")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
