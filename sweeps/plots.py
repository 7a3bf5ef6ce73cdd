"""Sweep plots: dev F1 over the α x β plane (each trial a cell of a binned heat map) and the best F1 per K."""
from __future__ import annotations

from pathlib import Path

from sweeps.space import METRIC


def plot_sweep(table, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    paths = []
    a, b = "config/align.alpha", "config/align.beta"
    if a in table and b in table:
        fig, ax = plt.subplots(figsize=(5, 4))
        bins = 5
        grid = np.full((bins, bins), np.nan)
        ia = np.clip((table[a].astype(float) * bins).astype(int), 0, bins - 1)
        ib = np.clip((table[b].astype(float) * bins).astype(int), 0, bins - 1)
        for i, j, f in zip(ia, ib, table[METRIC]):
            grid[j, i] = f if np.isnan(grid[j, i]) else max(grid[j, i], f)
        im = ax.imshow(grid * 100, origin="lower", extent=(0, 1, 0, 1), cmap="viridis", aspect="auto")
        ax.scatter(table[a], table[b], c="white", edgecolors="black", s=25)
        fig.colorbar(im, ax=ax, label="best dev F1 (%) in cell")
        ax.set_xlabel("α (semantic alignment)")
        ax.set_ylabel("β (modality alignment)")
        ax.set_title(f"{len(table)} trials")
        fig.tight_layout()
        paths.append(out / "alpha_beta.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    k = "config/align.k"
    if k in table:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        groups = table.groupby(k)[METRIC]
        ks = sorted(groups.groups)
        ax.plot(ks, [100 * groups.get_group(x).max() for x in ks], marker="o", label="best")
        ax.plot(ks, [100 * groups.get_group(x).mean() for x in ks], marker=".", linestyle="--", label="mean")
        ax.set_xlabel("K (implicit positives)")
        ax.set_ylabel("dev F1 (%)")
        ax.legend()
        fig.tight_layout()
        paths.append(out / "k_curve.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths
