"""Image grids for logs and reports (uint8 RGB, white gutters)."""

from __future__ import annotations

import numpy as np

from facerecon.faces.photos import resize


def grid(rows: list[list[np.ndarray | None]], size: int, gap: int = 4) -> np.ndarray:
    """Tile float [0, 1] images into a uint8 grid; ``None`` cells stay light gray."""
    cols = max(len(r) for r in rows)
    out = np.ones((len(rows) * (size + gap) + gap, cols * (size + gap) + gap, 3), np.float32)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            y, x = gap + i * (size + gap), gap + j * (size + gap)
            cell = np.full((size, size, 3), 0.85, np.float32) if image is None else image
            if cell.shape[:2] != (size, size):
                cell = resize(cell, size)
            out[y : y + size, x : x + size] = cell
    # a diverged run's NaN pixels are drawn black, not cast to whatever uint8 makes of NaN
    return (np.clip(np.nan_to_num(out), 0, 1) * 255 + 0.5).astype(np.uint8)


def labelled_grid(rows: list[tuple[str, list[np.ndarray] | str]], titles: list[str]):
    """A matplotlib figure: one row per entry, its label (wrapped) above its first image and
    the column titles above the first row; a row given a string instead of images shows
    that string (e.g. FAILED)."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(len(titles), 1)
    if cols == 1 and len(rows) > 1:  # one image per row reads better as one labelled row
        return _one_row(rows, plt, textwrap)
    labels = [textwrap.fill(label, 34) for label, _ in rows]
    height = sum(2.3 + 0.16 * label.count("\n") for label in labels)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.4 * cols, height), squeeze=False)
    for r, ((_, images), label) in enumerate(zip(rows, labels, strict=True)):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if isinstance(images, str) or c >= len(images):
                text = images if isinstance(images, str) else ""
                ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(np.clip(images[c], 0, 1))
            title = [label] if c == 0 else []
            if r == 0 and cols > 1:
                title.append(titles[c] if c < len(titles) else "")
            ax.set_title("\n".join(title), fontsize=7)
    fig.tight_layout()
    return fig


def _one_row(rows: list[tuple[str, list[np.ndarray] | str]], plt, textwrap):
    labels = [textwrap.fill(label, 24) for label, _ in rows]
    lines = max(label.count("\n") for label in labels)
    fig, axes = plt.subplots(
        1, len(rows), figsize=(2.3 * len(rows), 2.5 + 0.16 * lines), squeeze=False
    )
    for ax, (_, images), label in zip(axes[0], rows, labels, strict=True):
        ax.set_xticks([])
        ax.set_yticks([])
        if isinstance(images, str) or not images:
            text = images if isinstance(images, str) else ""
            ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
        else:
            ax.imshow(np.clip(images[0], 0, 1))
        ax.set_title(label, fontsize=7)
    fig.tight_layout()
    return fig
