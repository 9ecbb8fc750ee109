"""The ``cervixnet`` command line (installed as ``cervixnet.cli``)."""
