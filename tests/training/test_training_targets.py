"""Sound batch targets (issue 11): own texts exactly 1 on shared columns, polarity-aware targets,
calibrated SSM targets in the collator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfilip.ssm import Calibration, ssm_target
from medfilip.training.data import BatchCollator, LabelTable

torch.set_num_threads(1)

# labels: two atelectasis labels that both mask to "atelectasis", a stated and a negated pneumothorax,
# cardiomegaly, normal
ROWS = [
    ("mild left base atelectasis", "atelectasis", "mild", "left base", "present"),
    ("severe right upper lobe atelectasis", "atelectasis", "severe", "right upper lobe", "present"),
    ("large apical pneumothorax", "pneumothorax", "large", "apical", "present"),
    ("no pneumothorax", "pneumothorax", None, None, "negated"),
    ("moderate cardiomegaly", "cardiomegaly", "moderate", None, "present"),
    ("normal", "normal", None, None, "present"),
]
MILD_ATEL, SEVERE_ATEL, PTX, NO_PTX, CARDIO, NORMAL = range(6)


@pytest.fixture(scope="module")
def labels() -> LabelTable:
    return LabelTable(
        variant="triplet",
        texts=[r[0] for r in ROWS],
        keys=[r[0] for r in ROWS],
        categories=[r[1] for r in ROWS],
        severities=[r[2] for r in ROWS],
        locations=[r[3] for r in ROWS],
        explanations=[None] * len(ROWS),
        polarities=[r[4] for r in ROWS],
    )


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from medfilip.training.model import default_text_model

    return AutoTokenizer.from_pretrained(default_text_model())


def vectors_for(n: int, seed: int = 0, close: tuple[int, int] | None = None) -> torch.Tensor:
    v = torch.randn(n, 12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if close is not None:  # make two labels near-duplicates (cos ~ 0.99)
        v[close[1]] = v[close[0]] + 0.1 * v[close[1]]
    return torch.nn.functional.normalize(v, dim=1).float()


def item(label_ids: list[int], texts: list[str]) -> dict:
    return {"image": torch.zeros(4, 4, dtype=torch.uint8), "label_ids": label_ids, "texts": texts}


@pytest.mark.parametrize("target", ["ssm", "ssm_same_category", "multi_hot", "identity"])
def test_own_text_is_exactly_one_on_a_shared_column(labels, tokenizer, target):
    # image 0's "mild left base atelectasis" and image 1's "severe right upper lobe atelectasis" both
    # masked to "atelectasis": one column, made from image 0's label
    items = [item([MILD_ATEL], ["atelectasis"]), item([SEVERE_ATEL, CARDIO], ["atelectasis", "moderate cardiomegaly"])]
    vectors = vectors_for(len(ROWS))
    for calibration in (None, Calibration("floor", floor=0.2), Calibration("temperature", temperature=0.1)):
        batch = BatchCollator(
            target,
            tokenizer,
            16,
            vectors=vectors,
            categories=labels.category_ids(),
            negated=labels.negated(),
            calibration=calibration,
        )(items)
        assert batch.texts == ["atelectasis", "moderate cardiomegaly"]
        assert batch.text_label_ids.tolist() == [MILD_ATEL, CARDIO]
        assert batch.target[0, 0] == 1.0 and batch.target[1, 0] == 1.0 and batch.target[1, 1] == 1.0
    # without the fix image 1's own target would be cos(severe, mild) < 1
    raw = ssm_target([[MILD_ATEL], [SEVERE_ATEL, CARDIO]], [MILD_ATEL, CARDIO], vectors)
    assert raw[1, 0] < 0.99


def test_negated_label_is_never_a_positive_for_a_stated_one(labels, tokenizer):
    # "no pneumothorax" and "large apical pneumothorax" embed almost alike (as E_sim models do)
    vectors = vectors_for(len(ROWS), close=(PTX, NO_PTX))
    assert float(vectors[PTX] @ vectors[NO_PTX]) > 0.95
    items = [item([NO_PTX], ["no pneumothorax"]), item([PTX], ["pneumothorax"])]
    kwargs = {"vectors": vectors, "categories": labels.category_ids(), "negated": labels.negated()}
    for target in ("ssm", "ssm_same_category", "multi_hot"):
        t = BatchCollator(target, tokenizer, 16, **kwargs)(items).target
        # columns: "no pneumothorax", "pneumothorax"
        assert t[0, 1] == 0.0, target  # the negated image gets nothing of the stated pneumothorax
        assert t[1, 0] == 0.0, target  # nor the reverse
        assert t[0, 0] == 1.0 and t[1, 1] == 1.0
    # the category keys keep them apart
    assert labels.category_keys()[NO_PTX] == "no pneumothorax" and labels.category_keys()[PTX] == "pneumothorax"
    assert labels.category_ids()[NO_PTX] != labels.category_ids()[PTX]
    # and without polarity the same-category SSM would have called them near-identical
    blind = ssm_target([[NO_PTX]], [PTX], vectors, torch.tensor([0, 0, 1, 1, 2, 3]), variant="same_category")
    assert blind[0, 0] > 0.95


def test_collator_applies_the_calibration(labels, tokenizer):
    vectors = vectors_for(len(ROWS), seed=3)
    items = [item([MILD_ATEL], [ROWS[MILD_ATEL][0]]), item([CARDIO], [ROWS[CARDIO][0]])]
    raw = BatchCollator("ssm", tokenizer, 16, vectors=vectors, negated=labels.negated())(items).target
    cos = float(vectors[MILD_ATEL] @ vectors[CARDIO])
    assert raw[0, 1] == pytest.approx(cos, abs=1e-6)
    floor = cos - 0.1
    cal = BatchCollator(
        "ssm", tokenizer, 16, vectors=vectors, negated=labels.negated(), calibration=Calibration("floor", floor=floor)
    )(items).target
    assert cal[0, 1] == pytest.approx(0.1 / (1 - floor), abs=1e-5)
    high = BatchCollator(
        "ssm",
        tokenizer,
        16,
        vectors=vectors,
        negated=labels.negated(),
        calibration=Calibration("floor", floor=cos + 0.01),
    )(items).target
    assert high[0, 1] == 0.0 and high[0, 0] == 1.0
    temp = BatchCollator(
        "ssm",
        tokenizer,
        16,
        vectors=vectors,
        negated=labels.negated(),
        calibration=Calibration("temperature", temperature=0.2),
    )(items).target
    assert temp[0, 1] == pytest.approx(float(torch.exp(torch.tensor((cos - 1) / 0.2))), abs=1e-5)


def test_collator_shuffled_ssm_control(labels, tokenizer):
    vectors = vectors_for(len(ROWS), seed=5)
    rows = [MILD_ATEL, SEVERE_ATEL, PTX, NO_PTX, CARDIO, NORMAL]
    items = [item([r], [ROWS[r][0]]) for r in rows]
    kwargs = {"vectors": vectors, "negated": labels.negated(), "categories": labels.category_ids()}
    ssm = BatchCollator("ssm", tokenizer, 16, **kwargs)(items).target
    shuffled = BatchCollator("ssm_shuffled", tokenizer, 16, seed=4, **kwargs)(items).target
    own = torch.eye(len(rows), dtype=torch.bool)  # one text per image, in item order
    assert (shuffled[own] == 1).all()
    torch.testing.assert_close(shuffled.sort(dim=1).values, ssm.sort(dim=1).values, rtol=0, atol=0)
    assert not torch.equal(shuffled, ssm)
    # deterministic per (run seed, batch): a fresh collator gives the same batch the same target ...
    again = BatchCollator("ssm_shuffled", tokenizer, 16, seed=4, **kwargs)(items).target
    assert torch.equal(again, shuffled)
    # ... another run seed or another batch another permutation
    assert not torch.equal(BatchCollator("ssm_shuffled", tokenizer, 16, seed=5, **kwargs)(items).target, shuffled)
    other = BatchCollator("ssm_shuffled", tokenizer, 16, seed=4, **kwargs)(items[::-1]).target
    assert not torch.equal(other, shuffled.flip(0, 1))


def test_masked_forms_are_what_masking_can_give(labels):
    from medfilip.training.data import masked_forms, masked_text

    forms = {lid: dict(masked_forms(labels, lid)) for lid in range(len(ROWS))}
    # severity and location: 4 forms (triplet texts state no explanation); one field: 2; a negated label: 1
    assert sorted(forms[MILD_ATEL]) == sorted(
        ["mild left base atelectasis", "left base atelectasis", "mild atelectasis", "atelectasis"]
    )
    assert sorted(forms[CARDIO]) == ["cardiomegaly", "moderate cardiomegaly"]
    assert list(forms[NO_PTX]) == ["no pneumothorax"] and list(forms[NORMAL]) == ["normal"]
    rng = np.random.default_rng(0)
    for _ in range(200):
        lid = int(rng.integers(0, len(ROWS)))
        assert masked_text(labels, lid, 0.5, rng) in forms[lid]


def test_entailment_same_category_polarity_and_every_stated_field(labels):
    from medfilip.training.data import TextTable

    table = TextTable.build(labels)
    texts = ["atelectasis", "left base atelectasis", "severe atelectasis", "no pneumothorax", "pneumothorax"]
    images = [[MILD_ATEL], [SEVERE_ATEL, CARDIO], [PTX], [NO_PTX], [NORMAL]]
    got = table.entailment(images, table.ids(texts)).int().tolist()
    assert got == [
        [1, 1, 0, 0, 0],  # mild left base atelectasis: says "atelectasis" and "left base atelectasis"
        [1, 0, 1, 0, 0],  # severe right upper lobe atelectasis: "atelectasis", "severe atelectasis"
        [0, 0, 0, 0, 1],  # large apical pneumothorax: "pneumothorax", never "no pneumothorax"
        [0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0],
    ]
    with pytest.raises(ValueError, match="no masked form"):
        table.ids(["right atelectasis"])


def test_entailment_targets_in_the_collator(labels, tokenizer):
    from medfilip.training.data import TextTable

    table = TextTable.build(labels)
    # image 0's severe atelectasis masked to "atelectasis"; image 1 (mild left base atelectasis) says it too
    items = [item([SEVERE_ATEL], ["atelectasis"]), item([MILD_ATEL], ["mild left base atelectasis"])]
    source = BatchCollator("identity", tokenizer, 16)(items).target
    assert source.tolist() == [[1, 0], [0, 1]]  # today's: a false negative at [1, 0]
    entail = BatchCollator("identity", tokenizer, 16, text_table=table)(items)
    assert entail.target.tolist() == [[1, 0], [1, 1]]
    assert entail.text_label_ids.tolist() == [len(ROWS) + r for r in table.ids(entail.texts)]
    # SSM: the text's own vector against the image's labels, 1 where entailed
    vectors = vectors_for(len(ROWS) + len(table), seed=2)
    kwargs = {"vectors": vectors, "negated": labels.negated(), "categories": labels.category_ids(), "text_table": table}
    ssm = BatchCollator("ssm", tokenizer, 16, **kwargs)(items).target
    own_vector = vectors[len(ROWS) + table.index["mild left base atelectasis"]]
    assert ssm[0, 1] == pytest.approx(float(vectors[SEVERE_ATEL] @ own_vector), abs=1e-6)
    assert ssm[1, 0] == 1.0 and ssm[0, 0] == 1.0 and ssm[1, 1] == 1.0
    with pytest.raises(ValueError, match="vectors for"):
        BatchCollator("ssm", tokenizer, 16, **{**kwargs, "vectors": vectors[:-1]})


def test_embed_adds_every_masked_form_of_the_masked_variants(corpus):
    from medfilip.pipeline.commands.embeddings import _masked_forms
    from medfilip.training.data import masked_forms, read_label_table

    forms = _masked_forms(corpus["labels"], None)  # the report variant is not masked: none of its texts
    labels, _ = read_label_table(corpus["labels"], "triplet_explanation")
    expected = {text for lid in range(len(labels)) for text, _ in masked_forms(labels, lid)}
    assert set(forms) == expected and len(forms) == len(expected)
    assert set(labels.texts) <= expected and "mild atelectasis" in expected
    # a label with severity, location and explanation: 8 forms; cardiomegaly (no location): 4
    assert sum(1 for f in forms if "atelectasis" in f) == 8 and sum(1 for f in forms if "cardiomegaly" in f) == 4
    assert _masked_forms(corpus["labels"], ["report"]) == []
