"""PNG plots people would rather look at than read."""

from __future__ import annotations

from pathlib import Path


def plot_history(history: list[dict], out: Path) -> Path:
    """World size, LR and throughput over wall-clock time, with restarts marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = history[0]["time"]
    reports = [h for h in history if h["event"] == "report"]
    starts = [h for h in history if h["event"] == "start"]
    t = [(h["time"] - t0) for h in reports]
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    for ax, key, label in zip(axes, ("world_size", "lr", "samples_per_s"),
                              ("world size", "learning rate", "samples/s")):
        ax.step(t, [h[key] for h in reports], where="post") if key == "world_size" else ax.plot(
            t, [h[key] for h in reports], marker=".", ms=3)
        ax.set_ylabel(label)
        for h in starts[1:]:
            ax.axvline(h["time"] - t0, color="tab:red", ls="--", lw=0.8)
        ax.grid(alpha=0.3)
    axes[0].set_title("Elastic training (dashed: worker-group restarts)")
    axes[-1].set_xlabel("seconds since start")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
