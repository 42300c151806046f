"""matplotlib figures as byte-stable PNG plots: the canvas's pixels through PIL, so the file holds no metadata (no
matplotlib version, no timestamp) and the same numbers give the same bytes on every run.

    from stages.lib.figures import figure, save_figure
    fig, axes = figure(8, 4, ncols=2)            # Agg, 100 dpi; axes is always a 1 x ncols array
    axes[0, 0].bar(...)
    save_figure(fig, "plots/data_card/funnel.png")
"""

import numpy as np

from .tables import save_png_atomic


def figure(width, height, ncols=1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, height), dpi=100, squeeze=False)


def save_figure(fig, path):
    """Lay out, draw and close `fig`, and write its pixels to the PNG `path` atomically; returns the path."""
    import matplotlib.pyplot as plt
    from PIL import Image

    fig.tight_layout()
    fig.canvas.draw()
    image = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    plt.close(fig)
    save_png_atomic(image, path)
    return path
