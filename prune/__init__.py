"""slimpack's shared core: layer-by-layer calibration and the pruning methods of the papers.

See ``prune/api.py`` for the package API (`prune`, `evaluate`) and ``prune/cli.py`` for ``slimpack``.
"""
