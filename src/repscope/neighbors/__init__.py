"""Exact k-nearest neighbours, computed once and shared by every estimator.

:func:`knn` searches blockwise with matrix products (torch, CPU or CUDA): for a block of ``b``
query rows it forms the ``(b, n)`` ranking matrix ``|y|^2 - 2 x.y`` with one ``addmm``, masks
the query itself and keeps the best candidates. Memory is bounded by ``memory_budget`` (the
block matrix never exceeds it) and no ``(n, n)`` matrix is ever built. The candidate search
runs in float32 by default and keeps a few spare candidates; every row is certified to hold
its ``k`` nearest despite the rounding of the products, and the candidates' distances are then
recomputed from direct coordinate differences in X's own precision (relative error ~ machine
epsilon, free of the cancellation of the expanded form ``|x|^2 + |y|^2 - 2 x.y``) and
re-sorted by (distance, index), so ``Neighbors`` is the exact table for every strategy.

One concept per module, from the entry point down:

=================  ============================================================================
``search``         :func:`knn`, :class:`Neighbors`, :func:`count_pairs_within`: checks, policy,
                   dispatch to a search strategy
``duplicates``     exact duplicates by row hashing, near duplicates by neighbour edges,
                   :class:`DuplicateReport`
``prepare``        the centred search copy of X and the reference rows (and their low-rank split)
``brute``          the certified brute search over row blocks
``lowrank``        certified low-rank pruning (``strategy="lowrank"`` / ``"auto"``)
``certificate``    rounding bounds and the per-row certificate shared by both searches
``fallbacks``      rows that fail the certificate: wider candidate lists, float64 search, local
                   re-centring, direct re-ranking
``rerank``         the exact re-ranking every path ends in
``blocks``         query blocks within the memory budget, exact two-stage smallest-``c`` selection
``approximate``    faiss / pynndescent candidates, re-ranked exactly (``exact=False``)
``query``          :func:`knn_query` (neighbours of new rows in a reference set, certified) and
                   :func:`neighbor_ranks` (the rank of a given row among a row's neighbours)
``recall``         recall@k of approximate indexes against the exact table,
                   :func:`compression_table`
``distributed``    :func:`knn_distributed`: the exact table over row shards held by workers
                   (Ray actors or in process), tree-merged; per-shard faiss indexes
``worker``         what one worker of the distributed search holds and does
``shard``          the certified search of query rows against one shard, and the merge
``cost``           the cost model of a plan on N workers, calibrated on this machine
=================  ============================================================================
"""

# The option tuples, the default memory budget and the internals that tests and benchmarks use
# stay importable from here, as before the package split.
from repscope.neighbors.blocks import DEFAULT_MEMORY_BUDGET, _blocks, _smallest  # noqa: F401
from repscope.neighbors.certificate import _unit_roundoff  # noqa: F401
from repscope.neighbors.distributed import knn_distributed
from repscope.neighbors.duplicates import POLICIES, DuplicateReport, _exact_groups  # noqa: F401
from repscope.neighbors.query import QueryNeighbors, knn_query, neighbor_ranks
from repscope.neighbors.recall import (
    INDEXES,
    CompressionRow,
    compression_table,
    recall_at_k,
)
from repscope.neighbors.search import (  # noqa: F401
    BACKENDS,
    METRICS,
    STRATEGIES,
    Neighbors,
    count_pairs_within,
    knn,
)

__all__ = ["INDEXES", "CompressionRow", "DuplicateReport", "Neighbors", "QueryNeighbors",
           "compression_table", "count_pairs_within", "knn", "knn_distributed", "knn_query",
           "neighbor_ranks", "recall_at_k"]
