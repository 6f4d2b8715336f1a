"""The forest's evaluation engine: trees specialised for fixed predictors, and the mean and QRF quantiles
computed from them over a fixed tree order.

Leaf lookup uses scikit-learn's compiled trees (`Tree.apply`); averaging is done here, tree by tree in a fixed
order and in the order numpy would add, so predictions do not depend on `n_jobs`, on how rows are split into
pieces or on the memory budget, and stay bit-identical to earlier versions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sklearn.tree._tree import Tree

#: leaf lookups held in memory at once (rows x trees) for quantiles; bounds memory for large raster blocks (~32 MB)
LOOKUP_BUDGET = 1 << 22
#: rows evaluated together for the forest mean: small enough for the CPU caches, large enough that the Python
#: cost of one call per tree stays small next to the tree walks; also the unit handed to threads
MEAN_PIECE_ROWS = 4096
#: scikit-learn's child index of a leaf
LEAF = -1


class Lookup:
    """Trees ready to predict, each with its own leaves' means and QRF draws (indexed by its node numbers)."""

    def __init__(self, trees: list[Tree], means: list[np.ndarray], draws: list[np.ndarray]) -> None:
        self.trees = trees
        self.means = means
        self.draws = draws

    def means_at(self, t: int, rows: np.ndarray) -> np.ndarray:
        """(n,) mean of the leaf each row reaches in tree t."""
        return np.take(self.means[t], self.trees[t].apply(rows))

    def draws_at(self, t: int, rows: np.ndarray) -> np.ndarray:
        """(n,) QRF draw of the leaf each row reaches in tree t."""
        return np.take(self.draws[t], self.trees[t].apply(rows))


def evaluate(lookup: Lookup, x: np.ndarray, quantiles: np.ndarray | None, n_jobs: int) -> np.ndarray:
    """Forest mean (n,) or QRF quantiles (n, Q) of `lookup`'s trees for (n, P) float32 rows.

    Rows are split into pieces evaluated in threads; every row is computed the same way whatever the pieces,
    so the numbers do not depend on `n_jobs`, the row count or the memory budget.
    """
    n_trees = len(lookup.trees)
    workers = resolve_jobs(n_jobs)
    if quantiles is None:
        out = np.empty(len(x))
        piece = MEAN_PIECE_ROWS
    else:
        out = np.empty((len(x), len(quantiles)))
        piece = max(1, LOOKUP_BUDGET // (n_trees * workers))

    def evaluate_piece(start: int) -> None:
        rows = x[start : start + piece]
        if quantiles is None:
            total = sum_like_numpy(lambda t: lookup.means_at(t, rows), n_trees, len(rows))
            out[start : start + piece] = total / n_trees
        else:
            draws = np.empty((len(rows), n_trees))
            for t in range(n_trees):
                draws[:, t] = lookup.draws_at(t, rows)
            out[start : start + piece] = np.quantile(draws, quantiles, axis=1).T

    starts = range(0, len(x), piece)
    if workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(min(workers, len(starts))) as pool:  # Tree.apply and numpy release the GIL
            list(pool.map(evaluate_piece, starts))
    else:
        for start in starts:
            evaluate_piece(start)
    return out


def specialise(
    trees: list[Tree],
    node_offsets: np.ndarray,
    value: np.ndarray,
    leaf_draw: np.ndarray,
    fixed: tuple[float, ...],
) -> Lookup:
    """The trees themselves if nothing is fixed, else copies with the splits on the last len(fixed)
    predictors resolved for the values `fixed`.

    `node_offsets`, `value` and `leaf_draw` address the concatenated nodes of all trees, as `Forest` keeps them.
    A split on a fixed predictor always sends every row the same way, so it is replaced by the child taken
    and the other child's branch, unreachable, is dropped. Leaves keep their original mean and QRF draw, so
    every row reaches the same leaf, and gets the same numbers, as in the full tree. On Edgeroi (pooled, 8
    predictors) trees shrink from about 340 nodes to 60 and rows pass 6-7 splits instead of 9-10.
    """
    if not fixed:
        pieces = [slice(start, stop) for start, stop in zip(node_offsets[:-1], node_offsets[1:])]
        return Lookup(trees, [value[p] for p in pieces], [leaf_draw[p] for p in pieces])
    n_kept = trees[0].n_features - len(fixed)
    nodes = np.concatenate([tree.__getstate__()["nodes"] for tree in trees])
    sizes = np.diff(node_offsets)
    leaf = nodes["left_child"] == LEAF
    base = np.repeat(node_offsets[:-1], sizes)
    left = np.where(leaf, 0, nodes["left_child"] + base)  # global indices; 0 is a placeholder for leaves
    right = np.where(leaf, 0, nodes["right_child"] + base)
    feature = nodes["feature"]
    on_fixed = ~leaf & (feature >= n_kept)
    constant = np.asarray(fixed, dtype=np.float64)[np.where(on_fixed, feature - n_kept, 0)]
    # where a row at each node ends up once the fixed splits are followed: the node itself unless it splits
    # on a fixed predictor; pointer doubling follows chains of fixed splits in log2(depth) passes
    target = np.where(on_fixed, np.where(constant <= nodes["threshold"], left, right), np.arange(len(nodes)))
    while not np.array_equal(target[target], target):
        target = target[target]
    left, right = target[left], target[right]
    kept = np.zeros(len(nodes), dtype=bool)
    reached = target[node_offsets[:-1]]  # the roots
    while reached.size:
        kept[reached] = True
        inner = reached[~leaf[reached]]
        reached = np.concatenate([left[inner], right[inner]])
    # renumber within each tree, keeping the order: a child's index stays above its parent's
    old = np.flatnonzero(kept)
    counts = np.add.reduceat(kept, node_offsets[:-1])
    starts = np.concatenate([[0], np.cumsum(counts)])
    local = np.zeros(len(nodes), dtype=np.int64)
    local[old] = np.arange(len(old)) - np.repeat(starts[:-1], counts)
    kept_nodes = nodes[old]
    kept_leaf = leaf[old]
    kept_nodes["left_child"] = np.where(kept_leaf, LEAF, local[left[old]])
    kept_nodes["right_child"] = np.where(kept_leaf, LEAF, local[right[old]])
    specialised_trees, means, draws = [], [], []
    for t, tree in enumerate(trees):
        mine = slice(starts[t], starts[t + 1])
        specialised = Tree(n_kept, np.ones(1, dtype=np.intp), 1)
        specialised.__setstate__(
            {
                "max_depth": tree.max_depth,  # an upper bound; apply does not use it
                "node_count": int(counts[t]),
                "nodes": kept_nodes[mine],
                "values": value[old[mine]].reshape(-1, 1, 1),
            }
        )
        specialised_trees.append(specialised)
        means.append(value[old[mine]])
        draws.append(leaf_draw[old[mine]])
    return Lookup(specialised_trees, means, draws)


def sum_like_numpy(tree_values: Callable[[int], np.ndarray], n_trees: int, n_rows: int) -> np.ndarray:
    """Row sums over trees 0..n_trees-1, added in exactly the order numpy's `sum(axis=1)` adds a C-ordered
    (n_rows, n_trees) array, without building that array: the forest mean stays bit-identical to the
    `leaf_values.mean(axis=1)` of earlier versions while holding only a few (n_rows,) vectors.

    numpy starts from 0 and adds a pairwise sum: below 8 terms one after the other; up to 128 terms in 8
    interleaved partial sums combined as ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), then the tail;
    above 128 it halves the terms (the first half rounded down to a multiple of 8) and adds the two sums.
    """

    def pairwise(first: int, count: int) -> np.ndarray:
        if count < 8:
            total = np.zeros(n_rows)
            for t in range(first, first + count):
                total += tree_values(t)
            return total
        if count <= 128:
            partial = [tree_values(first + j) for j in range(8)]
            whole = count - count % 8
            for t in range(first + 8, first + whole):
                partial[(t - first) % 8] += tree_values(t)
            total = ((partial[0] + partial[1]) + (partial[2] + partial[3])) + (
                (partial[4] + partial[5]) + (partial[6] + partial[7])
            )
            for t in range(first + whole, first + count):
                total += tree_values(t)
            return total
        half = count // 2
        half -= half % 8
        return pairwise(first, half) + pairwise(first + half, count - half)

    return 0.0 + pairwise(0, n_trees)


def resolve_jobs(n_jobs: int) -> int:
    """scikit-learn's `n_jobs` as a thread count: negative means every core."""
    return (os.cpu_count() or 1) if n_jobs < 0 else max(1, n_jobs)
