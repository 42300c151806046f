"""The faces an evaluation edits, streamed: their ROI parts (from the ROI manifests, through a spill file) joined
with their photos in bounded batches; the translator run over their crops; and the sample figure of the edits.

    from stages.lib.eval_faces import read_inputs, face_batches, translate
    with read_inputs("mouth") as inputs:                 # or "combined": eyes and mouth
        for faces in face_batches(inputs, batch=64):      # lists of Face, in the images table's order
            generated = translate(generator, [f.crop for f in faces], "cpu")

Only ids stay in memory for the whole run: the manifests are read once, the test rows' bbox, crop and alpha spilled
to a temporary file (stages/lib/spill.py) and read back as each face's photo streams past (or, for the oracle, in
its seeded order).
"""

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from . import paths
from .codec import decode_image, decode_png, to_rgb
from .contact_sheet import contact_sheet
from .errors import StageError
from .overlay import composite
from .roi_manifest import kept_id_groups
from .spill import SpillFile
from .tables import iter_faces, iter_rows_of

PAYLOAD = ["id", "bbox", "crop", "alpha"]
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

    The generator works on RGB in [-1, 1] (tanh output), as train writes in its config. It always sees `batch` crops
    (a short last chunk padded with black ones, their outputs dropped): at some batch sizes torch's CPU kernels give
    a face other bits (the judge's do: stages/lib/eval_batch.py), so a face's crop must not depend on its chunk.
    """
    out = []
    device = torch.device(device)
    with torch.no_grad():
        for start in range(0, len(crops), batch):
            chunk = np.stack([to_rgb(c) for c in crops[start : start + batch]])
            n = len(chunk)
            chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), np.uint8)])
            x = torch.from_numpy(chunk).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            y = generator(x).float().clamp(-1, 1)
            if y.shape != x.shape:
                raise StageError(f"generator turned crops of shape {tuple(x.shape)} into {tuple(y.shape)}")
            pixels = ((y[:n] + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            out.extend(pixels)
    return out


@dataclass
class Inputs:
    """What an evaluation reads, as ids: the ROIs of the edit (`parts`), the sorted ids of the test faces of A and of
    B that every one of them keeps, the train ids by domain of the ROI whose geometry judge applies, and per ROI a
    spill file of its test rows' (bbox, crop, alpha). Close it (or use it as a context manager) to drop the files."""

    parts: tuple
    test_a: list
    test_b: list
    train: dict
    geometry_roi: str
    spills: dict

    def part(self, roi: str, face_id: str) -> Part:
        bbox, crop, alpha = self.spills[roi].get(face_id)
        return Part(tuple(bbox), decode_png(crop), decode_png(alpha))

    def crop_side(self, roi: str) -> int:
        """The side of the ROI's crops (its first test face's), which its generator must have been trained on."""
        return decode_png(self.spills[roi].get(self.test_a[0])[1]).shape[0]

    def real_crop(self, k: int):
        """The k-th real target crop (test B, sorted ids): one crop, or a tuple in `parts` order for several ROIs."""
        crops = tuple(self.part(roi, self.test_b[k]).crop for roi in self.parts)
        return crops if len(crops) > 1 else crops[0]

    def close(self):
        for spill in self.spills.values():
            spill.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _spill_rows(path, ids) -> SpillFile:
    spill = SpillFile()
    for rows in iter_rows_of(path, ids, PAYLOAD, "extract_rois"):
        for row in rows:
            spill.put(row["id"], (row["bbox"], row["crop"], row["alpha"]))
    return spill


def read_inputs(edit: str) -> Inputs:
    """The ids and spilled test rows of `edit` (`combined`: COMBINED): only the faces every one of its ROIs keeps."""
    parts = COMBINED if edit == "combined" else (edit,)
    groups = {r: kept_id_groups(paths.roi_manifest(r)) for r in parts}

    def shared(split, domain):
        return sorted(set.intersection(*(set(g[split, domain]) for g in groups.values())))

    test_a, test_b = shared("test", "A"), shared("test", "B")
    if not test_a:
        raise StageError(f"no test face of domain A is kept in every one of {', '.join(parts)}")
    geometry_roi = "mouth" if "mouth" in parts else parts[0]
    train = {d: groups[geometry_roi]["train", d] for d in ("A", "B")}
    spills = {r: _spill_rows(paths.roi_manifest(r), test_a + test_b) for r in parts}
    return Inputs(parts, test_a, test_b, train, geometry_roi, spills)


def per_face(per_part: list, parts) -> list:
    """One item per face: the item itself for one ROI, a tuple of every ROI's for several."""
    return per_part[0] if len(parts) == 1 else list(zip(*per_part))


def photo_rows(ids, parse_columns=(), batch: int = 64):
    """Lists of joined image (+ parse) rows for `ids` with their photos, in the images table's order, `batch` at a
    time (tables.iter_faces); a missing photo is an error, raised once the stream has shown how many there are."""
    seen, missing = set(), []
    for rows in iter_faces(ids, ["image"], parse_columns, batch_rows=batch):
        seen.update(r["id"] for r in rows)
        missing += [r["id"] for r in rows if not r.get("image")]
        rows = [r for r in rows if r.get("image")]
        if rows:
            yield rows
    missing += [i for i in ids if i not in seen]
    if missing:
        raise StageError(
            f"{len(missing)} ids lack a photo in {paths.IMAGES} (first {min(missing)}); rerun extract_rois"
        )


def photo_batches(ids, batch: int = 64):
    """The decoded photos of `ids`, `batch` at a time, in the images table's order."""
    for rows in photo_rows(ids, (), batch):
        yield [decode_image(r["image"]) for r in rows]


def face_batches(inputs: Inputs, with_maps: bool = False, batch: int = 64):
    """The test faces of domain A as lists of Face (with their parsed label maps: `with_maps`), `batch` at a time."""
    first, more = inputs.parts[0], inputs.parts[1:]
    for rows in photo_rows(inputs.test_a, ["face_bbox"] + (["label_map"] if with_maps else []), batch):
        faces = []
        for row in rows:
            part = inputs.part(first, row["id"])
            faces.append(
                Face(
                    id=row["id"],
                    image=decode_image(row["image"]),
                    face_bbox=row.get("face_bbox"),
                    bbox=part.bbox,
                    crop=part.crop,
                    alpha=part.alpha,
                    label_map=decode_png(row["label_map"]) if row.get("label_map") else None,
                    more=tuple(inputs.part(roi, row["id"]) for roi in more),
                )
            )
        yield faces


def target_batches(inputs: Inputs, batch: int = 64):
    """The real test faces of domain B, `batch` at a time: (their positions in inputs.test_b, photos, parser face
    boxes, crops as real_crop gives them), for judge_label_agreement and KID."""
    position = {i: k for k, i in enumerate(inputs.test_b)}
    for rows in photo_rows(inputs.test_b, ["face_bbox"], batch):
        at = [position[r["id"]] for r in rows]
        yield (
            at,
            [decode_image(r["image"]) for r in rows],
            [r.get("face_bbox") for r in rows],
            [inputs.real_crop(k) for k in at],
        )


def stream_faces(inputs: Inputs, run, generators, with_maps: bool, device, batch: int):
    """Stream the test faces of A past `run` (an Evaluation), each batch translated by `generators` (one per ROI of
    the edit); then the real ones of B."""
    with tqdm(total=len(inputs.test_a), desc="test faces", unit="face", leave=False) as bar:
        for faces in face_batches(inputs, with_maps, batch):
            crops = [translate(g, [f.parts[k].crop for f in faces], device, batch) for k, g in enumerate(generators)]
            run.add(faces, per_face(crops, inputs.parts))
            bar.update(len(faces))
    for at, images, face_bboxes, crops in target_batches(inputs, batch):
        run.add_real_crops(at, crops)
        run.add_target_faces(at, images, face_bboxes)
