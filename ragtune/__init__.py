"""ragtune's library face: what a LlamaIndex app imports from a finished run.

import ragtune
retriever = ragtune.load_retriever("outputs/runs/<date>/<run>", documents)
Settings.embed_model = ragtune.load_embedding("outputs/runs/<date>/<run>/exports/onnx_int8")
"""

from runner import __version__
from runner.stages.export.llama_index import EncoderEmbedding, load_embedding
from runner.stages.ship.retriever import load_retriever

__all__ = ["EncoderEmbedding", "__version__", "load_embedding", "load_retriever"]
