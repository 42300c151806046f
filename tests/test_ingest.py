import io
import struct
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stages.lib.labels import canonical_emotion
from tests.helpers.stage_runner import assert_contract, run_stage, scratch_project


def read_images(project):
    return pd.read_parquet(project / "data" / "images")


def png_bytes(arr, mode=None):
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG") if mode else Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png():
    """A real 1x1 PNG whose IHDR is patched to claim 50,000 x 50,000 pixels, CRC fixed up."""
    data = bytearray(png_bytes(np.zeros((1, 1), np.uint8)))
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", 50_000, 50_000)
    crc = zlib.crc32(bytes(data[12 : ihdr + 13])) & 0xFFFFFFFF
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


@pytest.fixture
def messy_folder(tmp_path, shared_data):
    """A labelled folder holding each kind of bad file the ingest must survive, next to real photos."""
    folder = tmp_path / "messy"
    (folder / "images").mkdir(parents=True)
    photo = (shared_data / "facial_expressions" / "images" / "Aaron_Guiel_0001.jpg").read_bytes()
    rng = np.random.default_rng(0)
    files = {
        "good.jpg": (photo, "happiness"),
        "truncated.jpg": (photo[: len(photo) // 2], "neutral"),
        "empty.png": (b"", "neutral"),
        "text.png": (b"this is not an image\n", "neutral"),
        "deep.png": (png_bytes((rng.integers(0, 65535, (64, 64))).astype(np.uint16)), "NEUTRAL"),
        "rgba.png": (png_bytes(rng.integers(0, 255, (64, 64, 4)).astype(np.uint8)), "Happiness"),
        "bomb.png": (bomb_png(), "neutral"),
        "odd_label.jpg": (photo[:-1] + b"\x00", "bored"),
        "tiny.png": (png_bytes(np.zeros((20, 20), np.uint8)), "neutral"),
        "copy.jpg": (photo, "happy"),
    }
    for name, (data, _) in files.items():
        (folder / "images" / name).write_bytes(data)
    rows = [f"{name},{label}" for name, (_, label) in files.items()] + ["not_there.jpg,neutral"]
    (folder / "legend.csv").write_text("image,emotion\n" + "\n".join(rows) + "\n")
    return folder


def test_bad_inputs_become_reasoned_rejects(tmp_path, messy_folder):
    project = scratch_project(tmp_path / "p", {"ingest": {"source": "labelled_folder", "path": str(messy_folder)}})
    proc = run_stage(project, "ingest")
    assert "Traceback" not in proc.stderr
    df = read_images(project).set_index("source_key")
    assert len(df) == 11 and df.index.is_unique
    expected = {
        "good.jpg": "",
        "truncated.jpg": "corrupt_image",
        "empty.png": "corrupt_image",
        "text.png": "corrupt_image",
        "deep.png": "",
        "rgba.png": "",
        "bomb.png": "too_large",
        "odd_label.jpg": "unknown_label",
        "tiny.png": "too_small",
        "copy.jpg": "duplicate",
        "not_there.jpg": "missing_file",
    }
    assert df.reason.to_dict() == expected
    assert df.kept.to_dict() == {k: v == "" for k, v in expected.items()}
    assert (df.label_source == "given").all() and df.label_prob.isna().all()  # only image_folder's are the judge's
    assert df.id.is_unique
    assert df[~df.kept].image.isna().all() and df[df.kept].image.notna().all()
    # 16-bit is scaled down to 8-bit grey; RGBA is composited to RGB.
    assert (df.loc["deep.png", "channels"], df.loc["rgba.png", "channels"]) == (1, 3)
    deep = np.asarray(Image.open(io.BytesIO(df.loc["deep.png", "image"])))
    assert deep.dtype == np.uint8 and deep.max() > 200
    assert df.loc["deep.png", "label"] == "neutral" and df.loc["rgba.png", "label"] == "happy"


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"ingest": {"source": "labelled_folder", "path": "/nowhere/at/all"}}, "ingest.path"),
        ({"ingest": {"source": "labelled_folder", "path": ""}}, "ingest.path"),
        ({"ingest": {"source": "fer2031_csv"}}, "ingest.source"),
        ({"ingest": {"min_size": -3}}, "ingest.min_size"),
        ({"ingest": {"source": "image_folder", "device": "gpu"}}, "ingest.device"),
        ({"ingest": {"source": "image_folder", "path": "params.yaml"}}, "ingest.path"),
    ],
)
def test_bad_params_are_one_line_errors(tmp_path, overrides, needle):
    project = scratch_project(tmp_path / "p", overrides)
    proc = run_stage(project, "ingest", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], proc.stderr


def test_shared_photos_are_all_accounted_for(tmp_path, shared_data):
    folder = shared_data / "facial_expressions"
    project = scratch_project(tmp_path / "p", {"ingest": {"source": "labelled_folder", "path": str(folder)}})
    run_stage(project, "ingest")
    df = read_images(project)
    legend = pd.read_csv(folder / "legend.csv")
    assert len(df) == len(legend) and df.id.is_unique
    # Case variants fold to one canonical label; per label, kept + rejected equals the legend's rows.
    assert df.label.value_counts().to_dict() == legend.emotion.map(canonical_emotion).value_counts().to_dict()
    dup_names = legend.image.duplicated().sum()
    assert (df.reason == "duplicate").sum() == dup_names
    assert set(df.reason) <= {"", "duplicate", "too_small"}
    # Running it again gives byte-identical shards.
    first = [p.read_bytes() for p in sorted((project / "data" / "images").glob("*.parquet"))]
    run_stage(project, "ingest")
    again = [p.read_bytes() for p in sorted((project / "data" / "images").glob("*.parquet"))]
    assert first == again


def test_fer2013_csv_keeps_ids_labels_and_usage(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for i, usage in enumerate(["Training", "PublicTest", "PrivateTest", "Training"]):
        pixels = " ".join(map(str, rng.integers(0, 256, 48 * 48)))
        rows.append(f"{i},{pixels},{usage}")
    rows.append("3,1 2 3,Training")  # malformed pixels
    rows.append("9," + " ".join(["7"] * 48 * 48) + ",Training")  # no such FER id
    csv_file = tmp_path / "fer2013.csv"
    csv_file.write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    project = scratch_project(tmp_path / "p", {"ingest": {"source": "fer2013_csv", "path": str(csv_file)}})
    run_stage(project, "ingest")
    df = read_images(project)
    assert df.label.tolist()[:4] == ["angry", "disgust", "fear", "happy"]
    assert df.split.tolist()[:4] == ["train", "val", "test", "train"]
    assert df.reason.tolist() == ["", "", "", "", "corrupt_image", "unknown_label"]
    assert (df.label_source == "given").all()
    assert df.detail.iloc[4] == "3 pixels, expected 2304"  # says what is wrong with the row
    assert (df[df.kept].width == 48).all()


def test_fer2013_folders_and_celeba(tmp_path):
    img = png_bytes(np.full((60, 60, 3), 128, np.uint8))
    root = tmp_path / "fer"
    for split, emotion, value in [("train", "happy", 1), ("train", "Neutral", 2), ("test", "sad", 3)]:
        (root / split / emotion).mkdir(parents=True)
        (root / split / emotion / "a.png").write_bytes(png_bytes(np.full((60, 60), value, np.uint8)))
    (tmp_path / "secret.png").write_bytes(png_bytes(np.full((60, 60), 9, np.uint8)))
    (root / "train" / "happy" / "link.png").symlink_to(tmp_path / "secret.png")  # a symlink out of the dataset
    project = scratch_project(tmp_path / "p1", {"ingest": {"source": "fer2013_folders", "path": str(root)}})
    run_stage(project, "ingest")
    df = read_images(project)
    assert sorted(zip(df.split, df.label, df.reason)) == [
        ("test", "sad", ""),
        ("train", "happy", ""),
        ("train", "happy", "outside_root"),
        ("train", "neutral", ""),
    ]

    celeba = tmp_path / "celeba"
    (celeba / "img_align_celeba").mkdir(parents=True)
    for i in range(3):
        (celeba / "img_align_celeba" / f"00000{i}.jpg").write_bytes(png_bytes(np.full((60, 60, 3), i, np.uint8)))
    (celeba / "list_attr_celeba.txt").write_text(
        "4\nMale Smiling Young\n000000.jpg -1 1 1\n000001.jpg 1 -1 1\n000002.jpg 1 1 -1\n../../secret.png 1 1 1\n"
    )
    (celeba / "list_eval_partition.txt").write_text("000000.jpg 0\n000001.jpg 1\n000002.jpg 2\n")
    project = scratch_project(tmp_path / "p2", {"ingest": {"source": "celeba", "path": str(celeba)}})
    run_stage(project, "ingest")
    df = read_images(project).sort_values("source_key")
    assert df.reason.tolist() == ["outside_root", "", "", ""]  # "../../secret.png" sorts first
    assert df.label.tolist()[1:] == ["happy", "neutral", "happy"]
    assert df.split.tolist()[1:] == ["train", "val", "test"]
    del img


def test_short_rows_and_odd_text_are_rejects_or_one_line_errors(tmp_path):
    img = png_bytes(np.full((60, 60), 9, np.uint8))
    fer = tmp_path / "fer2013.csv"
    fer.write_text("emotion,pixels,Usage\n" + "3," + " ".join(["5"] * 48 * 48) + ",Training\n3\n³,1 2,Training\n")
    project = scratch_project(tmp_path / "p1", {"ingest": {"source": "fer2013_csv", "path": str(fer)}})
    run_stage(project, "ingest")
    assert read_images(project).reason.tolist() == ["", "corrupt_image", "corrupt_image"]

    folder = tmp_path / "lf"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "a.png").write_bytes(img)
    (folder / "legend.csv").write_text("image,emotion\na.png,happy\n,neutral\n")
    project = scratch_project(tmp_path / "p2", {"ingest": {"source": "labelled_folder", "path": str(folder)}})
    run_stage(project, "ingest")
    assert read_images(project).reason.tolist() == ["", "missing_file"]

    (folder / "legend.csv").write_bytes(b"image,emotion\na.png,h\xe9ureux\n")
    proc = run_stage(project, "ingest", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error:")
    assert "not UTF-8" in proc.stderr and "Traceback" not in proc.stderr

    celeba = tmp_path / "celeba"
    (celeba / "img_align_celeba").mkdir(parents=True)
    (celeba / "img_align_celeba" / "1.jpg").write_bytes(img)
    (celeba / "img_align_celeba" / "2.jpg").write_bytes(png_bytes(np.full((60, 60), 7, np.uint8)))
    (celeba / "list_attr_celeba.txt").write_text("2\nMale Smiling\n1.jpg 1 1\n2.jpg 1\n")
    project = scratch_project(tmp_path / "p3", {"ingest": {"source": "celeba", "path": str(celeba)}})
    run_stage(project, "ingest")
    df = read_images(project).sort_values("source_key")
    assert df.label.iloc[0] == "happy" and df.label.isna().iloc[1] and df.reason.tolist() == ["", "unknown_label"]


# ---- hardening: paths that leave the dataset, deterministic rejects, EXIF -----------------------------------------


def test_paths_outside_the_dataset_are_never_opened(tmp_path, shared_data):
    photo = (shared_data / "facial_expressions" / "images" / "Aaron_Guiel_0001.jpg").read_bytes()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "private.jpg").write_bytes(photo[:-1] + b"\x01")  # a real photo, but not the dataset's
    folder = tmp_path / "data"
    (folder / "images" / "sub").mkdir(parents=True)
    (folder / "images" / "inside.jpg").write_bytes(photo)
    (folder / "images" / "link_out.jpg").symlink_to(outside / "private.jpg")
    (folder / "images" / "sub" / "link_in.jpg").symlink_to(folder / "images" / "inside.jpg")
    legend = [
        "inside.jpg,happy",
        "../../elsewhere/private.jpg,happy",
        f"{outside / 'private.jpg'},happy",
        "link_out.jpg,happy",
        "sub/link_in.jpg,happy",
        "/etc/hostname,happy",
    ]
    (folder / "legend.csv").write_text("image,emotion\n" + "\n".join(legend) + "\n")
    project = scratch_project(tmp_path / "p", {"ingest": {"source": "labelled_folder", "path": str(folder)}})
    proc = run_stage(project, "ingest")
    assert "Traceback" not in proc.stderr
    df = read_images(project).set_index("source_key")
    assert df.reason.to_dict() == {
        "inside.jpg": "",
        "../../elsewhere/private.jpg": "outside_root",
        str(outside / "private.jpg"): "outside_root",
        "link_out.jpg": "outside_root",
        "sub/link_in.jpg": "duplicate",
        "/etc/hostname": "outside_root",
    }
    assert df[df.reason == "outside_root"].image.isna().all() and df.id.is_unique
    assert_contract(project, shared_data)


def test_a_folder_of_bad_files_gives_byte_identical_rejects(tmp_path, messy_folder, shared_data):
    project = scratch_project(tmp_path / "p", {"ingest": {"source": "labelled_folder", "path": str(messy_folder)}})
    run_stage(project, "ingest")
    first = [p.read_bytes() for p in sorted((project / "data" / "images").glob("*.parquet"))]
    details = read_images(project).set_index("source_key").detail
    assert " at 0x" not in "".join(details) and "UnidentifiedImageError" in details["text.png"]
    run_stage(project, "ingest")
    assert [p.read_bytes() for p in sorted((project / "data" / "images").glob("*.parquet"))] == first
    assert_contract(project, shared_data)


def test_exif_orientation_is_applied_and_the_id_stays_the_file_hash(tmp_path):
    from stages.lib.codec import content_id, decode_image

    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, :40] = 255  # left half white: turned by orientation 6 (90 degrees clockwise) it becomes the top half
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(wide).save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    data = buf.getvalue()
    upright = decode_image(data)
    assert upright.shape[:2] == (80, 40)
    assert upright[:30].mean() > 200 and upright[50:].mean() < 50
    folder = tmp_path / "phone"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "phone.jpg").write_bytes(data)
    (folder / "legend.csv").write_text("image,emotion\nphone.jpg,happy\n")
    project = scratch_project(
        tmp_path / "p", {"ingest": {"source": "labelled_folder", "path": str(folder), "min_size": 8}}
    )
    run_stage(project, "ingest")
    row = read_images(project).iloc[0]
    assert (row.height, row.width) == (80, 40) and row.id == content_id(data)


def test_size_caps_apply_before_decoding(tmp_path, shared_data):
    photo = (shared_data / "facial_expressions" / "images" / "Aaron_Guiel_0001.jpg").read_bytes()
    folder = tmp_path / "big"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "photo.jpg").write_bytes(photo)
    (folder / "images" / "junk.jpg").write_bytes(photo + b"\0" * (3 * 2**20))  # a 3 MB file
    (folder / "images" / "wide.png").write_bytes(png_bytes(np.zeros((50, 3000), np.uint8)))  # 150,000 pixels
    (folder / "legend.csv").write_text("image,emotion\nphoto.jpg,happy\njunk.jpg,happy\nwide.png,happy\n")
    project = scratch_project(
        tmp_path / "p",
        {"ingest": {"source": "labelled_folder", "path": str(folder), "max_file_mb": 2, "max_pixels": 130_000}},
    )
    run_stage(project, "ingest")
    df = read_images(project).set_index("source_key")
    assert df.reason.to_dict() == {"photo.jpg": "", "junk.jpg": "too_large", "wide.png": "too_large"}
    assert df.detail["junk.jpg"] == "3 MB file over ingest.max_file_mb"


def test_a_very_large_photo_is_parsed_at_max_draw_side(shared_data):
    import cv2

    from stages.lib.parsing.facemesh import FaceMeshParser

    ref = shared_data / "parsing_reference" / "images" / "1112.jpg"
    image = cv2.cvtColor(cv2.imread(str(ref)), cv2.COLOR_BGR2RGB)
    big = cv2.resize(image, (3000, 3000), interpolation=cv2.INTER_CUBIC)
    capped, full = FaceMeshParser(max_draw_side=1024), FaceMeshParser(max_draw_side=4096)
    map_capped, box_capped, _ = capped.parse(big)
    map_full, _, _ = full.parse(big)
    assert map_capped.shape == big.shape[:2] and box_capped is not None
    # the same regions, up to the resampling of their edges
    for cls in (1, 4, 5, 12, 13):
        a, b = map_capped == cls, map_full == cls
        assert (a & b).sum() / max((a | b).sum(), 1) > 0.85, cls


def test_copies_policy_later_good_copy_and_label_conflicts(tmp_path, shared_data):
    photos = sorted((shared_data / "facial_expressions" / "images").glob("A*.jpg"))[:3]
    folder = tmp_path / "copies"
    (folder / "images").mkdir(parents=True)
    for i, photo in enumerate(photos):
        for copy in ("a", "b"):
            (folder / "images" / f"{i}{copy}.jpg").write_bytes(photo.read_bytes())
    legend = [
        "0a.jpg,bored",
        "0b.jpg,happy",  # first copy's label unknown: the later good copy is kept
        "1a.jpg,happy",
        "1b.jpg,neutral",  # identical bytes, two labels
        "2a.jpg,happy",
        "2b.jpg,HAPPINESS",
    ]  # the same label twice: an ordinary duplicate
    (folder / "legend.csv").write_text("image,emotion\n" + "\n".join(legend) + "\n")

    def ingest(policy):
        project = scratch_project(
            tmp_path / policy,
            {"ingest": {"source": "labelled_folder", "path": str(folder), "duplicate_labels": policy}},
        )
        run_stage(project, "ingest")
        return read_images(project).set_index("source_key")

    df = ingest("reject")
    assert df.reason.to_dict() == {
        "0a.jpg": "unknown_label",
        "0b.jpg": "",
        "1a.jpg": "label_conflict",
        "1b.jpg": "label_conflict",
        "2a.jpg": "",
        "2b.jpg": "duplicate",
    }
    assert df.id.is_unique and not df.id["0b.jpg"].endswith("-dup1") and df.id["0a.jpg"].endswith("-dup1")
    assert df.image["0b.jpg"] is not None and df.detail["1a.jpg"] == "same bytes labelled happy, neutral"
    first = ingest("first")
    assert first.reason["1a.jpg"] == "" and first.reason["1b.jpg"] == "duplicate"


def test_an_unknown_fer_usage_is_one_line(tmp_path):
    pixels = " ".join(["7"] * 48 * 48)
    csv_file = tmp_path / "fer2013.csv"
    csv_file.write_text(f"emotion,pixels,Usage\n0,{pixels},Training\n0,{pixels},Validation\n")
    project = scratch_project(tmp_path / "p", {"ingest": {"source": "fer2013_csv", "path": str(csv_file)}})
    proc = run_stage(project, "ingest", check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(errors) == 1 and "row 3 has Usage 'Validation'" in errors[0]
