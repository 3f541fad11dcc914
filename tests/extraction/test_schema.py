from __future__ import annotations

import pydantic
import pytest

from medfilip.extraction.schema import Polarity, Triplet, keep_categorised


def test_triplets_without_category_are_dropped_and_counted():
    kept, dropped = keep_categorised(
        [
            {"severity": "mild", "location": "left base", "category": "Atelectasis", "polarity": "present"},
            {"severity": "small", "location": "right", "category": None},
            {"severity": None, "location": "lung", "category": "   "},
        ]
    )
    assert dropped == 2
    assert kept == [Triplet(severity="mild", location="left base", category="atelectasis")]


def test_polarity_is_validated_and_blank_fields_become_none():
    t = Triplet(severity="  ", location="Left  Lower Lobe", category="Opacity", polarity="uncertain")
    assert (t.severity, t.location, t.polarity) == (None, "left lower lobe", Polarity.uncertain)
    with pytest.raises(pydantic.ValidationError, match="polarity"):
        Triplet(category="opacity", polarity="probable")
    with pytest.raises(pydantic.ValidationError, match="extra"):
        Triplet(category="opacity", certainty=0.4)
