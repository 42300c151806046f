"""Image bytes in and out: content ids, safe decoding, the bytes the images table stores, deterministic PNG encoding.

One function, `decode_image`, turns any bytes this pipeline reads into pixels: a source file at ingest, and the
images table's `image` column (JPEG or PNG) in every later stage. It finds the format from the bytes themselves (PIL
reads the magic number), so a reader needs no second column; `image_format` is there for other tools and the metrics.
"""

import hashlib
import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps

# Decoding more than this many pixels is refused before the pixels are read (decompression bombs); ingest.max_pixels.
MAX_PIXELS = 120_000_000
# PIL refuses above twice its own bomb limit (89 MP) whatever we allow: the most ingest.max_pixels can let through, so
# the cap for bytes the images table already holds.
PIL_CEILING = 178_000_000
EXIF_ORIENTATION = 0x0112


class DecodeError(ValueError):
    """The bytes are not an image we can use; `reason` is the reject reason."""

    def __init__(self, reason, detail=""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def content_id(data: bytes) -> str:
    """The stable id of an image: a hash of its bytes, so the same file always gets the same id."""
    return hashlib.sha256(data).hexdigest()[:20]


def decode_image(data: bytes, max_pixels: int = PIL_CEILING) -> np.ndarray:
    """Decode any PIL-readable bytes to uint8 HxW (grey) or HxWx3 (colour), turned upright.

    16-bit images are scaled to 8 bits and alpha is composited over white, so every
    later stage sees one of two layouts. Raises DecodeError with a reject reason.
    """
    return to_uint8(upright(open_image(data, max_pixels)))


def stored_image(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple:
    """(pixels, the bytes to store, their format) for a source file: its own bytes, `jpeg` or `png`, when any decoder
    gives these pixels straight from them (own_bytes_format); otherwise lossless PNG of the pixels, `png`. Either way
    decode_image(stored) == pixels. Raises DecodeError with a reject reason."""
    img = open_image(data, max_pixels)
    pixels = to_uint8(upright(img))
    own = own_bytes_format(img, data)
    if own:
        return pixels, data, own
    return pixels, encode_png(pixels), "png"


def own_bytes_format(img: Image.Image, data: bytes):
    """`jpeg` or `png` when a plain decode of `data` (opened as `img`) is already what decode_image returns, so the
    file's own bytes can be stored; None when its pixels need converting first.

    That is 8-bit grey or RGB with no EXIF or XMP turn to apply. A JPEG: libjpeg gives no other depth, progressive and
    baseline files both decode to fixed pixels; CMYK or YCCK needs converting, so it is not. A PNG: lossless, so every
    decoder agrees, but only at 8 bits a sample with no transparency and one frame (PIL reads a 16-bit PNG as 8-bit
    RGB by dropping the low byte, where others round; transparency is composited; an animated PNG would store every
    frame for the first one's pixels). Keeping a PNG's bytes spares its re-encoding (the demo's 256 px faces: 5.5 ms
    each) and usually a bigger file (ours are written at zlib level 1)."""
    if img.mode not in ("L", "RGB"):
        return None
    try:
        if img.getexif().get(EXIF_ORIENTATION, 1) != 1:
            return None
    except Exception:  # a malformed EXIF block: another reader might turn the photo where upright() could not
        return None
    if img.format == "JPEG":
        return "jpeg"
    # A PNG opens with its IHDR chunk (signature 8, length 4, type 4, width 4, height 4): byte 24 is the bit depth.
    if img.format == "PNG" and data[24] == 8 and "transparency" not in img.info and not getattr(img, "is_animated", 0):
        return "png"
    return None


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """The loaded PIL image of `data`, refused (DecodeError `too_large`) above `max_pixels` before its pixels are
    read."""
    if not data:
        raise DecodeError("corrupt_image", "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap, below, decides
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise DecodeError("too_large", f"{w}x{h} exceeds {max_pixels} pixels")
            img.load()
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DecodeError("too_large", str(err)) from None
    except Exception as err:  # PIL raises many types for broken files
        raise DecodeError("corrupt_image", reject_detail(err)) from None
    return img


def upright(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (phones store the sensor's orientation there), so every later
    stage sees the photo upright; unreadable EXIF leaves it as stored."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # malformed EXIF blocks raise many types; the pixels themselves are fine
        return img


_ADDRESS = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def reject_detail(err: Exception) -> str:
    """A decoder's error as deterministic text: object reprs with memory addresses (PIL's "cannot identify image
    file <_io.BytesIO object at 0x7f...>") would give the same bad file a new reject row, and data/images a new
    hash, on every run."""
    return f"{type(err).__name__}: {' '.join(_ADDRESS.sub('', str(err)).split())}"


def to_uint8(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        return np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8)
    if mode in ("L", "1"):
        return np.asarray(img.convert("L"), dtype=np.uint8)
    if mode in ("LA", "RGBA", "PA", "P") and (mode != "P" or "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        return arr[..., 0].copy() if mode == "LA" else arr
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def encode_png(arr: np.ndarray) -> bytes:
    """PNG bytes of a uint8 grey or RGB array; same array, same bytes."""
    if arr.dtype != np.uint8:
        raise TypeError(f"encode_png wants uint8, got {arr.dtype}")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """Decode PNG bytes that this pipeline wrote (label maps, ROI crops: trusted, already normalised). The images
    table's `image` column is JPEG or PNG: decode_image."""
    return np.asarray(Image.open(io.BytesIO(data)))


def to_grey(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        return arr
    return np.asarray(Image.fromarray(arr).convert("L"))


def to_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3:
        return arr
    return np.repeat(arr[..., None], 3, axis=2)
