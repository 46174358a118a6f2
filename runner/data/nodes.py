"""TextNodes as JSON and back: the codec of the chunk and split stages' cache entries.

A node read back equals the node written, excluded-metadata keys included: what a stage computes
from a node must not depend on whether the node came from the cache.
"""

from __future__ import annotations

from llama_index.core.schema import TextNode


def nodes_to_json(nodes: list[TextNode]) -> list[dict]:
    return [
        {
            "id": n.node_id,
            "doc": n.ref_doc_id,
            "text": n.get_content(),
            "metadata": n.metadata,
            "excluded_embed": n.excluded_embed_metadata_keys,
            "excluded_llm": n.excluded_llm_metadata_keys,
        }
        for n in nodes
    ]


def nodes_from_json(rows: list[dict]) -> list[TextNode]:
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo

    nodes = []
    for r in rows:
        n = TextNode(
            id_=r["id"],
            text=r["text"],
            metadata=r["metadata"],
            excluded_embed_metadata_keys=r["excluded_embed"],
            excluded_llm_metadata_keys=r["excluded_llm"],
        )
        n.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=r["doc"])
        nodes.append(n)
    return nodes
