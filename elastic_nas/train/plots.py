"""PNG plots people would rather look at than read."""

from __future__ import annotations

from pathlib import Path

from elastic_nas.io import atomic_write

PANELS = (("world_size", "world size"), ("lr", "learning rate"), ("samples_per_s", "samples/s"),
          ("loss", "train loss"), ("train_top1", "train top-1 (%)"))


def plot_history(history: list[dict], out: Path) -> Path:
    """World size, LR, throughput, train loss and top-1 over wall-clock time, restarts marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = history[0]["time"]
    reports = [h for h in history if h["event"] == "report"]
    starts = [h for h in history if h["event"] == "start"]
    t = [(h["time"] - t0) for h in reports]
    panels = [(key, label) for key, label in PANELS if any(key in h for h in reports)]  # old runs: no loss
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 1.9 * len(panels) + 1), sharex=True, squeeze=False)
    axes = axes[:, 0]
    for ax, (key, label) in zip(axes, panels):
        values = [h.get(key, float("nan")) for h in reports]
        if key == "world_size":
            ax.step(t, values, where="post")
        else:
            ax.plot(t, values, marker=".", ms=3)
        ax.set_ylabel(label)
        for h in starts[1:]:
            ax.axvline(h["time"] - t0, color="tab:red", ls="--", lw=0.8)
        ax.grid(alpha=0.3)
    axes[0].set_title("Elastic training (dashed: worker-group restarts)")
    axes[-1].set_xlabel("seconds since start")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return out
