"""The images table stores a source JPEG's own bytes where they decode plainly to the stored pixels, else PNG
(`image_format`), and Parquet does not compress those bytes a second time (../shared/DESIGN.md, images)."""

import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from stages.lib import sources
from stages.lib.codec import content_id, decode_image, stored_image
from stages.lib.parsing.labelmap import PNG_SIGNATURE, png_chunk
from tests.helpers.stage_runner import run_stage, scratch_project

GREY_JPEG = "Aaron_Guiel_0001.jpg"  # 350x350 baseline grey, as most of the set
COLOUR_JPEG = "Avinash_13.jpg"  # baseline RGB
PROGRESSIVE_JPEG = "facial-expressions_2868582k.jpg"  # the set's one progressive RGB JPEG


def encoded(img: Image.Image, fmt, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, shared_data):
    """A labelled folder of real photos as they come and turned into the cases that need PNG, ingested and parsed:
    (project, {name: source bytes})."""
    photos = shared_data / "facial_expressions" / "images"
    colour = Image.open(photos / COLOUR_JPEG)
    exif = Image.Exif()
    exif[0x0112] = 6  # the sensor's landscape, shown turned 90 degrees clockwise
    files = {name: (photos / name).read_bytes() for name in (GREY_JPEG, COLOUR_JPEG, PROGRESSIVE_JPEG)}
    files["rotated.jpg"] = encoded(colour, "JPEG", quality=90, exif=exif.tobytes())
    files["cmyk.jpg"] = encoded(colour.convert("CMYK"), "JPEG", quality=90)
    files["grey.png"] = encoded(Image.open(photos / GREY_JPEG), "PNG")
    files["colour.png"] = encoded(colour, "PNG")
    deep = np.asarray(Image.open(photos / GREY_JPEG), np.uint16) * 257 + 128  # 16 bits a sample, low bytes set
    files["deep.png"] = encoded(Image.fromarray(deep), "PNG")
    files["alpha.png"] = encoded(colour.convert("RGBA"), "PNG")
    folder = tmp_path_factory.mktemp("mixed") / "photos"
    (folder / "images").mkdir(parents=True)
    for name, data in files.items():
        (folder / "images" / name).write_bytes(data)
    (folder / "legend.csv").write_text("image,emotion\n" + "".join(f"{name},happy\n" for name in files))
    project = scratch_project(folder.parent / "p", {"ingest": {"source": "labelled_folder", "path": str(folder)}})
    run_stage(project, "ingest")
    run_stage(project, "parse")
    return project, files


def images(project):
    return pd.read_parquet(project / "data" / "images").set_index("source_key")


def test_plain_jpegs_keep_their_bytes_and_decode_as_pil_does(mixed):
    project, files = mixed
    df = images(project)
    for name in (GREY_JPEG, COLOUR_JPEG, PROGRESSIVE_JPEG):
        row = df.loc[name]
        assert row.image_format == "jpeg" and row.image == files[name] and row.id == content_id(files[name])
        plain = np.asarray(Image.open(io.BytesIO(files[name])))
        assert np.array_equal(decode_image(row.image), plain)
        assert (row.height, row.width, row.channels) == (*plain.shape[:2], 1 if plain.ndim == 2 else 3)


def test_plain_pngs_keep_their_bytes_and_others_are_stored_as_png_of_their_pixels(mixed):
    project, files = mixed
    df = images(project)
    assert set(df.image_format[["rotated.jpg", "cmyk.jpg", "grey.png", "colour.png", "deep.png", "alpha.png"]]) == {
        "png"
    }
    for name in ("grey.png", "colour.png"):  # 8-bit grey and RGB: any decoder gives these pixels
        assert df.image[name] == files[name], name
    for name in ("deep.png", "alpha.png"):  # 16 bits a sample, an alpha channel: converted, so re-encoded
        assert df.image[name] != files[name], name
    assert np.array_equal(decode_image(df.image["deep.png"]), decode_image(files["deep.png"]))
    rotated = decode_image(df.image["rotated.jpg"])
    plain = np.asarray(Image.open(io.BytesIO(files["rotated.jpg"])))
    assert rotated.shape == (plain.shape[1], plain.shape[0], 3)
    assert np.array_equal(rotated, np.rot90(plain, k=-1))  # upright, as the EXIF tag says
    cmyk = np.asarray(Image.open(io.BytesIO(files["cmyk.jpg"])).convert("RGB"))
    assert np.array_equal(decode_image(df.image["cmyk.jpg"]), cmyk)
    for name in ("grey.png", "colour.png"):
        assert np.array_equal(decode_image(df.image[name]), np.asarray(Image.open(io.BytesIO(files[name]))))
    assert np.array_equal(decode_image(df.image["alpha.png"]), decode_image(files["colour.png"]))  # opaque alpha
    assert df.id["grey.png"] != df.id[GREY_JPEG]  # same pixels, other bytes: the id hashes the file
    assert df.image["grey.png"][:8] == PNG_SIGNATURE


def raw_png(pixels: np.ndarray, depth: int) -> bytes:
    """A one-row RGB PNG written chunk by chunk, at `depth` bits a sample (PIL writes no 16-bit RGB)."""
    header = struct.pack(">IIBBBBB", pixels.shape[1], pixels.shape[0], depth, 2, 0, 0, 0)
    rows = b"".join(b"\0" + row.astype(f">u{depth // 8}").tobytes() for row in pixels)
    return (
        PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b"")
    )


def test_a_16_bit_rgb_png_is_converted_though_pil_calls_it_rgb():
    """PIL opens 16-bit RGB as mode RGB by dropping each sample's low byte, where other decoders round: 0x12ff is 18
    to PIL and 19 to a rounding reader, so such a file's bytes do not fix its pixels and it is re-encoded."""
    deep = raw_png(np.array([[[0x12FF, 0x5678, 0x9ABC]]]), 16)
    plain = raw_png(np.array([[[0x12, 0x56, 0x9A]]]), 8)
    assert Image.open(io.BytesIO(deep)).mode == Image.open(io.BytesIO(plain)).mode == "RGB"
    for data, own in ((deep, False), (plain, True)):
        pixels, stored, fmt = stored_image(data)
        assert fmt == "png" and (stored == data) == own and np.array_equal(decode_image(stored), pixels)
    assert stored_image(deep)[0].tolist() == [[[0x12, 0x56, 0x9A]]]


def test_stages_downstream_read_both_formats(mixed, shared_data):
    project, _ = mixed
    df = images(project)
    parsed = pd.read_parquet(project / "data" / "parsed").set_index("id")
    for key, row in df.iterrows():
        assert parsed.error[row.id] == "", key
        assert (parsed.height[row.id], parsed.width[row.id]) == (row.height, row.width), key
    tool = shared_data.parent / "tools" / "check_contract.py"
    proc = subprocess.run([sys.executable, str(tool), "data"], cwd=project, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_encoded_columns_are_not_compressed_twice(mixed):
    project, _ = mixed
    for table, encoded_column in (("images", "image"), ("parsed", "label_map")):
        meta = pq.ParquetFile(next((project / "data" / table).glob("*.parquet"))).metadata.row_group(0)
        codecs = {meta.column(i).path_in_schema: meta.column(i).compression for i in range(meta.num_columns)}
        assert codecs.pop(encoded_column) == "UNCOMPRESSED"
        assert set(codecs.values()) == {"ZSTD"}, codecs  # the other columns still are


def test_the_demo_stays_png_with_its_generated_bytes(tmp_path):
    demo = {"n": 12, "side": 64, "seed": 3}
    project = scratch_project(tmp_path / "p", {"ingest": {"source": "demo", "min_size": 32, "demo": demo}})
    run_stage(project, "ingest")
    df = pd.read_parquet(project / "data" / "images")
    records = list(sources.demo(n=demo["n"], size=demo["side"], seed=demo["seed"]))
    kept = df[df.kept]
    assert len(kept) > 0 and set(kept.image_format) == {"png"} and df[~df.kept].image_format.isna().all()
    by_key = {r.source_key: r.data for r in records}
    assert all(row.image == by_key[row.source_key] for row in kept.itertuples())
