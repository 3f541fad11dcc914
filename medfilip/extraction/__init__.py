"""Stage 2: triplet extraction (severity, location, category, polarity) from report text."""
