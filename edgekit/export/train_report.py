"""The pictures and table of a training run's report (matplotlib, drawn off-screen)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit import bundle as bundle_mod
from edgekit.deps import require


def write_report(folder: Path, history: list[dict[str, Any]], conf: np.ndarray, classes: list[str],
                 per_class: list[dict[str, Any]]) -> None:
    """confusion.png, curves.png and per_class.txt in ``folder``, each replaced atomically."""
    mpl = require("matplotlib", "drawing the training report")
    mpl.use("Agg", force=True)
    plt = require("matplotlib.pyplot", "drawing the training report")
    import io

    def save(fig: Any, name: str) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        bundle_mod.write_bytes_atomic(folder / name, buf.getvalue())

    n = len(classes)
    rows = conf.sum(axis=1, keepdims=True)
    share = np.divide(conf, np.maximum(rows, 1))
    side = min(14.0, 3.0 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ticks = [c if len(c) <= 18 else c[:17] + "…" for c in classes]
    if n <= 60:  # set_xticks(ticks, labels) is matplotlib 3.5+; JetPack 5's Ubuntu 20.04 has 3.1
        ax.set_xticks(range(n))
        ax.set_xticklabels(ticks, rotation=90 if n > 6 else 0, fontsize=8 if n > 20 else 10)
        ax.set_yticks(range(n))
        ax.set_yticklabels(ticks, fontsize=8 if n > 20 else 10)
    if n <= 25:
        for t in range(n):
            for p in range(n):
                if conf[t, p]:
                    ax.text(p, t, str(int(conf[t, p])), ha="center", va="center", fontsize=8,
                            color="white" if share[t, p] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true class")
    ax.set_title(f"validation: {int(np.trace(conf))}/{int(conf.sum())} correct "
                 f"({np.trace(conf) / max(1, conf.sum()):.1%})")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    save(fig, "confusion.png")

    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.plot(ep, [h["train_loss"] for h in history], "o-", label="training (label smoothing 0.1)")
    a1.plot(ep, [h["val_loss"] for h in history], "o-", label="validation")
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss")
    a1.legend()
    a2.plot(ep, [100 * h["train_accuracy"] for h in history], "o-", label="training (augmented)")
    a2.plot(ep, [100 * h["val_accuracy"] for h in history], "o-", label="validation")
    a2.set_xlabel("epoch")
    a2.set_ylabel("top-1 accuracy (%)")
    a2.legend()
    from matplotlib.ticker import MaxNLocator

    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    save(fig, "curves.png")

    width = max(5, max(len(c) for c in classes))
    lines = [f"{'class':<{width}}  images  correct  accuracy"]
    for r in sorted(per_class, key=lambda r: r["accuracy"]):
        lines.append(f"{r['class']:<{width}}  {r['images']:>6}  {r['correct']:>7}  {r['accuracy']:>8.1%}")
    bundle_mod.write_text_atomic(folder / "per_class.txt", "\n".join(lines) + "\n")
