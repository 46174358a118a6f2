"""ragtune's library face: what a LlamaIndex app imports from a finished run.

import ragtune
retriever = ragtune.load_retriever("outputs/runs/<date>/<run>", documents)
"""

from runner import __version__
from runner.stages.ship.retriever import load_retriever

__all__ = ["__version__", "load_retriever"]
