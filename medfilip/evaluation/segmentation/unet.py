"""The UNet (segmentation-models-pytorch) around our image encoder's ResNet trunk.

smp's ResNet encoders *are* torchvision ResNets (``ResNetEncoder`` subclasses
``torchvision.models.resnet.ResNet`` and drops ``fc``), so the trunk of a trained run —
``DualEncoder.image.backbone``, a torchvision ResNet whose ``fc`` is an Identity and whose stem may
take 1 channel — maps key for key: ``image.backbone.<key>`` in model.pt is ``encoder.<key>`` in the
UNet. :func:`load_encoder` checks that every encoder tensor is loaded (none missing, none left over,
same shapes) and is tested to give tensors equal to the run's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
BACKBONE_PREFIX = "image.backbone."


class EncoderMappingError(ValueError):
    """Encoder weights that do not map onto the UNet's encoder; the message names the source."""


def build_unet(arch: str, channels: int, decoder_channels: list[int] | tuple[int, ...], *, seed: int) -> nn.Module:
    """A UNet with a randomly initialised (seeded) ``arch`` encoder taking ``channels`` input channels
    and one output channel (pneumothorax logit). No weights are downloaded."""
    import segmentation_models_pytorch as smp

    if arch not in ARCHS:
        raise EncoderMappingError(f"image_arch {arch!r}: no smp UNet encoder for it (known: {', '.join(ARCHS)})")
    torch.manual_seed(seed)
    return smp.Unet(
        encoder_name=arch,
        encoder_weights=None,
        encoder_depth=5,
        in_channels=channels,
        classes=1,
        decoder_channels=tuple(decoder_channels),
    )


def backbone_state(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ResNet trunk's tensors of a DualEncoder state dict, keyed as in torchvision (no fc)."""
    return {
        k[len(BACKBONE_PREFIX) :]: v
        for k, v in state_dict.items()
        if k.startswith(BACKBONE_PREFIX) and not k[len(BACKBONE_PREFIX) :].startswith("fc.")
    }


def load_encoder(unet: nn.Module, backbone: Mapping[str, torch.Tensor], source: str) -> int:
    """Copy a torchvision-keyed ResNet trunk into ``unet.encoder``; every tensor of the encoder must
    come from ``backbone`` and every tensor of ``backbone`` must be used. Returns the tensors loaded."""
    target = unet.encoder.state_dict()
    missing = sorted(set(target) - set(backbone))
    unexpected = sorted(set(backbone) - set(target))
    if missing or unexpected:
        raise EncoderMappingError(
            f"{source}: the image encoder does not map onto the UNet's {type(unet.encoder).__name__} "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})"
        )
    wrong = [k for k in target if tuple(target[k].shape) != tuple(backbone[k].shape)]
    if wrong:
        k = wrong[0]
        raise EncoderMappingError(
            f"{source}: encoder tensor {k} is {tuple(backbone[k].shape)}, the UNet expects {tuple(target[k].shape)} "
            "(another ResNet depth or input channels?)"
        )
    unet.encoder.load_state_dict(dict(backbone), strict=True)
    return len(target)


def load_image_encoder(run_dir: str | Path):
    """The trained image tower (medfilip.training.model.ImageEncoder) of a run folder, on CPU, and the
    run's payload facts. Reads model.pt as load_trained does, without building the text tower (no
    transformers import: a few seconds less per segmentation job)."""
    from medfilip.training.model import MODEL_FILE, MODEL_FORMAT, ImageEncoder, ModelError
    from medfilip.training.settings import ModelSettings

    path = Path(run_dir) / MODEL_FILE
    if not path.is_file():
        raise ModelError(f"{path}: no trained model (run `medfilip train` first)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # any unreadable file gets the same message
        raise ModelError(f"{path}: cannot read the trained model ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ModelError(
            f"{path}: model format {getattr(payload, 'get', lambda _: None)('format')!r}, expected {MODEL_FORMAT}"
        )
    settings = ModelSettings(**payload["model_settings"])
    image = ImageEncoder(settings.image_arch, settings.image_channels, settings.embed_dim)
    state = {k[len("image.") :]: v for k, v in payload["state_dict"].items() if k.startswith("image.")}
    try:
        image.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelError(
            f"{path}: the image encoder's weights do not fit {settings.image_arch} ({str(err)[:200]})"
        ) from None
    return image.eval(), settings, int(payload["image_size"])


def unet_from_run(run_dir: str | Path, decoder_channels, *, seed: int) -> tuple[nn.Module, dict]:
    """A UNet whose encoder is the trained run's image trunk; also returns the run's model settings.

    The decoder is initialised with ``seed`` (the same decoder for every run)."""
    from medfilip.training.model import MODEL_FILE, ModelError

    run_dir = Path(run_dir)
    image, settings, image_size = load_image_encoder(run_dir)  # ModelError naming model.pt when missing or broken
    try:
        unet = build_unet(settings.image_arch, settings.image_channels, decoder_channels, seed=seed)
    except EncoderMappingError as err:
        raise ModelError(f"{run_dir / MODEL_FILE}: {err}") from None
    n = load_encoder(
        unet, backbone_state({f"image.{k}": v for k, v in image.state_dict().items()}), str(run_dir / MODEL_FILE)
    )
    log.info(
        "%s: UNet encoder %s (%d input channel(s)) from the run's image encoder, %d tensors",
        run_dir,
        settings.image_arch,
        settings.image_channels,
        n,
    )
    return unet, {
        "image_arch": settings.image_arch,
        "image_channels": settings.image_channels,
        "pretrain_image_size": image_size,
    }
