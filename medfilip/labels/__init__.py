"""Structured labels: entities + the knowledge dictionary -> label text per report (paper eq. 10)."""
