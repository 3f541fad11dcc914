"""Linear probe of frozen features (paper Table II) and the fine-tuned baselines beside it."""
