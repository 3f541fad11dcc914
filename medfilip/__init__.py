"""MedFILIP: fine-grained medical vision-language pre-training as a reproducible pipeline."""

__version__ = "0.1.0"
