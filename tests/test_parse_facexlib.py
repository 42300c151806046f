"""facexlib backends on checkpoints of the real architectures saved with random weights (no download needed)."""

import numpy as np
import pytest
import torch

from stages.lib.errors import StageError
from stages.lib.labels import PARSE_CLASSES
from stages.lib.parsing import facexlib_nets as fx


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    paths = {}
    for backend in ("bisenet", "parsenet"):
        torch.manual_seed(1)
        paths[backend] = str(root / f"parsing_{backend}.pth")
        torch.save(fx.build_net(backend).state_dict(), paths[backend])
    return paths


def faces(n, size=(70, 90)):
    rng = np.random.default_rng(3)
    return [rng.integers(0, 255, size + (3,), dtype=np.uint8) for _ in range(n)]


def test_loads_saved_weights(checkpoints):
    parser = fx.FacexlibParser("bisenet", checkpoints["bisenet"], 64, "cpu")
    saved = torch.load(checkpoints["bisenet"], weights_only=True)
    name = "conv_out.conv_out.weight"
    assert torch.equal(parser.net.state_dict()[name], saved[name])
    assert not parser.net.training and not parser.half


def test_basicsr_params_wrapper_is_accepted(checkpoints, tmp_path):
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"params": torch.load(checkpoints["bisenet"], weights_only=True)}, wrapped)
    plain = fx.FacexlibParser("bisenet", checkpoints["bisenet"], 64, "cpu").net.state_dict()
    unwrapped = fx.FacexlibParser("bisenet", str(wrapped), 64, "cpu").net.state_dict()
    assert plain.keys() == unwrapped.keys() and all(torch.equal(plain[k], unwrapped[k]) for k in plain)


def test_512_input_with_the_models_normalisation(checkpoints):
    parser = fx.FacexlibParser("bisenet", checkpoints["bisenet"], 512, "cpu")
    prepared, side = parser.prepare(np.full((300, 200), 255, np.uint8))  # grey, not square
    assert prepared.shape == (512, 512, 3) and side == 512
    x = parser.to_tensor(np.stack([prepared]))
    assert x.shape == (1, 3, 512, 512) and x.is_contiguous(memory_format=torch.channels_last)
    mean, std = fx.NORMALISATION["bisenet"]
    expected = [(1 - m) / s for m, s in zip(mean, std)]
    assert torch.allclose(x[0, :, 0, 0], torch.tensor(expected), atol=1e-5)
    (label_map,) = parser.infer([prepared])
    assert label_map.shape == (512, 512) and label_map.dtype == np.uint8 and label_map.max() < 19


def test_batch_equals_one_by_one(checkpoints):
    parser = fx.FacexlibParser("bisenet", checkpoints["bisenet"], 64, "cpu")
    inputs = [parser.prepare(im)[0] for im in faces(3)]
    batched = parser.infer(inputs)
    for inp, got in zip(inputs, batched):
        (alone,) = parser.infer([inp])
        assert np.mean(alone == got) > 0.999


def test_parsenet_order_is_remapped_to_canonical(checkpoints, monkeypatch):
    parser = fx.FacexlibParser("parsenet", checkpoints["parsenet"], 64, "cpu")
    assert parser.prepare(faces(1)[0])[0].shape == (64, 64, 3)

    # Drive the real infer path with logits that put ParseNet class k in row-block k.
    def fake_forward(x):
        logits = torch.zeros(x.shape[0], 19, 19, 4)
        for k in range(19):
            logits[:, k, k, :] = 1.0
        return logits

    monkeypatch.setattr(parser, "forward", fake_forward)
    (label_map,) = parser.infer([np.zeros((64, 64, 3), np.uint8)])
    for k, name in enumerate(fx.PARSENET_CLASSES):
        assert PARSE_CLASSES[label_map[k, 0]] == name
    assert [label_map[k, 0] for k in (2, 4, 6, 11, 12, 13)] == [10, 4, 2, 12, 13, 17]
    # The real network runs too, and its output is in canonical ids.
    monkeypatch.undo()
    (real,) = parser.infer([np.zeros((64, 64, 3), np.uint8)])
    assert real.shape == (64, 64) and real.max() < 19


def face_like_map(side):
    m = np.zeros((side, side), np.uint8)
    m[side // 8 : -side // 8, side // 8 : -side // 8] = 1
    m[side // 3, side // 4 : side // 2] = 4
    m[2 * side // 3, side // 3 : 2 * side // 3] = 12
    return m


def test_resized_back_to_image_resolution():
    parser = object.__new__(fx.FacexlibParser)
    label_map, bbox = parser.finish(face_like_map(64), 120, 90)
    assert label_map.shape == (120, 90)
    counts = np.bincount(label_map.ravel(), minlength=19)
    assert counts.sum() == 120 * 90 and counts[4] > 0 and counts[12] > 0
    x, y, w, h = bbox
    assert x + w <= 90 and y + h <= 120 and w > 45 and h > 60


def test_face_found_rule():
    assert fx.decide_face(face_like_map(64))
    only_skin = np.ones((64, 64), np.uint8)
    assert not fx.decide_face(only_skin)
    hair_and_cloth = np.where(np.arange(64)[:, None] < 32, 17, 16).astype(np.uint8).repeat(64, 1)
    assert not fx.decide_face(hair_and_cloth)
    assert fx.FacexlibParser.finish(object.__new__(fx.FacexlibParser), only_skin, 10, 10) == (None, None)


def test_missing_weights_names_file_place_and_command(tmp_path):
    missing = str(tmp_path / "models" / "parsing" / "parsing_bisenet.pth")
    with pytest.raises(StageError) as err:
        fx.FacexlibParser("bisenet", missing, 512, "cpu")
    msg = str(err.value)
    assert "\n" not in msg and missing in msg
    assert f"dvc import-url {fx.WEIGHT_URLS['bisenet']} {missing}" in msg


def test_wrong_or_broken_checkpoint_is_one_line(checkpoints, tmp_path):
    with pytest.raises(StageError, match="does not fit facexlib's parsenet"):
        fx.FacexlibParser("parsenet", checkpoints["bisenet"], 64, "cpu")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(StageError, match="not a loadable torch checkpoint") as err:
        fx.FacexlibParser("bisenet", str(junk), 64, "cpu")
    assert "\n" not in str(err.value)
