"""The IU-Xray / OpenI reader, on generated XML files and on the tarball torchxrayvision ships."""

from __future__ import annotations

import tarfile
from collections import Counter
from pathlib import Path

import pytest

from medfilip.reports.iu_xray import read_iu_xray, shipped_reports_path
from medfilip.reports.records import Reject, Report, ReportImage


def openi_xml(
    uid: str,
    *,
    findings: str = "The heart is XXXX enlarged. No effusion.",
    impression: str = "Cardiomegaly.",
    major: tuple[str, ...] = ("Cardiomegaly/mild",),
    automatic: tuple[str, ...] = ("Heart",),
    images: tuple[str, ...] | None = None,
) -> str:
    images = (f"{uid}_IM-0001-1001",) if images is None else images
    return (
        '<?xml version="1.0" encoding="utf-8"?><eCitation>'
        f'<uId id="{uid}"/><MedlineCitation><Article><Abstract>'
        '<AbstractText Label="COMPARISON">None.</AbstractText>'
        f'<AbstractText Label="FINDINGS">{findings}</AbstractText>'
        f'<AbstractText Label="IMPRESSION">{impression}</AbstractText>'
        "</Abstract></Article></MedlineCitation><MeSH>"
        + "".join(f"<major>{m}</major>" for m in major)
        + "".join(f"<automatic>{a}</automatic>" for a in automatic)
        + "</MeSH>"
        + "".join(f'<parentImage id="{i}"><figureId>F{n}</figureId></parentImage>' for n, i in enumerate(images, 1))
        + "</eCitation>"
    )


GOOD = {
    "1.xml": openi_xml("CXR1"),
    "2.xml": openi_xml(
        "CXR2",
        findings="Lungs are clear. XXXX XXXX are normal.",
        impression="No acute disease.",
        major=("normal",),
        automatic=(),
        images=("CXR2_IM-0652-1001", "CXR2_IM-0652-2001"),
    ),
    "3.xml": openi_xml(
        "CXR3",
        findings="",
        impression="Left basilar atelectasis.",
        major=("Pulmonary Atelectasis/base/left", "Opacity/lung/base/left/mild"),
    ),
    "4.xml": openi_xml("CXR4", findings="Mild cardiomegaly.", impression="", major=()),
}
BAD = {
    "5.xml": openi_xml("CXR5").replace("</MedlineCitation>", ""),  # malformed XML
    "6.xml": openi_xml("CXR6", findings="XXXX.", impression=""),  # nothing left once XXXX goes
    "7.xml": openi_xml("CXR7", findings="No pleural \u00e9panchement."),  # encoded as latin-1 below
}


def write_corpus(folder: Path, docs: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, xml in docs.items():
        raw = xml.encode("latin-1") if name == "7.xml" else xml.encode("utf-8")
        (folder / name).write_bytes(raw)
    return folder


def make_tgz(folder: Path, tgz: Path) -> Path:
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(folder, arcname="ecgen-radiology")
    return tgz


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "ecgen-radiology", {**GOOD, **BAD})


def _reports(records) -> dict[str, Report]:
    return {r.report_id: r for r in records if isinstance(r, Report)}


def test_folder_reports(corpus):
    records = list(read_iu_xray(corpus))
    assert len(records) == 7
    reports = _reports(records)
    assert sorted(reports) == ["CXR1", "CXR2", "CXR3", "CXR4"]
    assert all(r.source == "iu_xray" for r in records)

    r1 = reports["CXR1"]
    assert (r1.subject_id, r1.study_id) == ("CXR1", "CXR1")  # one report per patient
    assert r1.findings == "The heart is enlarged. No effusion."  # XXXX removed
    assert r1.impression == "Cardiomegaly."
    assert r1.text == "The heart is enlarged. No effusion. Cardiomegaly."
    assert r1.images == (ReportImage("CXR1_IM-0001-1001", "CXR1_IM-0001-1001.png", None),)

    r2 = reports["CXR2"]
    assert r2.findings == "Lungs are clear. are normal."
    assert "XXXX" not in r2.text
    assert [i.image_id for i in r2.images] == ["CXR2_IM-0652-1001", "CXR2_IM-0652-2001"]
    assert all(i.view is None for i in r2.images)  # no view metadata outside the shipped tarball

    assert (reports["CXR3"].findings, reports["CXR3"].impression) == ("", "Left basilar atelectasis.")
    assert (reports["CXR4"].findings, reports["CXR4"].impression) == ("Mild cardiomegaly.", "")
    assert "COMPARISON" not in r1.text and "None." not in r1.text


def test_mesh_major_kept_automatic_dropped(corpus):
    reports = _reports(read_iu_xray(corpus))
    assert reports["CXR1"].annotations == ("Cardiomegaly/mild",)
    assert reports["CXR2"].annotations == ("normal",)
    assert reports["CXR3"].annotations == ("Pulmonary Atelectasis/base/left", "Opacity/lung/base/left/mild")
    assert reports["CXR4"].annotations == ()
    assert not any("Heart" in a for r in reports.values() for a in r.annotations)


def test_folder_and_tgz_give_the_same_reports(corpus, tmp_path):
    tgz = make_tgz(corpus, tmp_path / "NLMCXR_reports.tgz")
    from_folder = list(read_iu_xray(corpus))
    from_tgz = list(read_iu_xray(tgz))
    assert [r for r in from_tgz if isinstance(r, Report)] == [r for r in from_folder if isinstance(r, Report)]
    assert len([r for r in from_tgz if isinstance(r, Report)]) == 4
    # Rejects agree on everything but where they came from.
    strip = lambda recs: [(r.report_id, r.reason) for r in recs if isinstance(r, Reject)]  # noqa: E731
    assert strip(from_tgz) == strip(from_folder)
    assert [r.location for r in from_tgz if isinstance(r, Reject)] == [
        f"{tgz}:ecgen-radiology/5.xml",
        f"{tgz}:ecgen-radiology/6.xml",
        f"{tgz}:ecgen-radiology/7.xml",
    ]


def test_rejects_name_the_problem_and_the_file(corpus):
    rejects = {Path(r.location).name: r for r in read_iu_xray(corpus) if isinstance(r, Reject)}
    assert sorted(rejects) == ["5.xml", "6.xml", "7.xml"]
    for name, rej in rejects.items():
        assert rej.location == str(corpus / name)
        assert rej.source == "iu_xray"

    malformed = rejects["5.xml"]
    assert malformed.report_id is None
    assert malformed.reason.startswith("malformed XML: mismatched tag")

    empty = rejects["6.xml"]
    assert empty.report_id == "CXR6"
    assert empty.reason == "empty report: no FINDINGS or IMPRESSION text"

    latin1 = rejects["7.xml"]
    offset = (corpus / "7.xml").read_bytes().index(b"\xe9")
    assert latin1.report_id is None
    assert latin1.reason == f"not valid UTF-8: byte 0xe9 at offset {offset}"


def test_missing_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="IU-Xray reports not found"):
        list(read_iu_xray(tmp_path / "nowhere.tgz"))


def test_seeded_split_is_deterministic_and_follows_the_seed(tmp_path):
    docs = {f"{i}.xml": openi_xml(f"CXR{i}") for i in range(1, 201)}
    folder = write_corpus(tmp_path / "many", docs)

    def splits(seed: int) -> dict[str, str]:
        return {r.report_id: r.split for r in read_iu_xray(folder, split_seed=seed)}

    s0 = splits(0)
    assert len(s0) == 200
    assert splits(0) == s0
    s1 = splits(1)
    assert s1 != s0
    assert sum(s0[k] != s1[k] for k in s0) >= 20
    counts = Counter(s0.values())
    assert set(counts) == {"train", "validate", "test"}
    assert 130 <= counts["train"] <= 190  # 80% of 200, give or take
    # The fractions are honoured: all-train puts every report in train.
    assert {r.split for r in read_iu_xray(folder, split_fractions=(1.0, 0.0, 0.0))} == {"train"}
    # A report's split depends on its own id only, not on the rest of the corpus.
    few = write_corpus(tmp_path / "few", {k: docs[k] for k in ("1.xml", "2.xml", "3.xml")})
    assert {r.report_id: r.split for r in read_iu_xray(few)} == {k: s0[k] for k in ("CXR1", "CXR2", "CXR3")}


def test_shipped_tarball():
    path = shipped_reports_path()
    assert path.name == "NLMCXR_reports.tgz"
    records = list(read_iu_xray())
    assert len(records) == 3955
    reports = _reports(records)
    assert len(reports) > 3900
    assert len(reports) == sum(isinstance(r, Report) for r in records)  # ids are unique
    rejects = [r for r in records if isinstance(r, Reject)]
    assert all(r.location.startswith(f"{path}:") for r in rejects)
    assert {r.reason for r in rejects} <= {"empty report: no FINDINGS or IMPRESSION text"}
    assert not any("XXXX" in r.text for r in reports.values())
    # Human MeSH labels and, where torchxrayvision's DICOM metadata knows them, views.
    assert sum(bool(r.annotations) for r in reports.values()) > 3900
    assert sum(i.view is not None for r in reports.values() for i in r.images) > 4000
    assert Counter(r.split for r in reports.values())["train"] > 3000
