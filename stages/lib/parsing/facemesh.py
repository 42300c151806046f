"""The offline parsing backend: MediaPipe FaceMesh landmarks drawn as filled polygons in canonical class ids.

MediaPipe's FaceMesh model ships inside the pinned wheel, so this backend works on a machine with no network.
It yields 478 landmarks (468 with iris refinement off); the region outlines come from MediaPipe's own connection
sets (`face_mesh_connections`), walked into ordered contours here rather than copied as index lists.

Conventions, checked against the BiSeNet reference masks (../shared/data/parsing_reference): `l_*` is the
subject's left, which is the image's right in a photo, and MediaPipe's LEFT_* sets follow the same convention.

Classes drawn: skin (1), brows (2, 3), eyes (4, 5), nose (10), mouth interior (11), upper and lower lip (12, 13),
painted in that order so that features sit on top of the skin.

FaceMesh places its landmarks through occluders (a bar, sunglasses, a hand over the mouth) and on closed eyes. With
visibility checking on (the default), each eye, brow and the mouth is then checked against the image's pixels and
a feature the picture does not show is taken out of the map (visibility.py), as a learned parser would leave it out.
"""

import os
import warnings

import cv2
import numpy as np

from ..boxes import mask_bbox
from ..quiet import quiet_stderr
from .visibility import VisibilityThresholds, hidden_features, remove_hidden

# MediaPipe's C++ side logs through glog/absl; ask it to keep INFO and WARNING lines to itself.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SUBPIXEL_BITS = 4  # cv2.fillPoly fixed-point precision: 1/16 pixel


def walk_contours(edges):
    """Ordered node lists of an edge set's connected parts: (nodes, closed) per part.

    FaceMesh's connection sets are unions of simple cycles (eyes, lips, face oval) and simple paths (brows).
    """
    neighbours = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    if any(len(n) > 2 for n in neighbours.values()):
        raise ValueError("edge set branches; it is not a union of cycles and paths")
    seen, parts = set(), []
    # Paths start at an end (one neighbour); then whatever is left are cycles.
    starts = sorted(n for n, nb in neighbours.items() if len(nb) == 1) + sorted(neighbours)
    for start in starts:
        if start in seen:
            continue
        order, prev, node = [start], None, start
        seen.add(start)
        while True:
            nxt = [n for n in neighbours[node] if n != prev and n not in seen]
            if not nxt:
                break
            prev, node = node, nxt[0]
            order.append(node)
            seen.add(node)
        closed = len(neighbours[start]) == 2 and start in neighbours[order[-1]] and len(order) > 2
        parts.append((order, closed))
    return parts


def _topology():
    from mediapipe.python.solutions import face_mesh_connections as fmc

    def cycle(edges):
        ((nodes, closed),) = walk_contours(edges)
        assert closed
        return nodes

    lips = walk_contours(fmc.FACEMESH_LIPS)
    assert len(lips) == 2 and all(c for _, c in lips)
    return {
        "oval": cycle(fmc.FACEMESH_FACE_OVAL),
        "l_eye": cycle(fmc.FACEMESH_LEFT_EYE),
        "r_eye": cycle(fmc.FACEMESH_RIGHT_EYE),
        "l_brow": [p for p, _ in walk_contours(fmc.FACEMESH_LEFT_EYEBROW)],
        "r_brow": [p for p, _ in walk_contours(fmc.FACEMESH_RIGHT_EYEBROW)],
        "lips": [p for p, _ in lips],
        "nose": sorted({n for e in fmc.FACEMESH_NOSE for n in e}),
    }


TOPOLOGY = _topology()


def _area(poly):
    x, y = poly[:, 0], poly[:, 1]
    # The shoelace formula; each coordinate's predecessor by concatenation (np.roll's values, at a fifth of its cost).
    x_before, y_before = np.concatenate((x[-1:], x[:-1])), np.concatenate((y[-1:], y[:-1]))
    return 0.5 * abs(float(np.dot(x, y_before) - np.dot(y, x_before)))


def _band(path_a, path_b):
    """One polygon from two roughly parallel open paths (a brow's upper and lower edge), joined end to end."""
    if np.linalg.norm(path_a[-1] - path_b[0]) < np.linalg.norm(path_a[-1] - path_b[-1]):
        return np.concatenate([path_a, path_b])
    return np.concatenate([path_a, path_b[::-1]])


def _split_at_corners(cycle):
    """A closed lip contour cut at its two mouth corners (its farthest-apart points) into two chains."""
    d = np.linalg.norm(cycle[:, None] - cycle[None], axis=2)
    i, j = sorted(np.unravel_index(np.argmax(d), d.shape))
    first = cycle[i : j + 1]
    second = np.concatenate([cycle[j:], cycle[: i + 1]])[::-1]  # also from corner i to corner j
    return first, second


def region_polygons(points: np.ndarray) -> dict:
    """Polygons (float pixel coordinates) per canonical class from landmarks in pixels (N x 2)."""
    t = TOPOLOGY
    polys = {1: [points[t["oval"]]], 4: [points[t["l_eye"]]], 5: [points[t["r_eye"]]]}
    for cls, key in ((2, "l_brow"), (3, "r_brow")):
        a, b = t[key]
        polys[cls] = [_band(points[a], points[b])]
    hull = cv2.convexHull(points[t["nose"]].astype(np.float32))[:, 0]
    polys[10] = [hull]
    outer, inner = sorted((points[c] for c in t["lips"]), key=_area, reverse=True)
    # Upper chains are those nearer the nose tip (the nose hull's centroid stands in for it).
    nose = hull.mean(axis=0)
    o1, o2 = _split_at_corners(outer)
    i1, i2 = _split_at_corners(inner)
    near = lambda c: np.linalg.norm(c.mean(axis=0) - nose)  # noqa: E731
    o_up, o_lo = (o1, o2) if near(o1) < near(o2) else (o2, o1)
    i_up, i_lo = (i1, i2) if near(i1) < near(i2) else (i2, i1)
    # A lip is the band between its outer and inner chains, walked out along one and back along the other.
    if np.linalg.norm(o_up[0] - i_up[0]) > np.linalg.norm(o_up[0] - i_up[-1]):
        i_up = i_up[::-1]
    if np.linalg.norm(o_lo[0] - i_lo[0]) > np.linalg.norm(o_lo[0] - i_lo[-1]):
        i_lo = i_lo[::-1]
    polys[12] = [np.concatenate([o_up, i_up[::-1]])]
    polys[13] = [np.concatenate([o_lo, i_lo[::-1]])]
    polys[11] = [inner]
    return polys


PAINT_ORDER = (1, 10, 2, 3, 4, 5, 12, 13, 11)

# A NormalizedLandmark as MediaPipe serialises it (proto2, so every set field is written, zeros too): field 1 in a
# length-delimited record of 15 bytes, then x, y, z as tagged little-endian float32 (fields 1-3, wire type 5).
_LANDMARK_RECORD = np.dtype(
    [("key", "u1"), ("size", "u1"), ("x_key", "u1"), ("x", "<f4"), ("y_key", "u1"), ("y", "<f4"), ("z_key", "u1"),
     ("z", "<f4")]
)  # fmt: skip
_LANDMARK_KEYS = {"key": 0x0A, "size": 15, "x_key": 0x0D, "y_key": 0x15, "z_key": 0x1D}


def landmark_xy(data: bytes) -> np.ndarray:
    """(N, 2) float64 x, y of a serialised NormalizedLandmarkList: the same numbers as its landmarks' .x and .y.

    Read off the bytes in one pass: reading 478 landmarks field by field through protobuf's Python objects took
    0.28 ms a photo, a twentieth of the whole FaceMesh call (Zen 4 VM, 2026-12-03). A message laid out otherwise
    (visibility or presence set, another MediaPipe) is parsed and read field by field."""
    if len(data) % _LANDMARK_RECORD.itemsize == 0:
        records = np.frombuffer(data, _LANDMARK_RECORD)
        if all(np.all(records[name] == value) for name, value in _LANDMARK_KEYS.items()):
            return np.stack([records["x"], records["y"]], axis=1).astype(np.float64)
    from mediapipe.framework.formats import landmark_pb2

    message = landmark_pb2.NormalizedLandmarkList.FromString(data)
    return np.array([(p.x, p.y) for p in message.landmark], dtype=np.float64)


def rasterise(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """The canonical label map (uint8, height x width) of one face's landmarks in pixels."""
    label_map = np.zeros((height, width), np.uint8)
    scale = 1 << SUBPIXEL_BITS
    polys = region_polygons(points)
    for cls in PAINT_ORDER:
        fixed = [np.round(p * scale).astype(np.int32) for p in polys[cls]]
        cv2.fillPoly(label_map, fixed, int(cls), lineType=cv2.LINE_8, shift=SUBPIXEL_BITS)
    return label_map


def _graph_call(mesh):
    """A function rgb -> the serialised landmarks of the first face FaceMesh finds (bytes), or None.

    It runs what `mesh.process(rgb)` runs, the same graph on the same packet and clock, without process()'s per-call
    costs: a namedtuple class built on every call (and the garbage collection it brings on) and each face's bytes
    parsed into a protobuf object that landmark_xy would serialise again: 0.28 ms of a 6.25 ms call on the Zen 4 VM
    (2026-12-04, 600 photos; tests/test_parse_facemesh.py checks the landmarks against process()'s). It reads
    SolutionBase's graph and output dict, so a MediaPipe laid out otherwise gets process() itself."""
    from mediapipe.python import packet_creator
    from mediapipe.python._framework_bindings import _packet_getter, image_frame

    inputs, outputs = getattr(mesh, "_input_stream_type_info", None), getattr(mesh, "_output_stream_type_info", None)
    laid_out = (
        all(hasattr(mesh, name) for name in ("_graph", "_graph_outputs", "_simulated_timestamp"))
        and list(inputs or ()) == ["image"]
        and getattr(inputs["image"], "name", None) in ("IMAGE", "IMAGE_FRAME")
        and "multi_face_landmarks" in (outputs or ())
    )
    if not laid_out:

        def through_process(rgb):
            faces = mesh.process(rgb).multi_face_landmarks
            return faces[0].SerializeToString() if faces else None

        return through_process
    srgb = image_frame.ImageFormat.SRGB
    make_packet = getattr(packet_creator, "create_" + inputs["image"].value)  # process()'s packet for the stream's type

    def call(rgb):
        if rgb.ndim != 3 or rgb.shape[2] != 3:  # process()'s own check; the graph would take grey or RGBA as they are
            raise ValueError("Input image must contain three channel rgb data.")
        mesh._graph_outputs.clear()
        mesh._simulated_timestamp += 33333  # process()'s step: a simulated 30 fps clock
        packet = make_packet(rgb, image_format=srgb).at(mesh._simulated_timestamp)
        mesh._graph.add_packet_to_input_stream(stream="image", packet=packet)
        mesh._graph.wait_until_idle()
        out = mesh._graph_outputs.get("multi_face_landmarks")
        if out is None or out.is_empty():
            return None
        faces = _packet_getter._get_serialized_proto_list(out)
        return faces[0] if faces else None

    return call


class FaceMeshParser:
    """Landmarks -> polygons, one image at a time (MediaPipe's static-image mode has no batch input)."""

    backend = "facemesh"

    def __init__(
        self,
        min_detect_size=192,
        refine=True,
        min_confidence=0.5,
        visibility=VisibilityThresholds(),
        max_draw_side=2048,
    ):
        """`visibility`: the thresholds of the per-feature visibility check, or None to draw every feature FaceMesh
        places (the landmarks alone, occluded or not)."""
        import mediapipe as mp

        warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)
        self.min_detect_size = int(min_detect_size)
        self.max_draw_side = int(max_draw_side)
        self.visibility = visibility
        with quiet_stderr():  # most set-up logs; the stage also wraps its whole run (see stages/parse.py)
            self.mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True,
                max_num_faces=1,
                refine_landmarks=refine,
                min_detection_confidence=min_confidence,
            )
        self.graph_call = _graph_call(self.mesh)
        self.seconds_in_mediapipe = 0.0

    def close(self):
        self.mesh.close()

    def detection_input(self, image: np.ndarray):
        """RGB image for MediaPipe, upsampled so its shorter side is at least min_detect_size.

        MediaPipe's detector runs at 128x128; a small face (a 48-pixel FER crop) gives it too little to find, and
        upsampling first measurably helps. Returns (rgb, side) where side is the longest side MediaPipe saw.
        """
        rgb = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        h, w = rgb.shape[:2]
        short = min(h, w)
        if 0 < short < self.min_detect_size:
            f = self.min_detect_size / short
            rgb = cv2.resize(rgb, (round(w * f), round(h * f)), interpolation=cv2.INTER_CUBIC)
        return np.ascontiguousarray(rgb), max(rgb.shape[:2])

    def landmarks(self, rgb: np.ndarray):
        """Normalised (x, y) landmarks of the most prominent face, or None.

        A face that fills the whole frame is often missed by the detector, which expects some context around it;
        when the first try finds nothing, the image is padded by a quarter of its side and tried again.
        """
        import time

        t0 = time.perf_counter()
        try:
            pts = self._detect(rgb)
            if pts is None:
                h, w = rgb.shape[:2]
                pad = max(h, w) // 4
                padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
                pts = self._detect(padded)
                if pts is not None:
                    pts = (pts * [padded.shape[1], padded.shape[0]] - pad) / [w, h]
            return pts
        finally:
            self.seconds_in_mediapipe += time.perf_counter() - t0

    def _detect(self, rgb):
        face = self.graph_call(rgb)
        return None if face is None else landmark_xy(face)

    # The runner's three steps (prepare in a thread, infer in the main thread, finish in a thread). The image itself
    # travels with the detection input because the visibility check in finish() reads its pixels.
    def prepare(self, image: np.ndarray):
        rgb, side = self.detection_input(image)
        return (rgb, image), side

    def infer(self, inputs: list) -> list:
        return [(self.landmarks(rgb), image) for rgb, image in inputs]

    def finish(self, raw, height: int, width: int):
        pts, image = raw
        return self.draw(pts, height, width, image)

    def parse(self, image: np.ndarray):
        """(label_map, bbox, parse_size) for one uint8 grey or RGB image; label_map is None when no face is found."""
        rgb, side = self.detection_input(image)
        pts = self.landmarks(rgb)
        return self.draw(pts, image.shape[0], image.shape[1], image) + (side,)

    def draw(self, pts, height, width, image=None):
        """(label_map, bbox) at the image's own resolution from normalised landmarks (or (None, None)).

        With an image and visibility checking on, features the image does not show are left out of the map.
        """
        if pts is None:
            return None, None
        if image is not None and max(height, width) > self.max_draw_side:
            # A 36 MP photo costs seconds to minutes to rasterise and check at full size, for polygons whose
            # detail is the landmarks': draw at max_draw_side, then scale the map up (nearest, so ids stay ids).
            f = self.max_draw_side / max(height, width)
            small = cv2.resize(
                image, (max(1, round(width * f)), max(1, round(height * f))), interpolation=cv2.INTER_AREA
            )
            label_map, _ = self.draw(pts, small.shape[0], small.shape[1], small)
            label_map = cv2.resize(label_map, (width, height), interpolation=cv2.INTER_NEAREST)
            return label_map, mask_bbox(label_map > 0)
        pixels = pts * [width, height]
        label_map = rasterise(pixels, height, width)
        if image is not None and self.visibility is not None:
            remove_hidden(label_map, hidden_features(image, pixels, label_map, self.visibility))
        return label_map, mask_bbox(label_map > 0)
