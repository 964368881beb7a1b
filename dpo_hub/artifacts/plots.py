"""Every figure dpo_hub writes: the loss curve (``loss.png``), the comparison (``comparison.png``), a sweep's
``sweep.png``.

Plain data in, a PNG out; matplotlib runs headless (Agg).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def loss_curve(
    log_history: list[dict],
    path: Path,
    title: str,
    untrained: float | None = None,
    untrained_label: str = "untrained",
) -> None:
    """Train vs eval loss over steps, like the tutorial's plot; ``untrained``: the loss at zero margin,
    dotted."""
    plt = _pyplot()
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for points, label, style in ((train, "train loss", "-"), (evals, "eval loss", "o--")):
        if points:
            ax.plot(*zip(*points), style, label=label)
    if untrained is not None:
        ax.axhline(
            untrained,
            color="grey",
            linewidth=0.8,
            linestyle=":",
            label=f"{untrained:.4g} ({untrained_label})",
        )
    ax.set(xlabel="step", ylabel="DPO loss", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def comparison_figure(preference: dict[str, Any] | None, margins: list[float], path: Path) -> None:
    """Accuracy bars (base vs tuned, Wilson 95% error bars) and a histogram of per-pair reward margins."""
    plt = _pyplot()
    fig, (bars, hist) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    if p := preference:
        for offset, model in ((-0.2, "base"), (0.2, "tuned")):
            shares = [p["accuracy"][kind][model] for kind in ("summed", "per_token")]
            values = [s["value"] for s in shares]
            errors = [
                [s["value"] - s["ci95"][0] for s in shares],
                [s["ci95"][1] - s["value"] for s in shares],
            ]
            drawn = bars.bar([i + offset for i in range(2)], values, 0.4, yerr=errors, capsize=4, label=model)
            for rect, value in zip(drawn, values, strict=True):  # at the foot of the bar: visible even at 0
                bars.text(
                    rect.get_x() + rect.get_width() / 2,
                    0.02,
                    f"{value:.2f}",
                    ha="center",
                    va="bottom",
                    bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0},
                )
        bars.axhline(0.5, color="grey", linewidth=0.8, linestyle=":", label="chance")
        bars.set(
            xticks=[0, 1],
            xticklabels=["summed log-prob", "per-token log-prob"],
            ylim=(0, 1),
            ylabel="preference accuracy",
            title=f"Chosen > rejected on {p['n_pairs']} pairs",
        )
        bars.legend()
        hist.hist(margins, bins=min(30, max(5, len(margins) // 3)))
        hist.axvline(0, color="grey", linewidth=0.8, linestyle=":")
        hist.axvline(p["reward_margin"]["mean"], color="red", linewidth=1, label="mean")
        hist.set(
            xlabel="implicit reward margin", ylabel="pairs", title=f"DPO reward margin (beta {p['beta']:g})"
        )
        hist.legend()
    else:
        for ax in (bars, hist):
            ax.text(0.5, 0.5, "no preference pairs", ha="center", va="center")
            ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def sweep_figure(labels: list[str], series: dict[str, list[float | None]], path: Path) -> None:
    """One bar panel per metric (eval loss, reward accuracy, ...), one bar per sweep point (missing: no
    bar)."""
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, len(series), figsize=(4 * len(series), 3 + 0.25 * len(labels)), dpi=100, squeeze=False
    )
    for ax, (name, values) in zip(axes[0], series.items(), strict=True):
        ax.barh(range(len(labels)), [v if v is not None else 0 for v in values])
        for i, value in enumerate(values):
            ax.text(0, i, f" {value:.4f}" if value is not None else " -", va="center")
        ax.set(yticks=range(len(labels)), yticklabels=labels if ax is axes[0][0] else [], title=name)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
