"""Identity preservation: dlib's 128-d face embedding (ResNet, trained for face verification), offline.

The weights ship inside the `face_recognition_models` wheel (CC0). Its `__init__` imports `pkg_resources`, which new
setuptools lack, so the model files are found through the package's location without importing it.

    from stages.lib.identity import IdentityEmbedder, SAME_PERSON
    embedder = IdentityEmbedder()
    e = embedder.embed(image, face_bbox)        # (128,) float32 from the parser's face box, or None without a box
    d = np.linalg.norm(e_original - e_composite)   # < SAME_PERSON (0.6): dlib's same-person decision

No second face detector runs: dlib's 5-point landmark model aligns the face inside the parser's box, and the
embedding is taken from that aligned 150x150 chip. bench/judges.py measures what a distance means on the real
photos (same person, different photos vs different people).
"""

import importlib.util
import os

import numpy as np

from .codec import to_rgb
from .errors import StageError

SAME_PERSON = 0.6  # dlib's threshold: 99.38% pair accuracy on LFW at this distance (dlib's model card)
SHAPE_MODEL = "shape_predictor_5_face_landmarks.dat"
EMBED_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
# The parser's box is tight around the drawn skin (brows to chin); dlib's landmark model was trained on its
# detector's boxes, which are about this much wider around the same centre.
BOX_SCALE = 1.1


def model_path(name: str) -> str:
    """The path of one of face_recognition_models' files, without importing that package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise StageError(
            "the identity measure needs the face_recognition_models package (pip install -r requirements.txt)"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", name)
    if not os.path.isfile(path):
        raise StageError(f"{path} is missing; reinstall face_recognition_models")
    return path


class IdentityEmbedder:
    def __init__(self):
        try:
            import dlib
        except ImportError:
            raise StageError(
                "the identity measure needs dlib (the dlib-bin wheel: pip install -r requirements.txt)"
            ) from None
        self._dlib = dlib
        self.shape = dlib.shape_predictor(model_path(SHAPE_MODEL))
        self.net = dlib.face_recognition_model_v1(model_path(EMBED_MODEL))

    def embed(self, image: np.ndarray, face_bbox):
        """The (128,) embedding of the face in `face_bbox` (x, y, w, h), or None when there is no box."""
        if face_bbox is None:
            return None
        x, y, w, h = (float(v) for v in face_bbox)
        if not (w > 0 and h > 0):
            return None
        side = max(w, h) * BOX_SCALE
        cx, cy = x + w / 2, y + h / 2
        rect = self._dlib.rectangle(
            int(round(cx - side / 2)), int(round(cy - side / 2)), int(round(cx + side / 2)), int(round(cy + side / 2))
        )
        rgb = np.ascontiguousarray(to_rgb(np.asarray(image, np.uint8)))
        shape = self.shape(rgb, rect)
        return np.asarray(self.net.compute_face_descriptor(rgb, shape), np.float32)


_EMBEDDER = None


def shared_embedder() -> IdentityEmbedder:
    """One IdentityEmbedder per process, loaded on first use; processes forked after that inherit it."""
    global _EMBEDDER
    if _EMBEDDER is None:
        _EMBEDDER = IdentityEmbedder()
    return _EMBEDDER


def _embed_job(args):
    return shared_embedder().embed(*args)


def embed_all(images, face_bboxes, workers: int = 1, desc: str = "identity") -> list:
    """embed() of every image, on `workers` processes (dlib's network holds the GIL, so threads do not help; each
    embedding is ~70 ms of one core). Results are per image, so the order and values do not depend on `workers`."""
    from tqdm import tqdm

    jobs = list(zip(images, face_bboxes))
    bar = dict(total=len(jobs), desc=desc, unit="face", leave=False)
    embedder = shared_embedder()  # loaded here, once: a missing model fails with one line, and forked workers reuse it
    if workers <= 1 or len(jobs) < 2 * workers:
        return [embedder.embed(im, box) for im, box in tqdm(jobs, **bar)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(tqdm(pool.map(_embed_job, jobs, chunksize=8), **bar))


def same_person(distances) -> np.ndarray:
    """1.0 below the same-person threshold, 0.0 above, NaN where there is no distance."""
    d = np.asarray(distances, np.float64)
    return np.where(np.isfinite(d), (d < SAME_PERSON).astype(np.float64), np.nan)


def different_faces_kept_rate(embeddings: list, block_bytes: int = 2**26):
    """Share of pairs of *different* test faces that dlib calls one person: ~0.01 on real photos of different people
    (bench/judges.py), near 1 where dlib cannot tell the faces apart (the drawn demo faces), so identity_kept_rate
    means nothing there. The pairs are measured a block of rows at a time (about `block_bytes` of differences), so
    memory stays flat in the number of faces; the time grows with its square."""
    e = np.stack([x for x in embeddings if x is not None]) if any(x is not None for x in embeddings) else None
    if e is None or len(e) < 2:
        return None
    n = len(e)
    rows = max(1, block_bytes // (n * e.shape[1] * e.itemsize))
    same = 0
    for start in range(0, n - 1, rows):
        block = e[start : start + rows]
        d = np.linalg.norm(block[:, None] - e[None], axis=2)
        later = np.arange(n)[None, :] > np.arange(start, start + len(block))[:, None]  # each pair once
        same += int((d[later] < SAME_PERSON).sum())
    return float(same / (n * (n - 1) // 2))


def embedding_distances(originals: list, edited: list) -> np.ndarray:
    """Per pair, the distance of the two embeddings; NaN where either is missing."""
    return np.array(
        [float(np.linalg.norm(a - b)) if a is not None and b is not None else np.nan for a, b in zip(originals, edited)]
    )
