"""Architecture search over a trained supernet: SPOS evolution (and a random baseline) on Ray Tune.

* :mod:`~elastic_nas.search.evolution` -- the space-independent generators (plain classes);
* :mod:`~elastic_nas.search.searcher` -- the thin Tune ``Searcher`` with the generation barrier;
* :mod:`~elastic_nas.search.evaluator` -- scoring a candidate, the Tune trainable;
* :mod:`~elastic_nas.search.snapshot` -- finding and pinning the supernet snapshot;
* :mod:`~elastic_nas.search.outputs` -- results table, Pareto front, budgets, plot, chosen arch;
* :mod:`~elastic_nas.search.board` -- the results of a Cream supernet's board, written as a search's;
* :mod:`~elastic_nas.search.ranking` -- rank statistics: does a supernet order subnets as training does?
* :mod:`~elastic_nas.search.runner` -- ``run_search(cfg)``, what ``elastic-nas search`` runs.

Only the light modules are imported here; Ray and Tune load when a search runs.
"""

from elastic_nas.search.evolution import (
    Candidate,
    Constraints,
    EvolutionSearch,
    EvolutionSettings,
    RandomSearch,
    make_generator,
)

__all__ = [
    "Candidate",
    "Constraints",
    "EvolutionSearch",
    "EvolutionSettings",
    "RandomSearch",
    "make_generator",
]
