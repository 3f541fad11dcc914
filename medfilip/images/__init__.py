"""Images: the uint8 image store (``store``), decoding + letterboxing (``preprocess``) and the
pretraining corpus images (``corpus``). Kept light: nothing heavy is imported here."""
