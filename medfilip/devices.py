"""One reading of the `device: cpu | cuda | auto` settings (embeddings, training, evaluation)."""

from __future__ import annotations


def resolve_device(setting: str, key: str) -> str:
    """ "cpu" or "cuda" for a config value; asking for cuda where torch sees none is an error naming the key."""
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{key} = cuda, but torch sees no CUDA device (use cpu or auto)")
    return setting
