"""An export in a LlamaIndex app: `ragtune.load_embedding(dir)` gives the embedding model to set as
`Settings.embed_model`. LlamaIndex's `HuggingFaceEmbedding` loads no export: `backend="onnx"` / `"openvino"` need
optimum, which does not install next to transformers 5, and a static model has no `max_seq_length`
for it to read or set. So both go through `EncoderEmbedding`, over the encoder the run scored."""

from __future__ import annotations

from pathlib import Path

from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from runner.stages.export.measure import load_encoder
from runner.stages.export.encoder import graph_of


class EncoderEmbedding(BaseEmbedding):
    """A ragtune export (`exports/onnx`, `exports/onnx_int8`, `exports/openvino`, ..., `exports/static`) as a LlamaIndex
    embedding model; queries and passages get the model's own prompts, embeddings are normalized."""

    _encoder: object = PrivateAttr()

    def __init__(self, path: str | Path, embed_batch_size: int = 32, **kwargs):
        super().__init__(model_name=str(path), embed_batch_size=embed_batch_size, **kwargs)
        self._encoder = load_encoder(Path(path))

    @classmethod
    def class_name(cls) -> str:
        return "RagtuneEncoderEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._encoder.encode_query([query], normalize_embeddings=True)[0].tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._encoder.encode_document([text], normalize_embeddings=True)[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._encoder.encode_document(texts, batch_size=self.embed_batch_size, normalize_embeddings=True).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embedding(text)


def saved_prompts_and_window(path: Path) -> tuple[str, str, int | None]:
    """(query prompt, passage prompt, max_seq_length) a sentence-transformers folder was saved with."""
    import json

    config = path / "config_sentence_transformers.json"
    prompts = json.loads(config.read_text()).get("prompts") or {} if config.is_file() else {}
    passage = next((prompts[k] for k in ("document", "passage", "text", "corpus") if prompts.get(k)), "")
    bert = path / "sentence_bert_config.json"
    window = json.loads(bert.read_text()).get("max_seq_length") if bert.is_file() else None
    return prompts.get("query", ""), passage, window


def load_embedding(path: str | Path, device: str | None = "cpu", **kwargs) -> BaseEmbedding:
    """The LlamaIndex embedding model of a ragtune export (`EncoderEmbedding`), or of a trained model
    directory: LlamaIndex's `HuggingFaceEmbedding` with the prompts and the window the model was saved (and
    scored) with. `Settings.embed_model = "local:<dir>"` builds the same class but passes empty prompts, which
    override the saved ones: a prompted model (e5, bge with an instruction) is then served differently from
    how it was scored."""
    path = Path(path)
    if not (path / "modules.json").exists():
        raise FileNotFoundError(f"{path} is not a model directory or an export of ragtune (it has no modules.json)")
    if graph_of(path) or "StaticEmbedding" in (path / "modules.json").read_text():
        return EncoderEmbedding(path, **kwargs)
    from runner.infra.models import hf_embedding

    query, passage, window = saved_prompts_and_window(path)
    return hf_embedding(str(path), max_length=window, query_prompt=query, passage_prompt=passage, device=device, **kwargs)
