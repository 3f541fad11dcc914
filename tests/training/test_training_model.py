"""Dual encoder shapes, normalisation, freezing, weight loading and the saved-run round trip."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torchvision

from medfilip.training.model import (
    IMAGE_MEAN,
    ModelError,
    build_model,
    default_text_model,
    load_trained,
    save_trained,
)
from medfilip.training.settings import ModelSettings

torch.set_num_threads(1)
SMALL = ModelSettings(embed_dim=32, max_length=32, text_trainable_layers=1)


@pytest.fixture(scope="module")
def model():
    return build_model(SMALL, image_size=32, seed=0)


def test_encoders_return_unit_vectors_of_embed_dim(model):
    model.eval()
    images = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        img = model.encode_image(images)
        txt = model.encode_text(["mild left base atelectasis", "no finding", "cardiomegaly"])
        other_size = model.encode_image(torch.randint(0, 256, (2, 48, 48), dtype=torch.uint8))
    assert img.shape == (3, 32) and txt.shape == (3, 32) and other_size.shape == (2, 32)
    for features in (img, txt, other_size):
        assert torch.allclose(features.norm(dim=1), torch.ones(len(features)), atol=1e-5)
    # a uniform image at the normalisation mean is all zeros after prepare_images
    grey = torch.full((1, 32, 32), round(IMAGE_MEAN * 255), dtype=torch.uint8)
    assert model.prepare_images(grey).abs().max() < 0.01
    with pytest.raises(ModelError, match=r"\(B, S, S\)"):
        model.encode_image(images[0])


def test_logit_scale_starts_at_one_over_temperature_and_is_clamped(model):
    assert model.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        saved = model.logit_scale_log.clone()
        model.logit_scale_log.fill_(10.0)
        assert model.logit_scale.item() == pytest.approx(100.0, rel=1e-5)
        model.logit_scale_log.copy_(saved)


def test_only_the_top_text_layer_and_heads_are_trained(model):
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    text_trained = {n for n in trained if n.startswith("text.model.")}
    assert text_trained and all(n.startswith("text.model.encoder.layer.5.") for n in text_trained)
    assert "text.proj.weight" in trained and "image.proj.weight" in trained and "logit_scale_log" in trained
    assert any(n.startswith("image.backbone.conv1") for n in trained)
    model.train()
    frozen_dropout = [m for m in model.text.model.encoder.layer[0].modules() if isinstance(m, torch.nn.Dropout)]
    top_dropout = [m for m in model.text.model.encoder.layer[5].modules() if isinstance(m, torch.nn.Dropout)]
    assert frozen_dropout and not any(m.training for m in frozen_dropout)
    assert top_dropout and all(m.training for m in top_dropout)
    assert model.image.training
    model.eval()


def test_random_init_is_said_and_imagenet_weights_load_into_a_grey_stem(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="medfilip.training.model")
    reference = torchvision.models.resnet18(weights=None)
    weights = tmp_path / "resnet18_imagenet.pth"
    torch.save(reference.state_dict(), weights)
    settings = SMALL.model_copy(update={"image_weights": weights})
    loaded = build_model(settings, image_size=32)
    assert torch.allclose(loaded.image.backbone.conv1.weight, reference.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(loaded.image.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert f"weights from {weights}" in caplog.text
    caplog.clear()
    build_model(SMALL, image_size=32)
    assert "random init (no training.model.image_weights)" in caplog.text

    wrong = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), wrong)
    with pytest.raises(ModelError, match="resnet50.pth"):
        build_model(SMALL.model_copy(update={"image_weights": wrong}), image_size=32)


def test_saved_run_loads_back_with_the_same_outputs(model, tmp_path):
    model.eval()
    save_trained(model, tmp_path)
    again = load_trained(tmp_path)
    images = torch.randint(0, 256, (2, 32, 32), dtype=torch.uint8)
    texts = ["small right pleural effusion", "pneumonia"]
    with torch.no_grad():
        assert torch.allclose(again.encode_image(images), model.encode_image(images), atol=1e-6)
        assert torch.allclose(again.encode_text(texts), model.encode_text(texts), atol=1e-6)
    assert again.image_size == 32 and not again.training
    with pytest.raises(ModelError, match="no trained model"):
        load_trained(tmp_path / "missing")


def test_bert_family_folder_with_cls_pooling_and_everything_trained(tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path / "tiny-bert"
    tokenizer = AutoTokenizer.from_pretrained(default_text_model())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    settings = ModelSettings(text_model=str(folder), text_pooling="cls", text_trainable_layers=99, embed_dim=16)
    tiny = build_model(settings, image_size=32)
    trained = {n for n, p in tiny.text.named_parameters() if p.requires_grad}
    assert any("embeddings" in n for n in trained) and not any("pooler" in n for n in trained)
    with torch.no_grad():
        out = tiny.eval().encode_text(["a", "b c d"])
    assert out.shape == (2, 16)
    with pytest.raises(ModelError, match="eos"):
        build_model(settings.model_copy(update={"text_pooling": "eos"}), image_size=32)
    assert math.isclose(tiny.logit_scale.item(), 1 / 0.07, rel_tol=1e-5)


def test_clip_text_folder_with_eos_pooling(tmp_path):
    import json

    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = tmp_path / "tiny-clip"
    folder.mkdir()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    CLIPTextModel(config).save_pretrained(folder)
    clip = build_model(ModelSettings(text_model=str(folder), text_pooling="eos", embed_dim=16), image_size=32)
    trained = [n for n, p in clip.text.named_parameters() if p.requires_grad]
    assert any("layers.1." in n for n in trained) and not any("layers.0." in n for n in trained)
    assert any("final_layer_norm" in n for n in trained)
    save_trained(clip.eval(), tmp_path / "run")
    again = load_trained(tmp_path / "run")
    with torch.no_grad():
        assert torch.allclose(
            again.encode_text(["mild atelectasis"]), clip.encode_text(["mild atelectasis"]), atol=1e-6
        )
