"""Every drawn finding has a severity and a location (phantom defaults), and the corpus store records them."""

from __future__ import annotations

from medfilip.phantom.findings import DEFAULT_SEVERITY, complete_finding, complete_findings


def test_stated_values_are_kept():
    assert complete_finding("atelectasis", "left base", "mild", 0) == ("atelectasis", "left base", "mild")


def test_defaults_fill_severity_and_a_sided_location():
    cat, loc, sev = complete_finding("atelectasis", None, None, 3)
    assert sev == DEFAULT_SEVERITY == "moderate"
    assert loc in ("left lower lobe", "right lower lobe")
    # the side is a function of the image seed and the category
    sides = {complete_finding("atelectasis", None, None, s)[1].split()[0] for s in range(40)}
    assert sides == {"left", "right"}
    assert complete_finding("atelectasis", None, None, 3) == (cat, loc, sev)


def test_stated_region_without_side_gets_one_and_unsided_zones_stay():
    assert complete_finding("pleural effusion", "base", "small", 1)[1] in ("left base", "right base")
    assert complete_finding("cardiomegaly", None, None, 1) == ("cardiomegaly", "heart", "moderate")
    assert complete_finding("granuloma", "bilateral lung", None, 1) == ("granuloma", "bilateral lung", "moderate")
    assert complete_finding("degenerative changes", None, "mild", 1) == ("degenerative changes", "spine", "mild")


def test_unknown_category_is_left_alone_and_duplicates_merge():
    assert complete_finding("no such finding", None, None, 0) == ("no such finding", None, None)
    done = complete_findings([("cardiomegaly", None, None), ("cardiomegaly", "heart", "moderate")], 0)
    assert done == (("cardiomegaly", "heart", "moderate"),)


def test_every_finding_of_every_drawn_image_has_severity_and_location():
    findings = [
        ("atelectasis", None, None),
        ("opacity", "right upper lobe", None),
        ("pneumothorax", None, "large"),
        ("pleural effusion", None, "small"),
        ("nodule", None, None),
        ("support devices", None, None),
    ]
    for seed in range(20):
        for cat, loc, sev in complete_findings(findings, seed):
            assert loc and sev, (cat, seed)
