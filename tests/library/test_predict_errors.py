"""Per-file errors: every file the decoder refuses is one line naming it and the reason, and the
other files are still answered (``decode_image``, ``Preprocess.batch``, ``zero_shot``, ``medfilip
predict``, the image stage). Fixtures are generated here, a few KB each; the model is the session's
tiny exported model (tests/library/conftest.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from library_fixtures import RENDER, phantom
from PIL import Image

import medfilip
from medfilip.images.preprocess import ImageDecodeError, decode_image

# file name -> a piece of the reason its refusal must give
REASONS = {
    "truncated.png": "truncated or corrupt image: image file is truncated",
    "text.png": "not a readable image (unidentified format)",
    "empty.png": "empty file (0 bytes)",
    "scan.gif": "unsupported file type '.gif'",
    "folder.png": "a folder, not an image file",
    "missing.png": "file not found",
    "short_pixels.dcm": "corrupt or undecodable DICOM pixel data: ValueError: The number of bytes of pixel data",
    "bits13.dcm": "corrupt or undecodable DICOM pixel data: ValueError: A (0028,0100) 'Bits Allocated' value of '13'",
    "bad_window.dcm": "unusable DICOM display values: ValueError: could not convert string to float: 'abc'",
    "text.dcm": "not a DICOM file (no DICM header, no pixel data)",
    "huge.png": "image too large to decode: Image size (65536 pixels) exceeds limit of 20000 pixels",
}


@pytest.fixture
def files(tmp_path, monkeypatch) -> dict[str, Path]:
    """good.png, good.dcm and one file per refusal (PIL's bomb limit lowered so huge.png is 256×256)."""
    import pydicom

    from medfilip.datasets.dicom import DicomStyle, write_dicom

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # refused above 2 × 10,000 pixels
    out = {"good.png": tmp_path / "good.png"}
    Image.fromarray(phantom("cardiomegaly", seed=51)).save(out["good.png"])
    png = out["good.png"].read_bytes()
    for name, data in {
        "truncated.png": png[: len(png) // 2],
        "text.png": b"FINDINGS: no acute cardiopulmonary process.\n",
        "empty.png": b"",
        "scan.gif": png,
        "text.dcm": b"not a dicom file\n",
    }.items():
        (tmp_path / name).write_bytes(data)
        out[name] = tmp_path / name
    out["folder.png"] = tmp_path / "folder.png"
    out["folder.png"].mkdir()
    out["missing.png"] = tmp_path / "missing.png"
    out["huge.png"] = tmp_path / "huge.png"
    Image.fromarray(np.zeros((256, 256), np.uint8)).save(out["huge.png"])

    def dicom(name: str) -> Path:
        return write_dicom(
            tmp_path / name,
            phantom("pleural effusion", seed=52, size=RENDER),
            patient_id="p1",
            sop_instance_uid="2.25.21",
            study_uid="2.25.22",
            series_uid="2.25.23",
            style=DicomStyle(bits_stored=12, window=True, modality="DX"),
        )

    out["good.dcm"] = dicom("good.dcm")
    data = dicom("short_pixels.dcm").read_bytes()
    out["short_pixels.dcm"] = tmp_path / "short_pixels.dcm"
    out["short_pixels.dcm"].write_bytes(data[: len(data) - 2000])  # pixel data cut short
    for name in ("bits13.dcm", "bad_window.dcm"):
        ds = pydicom.dcmread(dicom(name))
        if name == "bits13.dcm":
            ds.BitsAllocated = 13  # a pixel type no decoder has
        else:  # window values that are not numbers
            del ds.WindowCenter, ds.WindowWidth
            ds.add_new(0x00281050, "LO", "abc")
            ds.add_new(0x00281051, "LO", "wide")
        ds.save_as(tmp_path / name)
        out[name] = tmp_path / name
    assert set(out) == {"good.png", "good.dcm", *REASONS}
    return out


def test_every_refusal_is_one_image_decode_error_naming_the_file(files):
    assert decode_image(files["good.png"]).shape == (RENDER, RENDER)
    assert decode_image(files["good.dcm"]).shape == (RENDER, RENDER)
    for name, reason in REASONS.items():
        with pytest.raises(ImageDecodeError) as info:
            decode_image(files[name])
        err = info.value
        assert err.path == str(files[name]) and reason in err.reason, (name, str(err))
        assert str(err) == f"{files[name]}: {err.reason}" and "\n" not in str(err)


def test_dicom_without_pydicom_is_a_decode_error(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom raises ImportError
    with pytest.raises(ImageDecodeError, match=r"good\.dcm: reading DICOM needs pydicom \(pip install pydicom\)$"):
        decode_image(files["good.dcm"])


def test_zero_shot_answers_the_good_files_and_lists_the_refused(exported, files):
    model, preprocess = medfilip.load(exported)
    bad = list(REASONS)
    inputs = [
        str(files["good.png"]),
        *(str(files[n]) for n in bad[:5]),
        files["good.dcm"],
        *(str(files[n]) for n in bad[5:]),
    ]
    result = medfilip.zero_shot(model, inputs)
    assert len(result) == 2 and result.images == [str(files["good.png"]), str(files["good.dcm"])]
    assert result.indices == [0, 6]
    assert [(e.index, e.image) for e in result.errors] == [(i, str(x)) for i, x in enumerate(inputs) if i not in (0, 6)]
    for error in result.errors:
        assert REASONS[Path(error.image).name] in error.reason and str(error) == f"{error.image}: {error.reason}"
    # the good files' numbers are those of scoring them alone
    alone = medfilip.zero_shot(model, [files["good.png"], files["good.dcm"]])
    assert torch.equal(result.probs, alone.probs) and torch.equal(result.cosine, alone.cosine)
    assert result.to_records() == alone.to_records()
    records = result.to_records(errors=True)
    assert [r["image"] for r in records] == [str(x) for x in inputs]
    assert records[1] == {"image": inputs[1], "index": 1, "error": result.errors[0].reason}
    assert records[6]["predictions"] == alone.ranked(1)
    # all refused: no rows, every error; raise mode and a single image raise the file's error
    none = medfilip.zero_shot(model, [files["empty.png"], files["text.png"]])
    assert len(none) == 0 and tuple(none.probs.shape) == (0, 3) and len(none.errors) == 2
    with pytest.raises(ImageDecodeError, match=r"truncated\.png: truncated or corrupt image"):
        medfilip.zero_shot(model, [files["good.png"], files["truncated.png"]], on_error="raise")
    with pytest.raises(ImageDecodeError, match=r"missing\.png: file not found"):
        medfilip.zero_shot(model, files["missing.png"])
    # Preprocess.batch: the accepted squares and the refusals
    batch = preprocess.batch([files["text.dcm"], files["good.png"], files["folder.png"]])
    assert tuple(batch.images.shape) == (1, preprocess.image_size, preprocess.image_size)
    assert torch.equal(batch.images[0], preprocess(files["good.png"]))
    assert batch.indices == [1] and [(e.index, e.reason) for e in batch.errors] == [
        (0, "not a DICOM file (no DICM header, no pixel data)"),
        (2, "a folder, not an image file"),
    ]
    with pytest.raises(ImageDecodeError, match=r"folder\.png: a folder"):
        preprocess([files["good.png"], files["folder.png"]])


def test_predict_prints_the_good_answers_and_one_line_per_refused_file(exported, files, capsys):
    from medfilip.predict import main

    good = [str(files["good.png"]), str(files["good.dcm"])]
    bad = [str(files[n]) for n in REASONS]
    args = [good[0], *bad[:4], good[1], *bad[4:], "--model", str(exported)]
    assert main(["predict", *args]) == 1
    captured = capsys.readouterr()
    table = captured.out.splitlines()
    assert [line for line in table if not line.startswith(" ")] == good and len(table) == 2 * (2 + 3)
    errors = captured.err.splitlines()
    assert len(errors) == len(bad)
    for path, line in zip(bad, errors, strict=True):
        assert line.startswith(f"medfilip predict: {path}: ") and REASONS[Path(path).name] in line
    # JSON: the answers under "images", the refusals under "errors", same exit status and stderr
    assert main(["predict", *args, "--format", "json", "--top", "1"]) == 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert [r["image"] for r in out["images"]] == good and all(len(r["predictions"]) == 1 for r in out["images"])
    assert [(e["image"], e["index"]) for e in out["errors"]] == [(p, args.index(p)) for p in bad]
    assert all(REASONS[Path(e["image"]).name] in e["error"] for e in out["errors"])
    assert captured.err.splitlines() == errors
    # every file refused: still a JSON document, exit 1; only good files: exit 0, nothing on stderr
    assert main(["predict", bad[0], bad[1], "--model", str(exported), "--format", "json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["images"] == [] and len(captured.err.splitlines()) == 2
    assert main(["predict", *good, "--model", str(exported)]) == 0
    assert capsys.readouterr().err == ""


def test_the_image_stage_rejects_every_refusal_with_its_reason(files, tmp_path):
    import pyarrow as pa

    from medfilip.images.preprocess import preprocess_images

    names = ["good.png", *REASONS, "good.dcm"]
    table = pa.table({"image_id": [f"i{k}" for k in range(len(names))], "path": [str(files[n]) for n in names]})
    store = preprocess_images(table, tmp_path / "store", size=16, dataset="errors", progress=False)
    assert store.meta["n_images"] == 2 and store.meta["n_rejects"] == len(REASONS)
    rejects = {Path(r["path"]).name: r["reason"] for r in store.rejects().to_pylist()}
    assert set(rejects) == set(REASONS)
    for name, reason in rejects.items():  # the reason alone: the path is its own column
        assert REASONS[name] in reason and str(files[name]) not in reason
