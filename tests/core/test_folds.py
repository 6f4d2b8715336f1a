"""Fold assignment: random, spatial blocks (checked geometrically), default block size and inner splits."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from soc_depth_mapper.core.folds import (
    BLOCKS_PER_FOLD,
    default_block_size,
    inner_split,
    random_folds,
    spatial_block_folds,
)

EDGEROI = Path(__file__).resolve().parents[2] / "sample_data" / "edgeroi"


@pytest.fixture
def clustered_sites():
    """Sites in three clusters of different size over a 10 x 6 km area."""
    rng = np.random.default_rng(3)
    centres = [(2000, 1500, 120), (7000, 4000, 60), (8500, 800, 20)]
    x = np.concatenate([rng.normal(cx, 900, n) for cx, _, n in centres])
    y = np.concatenate([rng.normal(cy, 700, n) for _, cy, n in centres])
    return x, y


def independent_blocks(x, y, size):
    """Block (column, row) of each site on a grid anchored at the data's lower-left corner."""
    return [(math.floor((a - min(x)) / size), math.floor((b - min(y)) / size)) for a, b in zip(x, y)]


@pytest.mark.parametrize(("n", "k"), [(10, 2), (103, 5), (7, 7)])
def test_random_folds_cover_and_balance(n, k):
    folds = random_folds(n, k, random_state=0)
    assert folds.shape == (n,)
    sizes = np.bincount(folds, minlength=k)
    assert sizes.size == k and sizes.min() >= 1
    assert sizes.max() - sizes.min() <= 1


def test_random_folds_seeded():
    assert np.array_equal(random_folds(50, 5, 1), random_folds(50, 5, 1))
    assert not np.array_equal(random_folds(50, 5, 1), random_folds(50, 5, 2))


@pytest.mark.parametrize(("n", "k", "message"), [(3, 5, "use at most 3 folds"), (10, 1, "at least 2")])
def test_random_folds_bad_k(n, k, message):
    with pytest.raises(ValueError, match=message):
        random_folds(n, k, 0)


def test_spatial_folds_keep_blocks_whole_and_balance(clustered_sites):
    x, y = clustered_sites
    size, k = 1000.0, 5
    folds = spatial_block_folds(x, y, k, size, random_state=7)
    assert folds.shape == x.shape
    assert set(folds.tolist()) == set(range(k))  # covering, every fold non-empty
    blocks = independent_blocks(x, y, size)
    fold_of_block = {}
    for block, fold in zip(blocks, folds):
        assert fold_of_block.setdefault(block, fold) == fold  # all sites of a block in one fold
    largest_block = max(blocks.count(b) for b in set(blocks))
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= largest_block
    assert sizes.max() - sizes.min() <= 0.1 * x.size  # many small blocks balance well


def test_greedy_assignment_hand_case():
    # blocks of 6, 3, 2 and 1 sites (unit squares), k = 2: 6 -> A, 3 -> B, 2 -> B (3 < 6), 1 -> B (5 < 6)
    x = np.array([0.5] * 6 + [1.5] * 3 + [2.5] * 2 + [3.5])
    y = np.full(12, 0.5)
    for seed in range(5):
        folds = spatial_block_folds(x, y, 2, 1.0, random_state=seed)
        assert sorted(np.bincount(folds).tolist()) == [6, 6]
        assert len(set(folds[:6].tolist())) == 1
        assert set(folds[6:].tolist()) == {1 - folds[0]}


def test_spatial_folds_seeded(clustered_sites):
    x, y = clustered_sites
    first = spatial_block_folds(x, y, 5, 1000.0, random_state=11)
    assert np.array_equal(first, spatial_block_folds(x, y, 5, 1000.0, random_state=11))
    assert not np.array_equal(first, spatial_block_folds(x, y, 5, 1000.0, random_state=12))


def test_too_few_blocks(clustered_sites):
    x, y = clustered_sites
    with pytest.raises(ValueError, match="only 2 blocks .* smaller block size or fewer folds"):
        spatial_block_folds(x, y, 5, 1.5 * (x.max() - x.min()) / 2, random_state=0)


def test_bad_coordinates_and_block_size():
    with pytest.raises(ValueError, match="1 sites have no coordinates"):
        spatial_block_folds([0, 1, np.nan], [0, 1, 2], 2, 1.0, 0)
    with pytest.raises(ValueError, match="positive distance"):
        spatial_block_folds([0, 1, 2], [0, 1, 2], 2, 0.0, 0)


def test_default_block_size_on_a_regular_grid():
    # 20 x 10 sites one unit apart: blocks of size s (>= 1) anchored at 0 make (floor(19/s) + 1) *
    # (floor(9/s) + 1) non-empty blocks; the rule takes the first of 19 * 0.95**i giving >= 25 (k = 5)
    gx, gy = np.meshgrid(np.arange(20.0), np.arange(10.0))
    size = default_block_size(gx.ravel(), gy.ravel(), k=5)
    candidates = [19 * 0.95**i for i in range(100)]
    expected = next(s for s in candidates if (math.floor(19 / s) + 1) * (math.floor(9 / s) + 1) >= 25)
    assert size == pytest.approx(expected)
    assert (math.floor(19 / size) + 1) * (math.floor(9 / size) + 1) >= BLOCKS_PER_FOLD * 5


def test_default_block_size_clustered_and_few_locations(clustered_sites):
    x, y = clustered_sites
    size = default_block_size(x, y, k=5)
    assert len(set(independent_blocks(x, y, size))) >= 25
    assert len(set(independent_blocks(x, y, size / 0.95))) < 25  # the next larger size tried was too big
    # 4 distinct locations (one repeated): one block per location is the most there can be
    size = default_block_size([0, 0, 10, 0, 10], [0, 0, 0, 10, 10], k=3)
    assert len(set(independent_blocks([0, 10, 0, 10], [0, 0, 10, 10], size))) == 4
    with pytest.raises(ValueError, match="only 2 distinct locations"):
        default_block_size([0, 0, 5], [1, 1, 1], k=3)


def test_default_block_size_on_edgeroi_sites():
    with open(EDGEROI / "sites.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    x = np.array([float(r["x"]) for r in rows])
    y = np.array([float(r["y"]) for r in rows])
    size = default_block_size(x, y, k=5)
    # the survey grid spacing is 2.8 km: blocks should span several profiles, not single ones
    assert 2800 * 2 < size < 47500 / 3
    sizes = np.bincount(spatial_block_folds(x, y, 5, size, random_state=0))
    assert sizes.min() >= 1 and sizes.max() - sizes.min() <= 0.1 * x.size / 5


@pytest.mark.parametrize(("n", "fraction", "expected"), [(100, 0.2, 20), (7, 0.3, 2), (3, 0.01, 1), (3, 0.99, 2)])
def test_inner_split_size(n, fraction, expected):
    mask = inner_split(n, fraction, random_state=0)
    assert mask.dtype == bool and mask.shape == (n,)
    assert mask.sum() == expected


def test_inner_split_seeded_and_errors():
    assert np.array_equal(inner_split(40, 0.25, 5), inner_split(40, 0.25, 5))
    assert not np.array_equal(inner_split(40, 0.25, 5), inner_split(40, 0.25, 6))
    with pytest.raises(ValueError, match="between 0 and 1"):
        inner_split(10, 1.0, 0)
    with pytest.raises(ValueError, match="at least 2"):
        inner_split(1, 0.5, 0)
