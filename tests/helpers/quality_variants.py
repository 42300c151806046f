"""Real photos with a quality defect put in: a folder of shared photos plus altered copies, one CleanVision issue each.

    folder = variant_folder(tmp / "faces", originals, {"dark": [name], "near": [name, other]})
    # folder/images/<originals>, folder/images/v_dark_0.png, ..., folder/legend.csv (ingest's labelled_folder)

Each copy is made from one photo's pixels: darkened, brightened, squashed to a few grey levels, cut to a wide strip,
blurred, stored again as PNG (the same pixels, other bytes: ingest keeps both) or re-encoded as a lossy JPEG.
"""

import csv
import io

import cv2
import numpy as np
from PIL import Image

from tests.conftest import SHARED_DATA

PHOTOS = SHARED_DATA / "facial_expressions"


def _png(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue(), "png"


def _jpeg(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=70)
    return buffer.getvalue(), "jpg"


# variant: (the CleanVision issue it should raise, what makes it from the photo's pixels)
VARIANTS = {
    "dark": ("dark", lambda a: _png((a * 0.2).astype(np.uint8))),
    "light": ("light", lambda a: _png((255 - (255 - a.astype(np.float64)) * 0.04).astype(np.uint8))),
    "flat": ("low_information", lambda a: _png((120 + a // 51).astype(np.uint8))),  # 6 grey levels
    "wide": (
        "odd_aspect_ratio",
        lambda a: _png(np.ascontiguousarray(a[a.shape[0] * 5 // 14 :][: a.shape[0] * 2 // 7])),
    ),
    "blur": ("blurry", lambda a: _png(cv2.GaussianBlur(a, (0, 0), 5))),
    "exact": ("exact_duplicates", _png),
    "near": ("near_duplicates", _jpeg),
}


def legend_rows(photos=PHOTOS) -> list:
    """(image name, label) of every photo the legend names and the folder has, sorted, each once."""
    with open(photos / "legend.csv", newline="") as f:
        rows = {(r["image"], r["emotion"]) for r in csv.DictReader(f) if (photos / "images" / r["image"]).is_file()}
    return sorted(rows)


def grey_and_colour(rows, photos=PHOTOS) -> tuple:
    """The rows whose photo is single-channel, and those in colour."""
    mode = {name: Image.open(photos / "images" / name).mode for name, _ in rows}
    return [r for r in rows if mode[r[0]] == "L"], [r for r in rows if mode[r[0]] != "L"]


def variant_folder(folder, originals, variants: dict, photos=PHOTOS) -> dict:
    """Write `originals` ((name, label) rows) and, for each variant, an altered copy of each photo named in
    `variants[variant]`, plus legend.csv. Returns {copy file name: (variant, original name)}."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    labels = dict(originals)
    legend, made = list(originals), {}
    for name, _ in originals:
        (folder / "images" / name).write_bytes((photos / "images" / name).read_bytes())
    for variant, names in variants.items():
        for k, name in enumerate(names):
            data, ext = VARIANTS[variant][1](np.asarray(Image.open(photos / "images" / name)))
            copy = f"v_{variant}_{k}.{ext}"
            (folder / "images" / copy).write_bytes(data)
            legend.append((copy, labels.get(name, "neutral")))
            made[copy] = (variant, name)
    with open(folder / "legend.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "emotion"])
        writer.writerows(legend)
    return made
