"""medfilip as a library: load a run or an exported folder, encode, zero-shot, predict, export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from library_fixtures import CLASSES, KNOWLEDGE, RENDER, SIZE, phantom
from PIL import Image

import medfilip
from medfilip.inference import ClassKnowledge, UnknownClassError, class_texts, normalise_name, zero_shot_scores
from medfilip.pretrained import CLASSES_FILE, CONFIG_FILE, PREPROCESS_FILE, WEIGHTS_FILE, Preprocess
from medfilip.training.model import ModelError

ROOT = Path(__file__).resolve().parents[2]

# What a library process must not need: the finder that looks packages up on sys.path is replaced by
# one that does not see them, so they are as good as not installed (an import raises
# ModuleNotFoundError, importlib.util.find_spec returns None). Refused names are recorded.
BLOCKER = textwrap.dedent("""
    import importlib.machinery, json, sys
    BLOCKED = set(sys.argv[1].split(","))
    refused = []

    class Block(importlib.machinery.PathFinder):
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                refused.append(name)
                return None
            return importlib.machinery.PathFinder.find_spec(name, path, target)

    assert not BLOCKED & {m.split(".")[0] for m in sys.modules}
    sys.meta_path[:] = [Block if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
    assert Block in sys.meta_path
""")

# every medfilip module a library process imports (the pipeline's config, io, stores, CLI stay out)
LIBRARY_MODULES = {
    "medfilip",
    "medfilip.configbase",
    "medfilip.images",
    "medfilip.images.preprocess",
    "medfilip.inference",
    "medfilip.labels",
    "medfilip.labels.templates",
    "medfilip.names",
    "medfilip.pretrained",
    "medfilip.training",
    "medfilip.training.model",
    "medfilip.training.settings",
}
PIPELINE_ONLY = [
    "snakemake",
    "openai",
    "duckdb",
    "tenacity",
    "pyarrow",
    "pandas",
    "sklearn",
    "matplotlib",
    "pydicom",
    "scipy",
    "segmentation_models_pytorch",
    "torchxrayvision",
    "llama_cpp",
]


def _run_blocked(script: str, blocked: list[str], *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    code = BLOCKER + textwrap.dedent(script) + "\nprint('RESULT', json.dumps({**out, 'refused': refused}))\n"
    proc = subprocess.run(
        [sys.executable, "-c", code, ",".join(blocked), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def _write_png(path: Path, kind: str, seed: int) -> Path:
    Image.fromarray(phantom(kind, seed)).save(path)
    return path


# -- 1. the library imports and works without the pipeline --------------------------------------
LIBRARY_SCRIPT = """
    import sys
    import medfilip
    heavy_after_import = sorted(m for m in ("torch", "transformers", "PIL", "numpy", "pydantic") if m in sys.modules)
    from PIL import Image
    model, preprocess = medfilip.load(sys.argv[2], **({"knowledge": sys.argv[4]} if len(sys.argv) > 4 else {}))
    image = preprocess(sys.argv[3])
    emb = model.encode_image(image[None])
    text = model.encode_text(["pleural effusion"])
    classes = ["normal", "pleural effusion", "cardiomegaly"]
    result = medfilip.zero_shot(model, [sys.argv[3], Image.open(sys.argv[3])], classes)
    out = {"heavy_after_import": heavy_after_import, "emb_shape": list(emb.shape), "norm": float(emb.norm()),
           "text_norm": float(text.norm()), "top": [result.top(0), result.top(1)],
           "loaded": sorted({m.split(".")[0] for m in sys.modules}),
           "medfilip": sorted(m for m in sys.modules if m.startswith("medfilip"))}
"""


def test_exported_folder_needs_none_of_the_pipeline(exported, tmp_path):
    png = _write_png(tmp_path / "effusion.png", "pleural effusion", seed=7)
    out = _run_blocked(LIBRARY_SCRIPT, PIPELINE_ONLY, str(exported), str(png))
    assert out["heavy_after_import"] == []  # `import medfilip` alone imports nothing heavy
    assert out["emb_shape"] == [1, 32] and out["norm"] == pytest.approx(1.0, abs=1e-5)
    assert out["text_norm"] == pytest.approx(1.0, abs=1e-5)
    assert out["top"] == ["pleural effusion", "pleural effusion"]
    assert not set(PIPELINE_ONLY) & set(out["loaded"])
    # the folder carries its class texts: the knowledge dictionary's YAML is not read
    assert "medfilip.knowledge.dictionary" not in out["medfilip"], out["medfilip"]
    assert set(out["medfilip"]) == LIBRARY_MODULES


def test_run_folder_loads_without_the_pipeline(tiny_run, tmp_path):
    png = _write_png(tmp_path / "effusion.png", "pleural effusion", seed=7)
    # a run folder's class texts come from the knowledge dictionary's YAML: pyyaml (and pydantic) stay allowed
    out = _run_blocked(LIBRARY_SCRIPT, PIPELINE_ONLY, str(tiny_run), str(png), str(KNOWLEDGE))
    assert out["top"] == ["pleural effusion", "pleural effusion"]
    assert not set(PIPELINE_ONLY) & set(out["loaded"])


def test_the_blocker_really_blocks():
    with pytest.raises(AssertionError, match="No module named 'pyarrow'"):
        _run_blocked("import pyarrow\nout = {}", ["pyarrow"])


# -- 2. save -> load: identical model, identical embeddings ----------------------------------------
def test_export_then_load_gives_identical_embeddings(tiny_run, exported):
    run_model, run_pre = medfilip.load(tiny_run, knowledge=KNOWLEDGE)
    folder_model, folder_pre = medfilip.load(exported)
    assert sorted(p.name for p in exported.iterdir()) == sorted(
        [CLASSES_FILE, CONFIG_FILE, PREPROCESS_FILE, WEIGHTS_FILE, "text_encoder"]
    )
    a, b = run_model.state_dict(), folder_model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    batch = torch.stack([run_pre(phantom(k, seed=s)) for k in CLASSES for s in (1, 2)])
    assert torch.equal(batch, torch.stack([folder_pre(phantom(k, seed=s)) for k in CLASSES for s in (1, 2)]))
    with torch.inference_mode():
        assert torch.equal(run_model.encode_image(batch), folder_model.encode_image(batch))
        texts = ["severe cardiomegaly", "no pleural effusion", "normal chest"]
        assert torch.equal(run_model.encode_text(texts), folder_model.encode_text(texts))
    assert run_model.logit_scale.item() == folder_model.logit_scale.item()


def test_save_pretrained_round_trip_through_the_python_api(exported, tmp_path):
    model = medfilip.from_pretrained(exported)
    again = medfilip.save_pretrained(model, tmp_path / "again")
    reloaded, _ = medfilip.load(again)
    x = torch.stack([model.preprocess(phantom("cardiomegaly", seed=3))])
    with torch.inference_mode():
        assert torch.equal(model.encode_image(x), reloaded.encode_image(x))
    assert reloaded.knowledge.default_classes == ("normal", "pleural effusion", "cardiomegaly")
    assert json.loads((again / CONFIG_FILE).read_text())["run"]["name"] == "tiny"
    # saving over an existing folder replaces it whole
    medfilip.save_pretrained(model, again)
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in exported.iterdir())


def test_preprocess_is_the_pipeline_image_store(tiny_run, tmp_path):
    """A file through `preprocess` equals that file in an image store built by the pipeline's stage,
    so the embedding equals the one evaluation stores."""
    import pyarrow as pa

    from medfilip.datasets.dicom import DicomStyle, write_dicom
    from medfilip.evaluation.zeroshot import encode_store_images
    from medfilip.images.preprocess import preprocess_images

    model, preprocess = medfilip.load(tiny_run, knowledge=KNOWLEDGE)
    png = _write_png(tmp_path / "a.png", "pleural effusion", seed=11)
    jpg = tmp_path / "b.jpg"
    Image.fromarray(np.pad(phantom("cardiomegaly", seed=12), ((0, 0), (8, 8)))).save(jpg, quality=90)  # not square
    dcm = write_dicom(
        tmp_path / "c.dcm",
        phantom("normal", seed=13),
        patient_id="p",
        sop_instance_uid="2.25.1",
        study_uid="2.25.2",
        series_uid="2.25.3",
        style=DicomStyle(bits_stored=12, photometric="MONOCHROME1", modality="DX"),
    )
    wide = tmp_path / "d.png"
    Image.fromarray(phantom("normal", seed=14).astype(np.uint16) * 257).save(wide)  # 16-bit grey
    paths = [png, jpg, dcm, wide]
    table = pa.table({"image_id": [f"i{i}" for i in range(4)], "path": [str(p) for p in paths], "split": ["test"] * 4})
    store = preprocess_images(table, tmp_path / "store", size=model.image_size, dataset="t", progress=False)
    ours = preprocess(paths)
    assert ours.dtype == torch.uint8 and tuple(ours.shape) == (4, SIZE, SIZE)
    assert np.array_equal(ours.numpy(), store.get_batch(np.arange(4)))
    pipeline = encode_store_images(model, store, np.arange(4), batch_size=4, progress=False)
    with torch.inference_mode():
        assert np.array_equal(model.encode_image(ours).numpy(), pipeline)


def test_preprocess_accepts_pil_and_arrays_like_files(tmp_path):
    pre = Preprocess(SIZE)
    png = _write_png(tmp_path / "x.png", "normal", seed=5)
    from_file = pre(png)
    assert torch.equal(pre(Image.open(png)), from_file)
    assert torch.equal(pre(np.asarray(Image.open(png))), from_file)
    assert torch.equal(pre(np.stack([np.asarray(Image.open(png))] * 3, axis=-1)), from_file)  # grey RGB
    with pytest.raises(TypeError, match="cannot read an image from int"):
        pre(3)
    with pytest.raises(ValueError, match="file not found"):
        pre(tmp_path / "missing.png")


# -- class texts and scores are the pipeline's ------------------------------------------------------
def test_class_texts_and_scores_are_the_pipelines():
    from medfilip.evaluation.sets import ClassSpec, EvalSet
    from medfilip.evaluation.zeroshot import class_texts as pipeline_texts
    from medfilip.evaluation.zeroshot import zero_shot_scores as pipeline_scores
    from medfilip.knowledge import load_knowledge

    dictionary = load_knowledge(KNOWLEDGE)
    knowledge = ClassKnowledge.from_dictionary(dictionary)
    specs = [
        ClassSpec("normal", "normal"),
        ClassSpec("cardiomegaly", "cardiomegaly"),
        ClassSpec("severe cardiomegaly", "cardiomegaly", "severe"),
        ClassSpec("pleural effusion", "pleural effusion"),
    ]
    for variant in ("triplet_explanation", "triplet", "category", "report_sentence"):
        s = EvalSet("x", "multi_label", specs, store=None)
        assert class_texts([c.name for c in specs], knowledge, variant) == pipeline_texts(
            s, dictionary.explanation, variant
        )
    assert class_texts(["severe cardiomegaly"], knowledge)[0].startswith("severe cardiomegaly, where cardiomegaly is ")
    # the library resolves names exactly as the dictionary does (one name index), and suggests the same
    for category in dictionary.categories:
        for name in (category, *dictionary.entry(category).synonyms):
            assert knowledge.resolve(name) == dictionary.resolve(name) == category
    assert knowledge.names.close_matches("pleral efusion") == dictionary.names.close_matches("pleral efusion") != []
    # synonyms name the canonical category's text
    assert class_texts(["Effusion", "Pleural_Effusion"], knowledge) == class_texts(["pleural effusion"] * 2, knowledge)
    assert [normalise_name(n) for n in ["Pleural_Thickening", " No  Finding ", "post-surgical changes", "a/b,c-d"]] == [
        "pleural thickening",
        "no finding",
        "post surgical changes",
        "a b c d",
    ]
    rng = np.random.default_rng(0)
    img, txt = rng.normal(size=(5, 8)).astype(np.float32), rng.normal(size=(3, 8)).astype(np.float32)
    for kwargs in ({}, {"softmax": True, "logit_scale": 23.5}):
        assert np.array_equal(zero_shot_scores(img, txt, **kwargs), pipeline_scores(img, txt, **kwargs))


def test_unknown_class_names_fail_clearly(exported):
    model, _ = medfilip.load(exported)
    with pytest.raises(UnknownClassError, match=r"unknown class 'cardiomegally'.*did you mean 'cardiomegaly'"):
        medfilip.zero_shot(model, torch.zeros(1, SIZE, SIZE, dtype=torch.uint8), ["cardiomegally"])
    with pytest.raises(ValueError, match="named twice"):
        medfilip.zero_shot(model, torch.zeros(1, SIZE, SIZE, dtype=torch.uint8), ["normal", "normal"])


def test_zero_shot_defaults_and_structure(exported):
    model, preprocess = medfilip.load(exported)
    result = medfilip.zero_shot(model, [phantom("cardiomegaly", seed=21), phantom("normal", seed=22)])
    assert result.classes == ["normal", "pleural effusion", "cardiomegaly"]  # the exported default classes
    assert tuple(result.probs.shape) == (2, 3) and torch.allclose(
        result.probs.sum(1), torch.ones(2, dtype=torch.float64)
    )
    ranked = result.ranked(0)
    assert [r["probability"] for r in ranked] == sorted((r["probability"] for r in ranked), reverse=True)
    assert [r["cosine"] for r in ranked] == sorted((r["cosine"] for r in ranked), reverse=True)  # same order
    assert result.logit_scale == pytest.approx(model.logit_scale.item())


def test_load_errors_name_the_file(tmp_path, exported):
    with pytest.raises(ModelError, match="neither a model folder"):
        medfilip.load(tmp_path)
    with pytest.raises(ModelError, match="no such model folder"):
        medfilip.load(tmp_path / "nope")
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(exported, bad)
    config = json.loads((bad / CONFIG_FILE).read_text())
    (bad / CONFIG_FILE).write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(ModelError, match=r"config.json: field 'format_version' is 99"):
        medfilip.load(bad)
    (bad / CONFIG_FILE).write_text(json.dumps(config))
    pre = json.loads((bad / PREPROCESS_FILE).read_text())
    (bad / PREPROCESS_FILE).write_text(json.dumps({**pre, "image_size": 64}))
    with pytest.raises(ModelError, match=r"preprocess.json: preprocessing does not match the model: image_size 64"):
        medfilip.load(bad)


# -- 3. `predict` ranks the finding a phantom shows first ----------------------------------------
def test_the_tiny_model_has_learnt_the_findings(exported):
    """Held-out phantoms (seeds never trained on): most are classified right, so ranking tests below
    test the model, not luck."""
    model, _ = medfilip.load(exported)
    images = [phantom(kind, seed=s) for kind in CLASSES for s in range(5)]
    result = medfilip.zero_shot(model, images, CLASSES)
    right = sum(result.top(i) == CLASSES[i // 5] for i in range(len(images)))
    assert right >= 12, [result.top(i) for i in range(len(images))]


def test_predict_on_png_jpeg_and_dicom(exported, tiny_run, tmp_path, capsys):
    from medfilip.datasets.dicom import DicomStyle, write_dicom
    from medfilip.predict import main

    effusion_png = _write_png(tmp_path / "effusion.png", "pleural effusion", seed=31)
    cardio_jpg = tmp_path / "cardiomegaly.jpg"
    Image.fromarray(phantom("cardiomegaly", seed=32)).save(cardio_jpg, quality=95)
    effusion_dcm = write_dicom(
        tmp_path / "effusion.dcm",
        phantom("pleural effusion", seed=33, size=RENDER * 2),
        patient_id="p1",
        sop_instance_uid="2.25.11",
        study_uid="2.25.12",
        series_uid="2.25.13",
        style=DicomStyle(bits_stored=12, window=True, modality="DX"),
    )
    files = [effusion_png, cardio_jpg, effusion_dcm]
    assert main(["predict", *map(str, files), "--model", str(exported), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in out["images"]] == [str(f) for f in files]
    assert [r["predictions"][0]["class"] for r in out["images"]] == [
        "pleural effusion",
        "cardiomegaly",
        "pleural effusion",
    ]
    assert out["texts"][1].startswith("pleural effusion, where pleural effusion is ")
    # the run folder and the exported folder predict the same numbers; table format, synonyms, --top
    assert (
        main(
            [
                "predict",
                str(effusion_png),
                "--model",
                str(tiny_run),
                "--knowledge",
                str(KNOWLEDGE),
                "--classes",
                "normal",
                "Effusion",
                "cardiomegaly",
                "--top",
                "2",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out.splitlines()
    assert table[0] == str(effusion_png) and table[2].split()[0] == "Effusion" and len(table) == 4
    assert float(table[2].split()[1]) == pytest.approx(out["images"][0]["predictions"][0]["probability"], abs=1e-4)


def test_predict_reports_unreadable_files_and_unknown_classes(exported, tmp_path, capsys):
    from medfilip.predict import main

    good = _write_png(tmp_path / "ok.png", "normal", seed=41)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    assert main(["predict", str(good), str(broken), "--model", str(exported)]) == 1
    captured = capsys.readouterr()
    assert str(good) in captured.out and f"{broken}: " in captured.err
    assert main(["predict", str(good), "--model", str(exported), "--classes", "banana"]) == 2
    assert "unknown class 'banana'" in capsys.readouterr().err
    assert main(["predict", str(good), "--model", str(tmp_path)]) == 2
    assert "neither a model folder" in capsys.readouterr().err
