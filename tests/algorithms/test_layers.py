"""algorithms/layers.py helpers: the one report of skipped records that every algorithm uses."""

from __future__ import annotations


class Recorder:
    """The part of QgsProcessingFeedback the report uses."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def pushWarning(self, warning: str) -> None:  # noqa: N802 - QGIS API
        self.warnings.append(warning)


def test_skips_are_listed_up_to_the_limit_then_counted_per_cause_most_frequent_first(qgis_processing):
    from soc_depth_mapper.algorithms.layers import MAX_REPORTED, report_skips

    causes = ["no geometry"] * 3 + ["outside the rasters"] * 20 + ["nodata"] * 3  # two causes tie at 3
    skips = [(f"record {i}: {cause}", cause) for i, cause in enumerate(causes)]
    feedback = Recorder()
    report_skips(feedback, skips, "Skipped {count} in all — {causes}", "see the table.")
    assert feedback.warnings[:MAX_REPORTED] == [f"record {i}: {cause}" for i, cause in enumerate(causes[:20])]
    assert feedback.warnings[MAX_REPORTED:] == [
        "… and 6 more; see the table.",
        "Skipped 26 in all — outside the rasters: 20; no geometry: 3; nodata: 3",  # ties keep first-seen order
    ]
    quiet = Recorder()
    report_skips(quiet, [], "Skipped {count} in all — {causes}")
    assert quiet.warnings == []


def test_skipped_records_name_the_record_and_count_by_reason_up_to_its_colon(qgis_processing):
    from soc_depth_mapper.algorithms.layers import report_skipped

    skipped = [(7, "on a nodata cell: band 2"), (9, "outside the rasters"), (12, "on a nodata cell: band 1")]
    feedback = Recorder()
    report_skipped(feedback, skipped, "point", limit=2)
    assert feedback.warnings == [
        "Skipped point 7: on a nodata cell: band 2",
        "Skipped point 9: outside the rasters",
        "… and 1 more.",
        "Skipped 3 points in all — on a nodata cell: 2; outside the rasters: 1",
    ]
