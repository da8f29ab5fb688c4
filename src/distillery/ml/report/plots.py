"""Figures for reports: learning curves. Matplotlib only, headless (Agg)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def learning_curve(
    step_history: list[dict[str, float]],
    epoch_history: list[dict[str, float]],
    title: str,
) -> Figure:
    """Train loss per step, validation loss and macro-F1 per epoch, on a shared step axis.

    Args:
        step_history: records with ``step`` and ``train_loss``.
        epoch_history: records with ``step``, ``val_loss`` and ``val_macro_f1``.
        title: figure title.

    Returns:
        The figure (the caller saves or logs it).
    """
    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(11, 4))
    if step_history:
        ax_loss.plot(
            [r["step"] for r in step_history],
            [r["train_loss"] for r in step_history],
            lw=0.8,
            alpha=0.7,
            label="train loss (step)",
        )
    if epoch_history:
        steps = [r["step"] for r in epoch_history]
        ax_loss.plot(
            steps, [r["val_loss"] for r in epoch_history], "o-", label="val loss"
        )
        ax_f1.plot(
            steps,
            [r["val_macro_f1"] for r in epoch_history],
            "o-",
            label="val macro-F1",
        )
        ax_f1.plot(
            steps,
            [r["val_accuracy"] for r in epoch_history],
            "s--",
            label="val accuracy",
        )
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.legend()
    ax_f1.set_xlabel("optimizer step")
    ax_f1.set_ylim(0, 1)
    ax_f1.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig
