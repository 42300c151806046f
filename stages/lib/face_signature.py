"""What ingest keeps of each kept image to group it (stages/lib/groups.py): dlib's 128-d identity embedding of its
largest face, found by dlib's own HOG detector (ingest runs before parse, so there is no parser box yet), and a
256-bit perceptual hash for near-duplicates and for images where no face is found. About 85 ms of one core per
350x350 photo (detection 10 ms, embedding 75 ms); dlib holds the GIL, so ingest runs this in worker processes.
"""

import cv2
import numpy as np

from .codec import decode_image, to_grey, to_rgb
from .identity import shared_embedder

# Detection and embedding cost grows with the pixels; faces worth grouping are large enough at this side.
ANALYSIS_SIDE = 640
# Tight face crops (the shared photos' colour images, 60-370 px) leave HOG's window no margin. Of the 2,037 kept
# shared photos the first try finds a face in 1,887 and this second one in 63 more; 45 of those have another photo
# of their person, and for 42 the nearest other face is one (bench/groups.py --sweep).
RETRY_MIN_SIDE = 160
RETRY_BORDER = 0.25
HASH_SIDE = 16  # a 16x16 DCT block: 256 bits


def hog_detector():
    """dlib's frontal face detector (HOG + linear SVM, inside the dlib wheel), loaded once per process."""
    global _DETECTOR
    if _DETECTOR is None:
        import dlib

        _DETECTOR = dlib.get_frontal_face_detector()
    return _DETECTOR


_DETECTOR = None


def fit_side(image: np.ndarray, side: int, grow: bool) -> np.ndarray:
    """The image scaled so its shorter side reaches `side` (grow) or its longer side fits in it (shrink)."""
    h, w = image.shape[:2]
    scale = side / (min(h, w) if grow else max(h, w))
    if (grow and scale <= 1) or (not grow and scale >= 1):
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR if grow else cv2.INTER_AREA)


def largest_face(rgb: np.ndarray):
    """(image the face was found in, its dlib rectangle), or None. First the image as it is; then, for crops too
    tight for HOG, the image grown to RETRY_MIN_SIDE with a replicated border and searched at twice the scale."""
    detector = hog_detector()
    for attempt in (0, 1):
        if attempt:
            grown = fit_side(rgb, RETRY_MIN_SIDE, grow=True)
            pad = round(max(grown.shape[:2]) * RETRY_BORDER)
            rgb = np.ascontiguousarray(cv2.copyMakeBorder(grown, pad, pad, pad, pad, cv2.BORDER_REPLICATE))
        boxes = detector(rgb, attempt)
        if len(boxes):
            # the largest face; equal areas: the first in dlib's order, which is fixed for fixed pixels
            return rgb, max(boxes, key=lambda r: r.width() * r.height())
    return None


def perceptual_hash(grey: np.ndarray) -> np.ndarray:
    """256 bits (uint8[32]): the signs of the 16x16 low-frequency DCT coefficients against their median. Re-encoded,
    resized, brightened or blurred copies of the shared photos move by at most 14 bits; distinct photos are 60 or
    more apart. A crop moves it as far as another photo: only a face's embedding joins that."""
    small = cv2.resize(grey, (4 * HASH_SIDE, 4 * HASH_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:HASH_SIDE, :HASH_SIDE].ravel()
    return np.packbits(low > np.median(low[1:]))


def signature(pixels: np.ndarray) -> tuple:
    """(embedding float32[128] or None where no face is found, perceptual hash uint8[32]) of decoded pixels."""
    small = fit_side(pixels, ANALYSIS_SIDE, grow=False)
    found = largest_face(np.ascontiguousarray(to_rgb(small)))
    embedding = None
    if found is not None:
        rgb, rect = found
        embedder = shared_embedder()
        embedding = np.asarray(embedder.net.compute_face_descriptor(rgb, embedder.shape(rgb, rect)), np.float32)
    return embedding, perceptual_hash(to_grey(small))


def signature_of_bytes(data: bytes) -> tuple:
    """signature() of the images table's stored bytes: what ingest's worker processes receive."""
    return signature(decode_image(data))
