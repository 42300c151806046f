"""The faces an evaluation edits: their ROI parts, read from the ROI manifests and the photos; the translator run
over their crops; and the sample figure of the edits.

    from stages.lib.eval_faces import read_manifests, read_faces, translate
    parts, rows_a, rows_b, geometry_roi, groups = read_manifests("mouth")    # or "combined": eyes and mouth
    faces = read_faces(rows_a[0], more_rows=rows_a[1:])
    generated = translate(generator, [f.crop for f in faces], "cpu")
"""

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from . import paths
from .codec import decode_image, decode_png, to_rgb
from .contact_sheet import contact_sheet
from .errors import StageError
from .overlay import composite
from .roi_manifest import kept_groups
from .tables import load_faces

ROI_COLUMNS = ["id", "split", "domain", "kept", "bbox", "crop", "alpha"]
# evaluate@combined: the judge reads a smile from the eyes and cheeks as well as the mouth, so the two feature
# translators are also scored applied together, eyes first, to the test faces both manifests keep. Its oracle pastes
# the eyes and the mouth of one other (real target) face; its geometry judge is the smile's.
COMBINED = ("eyes", "mouth")


@dataclass(frozen=True)
class Part:
    """One ROI of a face: its box, its crop and its paste alpha (a row of data/rois/<roi>.parquet)."""

    bbox: tuple
    crop: np.ndarray
    alpha: np.ndarray


@dataclass
class Face:
    """One test face: its photo, the parser's face box (None: the whole image), its ROI row, and its parsed label map
    (only a grey_masks curator reads it; None otherwise).

    `more` holds further ROIs of the same face, for an edit of several at once (evaluate@combined): an edit then
    gives a tuple of crops per face, one per part in `parts` order, and the composite pastes them in that order.
    """

    id: str
    image: np.ndarray
    face_bbox: object
    bbox: tuple
    crop: np.ndarray
    alpha: np.ndarray
    label_map: np.ndarray = None
    more: tuple = ()

    @property
    def parts(self) -> tuple:
        return (Part(self.bbox, self.crop, self.alpha),) + tuple(self.more)

    def split(self, per_face) -> tuple:
        """One edit's item for this face (a crop, or a tuple of crops with several parts) as a tuple per part."""
        return per_face if self.more else (per_face,)

    def join(self, per_part: tuple):
        """The inverse of split: a tuple per part back to one edit's item for this face."""
        return per_part if self.more else per_part[0]

    def own_crops(self):
        """What the identity generator gives: the face's own crop (a tuple of them with several parts)."""
        return self.join(tuple(p.crop for p in self.parts))

    def paste(self, crops, match: str, blend: str) -> np.ndarray:
        """The photo with each part replaced by its crop of `crops` (one crop, or a tuple with several parts)."""
        out = self.image
        for part, crop in zip(self.parts, self.split(crops)):
            out = composite(out, crop, part.crop, part.bbox, part.alpha, match, blend)
        return out

    def support(self):
        """(alphas, boxes) of every part, as overlay's pixel checks take them."""
        return [p.alpha for p in self.parts], [p.bbox for p in self.parts]


@dataclass
class Picks:
    """The first faces, for the sample sheet: rows of (face, generated crop as pasted, composite), and the judge's
    p[target] for each original and composite."""

    rows: list = field(default_factory=list)
    p_orig: np.ndarray = None
    p_comp: np.ndarray = None
    target: str = ""


def _side_by_side(crops: tuple) -> np.ndarray:
    # The parts of a several-ROI edit in one tile, each scaled to the first one's height.
    crops = [to_rgb(c) for c in crops]
    side = crops[0].shape[0]
    return np.concatenate(
        [c if c.shape[0] == side else np.asarray(Image.fromarray(c).resize((side, side))) for c in crops], axis=1
    )


def sample_sheet(picks: Picks, path, thumb=96):
    """The research's sample figure as a DVC image plot: one row per face, original | ROI | generated | composite
    (several ROIs: their crops side by side)."""
    images, captions = [], []
    for (face, pasted, out), po, pc in zip(picks.rows, picks.p_orig, picks.p_comp):
        images += [face.image, _side_by_side(face.split(face.own_crops())), _side_by_side(face.split(pasted)), out]
        captions += [f"{face.id[:8]} p={po:.2f}", "ROI", "generated", f"{picks.target} p={pc:.2f}"]
    return contact_sheet(images, captions, path, cols=4, thumb=thumb)


def translate(generator, crops, device, batch: int = 64) -> list:
    """Run the A->B generator over uint8 crops (grey or RGB) and return uint8 RGB crops of the same size.

    The generator works on RGB in [-1, 1] (tanh output), as train writes in its config.
    """
    out = []
    device = torch.device(device)
    with torch.no_grad():
        for start in range(0, len(crops), batch):
            chunk = np.stack([to_rgb(c) for c in crops[start : start + batch]])
            x = torch.from_numpy(chunk).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            y = generator(x).float().clamp(-1, 1)
            if y.shape != x.shape:
                raise StageError(f"generator turned crops of shape {tuple(x.shape)} into {tuple(y.shape)}")
            pixels = ((y + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            out.extend(pixels)
    return out


def shared_rows(groups: dict, split: str, domain: str) -> list:
    """Per ROI of `groups` ({roi: kept_groups(roi)}), its rows of the faces that every ROI keeps, aligned by id."""
    by_roi = {roi: {r["id"]: r for r in g[split, domain]} for roi, g in groups.items()}
    ids = sorted(set.intersection(*(set(rows) for rows in by_roi.values())))
    return [[rows[i] for i in ids] for rows in by_roi.values()]


def read_manifests(edit: str):
    """The ROIs of `edit` (`combined`: COMBINED) and, per ROI, its kept test rows of A and of B for the faces every one
    of them keeps, aligned by id; plus the ROI whose geometry judge applies and that ROI's manifest groups."""
    parts = COMBINED if edit == "combined" else (edit,)
    groups = {r: kept_groups(paths.roi_manifest(r), ROI_COLUMNS) for r in parts}
    rows_a, rows_b = shared_rows(groups, "test", "A"), shared_rows(groups, "test", "B")
    if not rows_a[0]:
        raise StageError(f"no test face of domain A is kept in every one of {', '.join(parts)}")
    geometry_roi = "mouth" if "mouth" in parts else parts[0]
    return parts, rows_a, rows_b, geometry_roi, groups[geometry_roi]


def per_face(per_part: list, parts) -> list:
    """One item per face: the item itself for one ROI, a tuple of every ROI's for several."""
    return per_part[0] if len(parts) == 1 else list(zip(*per_part))


def _photos(rows, parse_columns=()):
    """(decoded photos, joined rows with `parse_columns`) of manifest rows, in their order, read in one join; a
    missing photo is an error."""
    ids = [r["id"] for r in rows]
    joined = load_faces(ids, ["image"], parse_columns)
    missing = [i for i in ids if not joined.get(i, {}).get("image")]
    if missing:
        raise StageError(f"{len(missing)} ids lack a photo in {paths.IMAGES} (first {missing[0]}); rerun extract_rois")
    return [decode_image(joined[i]["image"]) for i in ids], [joined[i] for i in ids]


def images_of(rows) -> list:
    """The photos of manifest rows, in their order; a missing one is an error."""
    return _photos(rows)[0]


def read_faces(rows_a, with_maps: bool = False, more_rows=()) -> list:
    """Join the ROI rows with their photos and face boxes (and label maps: `with_maps`); a missing photo is an error,
    not a skip. `more_rows`: rows of further ROIs, each list aligned with `rows_a` (the combined edit)."""
    images, joined = _photos(rows_a, ["face_bbox"] + (["label_map"] if with_maps else []))
    faces = []
    for i, (r, image, row) in enumerate(zip(rows_a, images, joined)):
        label_map = decode_png(row["label_map"]) if row.get("label_map") else None
        more = tuple(Part(tuple(m[i]["bbox"]), decode_png(m[i]["crop"]), decode_png(m[i]["alpha"])) for m in more_rows)
        faces.append(
            Face(
                id=r["id"],
                image=image,
                face_bbox=row.get("face_bbox"),
                bbox=tuple(r["bbox"]),
                crop=decode_png(r["crop"]),
                alpha=decode_png(r["alpha"]),
                label_map=label_map,
                more=more,
            )
        )
    return faces


def target_faces(rows_b) -> list:
    """(photo, face box) of the real target-domain test faces, for judge_label_agreement."""
    images, joined = _photos(rows_b, ["face_bbox"])
    return [(image, row.get("face_bbox")) for image, row in zip(images, joined)]
