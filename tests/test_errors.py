"""What the OS refuses ends as one line naming the cause and the path, never a traceback."""

import errno

import pytest

from stages.lib.errors import StageError, run_stage


@pytest.mark.parametrize(
    "err, needle",
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "data/rois/mouth.parquet"),
            "No space left on device: data/rois/mouth.parquet",
        ),
        (PermissionError(errno.EACCES, "Permission denied", "data/filtered"), "Permission denied: data/filtered"),
        (
            OSError(errno.EROFS, "Read-only file system", "metrics/parse.json"),
            "Read-only file system: metrics/parse.json",
        ),
        (OSError(errno.EMFILE, "Too many open files"), "Too many open files"),
        (
            OSError("Failed to write data/rois/mouth.parquet: No space left on device\nDetail: ..."),
            "Failed to write data/rois/mouth.parquet: No space left on device",
        ),  # pyarrow's, without errno
        (MemoryError(), "out of memory"),
    ],
)
def test_os_failures_are_one_line(capsys, err, needle):
    def main():
        raise err

    with pytest.raises(SystemExit) as exit_:
        run_stage(main)
    assert exit_.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]


def test_stage_errors_exit_2(capsys):
    def main():
        raise StageError("params: train.lr must be > 0")

    with pytest.raises(SystemExit) as exit_:
        run_stage(main)
    assert exit_.value.code == 2 and capsys.readouterr().err == "error: params: train.lr must be > 0\n"


def test_an_oversized_csv_field_is_one_line(tmp_path):
    from stages.lib.sources import labelled_folder

    (tmp_path / "legend.csv").write_text("image,emotion\n" + "x" * 200_000 + ",happy\n")
    with pytest.raises(StageError, match="malformed CSV"):
        list(labelled_folder(str(tmp_path), "", "image", "emotion"))


def test_memory_error_while_decoding_one_image_is_a_reject(monkeypatch):
    import numpy as np
    from PIL import Image

    from stages.lib.codec import DecodeError, decode_image, encode_png

    png = encode_png(np.zeros((8, 8), np.uint8))

    def no_memory(self, *args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(Image.Image, "load", no_memory)
    with pytest.raises(DecodeError) as err:
        decode_image(png)
    assert err.value.reason == "corrupt_image" and "MemoryError" in str(err.value)


def test_a_disk_full_mid_write_leaves_the_previous_output_whole(tmp_path, monkeypatch, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stages.lib.tables import ShardWriter

    schema = pa.schema([("id", pa.string())])
    out = tmp_path / "images"
    with ShardWriter(str(out), schema) as w:
        w.write({"id": ["old"]})
    before = (out / "part-00000.parquet").read_bytes()

    def full(self, *args, **kwargs):
        raise OSError(28, "No space left on device", str(out))

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)

    def stage():
        with ShardWriter(str(out), schema) as w:
            w.write({"id": ["new"]})

    with pytest.raises(SystemExit) as exit_:
        run_stage(stage, skip_teardown=False)  # a stage that wrote would end this process: the test must fail
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip().endswith("the previous outputs are unchanged")
    assert (out / "part-00000.parquet").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]  # the scratch folder went with the failure


def test_a_stage_that_skips_teardown_flushes_its_output_and_exits_0():
    """A stage's process ends with os._exit (run_stage's default): what the stage printed (unflushed, into pipes)
    must be there, the status 0; a StageError is still one line and status 2."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = (
        "import sys\n"
        "from stages.lib.errors import StageError, run_stage\n"
        "def ok():\n"
        "    print('stage: done', end='')\n"
        "    print('progress', end='', file=sys.stderr)\n"
        "def bad():\n"
        "    raise StageError('curator.folds=1 is below 2')\n"
        "run_stage(ok if sys.argv[1] == 'ok' else bad)\n"
        "print('never', file=sys.stderr)\n"
    )
    runs = {
        arg: subprocess.run([sys.executable, "-c", script, arg], cwd=ROOT, capture_output=True, text=True)
        for arg in ("ok", "bad")
    }
    assert (runs["ok"].returncode, runs["ok"].stdout, runs["ok"].stderr) == (0, "stage: done", "progress")
    assert (runs["bad"].returncode, runs["bad"].stderr) == (2, "error: curator.folds=1 is below 2\n")
