"""The shipped model's Model Designer layout: no box covers another, so every step and output can be read."""

from __future__ import annotations

import itertools

import pytest

#: room for a step's 'In' and 'Out' toggles below its box, and a gap any two boxes keep
TOGGLES = 30
GAP = 5


@pytest.fixture(scope="module")
def model(qgis_processing):
    from qgis.core import QgsApplication

    return QgsApplication.processingRegistry().algorithmById("socdepth:horizons_to_soc_maps")


def boxes(model) -> dict[str, tuple[float, float, float, float]]:
    """(left, top, right, bottom) of every input, step and output as the Model Designer draws it."""
    found = {}

    def add(name: str, component, extra_height: float = 0) -> None:
        centre, size = component.position(), component.size()
        left, top = centre.x() - size.width() / 2, centre.y() - size.height() / 2
        found[name] = (left, top, left + size.width(), top + size.height() + extra_height)

    for name, component in model.parameterComponents().items():
        add(f"input {name}", component)
    for child_id, child in model.childAlgorithms().items():
        add(f"step {child_id}", child, TOGGLES)
        for name, output in child.modelOutputs().items():
            add(f"output {child_id}:{name}", output)
    return found


def overlap(a, b) -> bool:
    return a[0] < b[2] + GAP and b[0] < a[2] + GAP and a[1] < b[3] + GAP and b[1] < a[3] + GAP


def test_no_box_of_the_shipped_model_covers_another(model):
    found = boxes(model)
    assert len(found) == 14 + 3 + 7  # inputs, steps, outputs: none left out
    covered = [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(found.items(), 2) if overlap(box_a, box_b)]
    assert covered == []


def test_the_overlap_check_sees_a_covered_box():
    assert overlap((0, 0, 200, 30), (150, 20, 350, 50))
    assert not overlap((0, 0, 200, 30), (0, 40, 200, 70))
