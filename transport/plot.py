"""The demo's PNG: test accuracy per round, secure FedAvg next to plaintext FedAvg.

Every mark on the plot has a legend entry: the two curves, the cross of an aborted round, and
the red ``-k`` under a round where k clients dropped out.
"""

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
    plaintext_label: str = "plaintext FedAvg",
    secure_label: str = "secure FedAvg over websockets",
) -> None:
    """Write a PNG of accuracy per round (round 0 is the initial model).

    Args:
        secure: accuracy after each round of the secure federation (None: unknown).
        plaintext: accuracy after each round of the plaintext reference.
        aborted: rounds (1-based) that aborted; marked with a cross.
        dropped: how many clients dropped in each round, annotated under the secure curve.
        plaintext_label: what the plaintext reference is (its legend entry).
        secure_label: what the secure curve is (its legend entry; e.g. the epsilon a DP run spent).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    rounds = list(range(len(secure) + 1))
    secure_y = [initial, *(float("nan") if a is None else a for a in secure)]
    ax.plot(
        range(len(plaintext) + 1),
        [initial, *plaintext],
        "--",
        color="grey",
        marker=".",
        label=plaintext_label,
    )
    ax.plot(rounds, secure_y, "-", color="tab:blue", marker="o", label=secure_label)
    marked = [r for r in aborted if 1 <= r <= len(secure)]
    for r in marked:
        ax.plot([r], [secure_y[r]], "x", color="tab:red", markersize=10)
    if marked:
        ax.plot([], [], "x", color="tab:red", markersize=10, linestyle="none", label="round aborted")
    counts = [(r, count) for r, count in enumerate(dropped, start=1) if count and r <= len(secure)]
    for r, count in counts:
        ax.annotate(
            f"-{count}",
            (r, secure_y[r]),
            textcoords="offset points",
            xytext=(0, -14),
            ha="center",
            fontsize=8,
            color="tab:red",
        )
    if counts:
        ax.plot(
            [], [], linestyle="none", marker="$-k$", markersize=12, color="tab:red",
            label="-k: k clients dropped out in that round",
        )  # fmt: skip
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.set_xticks(rounds)
    ax.grid(alpha=0.3)
    ax.set_title(title or "FedAvg: secure vs plaintext aggregation")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.fspath(path))
    plt.close(fig)
