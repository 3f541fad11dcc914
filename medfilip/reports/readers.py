"""Pick the reader for the configured corpus."""

from __future__ import annotations

from collections.abc import Iterator

from medfilip.names import ReportSource
from medfilip.reports.records import Reject, Report
from medfilip.reports.settings import ReportsConfig


def read_configured_reports(cfg: ReportsConfig) -> Iterator[Report | Reject]:
    if cfg.source == ReportSource.iu_xray:
        from medfilip.reports.iu_xray import read_iu_xray

        f = cfg.iu_xray.split_fractions
        return read_iu_xray(
            cfg.iu_xray.path, split_seed=cfg.iu_xray.split_seed, split_fractions=(f.train, f.validate_, f.test)
        )
    if cfg.source == ReportSource.mimic_cxr:
        from medfilip.reports.mimic import read_mimic_cxr

        m = cfg.mimic_cxr
        return read_mimic_cxr(m.root, split_csv=m.split_csv, metadata_csv=m.metadata_csv, image_root=m.image_root)
    raise ValueError(f"reports.source = {cfg.source!r}: no reader")
