"""The MIMIC-CXR report reader, on a small generated tree in the real layout."""

from __future__ import annotations

import csv
import gzip
import io
import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mimic_samples import MIMIC_FULL_REPORT

from medfilip.reports.mimic import read_mimic_cxr
from medfilip.reports.readers import read_configured_reports
from medfilip.reports.records import Reject, Report, ReportImage
from medfilip.reports.settings import MimicCxrConfig, ReportsConfig
from medfilip.reports.shards import write_report_shards

FULL = MIMIC_FULL_REPORT

ONLY_IMPRESSION = """                                 FINAL REPORT
 INDICATION:  ___ year old woman with dyspnea.
 
 COMPARISON:  ___.
 
 IMPRESSION:  Compared to ___, mild pulmonary
 edema has improved.
"""

NO_HEADERS = """                                 FINAL REPORT
 CHEST RADIOGRAPH PERFORMED ON ___
 
 INDICATION:  Fever.
 
 Heart size is normal.  Small left
 pleural effusion.
 
 NOTIFICATION:  Discussed with Dr. ___ at 10:14 on ___.
"""

EMPTY = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PORTABLE AP)
 
 INDICATION:  ___
 
 COMPARISON:  None.
"""

FINDINGS_AND_IMPRESSION = """                                 FINAL REPORT
 FINDINGS AND IMPRESSION:  Right lower lobe
 opacity concerning for pneumonia.
"""

LATIN1 = "FINDINGS: Mild cardiomegaly.\nIMPRESSION: No \u00e9dema.\n".encode("latin-1")

# study -> (subject, report bytes or None for "no file", split or None for "absent from split csv")
STUDIES = {
    "50414267": ("10000032", FULL.encode(), "train"),
    "53189527": ("10000032", ONLY_IMPRESSION.encode(), "train"),
    "57375967": ("10000764", NO_HEADERS.encode(), "validate"),
    "50000001": ("10000764", EMPTY.encode(), "validate"),
    "52000002": ("11000011", LATIN1, "test"),
    "55000005": ("11000011", FINDINGS_AND_IMPRESSION.encode(), "test"),
    "54000004": ("12000022", FULL.encode(), None),
    "56000006": ("10000032", None, "train"),  # images listed, no report file
}

# dicom ids per study, with their ViewPosition in the metadata ("" = unknown)
DICOMS = {
    "50414267": [
        ("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "PA"),
        ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "LATERAL"),
    ],
    "53189527": [("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "AP")],
    "57375967": [("0c4eb1e1-b801903c-bcebe8a4-3da9cd3c-3b94a27c", "PA"), ("aa1b2c3d-0000-0000-0000-000000000001", "")],
    "50000001": [("bb1b2c3d-0000-0000-0000-000000000002", "AP")],
    "52000002": [("cc1b2c3d-0000-0000-0000-000000000003", "PA")],
    "55000005": [("dd1b2c3d-0000-0000-0000-000000000004", "LL"), ("dd1b2c3d-0000-0000-0000-000000000005", "PA")],
    "54000004": [("ee1b2c3d-0000-0000-0000-000000000006", "PA")],
    "56000006": [("ff1b2c3d-0000-0000-0000-000000000007", "PA")],
}

METADATA_HEADER = [
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def build_tree(base: Path, studies: dict = STUDIES, *, split_gz: bool = False) -> dict[str, Path]:
    """A MIMIC-CXR tree: files/pXX/pNNNNNNNN/sNNNNNNNN.txt, image folders, split and gzipped metadata CSVs."""
    root = base / "mimic"
    split_rows, meta_rows = [], []
    for study, (subject, text, split) in studies.items():
        patient_dir = root / "files" / f"p{subject[:2]}" / f"p{subject}"
        patient_dir.mkdir(parents=True, exist_ok=True)
        if text is not None:
            (patient_dir / f"s{study}.txt").write_bytes(text)
        # MIMIC-CXR-JPG study folder beside the report; the reader must not descend into it.
        (patient_dir / f"s{study}").mkdir(exist_ok=True)
        for dicom, view in DICOMS.get(study) or [(f"{study}-0000-0000-0000-000000000000", "PA")]:
            (patient_dir / f"s{study}" / f"{dicom}.jpg").write_bytes(b"\xff\xd8\xff")
            if split is not None:
                split_rows.append([dicom, study, subject, split])
            meta_rows.append(
                [
                    dicom,
                    subject,
                    study,
                    "CHEST (PA AND LAT)",
                    view,
                    "3056",
                    "2544",
                    "21800506",
                    "213014.531",
                    "CHEST (PA AND LAT)",
                    "postero-anterior",
                    "Erect",
                ]
            )
    split_text = _csv_text(["dicom_id", "study_id", "subject_id", "split"], split_rows)
    split_csv = root / ("mimic-cxr-2.0.0-split.csv.gz" if split_gz else "mimic-cxr-2.0.0-split.csv")
    if split_gz:
        with gzip.open(split_csv, "wt", encoding="utf-8", newline="") as fh:
            fh.write(split_text)
    else:
        split_csv.write_text(split_text, encoding="utf-8")
    metadata_csv = root / "mimic-cxr-2.0.0-metadata.csv.gz"
    with gzip.open(metadata_csv, "wt", encoding="utf-8", newline="") as fh:
        fh.write(_csv_text(METADATA_HEADER, meta_rows))
    return {"root": root, "split_csv": split_csv, "metadata_csv": metadata_csv}


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    paths = build_tree(tmp_path)
    files = paths["root"] / "files"
    # Files that break the layout: a stray note, and a patient filed under the wrong pXX folder.
    (files / "p10" / "p10000032" / "notes.txt").write_text("FINDINGS: not a report.")
    (files / "p13" / "p10000099").mkdir(parents=True)
    (files / "p13" / "p10000099" / "s59999999.txt").write_text("FINDINGS: Lungs clear.")
    # An unreadable report: a dangling symlink (running as root, permissions would not stop a read).
    (files / "p10" / "p10000764" / "s58888888.txt").symlink_to(files / "nowhere.txt")
    with open(paths["split_csv"], "a", encoding="utf-8") as fh:
        fh.write("9a9a9a9a-0000-0000-0000-000000000008,58888888,10000764,validate\n")
    # A .txt inside an image folder is not a report file and is not even looked at.
    (files / "p10" / "p10000032" / "s50414267" / "readme.txt").write_text("not a report")
    return paths


def _read(paths: dict[str, Path], **kw) -> list[Report | Reject]:
    return list(read_mimic_cxr(paths["root"], split_csv=paths["split_csv"], **kw))


def _by_id(records):
    reports = {r.report_id: r for r in records if isinstance(r, Report)}
    rejects = [r for r in records if isinstance(r, Reject)]
    return reports, rejects


def test_reports_ids_splits_and_sections(tree):
    records = _read(tree, metadata_csv=tree["metadata_csv"])
    reports, rejects = _by_id(records)
    assert sorted(reports) == ["s50414267", "s53189527", "s55000005", "s57375967"]
    assert all(r.source == "mimic_cxr" for r in records)

    full = reports["s50414267"]
    assert (full.subject_id, full.study_id, full.split) == ("p10000032", "50414267", "train")
    assert full.findings == (
        "There is no focal consolidation, pleural effusion or pneumothorax. Bilateral nodular opacities "
        "that most likely represent nipple shadows. The cardiomediastinal silhouette is normal."
    )
    assert full.impression == "No acute cardiopulmonary process."
    assert full.text == full.findings + " " + full.impression
    assert full.annotations == ()

    only_impression = reports["s53189527"]
    assert (only_impression.subject_id, only_impression.split) == ("p10000032", "train")
    assert only_impression.findings == ""
    assert only_impression.impression == "Compared to, mild pulmonary edema has improved."

    fallback = reports["s57375967"]
    assert (fallback.subject_id, fallback.split) == ("p10000764", "validate")
    assert fallback.findings == ""
    assert fallback.impression == "Heart size is normal. Small left pleural effusion."

    combined = reports["s55000005"]
    assert (combined.subject_id, combined.split) == ("p11000011", "test")
    assert combined.findings == "Right lower lobe opacity concerning for pneumonia."
    assert combined.impression == ""

    for r in reports.values():
        assert "___" not in r.findings + r.impression
        assert "FINAL REPORT" not in r.text and "INDICATION" not in r.text


def test_splits_come_from_the_split_file_and_are_shared_by_a_patient(tree):
    reports, _ = _by_id(_read(tree))
    expected = {sid: split for sid, (_, _, split) in STUDIES.items()}
    for r in reports.values():
        assert r.split == expected[r.study_id]
    by_subject: dict[str, set[str]] = {}
    for r in reports.values():
        by_subject.setdefault(r.subject_id, set()).add(r.split)
    assert by_subject == {"p10000032": {"train"}, "p10000764": {"validate"}, "p11000011": {"test"}}


def test_images_and_views_from_gzipped_metadata(tree):
    reports, _ = _by_id(_read(tree, metadata_csv=tree["metadata_csv"], image_root=tree["root"]))
    assert reports["s50414267"].images == (
        ReportImage(
            "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014",
            "files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg",
            "PA",
        ),
        ReportImage(
            "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962",
            "files/p10/p10000032/s50414267/174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962.jpg",
            "LATERAL",
        ),
    )
    # An empty ViewPosition becomes None.
    assert [(i.image_id, i.view) for i in reports["s57375967"].images] == [
        ("0c4eb1e1-b801903c-bcebe8a4-3da9cd3c-3b94a27c", "PA"),
        ("aa1b2c3d-0000-0000-0000-000000000001", None),
    ]
    assert [i.path for i in reports["s55000005"].images] == [
        "files/p11/p11000011/s55000005/dd1b2c3d-0000-0000-0000-000000000004.jpg",
        "files/p11/p11000011/s55000005/dd1b2c3d-0000-0000-0000-000000000005.jpg",
    ]
    # Every path is relative to image_root and names a file there.
    for r in reports.values():
        for img in r.images:
            assert not Path(img.path).is_absolute()
            assert (tree["root"] / img.path).is_file()


def test_without_metadata_images_come_from_split_file_without_views(tree):
    reports, _ = _by_id(_read(tree))
    assert [(i.image_id, i.path, i.view) for i in reports["s53189527"].images] == [
        (
            "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab",
            "files/p10/p10000032/s53189527/2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab.jpg",
            None,
        ),
    ]
    assert sum(len(r.images) for r in reports.values()) == 7
    assert all(i.view is None for r in reports.values() for i in r.images)


def test_rejects_name_file_and_reason(tree):
    records = _read(tree, metadata_csv=tree["metadata_csv"])
    files = tree["root"] / "files"
    rejects = {Path(r.location).relative_to(files).as_posix(): r for r in records if isinstance(r, Reject)}
    assert sorted(rejects) == [
        "p10/p10000032/notes.txt",
        "p10/p10000764/s50000001.txt",
        "p10/p10000764/s58888888.txt",
        "p11/p11000011/s52000002.txt",
        "p12/p12000022/s54000004.txt",
        "p13/p10000099/s59999999.txt",
    ]
    assert all(r.source == "mimic_cxr" for r in rejects.values())

    empty = rejects["p10/p10000764/s50000001.txt"]
    assert empty.report_id == "s50000001"
    assert empty.reason == "empty report: no FINDINGS or IMPRESSION text"

    latin1 = rejects["p11/p11000011/s52000002.txt"]
    offset = LATIN1.index(b"\xe9")
    assert latin1.report_id == "s52000002"
    assert latin1.reason == f"not valid UTF-8: byte 0xe9 at offset {offset}"

    missing = rejects["p12/p12000022/s54000004.txt"]
    assert missing.report_id == "s54000004"
    assert missing.reason == "study 54000004 is not in the split file"

    unreadable = rejects["p10/p10000764/s58888888.txt"]
    assert unreadable.report_id == "s58888888"
    assert unreadable.reason.startswith("unreadable: ") and "No such file" in unreadable.reason

    for bad in ("p10/p10000032/notes.txt", "p13/p10000099/s59999999.txt"):
        assert rejects[bad].report_id is None
        assert "does not match the layout files/pXX/pNNNNNNNN/sNNNNNNNN.txt" in rejects[bad].reason
        assert bad in rejects[bad].reason


def test_records_come_in_sorted_path_order(tree):
    records = _read(tree)
    order = [Path(rec.location).name if isinstance(rec, Reject) else f"{rec.report_id}.txt" for rec in records]
    assert order == [
        "notes.txt",
        "s50414267.txt",
        "s53189527.txt",  # p10/p10000032
        "s50000001.txt",
        "s57375967.txt",
        "s58888888.txt",  # p10/p10000764
        "s52000002.txt",
        "s55000005.txt",  # p11/p11000011
        "s54000004.txt",  # p12/p12000022
        "s59999999.txt",  # p13/p10000099
    ]


def test_study_filed_under_another_subject_is_rejected(tmp_path):
    studies = {"50414267": ("10000032", FULL.encode(), "train")}
    paths = build_tree(tmp_path, studies, split_gz=True)
    moved = paths["root"] / "files" / "p10" / "p10000033"
    moved.mkdir()
    (paths["root"] / "files" / "p10" / "p10000032" / "s50414267.txt").rename(moved / "s50414267.txt")
    [rec] = _read(paths)
    assert isinstance(rec, Reject)
    assert rec.report_id == "s50414267"
    assert rec.reason == (
        "study 50414267 belongs to subject 10000032 in the split file, but its report is filed under p10000033"
    )


def test_gzipped_split_file_and_patient_split_leak_warning(tmp_path, caplog):
    studies = {
        "50414267": ("10000032", FULL.encode(), "train"),
        "53189527": ("10000032", ONLY_IMPRESSION.encode(), "test"),  # same patient, other split: a leak
    }
    paths = build_tree(tmp_path, studies, split_gz=True)
    with caplog.at_level(logging.INFO, logger="medfilip.reports.mimic"):
        reports, rejects = _by_id(_read(paths))
    # The split file is authoritative, study by study; the leak is reported, not hidden.
    assert {r.report_id: r.split for r in reports.values()} == {"s50414267": "train", "s53189527": "test"}
    assert rejects == []
    assert any("1 subject(s) have studies in more than one split" in m for m in caplog.messages)
    # Report text never reaches the log at INFO.
    assert not any("cardiopulmonary" in m or "pulmonary edema" in m for m in caplog.messages)


def test_unknown_split_value_is_rejected(tmp_path):
    paths = build_tree(tmp_path, {"50414267": ("10000032", FULL.encode(), "holdout")})
    [rec] = _read(paths)
    assert isinstance(rec, Reject)
    assert (
        rec.reason
        == "study 50414267 has split ['holdout'] in the split file; expected exactly one of train, validate, test"
    )


def test_bad_inputs_raise_clear_errors(tmp_path, tree):
    with pytest.raises(FileNotFoundError, match="split file not found"):
        list(read_mimic_cxr(tree["root"], split_csv=tmp_path / "nope.csv"))
    with pytest.raises(FileNotFoundError, match="report folder not found"):
        list(read_mimic_cxr(tmp_path / "empty", split_csv=tree["split_csv"]))
    bad = tmp_path / "bad-split.csv"
    bad.write_text("dicom_id,study_id,split\nx,1,train\n")
    with pytest.raises(ValueError, match=r"bad-split.csv: missing column\(s\) subject_id"):
        list(read_mimic_cxr(tree["root"], split_csv=bad))


def test_configured_reader_dispatches_to_mimic(tree):
    cfg = ReportsConfig(
        source="mimic_cxr",
        mimic_cxr=MimicCxrConfig(root=tree["root"], split_csv=tree["split_csv"], metadata_csv=tree["metadata_csv"]),
    )
    assert list(read_configured_reports(cfg)) == _read(tree, metadata_csv=tree["metadata_csv"])


# --- through the shard writer ----------------------------------------------------------------


def _write(records, out: Path) -> dict[str, list[str]]:
    summary = write_report_shards(records, out / "shards", 3, out / "rejects.parquet")
    assert sorted(summary.per_shard) == ["000", "001", "002"]
    return {
        p.stem: pq.read_table(p).column("report_id").to_pylist() for p in sorted((out / "shards").glob("*.parquet"))
    }


def test_shards_are_deterministic(tree, tmp_path):
    a = _write(_read(tree, metadata_csv=tree["metadata_csv"]), tmp_path / "a")
    b = _write(_read(tree, metadata_csv=tree["metadata_csv"]), tmp_path / "b")
    assert a == b
    assert sorted(rid for ids in a.values() for rid in ids) == ["s50414267", "s53189527", "s55000005", "s57375967"]
    for name in a:
        ta = pq.read_table(tmp_path / "a" / "shards" / f"{name}.parquet")
        tb = pq.read_table(tmp_path / "b" / "shards" / f"{name}.parquet")
        assert ta.equals(tb)
        assert (tmp_path / "a" / "shards" / f"{name}.parquet").read_bytes() == (
            tmp_path / "b" / "shards" / f"{name}.parquet"
        ).read_bytes()
        assert ta.column_names == [
            "report_id",
            "source",
            "subject_id",
            "study_id",
            "findings",
            "impression",
            "text",
            "split",
            "images",
            "annotations",
        ]
    rejects = pq.read_table(tmp_path / "a" / "rejects.parquet").to_pylist()
    assert pq.read_table(tmp_path / "b" / "rejects.parquet").to_pylist() == rejects
    assert len(rejects) == 6
    assert {r["report_id"] for r in rejects} == {None, "s50000001", "s52000002", "s54000004", "s58888888"}
    assert all(r["source"] == "mimic_cxr" and r["reason"] for r in rejects)

    # The images column carries the attached images and views.
    rows = {
        row["report_id"]: row
        for name in a
        for row in pq.read_table(tmp_path / "a" / "shards" / f"{name}.parquet").to_pylist()
    }
    assert rows["s50414267"]["images"][1] == {
        "image_id": "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962",
        "path": "files/p10/p10000032/s50414267/174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962.jpg",
        "view": "LATERAL",
    }
    assert rows["s53189527"]["split"] == "train" and rows["s57375967"]["split"] == "validate"


def test_shards_are_stable_when_reports_are_added(tmp_path):
    base = {k: v for k, v in STUDIES.items() if v[1] is not None and v[2] is not None}
    small = _write(_read(build_tree(tmp_path / "small", base)), tmp_path / "out-small")

    grown = dict(base)
    for i in range(12):
        grown[f"5900{i:04d}"] = (f"1{i % 4}0000{i:02d}", f"FINDINGS: Finding number {i}.\n".encode(), "train")
    large = _write(_read(build_tree(tmp_path / "large", grown)), tmp_path / "out-large")

    shard_small = {rid: name for name, ids in small.items() for rid in ids}
    shard_large = {rid: name for name, ids in large.items() for rid in ids}
    assert sorted(shard_small) == ["s50414267", "s53189527", "s55000005", "s57375967"]
    assert len(shard_large) == 16
    for rid, name in shard_small.items():
        assert shard_large[rid] == name
    # The added reports spread over more than one shard (sanity of the hash).
    assert len(set(shard_large.values())) > 1


def test_shrinking_n_shards_removes_stale_shard_files(tmp_path):
    from medfilip.reports.records import Report
    from medfilip.reports.shards import read_report_shards, write_report_shards

    reports = [Report(f"r{i}", "test", f"p{i}", f"s{i}", "Mild cardiomegaly.", "", "train") for i in range(20)]
    out = tmp_path / "shards"
    (out).mkdir()
    (out / "notes.parquet").write_bytes(b"not ours")
    write_report_shards(reports, out, 5, tmp_path / "rejects.parquet")
    assert sorted(p.name for p in out.glob("*.parquet")) == [
        "000.parquet",
        "001.parquet",
        "002.parquet",
        "003.parquet",
        "004.parquet",
        "notes.parquet",
    ]
    write_report_shards(reports, out, 2, tmp_path / "rejects.parquet")
    shards = sorted(out.glob("[0-9]*.parquet"))
    assert [p.name for p in shards] == ["000.parquet", "001.parquet"]
    assert read_report_shards(shards).num_rows == 20
    assert (out / "notes.parquet").exists()
