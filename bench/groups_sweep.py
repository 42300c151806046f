"""bench/groups.py --sweep: other ingest.group_distance values on the same signatures, what the near-duplicate
thresholds of stages/lib/groups.py rest on, and what grouping does to the drawn demo faces."""

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np

from stages.lib.codec import decode_image, to_grey, to_rgb
from stages.lib.face_signature import (
    ANALYSIS_SIDE,
    fit_side,
    hog_detector,
    perceptual_hash,
    signature,
    signature_of_bytes,
)
from stages.lib.groups import (
    NEAR_DUPLICATE_BITS,
    NEAR_DUPLICATE_DISTANCE,
    assign_groups,
    hamming,
    hash_bits,
    split_from_group,
)

DISTANCES = (0.45, 0.5, 0.55, 0.6, 0.65)


def _sign(images):
    with ProcessPoolExecutor(os.cpu_count() or 2, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(signature_of_bytes, images, chunksize=8))


def _variants(grey):
    """Copies a near-duplicate rule should still call the same photo, by name."""
    h, w = grey.shape
    m = max(1, h // 20)
    return {
        "jpeg q60": cv2.imdecode(cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, 60])[1], 0),
        "resized to 60%": cv2.resize(grey, (w * 3 // 5, h * 3 // 5), interpolation=cv2.INTER_AREA),
        "brightness +25": np.clip(grey.astype(np.int16) + 25, 0, 255).astype(np.uint8),
        "blur sigma 1.5": cv2.GaussianBlur(grey, (5, 5), 1.5),
        "5% cropped off each side": np.ascontiguousarray(grey[m : h - m, m : w - m]),
    }


def near_duplicate_evidence(df, embeddings, hashes):
    faces = [i for i, e in enumerate(embeddings) if e is not None]
    e = np.stack([embeddings[i] for i in faces]).astype(np.float64)
    d = np.sqrt(np.maximum((e**2).sum(1)[:, None] + (e**2).sum(1)[None] - 2 * e @ e.T, 0))
    people = df.person.to_numpy()[faces]
    other = people[:, None] != people[None]
    print(
        f"\nclosest embeddings of different people: {d[other].min():.3f} (NEAR_DUPLICATE_DISTANCE "
        f"{NEAR_DUPLICATE_DISTANCE}); pairs under it: {int((d[other] < NEAR_DUPLICATE_DISTANCE).sum() // 2)}"
    )
    bits = hash_bits(hashes)
    h = hamming(bits, bits)
    np.fill_diagonal(h, np.inf)
    print(
        f"perceptual hash, nearest other photo: min {h.min():.0f}, 1st percentile {np.percentile(h.min(1), 1):.0f} "
        f"bits of 256 (NEAR_DUPLICATE_BITS {NEAR_DUPLICATE_BITS})"
    )
    moved = {}
    for data in df.image:
        grey = to_grey(decode_image(data))
        base = hash_bits([perceptual_hash(grey)])
        for name, copy in _variants(grey).items():
            moved.setdefault(name, []).append(int(hamming(base, hash_bits([perceptual_hash(copy)]))[0, 0]))
    for name, d in moved.items():
        d = np.array(d)
        print(
            f"  {name:26s} moves the hash by median {np.median(d):.0f}, p99 {np.percentile(d, 99):.0f}, max {d.max()}"
            f" bits; within {NEAR_DUPLICATE_BITS}: {(d <= NEAR_DUPLICATE_BITS).mean():.3f}"
        )


def detection_evidence(df, embeddings):
    """How many faces the retry of face_signature.largest_face adds, and whether their embeddings find their person."""
    plain = (to_rgb(fit_side(decode_image(d), ANALYSIS_SIDE, grow=False)) for d in df.image)
    first = np.array([len(hog_detector()(rgb, 0)) > 0 for rgb in plain])
    found = np.array([e is not None for e in embeddings])
    retried = np.where(found & ~first)[0]
    faces = np.where(found)[0]
    e = np.stack([embeddings[i] for i in faces]).astype(np.float64)
    people = df.person.to_numpy()
    told = nearest_same = 0
    for i in retried:
        others = faces[faces != i]
        if (people[others] == people[i]).any():
            told += 1
            d = np.linalg.norm(e[np.searchsorted(faces, others)] - np.asarray(embeddings[i], np.float64), axis=1)
            nearest_same += people[others[np.argmin(d)]] == people[i]
    print(
        f"\nfaces: first try {first.sum()}, after the retry {found.sum()} of {len(df)}; of the {len(retried)} "
        f"retried, {told} have another photo of their person, and for {nearest_same} the nearest face is one"
    )


def demo_groups(n, distance):
    from scipy.spatial.distance import pdist

    from stages.demo import render_demo

    sigs = [signature(s.image) for s in render_demo(n=n, size=256, seed=0)]
    groups = assign_groups([f"{i:06d}" for i in range(n)], [e for e, _ in sigs], [h for _, h in sigs], distance)
    sizes = sorted(np.unique(list(groups.values()), return_counts=True)[1].tolist(), reverse=True)
    found = [e for e, _ in sigs if e is not None]
    median = np.median(pdist(np.stack(found)))
    print(
        f"\ndemo, {n} drawn faces: dlib finds {len(found)} (median distance of two: {median:.2f}); at {distance} they "
        f"form {len(sizes)} groups, sizes {sizes[:5]}"
    )


def alternatives(df, embeddings, fraction, report):
    """Single linkage, which chains; and grouping every found face by its true name, a bound on what faces can do."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    faces = [i for i, e in enumerate(embeddings) if e is not None]
    tree = linkage(pdist(np.stack([embeddings[i] for i in faces]).astype(np.float64)), "single")
    for distance in (0.45, 0.5, 0.55, 0.6):
        largest = np.bincount(fcluster(tree, distance, "distance")).max()
        print(f"single linkage at {distance}: largest group {largest} of {len(faces)} faces")
    keys = df.id.tolist()
    for i in faces:
        keys[i] = f"person:{df.person.iloc[i]}"
    named = df.assign(split=[split_from_group(k, fraction) for k in keys])
    report("found faces grouped by their names, no face: a group of its own", named, keys, fraction)


def sweep(df, fraction, report):
    sigs = _sign(list(df.image))
    embeddings, hashes = [e for e, _ in sigs], [h for _, h in sigs]
    print(f"\nsigned {len(sigs)} kept images again: {sum(e is not None for e in embeddings)} faces found")
    for distance in DISTANCES:
        groups = assign_groups(df.id.tolist(), embeddings, hashes, distance)
        keys = [groups[i] for i in df.id]
        redrawn = df.assign(split=[split_from_group(g, fraction) for g in keys])
        report(f"ingest.group_distance: {distance}", redrawn, keys, fraction)
    alternatives(df, embeddings, fraction, report)
    detection_evidence(df, embeddings)
    near_duplicate_evidence(df, embeddings, hashes)
    demo_groups(200, 0.55)
