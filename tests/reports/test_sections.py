"""Section parsing and clean-up of free-text radiology reports."""

from __future__ import annotations

import pytest
from mimic_samples import MIMIC_FULL_REPORT

from medfilip.reports.sections import (
    clean_text,
    findings_and_impression,
    split_sections,
)

MIMIC_REPORT = MIMIC_FULL_REPORT


# --- clean_text ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        (None, ""),
        ("", ""),
        ("   \n \n", ""),
        # MIMIC-CXR de-identification: the token goes, the space before the full stop too.
        ("Compared to the prior study from ___.", "Compared to the prior study from."),
        ("Dr. ___ was paged at ___ on ___.", "Dr. was paged at on."),
        # IU-Xray de-identification (XXXX), as a whole word only.
        ("The heart is XXXX enlarged.", "The heart is enlarged."),
        ("XXXX XXXX. No effusion.", "No effusion."),
        ("Lateral view XRAY done.", "Lateral view XRAY done."),
        # ... also when glued to a word (real IU-Xray cases: CXR488, CXR498).
        ("Broken of the 4XXXX, similar to the prior.", "Broken of the 4, similar to the prior."),
        ("Discussed at XXXXPM / accepted.", "Discussed at PM / accepted."),
        # A removed token at the start must not leave a leading full stop (IU-Xray CXR2812) ...
        ("XXXX. patchy right lower lobe infiltrate.", "patchy right lower lobe infiltrate."),
        # ... and a section holding nothing but tokens and punctuation is empty.
        ("___.", ""),
        ("XXXX, XXXX.", ""),
        # Wrapped lines are joined with one space; CR/LF and tabs are normalised.
        (
            "Bilateral\n nodular opacities\r\nare   seen.\t Heart normal.",
            "Bilateral nodular opacities are seen. Heart normal.",
        ),
        # Repeated punctuation left by a removed token collapses.
        ("No effusion. ___. No pneumothorax.", "No effusion. No pneumothorax."),
        ("Lungs clear,, heart normal..", "Lungs clear, heart normal."),
        # Leading/trailing separators are trimmed; a decimal survives.
        (": , Nodule of 1.5 cm ;", "Nodule of 1.5 cm"),
    ],
)
def test_clean_text(raw, expected):
    assert clean_text(raw) == expected


# --- split_sections --------------------------------------------------------------------------


def test_split_sections_on_a_mimic_report():
    sections = split_sections(MIMIC_REPORT)
    assert list(sections) == ["", "EXAMINATION", "INDICATION", "TECHNIQUE", "COMPARISON", "FINDINGS", "IMPRESSION"]
    # "FINAL REPORT" has no colon: it is not a header, it is the text before the first one.
    assert sections[""].strip() == "FINAL REPORT"
    assert sections["EXAMINATION"].strip() == "CHEST (PA AND LAT)"
    assert clean_text(sections["INDICATION"]) == "F with new onset ascites // eval for infection"
    assert clean_text(sections["COMPARISON"]) == "None."
    # A multi-line body keeps all its lines and stops at the next header.
    assert clean_text(sections["FINDINGS"]) == (
        "There is no focal consolidation, pleural effusion or pneumothorax. Bilateral nodular opacities "
        "that most likely represent nipple shadows. The cardiomediastinal silhouette is normal."
    )
    assert clean_text(sections["IMPRESSION"]) == "No acute cardiopulmonary process."


def test_split_sections_without_headers_puts_everything_under_empty_name():
    text = "The lungs are clear.\nNo effusion."
    assert split_sections(text) == {"": text}


def test_split_sections_header_names_are_normalised_and_repeats_concatenated():
    text = "FINDINGS: Lungs clear.\nIMPRESSION  : Normal.\nFINDINGS: Heart normal."
    sections = split_sections(text)
    assert list(sections) == ["FINDINGS", "IMPRESSION"]
    assert clean_text(sections["FINDINGS"]) == "Lungs clear. Heart normal."
    assert clean_text(sections["IMPRESSION"]) == "Normal."


def test_split_sections_ignores_mixed_case_and_mid_line_colons():
    text = "FINDINGS: ET tube: 5 cm above the carina.\nLines/tubes: unchanged.\nTime 10:14."
    sections = split_sections(text)
    assert list(sections) == ["FINDINGS"]
    assert clean_text(sections["FINDINGS"]) == "ET tube: 5 cm above the carina. Lines/tubes: unchanged. Time 10:14."


# --- findings_and_impression -----------------------------------------------------------------


def test_findings_and_impression_of_a_full_mimic_report():
    findings, impression = findings_and_impression(MIMIC_REPORT)
    assert findings.startswith("There is no focal consolidation, pleural effusion or pneumothorax. Bilateral")
    assert findings.endswith("The cardiomediastinal silhouette is normal.")
    assert "INDICATION" not in findings and "ascites" not in findings and "None." not in findings
    assert impression == "No acute cardiopulmonary process."


def test_only_impression():
    text = """                                 FINAL REPORT
 INDICATION:  ___ year old man with chest pain.
 
 COMPARISON:  ___.
 
 IMPRESSION:  Low lung volumes.  Mild
 pulmonary vascular congestion.
"""
    assert findings_and_impression(text) == ("", "Low lung volumes. Mild pulmonary vascular congestion.")


def test_only_findings():
    text = "EXAMINATION: CHEST\n\nFINDINGS:\nHeart size is normal.\nLungs are clear.\n"
    assert findings_and_impression(text) == ("Heart size is normal. Lungs are clear.", "")


@pytest.mark.parametrize(
    "header, expected",
    [
        ("FINDINGS AND IMPRESSION", ("Stable cardiomegaly.", "")),
        ("FINDING", ("Stable cardiomegaly.", "")),
        ("IMPRESSIONS", ("", "Stable cardiomegaly.")),
        ("CONCLUSION", ("", "Stable cardiomegaly.")),
    ],
)
def test_header_synonyms(header, expected):
    assert findings_and_impression(f"INDICATION: dyspnea\n{header}: Stable cardiomegaly.\n") == expected


def test_no_headers_falls_back_to_last_content_paragraph():
    text = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PORTABLE AP)
 
 INDICATION:  ___ year old woman with fever
 
 Single portable view of the chest.  Heart size is
 normal.  No focal consolidation.
 
 NOTIFICATION:  Discussed with Dr. ___ by telephone at 10:14 on ___.
"""
    # NOTIFICATION is administrative, so the paragraph before it is the content.
    assert findings_and_impression(text) == (
        "",
        "Single portable view of the chest. Heart size is normal. No focal consolidation.",
    )


def test_fallback_strips_the_final_report_title():
    text = "                                 FINAL REPORT\n The lungs are clear.  No effusion.\n"
    assert findings_and_impression(text) == ("", "The lungs are clear. No effusion.")


def test_fallback_skips_administrative_section_inside_a_paragraph():
    text = "Heart size normal.\nCOMPARISON: ___\n"
    assert findings_and_impression(text) == ("", "Heart size normal.")


def test_fallback_takes_body_of_a_non_administrative_header():
    text = "INDICATION: cough\n\nPA AND LATERAL CHEST: Lungs clear."
    assert findings_and_impression(text) == ("", "Lungs clear.")


def test_administrative_sections_only_give_nothing():
    # Regression: the "FINAL REPORT" title paragraph used to be returned as the impression.
    text = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___F with cough
 
 COMPARISON:  None.
"""
    assert findings_and_impression(text) == ("", "")


@pytest.mark.parametrize("text", ["", "   \n\n  ", "FINDINGS:\n\nIMPRESSION:\n", "FINDINGS: ___\nIMPRESSION: ___."])
def test_empty_reports(text):
    assert findings_and_impression(text) == ("", "")


def test_deid_tokens_removed_from_sections():
    text = "FINDINGS: Compared to ___, the ___ is unchanged.\nIMPRESSION: Dr. ___ notified at ___."
    assert findings_and_impression(text) == ("Compared to, the is unchanged.", "Dr. notified at.")
