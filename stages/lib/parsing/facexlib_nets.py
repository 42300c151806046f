"""facexlib's face parsers (BiSeNet, ParseNet) as a batched backend of the canonical 19-class contract.

The architectures come from facexlib's own classes; the weights come from a file named in params (`parse.weights`),
never from facexlib's init functions, which would try a download. Get the files with the commands in
models/parsing/README.md.

Input: the image resized to `size` x `size` (512 for the released weights), RGB in [0, 1], then each model's own
normalisation: ImageNet mean/std for BiSeNet, mean 0.5 / std 0.5 for ParseNet. The argmax map is remapped to
canonical ids (ParseNet uses the original CelebAMask-HQ order) and resized back to the image with nearest neighbour.

face_found: these networks label every pixel of any picture, so a face is declared only when the map has at least
FACE_MIN_SKIN of the picture as skin *and* FACE_MIN_FEATURES of the four feature groups (brows, eyes, nose,
mouth/lips) present. A no-face row gets an all-background map, like FaceMesh's.
"""

import os

import cv2
import numpy as np

from ..boxes import mask_bbox
from ..errors import StageError
from ..labels import PARSE_CLASSES, REGIONS
from .labelmap import FACE_CLASSES

WEIGHT_URLS = {
    "bisenet": "https://github.com/xinntao/facexlib/releases/download/v0.2.0/parsing_bisenet.pth",
    "parsenet": "https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth",
}
NORMALISATION = {  # (mean, std) per RGB channel, applied to [0, 1] pixels
    "bisenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "parsenet": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
# ParseNet's output channels, in CelebAMask-HQ's original annotation order.
PARSENET_CLASSES = [
    "background",
    "skin",
    "nose",
    "eye_g",
    "l_eye",
    "r_eye",
    "l_brow",
    "r_brow",
    "l_ear",
    "r_ear",
    "mouth",
    "u_lip",
    "l_lip",
    "hair",
    "hat",
    "ear_r",
    "neck_l",
    "neck",
    "cloth",
]
TO_CANONICAL = {
    "bisenet": np.arange(len(PARSE_CLASSES), dtype=np.uint8),
    "parsenet": np.array([PARSE_CLASSES.index(name) for name in PARSENET_CLASSES], dtype=np.uint8),
}
FACE_MIN_SKIN = 0.01
FACE_MIN_FEATURES = 2
FEATURE_GROUPS = (REGIONS["brows"], REGIONS["eyes"], REGIONS["nose"], REGIONS["mouth"])


def build_net(backend: str):
    """The untrained architecture, exactly as facexlib's release weights expect it."""
    from facexlib.parsing.bisenet import BiSeNet
    from facexlib.parsing.parsenet import ParseNet

    if backend == "bisenet":
        return BiSeNet(num_class=19)
    if backend == "parsenet":
        return ParseNet(in_size=512, out_size=512, parsing_ch=19)
    raise ValueError(f"unknown facexlib parser {backend!r}")


def missing_weights_message(backend: str, path: str) -> str:
    return (
        f"parse.backend={backend} needs weights at {path} ({os.path.abspath(path)}), which is missing; "
        f"get them with: dvc import-url {WEIGHT_URLS[backend]} {path}  (see models/parsing/README.md)"
    )


def load_net(backend: str, path: str, device, half: bool):
    """The network with its weights, in eval mode, channels_last, on `device` (fp16 when `half`)."""
    import torch

    if not os.path.isfile(path):
        raise StageError(missing_weights_message(backend, path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise StageError(
            f"parse.weights: {path} is not a loadable torch checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160]})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("params"), dict):  # BasicSR-style wrapper
        state = state["params"]
    net = build_net(backend)
    if not isinstance(state, dict):
        raise StageError(f"parse.weights: {path} holds a {type(state).__name__}, not a state dict")
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise StageError(
            f"parse.weights: {path} does not fit facexlib's {backend}: "
            f"{len(result.missing_keys)} missing keys (e.g. {result.missing_keys[:2]}), "
            f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:2]})"
        )
    net = net.eval().to(device=device, memory_format=torch.channels_last)
    return net.half() if half else net


def decide_face(label_map: np.ndarray) -> bool:
    """The face_found rule of the module docstring, on a canonical map at any resolution."""
    skin_share = np.count_nonzero(label_map == 1) / label_map.size
    present = np.bincount(label_map.ravel(), minlength=len(PARSE_CLASSES)) > 0
    features = sum(bool(present[list(group)].any()) for group in FEATURE_GROUPS)
    return skin_share >= FACE_MIN_SKIN and features >= FACE_MIN_FEATURES


class FacexlibParser:
    """Batched BiSeNet/ParseNet: prepare (CPU threads) -> infer (the device) -> finish (CPU threads)."""

    def __init__(self, backend: str, weights: str, size: int, device):
        import torch

        self.backend, self.size, self.device = backend, int(size), torch.device(device)
        self.half = self.device.type == "cuda"
        self.net = load_net(backend, weights, self.device, self.half)
        mean, std = NORMALISATION[backend]
        dtype = torch.float16 if self.half else torch.float32
        self.mean = torch.tensor(mean, device=self.device, dtype=dtype).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device, dtype=dtype).view(1, 3, 1, 1) * 255
        self.lut = torch.from_numpy(TO_CANONICAL[backend]).to(self.device)

    def prepare(self, image: np.ndarray):
        """(size x size x 3 uint8 RGB, parse_size); runs in the prefetch thread so the device never waits on it."""
        rgb = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        shrink = rgb.shape[0] > self.size or rgb.shape[1] > self.size
        resized = cv2.resize(rgb, (self.size, self.size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return resized, self.size

    def to_tensor(self, batch: np.ndarray):
        """N x H x W x 3 uint8 -> normalised N x 3 x H x W on the device; NHWC memory is channels_last already."""
        import torch

        x = torch.from_numpy(batch).to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        x = x.to(torch.float16 if self.half else torch.float32)
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def forward(self, x):
        """The bare network: logits of the main head."""
        import torch

        with torch.inference_mode():
            return self.net(x)[0]

    def infer(self, inputs: list) -> list:
        """Canonical label maps (size x size uint8) of a list of prepared inputs, run as one batch."""
        import torch

        if not inputs:
            return []
        with torch.inference_mode():
            logits = self.forward(self.to_tensor(np.stack(inputs)))
            return list(self.lut[logits.argmax(dim=1)].cpu().numpy())

    def finish(self, label_map: np.ndarray, height: int, width: int):
        """(label_map, bbox) at the image's resolution, or (None, None) when the face_found rule says no."""
        if not decide_face(label_map):
            return None, None
        if label_map.shape != (height, width):
            label_map = cv2.resize(label_map, (width, height), interpolation=cv2.INTER_NEAREST)
        return label_map, mask_bbox(np.isin(label_map, FACE_CLASSES))
