"""The demo's PNG: test accuracy per round, secure FedAvg next to plaintext FedAvg."""

from __future__ import annotations

import os
from collections.abc import Sequence


def plot_accuracy(
    path: str | os.PathLike[str],
    initial: float,
    secure: Sequence[float | None],
    plaintext: Sequence[float],
    aborted: Sequence[int] = (),
    dropped: Sequence[int] = (),
    title: str = "",
) -> None:
    """Write a PNG of accuracy per round (round 0 is the initial model).

    Args:
        secure: accuracy after each round of the secure federation (None: unknown).
        plaintext: accuracy after each round of plaintext FedAvg on the same data.
        aborted: rounds (1-based) that aborted; marked with a cross.
        dropped: how many clients dropped in each round, annotated under the secure curve.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    rounds = list(range(len(secure) + 1))
    secure_y = [initial, *(float("nan") if a is None else a for a in secure)]
    ax.plot(
        range(len(plaintext) + 1),
        [initial, *plaintext],
        "--",
        color="grey",
        marker=".",
        label="plaintext FedAvg (no dropout)",
    )
    ax.plot(rounds, secure_y, "-", color="tab:blue", marker="o", label="secure FedAvg over websockets")
    for r in aborted:
        if 1 <= r <= len(secure):
            ax.plot([r], [secure_y[r]], "x", color="tab:red", markersize=10)
    for r, count in enumerate(dropped, start=1):
        if count:
            ax.annotate(
                f"-{count}",
                (r, secure_y[r]),
                textcoords="offset points",
                xytext=(0, -14),
                ha="center",
                fontsize=8,
                color="tab:red",
            )
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.set_xticks(rounds)
    ax.grid(alpha=0.3)
    ax.set_title(title or "FedAvg on non-IID digits: secure vs plaintext aggregation")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(os.fspath(path))
    plt.close(fig)
