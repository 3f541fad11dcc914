"""Stage 1: read report corpora into deterministic Parquet shards."""

from medfilip.reports.records import Reject, Report, ReportImage

__all__ = ["Reject", "Report", "ReportImage"]
