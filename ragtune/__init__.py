"""ragtune's library face: what a LlamaIndex app imports from a finished run.

import ragtune
retriever = ragtune.load_retriever("outputs/runs/<date>/<run>", documents)
Settings.embed_model = ragtune.load_embedding("outputs/runs/<date>/<run>/exports/onnx_int8")
"""

from runner import __version__
from runner.stages.export.llama_index import EncoderEmbedding, load_embedding
from runner.stages.ship.retriever import load_retriever


def builtin_documents(max_documents: int | None = None) -> list:
    """The default run's corpus as llama-index Documents: the Python language reference that ships inside
    CPython (`pydoc_data.topics`), one document a topic, its name in `metadata["topic"]`."""
    from runner.stages.load.corpus import load_python_docs

    return load_python_docs(max_documents).documents


__all__ = ["EncoderEmbedding", "__version__", "builtin_documents", "load_embedding", "load_retriever"]
