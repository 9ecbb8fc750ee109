"""What the benchmark scripts share: a command line described by the script's docstring."""

from __future__ import annotations

import argparse


def parser_from_docstring(doc: str) -> argparse.ArgumentParser:
    """An argument parser whose description is ``doc``'s first paragraph and epilog the rest."""
    summary, _, rest = doc.partition("\n\n")
    return argparse.ArgumentParser(
        description=summary, epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter
    )
