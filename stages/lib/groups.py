"""Identity and near-duplicate groups, so that ingest draws one split per group (`ingest.split_by: group`) and no
person or near-copy lands in both train and test.

    groups = assign_groups(ids, embeddings, hashes, identity_distance=0.55)   # {id: group id}
    split = split_from_group(groups[image_id], test_fraction)

Faces (images with a dlib embedding, stages/lib/face_signature.py) join by average linkage: two clusters merge while
the mean distance between their members is at most `identity_distance`. Single linkage at dlib's 0.6 chains most of
the shared photos into one group (1% of pairs of different people are under 0.6, and 2,000 faces make 2 million
pairs); average linkage at 0.55 keeps groups to about one person each (bench/groups.py). Near-duplicates join
whatever their identity: embeddings closer than NEAR_DUPLICATE_DISTANCE, or perceptual hashes within
NEAR_DUPLICATE_BITS, which also covers images where no face was found. A group's id is its lowest member id.
"""

import hashlib

import numpy as np

from .errors import StageError

# Different people in the shared photos are never this close (the closest of the 1.9 million pairs of faces: 0.362);
# the same person's other photos are at 0.43 in the median, 5% of them under 0.32 (bench/judges.py).
NEAR_DUPLICATE_DISTANCE = 0.3
# Of 256 hash bits. Distinct shared photos are 60 or more apart (1st percentile of the nearest: 70); JPEG at
# quality 60 moves a photo by at most 12, a 60% resize by 6, +25 brightness by 14, a blur by 12 (bench/groups.py
# --sweep).
NEAR_DUPLICATE_BITS = 32
# Average linkage holds the pairwise distances of one connected set of faces: 1.6 GB of float64 at this many.
MAX_LINKED_FACES = 20_000
BLOCK = 512


def split_from_group(group_id: str, test_fraction: float) -> str:
    """The split of a whole group. Drawn from a hash *of* the group id, not from the id itself: the lowest id of a
    large group is small, and split_from_id would put nearly every large group in test."""
    draw = int(hashlib.sha256(f"group:{group_id}".encode()).hexdigest()[:8], 16) / 16**8
    return "test" if draw < test_fraction else "train"


class _Union:
    def __init__(self, n):
        self.parent = list(range(n))

    def find(self, a):
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def join(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def _close_pairs(x: np.ndarray, limit: float, metric):
    """(i, j) with i < j and metric(x[i], x[j]) <= limit, a block of rows at a time (bounded memory)."""
    for start in range(0, len(x), BLOCK):
        d = metric(x[start : start + BLOCK], x)
        rows, cols = np.nonzero(d <= limit)
        rows = rows + start
        keep = rows < cols
        yield from zip(rows[keep].tolist(), cols[keep].tolist())


def _euclidean(a, b):
    from scipy.spatial.distance import cdist

    return cdist(a, b)


def hash_bits(hashes) -> np.ndarray:
    """Packed hashes (uint8[32] each) as rows of 0/1 float32, for hamming()."""
    return np.unpackbits(np.stack(hashes), axis=1).astype(np.float32)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Differing bits between every row of `a` and every row of `b` (hash_bits rows): |a| + |b| - 2 a.b, exact in
    float32 (integers under 2**24)."""
    return a.sum(1)[:, None] + b.sum(1)[None] - 2 * (a @ b.T)


def _average_linkage(faces: np.ndarray, distance: float, union: _Union, members: list):
    """Join, in `union`, the faces that average linkage puts in one cluster at `distance`. Two faces can share a
    cluster only if a chain of pairs within `distance` links them, so each connected set is clustered on its own:
    memory grows with the largest set, not with all faces."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    linked = _Union(len(faces))
    for i, j in _close_pairs(faces, distance, _euclidean):
        linked.join(i, j)
    sets = {}
    for i in range(len(faces)):
        sets.setdefault(linked.find(i), []).append(i)
    for rows in sets.values():
        if len(rows) < 2:
            continue
        if len(rows) > MAX_LINKED_FACES:
            raise StageError(
                f"params: ingest.group_distance={distance} links {len(rows)} faces into one set, over the "
                f"{MAX_LINKED_FACES} that average linkage can hold; lower it or set ingest.split_by: id"
            )
        labels = fcluster(linkage(pdist(faces[rows]), "average"), distance, "distance")
        first = {}
        for row, label in zip(rows, labels):
            union.join(members[first.setdefault(label, row)], members[row])


def assign_groups(ids: list, embeddings: list, hashes: list, identity_distance: float, names=None) -> dict:
    """{id: group id} for distinct `ids`, with each id's embedding (float32[128] or None) and perceptual hash
    (uint8[32]), and optionally the identity names the source gives it (a list per id, e.g. from its file name):
    ids sharing a name share a group. The result depends only on the set of (id, embedding, hash, names), not on
    their order."""
    order = sorted(range(len(ids)), key=lambda k: ids[k])
    ids = [ids[k] for k in order]
    union = _Union(len(ids))
    first_with = {}
    for i, k in enumerate(order):
        for name in names[k] if names else ():
            union.join(first_with.setdefault(name, i), i)
    members = [i for i, k in enumerate(order) if embeddings[k] is not None]
    if members:
        faces = np.stack([np.asarray(embeddings[order[i]], np.float64) for i in members])
        _average_linkage(faces, identity_distance, union, members)
        for i, j in _close_pairs(faces, NEAR_DUPLICATE_DISTANCE, _euclidean):
            union.join(members[i], members[j])
    if ids:
        bits = hash_bits([hashes[k] for k in order])
        for i, j in _close_pairs(bits, NEAR_DUPLICATE_BITS, hamming):
            union.join(i, j)
    # union.join keeps the smaller index as the root, and ids are sorted: the root is the group's lowest id
    return {image_id: ids[union.find(i)] for i, image_id in enumerate(ids)}
