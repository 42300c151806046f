"""Contact sheets: a grid of thumbnails with a caption under each, saved as one PNG (a DVC image plot).

Use:
    from stages.lib.contact_sheet import contact_sheet
    contact_sheet([img1, img2], ["id1 eyes_small", "id2 no_face"], "plots/filter_masks/eyes_small.png")

Images may be uint8 grey (HxW) or RGB (HxWx3) of any size; each is fitted into a `thumb` square keeping its aspect.
The PNG is written atomically and is byte-identical for the same inputs (PIL's built-in bitmap font, no timestamps).
"""

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .codec import to_rgb
from .labels import N_PARSE_CLASSES, REGIONS
from .tables import save_png_atomic

CAPTION_PX = 12  # one line of PIL's default bitmap font
PAD = 2


def _fit(img: np.ndarray, thumb: int) -> Image.Image:
    rgb = Image.fromarray(to_rgb(np.asarray(img, dtype=np.uint8)))
    scale = thumb / max(rgb.size)
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    return rgb.resize(size, Image.Resampling.BILINEAR)


def _clip_caption(draw, text, font, width):
    # Captions that overflow the cell are cut rather than wrapped, so every cell has the same height.
    while text and draw.textlength(text, font=font) > width:
        text = text[:-1]
    return text


def render_sheet(images, captions, cols=8, thumb=96) -> Image.Image:
    """The sheet as a PIL image; an empty list gives a one-cell sheet that says so."""
    if len(images) != len(captions):
        raise ValueError(f"contact_sheet: {len(images)} images but {len(captions)} captions")
    if cols < 1 or thumb < 8:
        raise ValueError(f"contact_sheet: cols must be >= 1 and thumb >= 8, got {cols}, {thumb}")
    font = ImageFont.load_default()
    n = max(1, len(images))
    cols = min(cols, n)
    rows = -(-n // cols)
    cell_w, cell_h = thumb + 2 * PAD, thumb + CAPTION_PX + 2 * PAD
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    if not images:
        draw.text((PAD, PAD), "(none)", fill=(0, 0, 0), font=font)
    for i, (img, caption) in enumerate(zip(images, captions)):
        x0, y0 = (i % cols) * cell_w + PAD, (i // cols) * cell_h + PAD
        tile = _fit(img, thumb)
        sheet.paste(tile, (x0 + (thumb - tile.width) // 2, y0 + (thumb - tile.height) // 2))
        draw.text((x0, y0 + thumb), _clip_caption(draw, str(caption), font, thumb), fill=(0, 0, 0), font=font)
    return sheet


def contact_sheet(images: list, captions: list, path, cols=8, thumb=96):
    """Write the grid of `images` with `captions` to the PNG `path` (atomically) and return the path."""
    save_png_atomic(render_sheet(images, captions, cols, thumb), path)
    return path


def overlay(image: np.ndarray, label_map, palette: np.ndarray, classes=None, alpha=0.5) -> np.ndarray:
    """RGB copy of `image` with the pixels of `classes` (default: every class but the background) blended with
    palette[class]; the image alone when there is no map (or one of another size)."""
    rgb = to_rgb(np.asarray(image, np.uint8)).astype(np.float32)
    if label_map is None or label_map.shape != rgb.shape[:2]:
        return rgb.astype(np.uint8)
    hit = label_map > 0 if classes is None else np.isin(label_map, classes)
    rgb[hit] = (1 - alpha) * rgb[hit] + alpha * np.asarray(palette, np.float32)[label_map[hit]]
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def _region_palette(colours: dict):
    palette = np.zeros((N_PARSE_CLASSES, 3), np.uint8)
    for region, colour in colours.items():
        palette[list(REGIONS[region])] = colour
    return palette, [c for region in colours for c in REGIONS[region]]


# The checked face regions tinted over thumbnails, so a sheet shows what the parser found (or did not).
REGION_PALETTE, REGION_CLASSES = _region_palette({"eyes": (0, 200, 0), "brows": (0, 90, 255), "lips": (255, 0, 60)})


def overlay_regions(image: np.ndarray, label_map) -> np.ndarray:
    """The eyes, brows and lips of the canonical `label_map` tinted over `image`."""
    return overlay(image, label_map, REGION_PALETTE, REGION_CLASSES)


def boxed_thumbnail(image: np.ndarray, box, thumb: int, colour) -> np.ndarray:
    """`image` shrunk so its longer side is `thumb`, with the box (x, y, w, h) in source pixels drawn on it."""
    import cv2

    scale = thumb / max(image.shape[:2])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    out = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    x, y, w, h = (int(round(v * scale)) for v in box)
    cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), colour, 2)
    return out


class LowestIds:
    """Keeps the `per_group` lowest ids offered in each group, with what `make` builds for them (built only for ids
    that may still make it), so a figure shows the same faces on every run whatever the order they stream in."""

    def __init__(self, per_group: int):
        self.per_group, self.picks = per_group, {}

    def offer(self, group, item_id, make):
        picks = self.picks.setdefault(group, [])
        if self.per_group == 0 or (len(picks) >= self.per_group and item_id > picks[-1][0]):
            return
        picks.append((item_id, make()))
        picks.sort(key=lambda p: p[0])
        del picks[self.per_group :]

    def get(self, group) -> list:
        """[(id, built), ...] of `group`, lowest id first."""
        return self.picks.get(group, [])
