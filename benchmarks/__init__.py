"""cervixnet's benchmark scripts. Run each from the repository root as a module, e.g.
``python -m benchmarks.real_data_recipe --help``; results go to ``benchmarks/results/``."""
