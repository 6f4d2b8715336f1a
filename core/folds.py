"""Cross-validation folds over sites, so that all depths of a profile are always on the same side of a split
(depths of one profile are strongly correlated; splitting them would leak the answer into training).

Random folds test interpolation between neighbouring profiles; spatial block folds hold out whole squares of
the map and so test prediction away from the training data, the honest figure for map accuracy when sites
are clustered (Roberts et al. 2017, Ecography 40:913-929; Ploton et al. 2020, Nat. Commun. 11:4540).
"""

from __future__ import annotations

import numpy as np

#: `default_block_size` aims at this many non-empty blocks per fold
BLOCKS_PER_FOLD = 5

#: `default_block_size` tries block sizes shrinking by this factor from the whole extent
_SHRINK = 0.95


def _check_k(n_sites: int, k: int) -> None:
    if int(k) != k or k < 2:
        raise ValueError(f"The number of folds is {k}; use a whole number of at least 2 (5 or 10 are usual).")
    if n_sites < k:
        raise ValueError(f"{n_sites} sites cannot fill {k} folds; use at most {n_sites} folds.")


def _coordinates(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"{x.size} x but {y.size} y coordinates; give one pair per site.")
    missing = int(np.sum(~(np.isfinite(x) & np.isfinite(y))))
    if missing:
        raise ValueError(f"{missing} sites have no coordinates; remove them or fill in x and y.")
    return x, y


def _block_index(x: np.ndarray, y: np.ndarray, block_size: float) -> tuple[np.ndarray, np.ndarray]:
    """(block id per site, sites per block) for square blocks anchored at the lower-left corner of the data."""
    cells = np.column_stack([np.floor((x - x.min()) / block_size), np.floor((y - y.min()) / block_size)])
    _, block_of_site, sites_per_block = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    return block_of_site.ravel(), sites_per_block


def random_folds(n_sites: int, k: int, random_state: int) -> np.ndarray:
    """Fold id 0..k-1 per site; fold sizes differ by at most one."""
    _check_k(n_sites, k)
    return np.random.default_rng(random_state).permutation(np.arange(n_sites) % k)


def spatial_block_folds(x, y, k: int, block_size: float, random_state: int) -> np.ndarray:
    """Fold id 0..k-1 per site, whole `block_size` squares (map units) at a time.

    Blocks go, largest first, to the fold with the fewest sites so far (ties, between blocks and between
    folds, broken by the seeded generator), which keeps fold sizes within one largest block of each other.
    """
    x, y = _coordinates(x, y)
    _check_k(x.size, k)
    if not (np.isfinite(block_size) and block_size > 0):
        raise ValueError(f"Block size {block_size} must be a positive distance in map units.")
    block_of_site, sites_per_block = _block_index(x, y, block_size)
    n_blocks = sites_per_block.size
    if n_blocks < k:
        raise ValueError(
            f"The {x.size} sites fall in only {n_blocks} blocks of {block_size:g} map units, fewer than the "
            f"{k} folds; use a smaller block size or fewer folds."
        )
    rng = np.random.default_rng(random_state)
    shuffled = rng.permutation(n_blocks)
    order = shuffled[np.argsort(-sites_per_block[shuffled], kind="stable")]
    fold_of_block = np.empty(n_blocks, dtype=np.int64)
    sites_per_fold = np.zeros(k, dtype=np.int64)
    for block in order:
        emptiest = np.flatnonzero(sites_per_fold == sites_per_fold.min())
        fold = rng.choice(emptiest)
        fold_of_block[block] = fold
        sites_per_fold[fold] += sites_per_block[block]
    return fold_of_block[block_of_site]


def default_block_size(x, y, k: int) -> float:
    """The largest square block (tried from the data's longer side down in 5 % steps) that leaves at least
    `BLOCKS_PER_FOLD` * k non-empty blocks (or one block per distinct site location, if there are fewer).

    Why: blocks should be as large as possible, because held-out sites closer to training sites than the
    range of spatial autocorrelation make the validation optimistic (Roberts et al. 2017 advise blocks of at
    least that range). But each fold needs several blocks, or the folds cannot be balanced in size and a fold
    is one patch of the map (one soil landscape) rather than a sample of it. Counting non-empty blocks, not
    the extent's area, keeps the rule sound for clustered sites and irregular study areas. When the
    autocorrelation range is known from a variogram, give that instead.
    """
    x, y = _coordinates(x, y)
    _check_k(x.size, k)
    locations = np.unique(np.column_stack([x, y]), axis=0).shape[0]
    if locations < k:
        raise ValueError(
            f"The sites sit at only {locations} distinct locations, fewer than the {k} folds; use fewer folds."
        )
    wanted = min(BLOCKS_PER_FOLD * k, locations)
    span = max(np.ptp(x), np.ptp(y))
    size = span
    while size > span * 1e-9:
        if _block_index(x, y, size)[1].size >= wanted:
            return float(size)
        size *= _SHRINK
    raise ValueError("The site coordinates are too close together to form spatial blocks; use random folds.")


def inner_split(n_sites: int, fraction: float, random_state: int) -> np.ndarray:
    """Boolean mask of round(fraction * n_sites) sites (at least 1, at most all but 1) held out inside the
    training set, e.g. for early stopping, so that the outer test fold stays untouched."""
    if not 0 < fraction < 1:
        raise ValueError(f"The inner validation fraction {fraction} must lie between 0 and 1, e.g. 0.2.")
    if n_sites < 2:
        raise ValueError(f"{n_sites} site(s) cannot be split into training and inner validation; use at least 2.")
    n_inner = min(max(round(fraction * n_sites), 1), n_sites - 1)
    mask = np.zeros(n_sites, dtype=bool)
    mask[np.random.default_rng(random_state).choice(n_sites, n_inner, replace=False)] = True
    return mask
