"""What a run directory names, found on another machine, and refused where it would run code.

`retriever.json` names every model the way another machine finds it again (`relative_to_run`: inside the run,
in an installed package, a hub id) and `locate` finds it there, or says what to install. A run directory may
come from someone else (a colleague, a hub), so nothing read from it is executed (`trusted`): its chunker must be
one of ragtune's own (`runner.stages.chunk.schema.CHUNKER`), its adapter one of LlamaIndex's two layers, unless
the caller passes `trust_remote_code=True`, as transformers asks.
"""

from __future__ import annotations

import json
from pathlib import Path

from runner.infra.errors import RagtuneError

RETRIEVER_FILE = "retriever.json"
ADAPTER_CLASSES = ("LinearLayer", "TwoLayerNN")  # llama_index.embeddings.adapter.utils: what finetune=adapter trains


def _targets(config) -> list:
    """Every `_target_` in a config, at any depth."""
    if isinstance(config, dict):
        own = [config["_target_"]] if "_target_" in config else []
        return own + [t for name, v in config.items() if name != "_target_" for t in _targets(v)]
    if isinstance(config, list):
        return [t for v in config for t in _targets(v)]
    return []


def trusted(spec: dict, run_dir: Path, trust_remote_code: bool) -> dict:
    """`spec` read from `run_dir`, refused where it would run a callable that is not ragtune's: Hydra builds the
    chunker from its `_target_`, which could name any function (`pathlib.Path.unlink` deletes a file)."""
    if trust_remote_code:
        return spec
    from runner.stages.chunk.schema import CHUNKER

    ours = {schema._target_ for schema in CHUNKER.values()}
    chunker = spec.get("chunker") or {}
    named = _targets(chunker)
    strange = [t for i, t in enumerate(named) if i > 0 or t != chunker.get("_target_") or t not in ours]
    adapter = (spec.get("adapter") or {}).get("class")
    if adapter is not None and adapter not in ADAPTER_CLASSES:
        strange.append(f"adapter class {adapter}")
    if strange:
        raise RagtuneError(
            f"{Path(run_dir) / RETRIEVER_FILE} names {', '.join(map(str, strange))}, which is not one of ragtune's "
            f"chunkers ({', '.join(sorted(ours))}) or LlamaIndex's adapter layers; building it would run code the run "
            "directory chose, and a run directory can come from anyone. If you trust where this one came from, pass "
            "trust_remote_code=True to load_retriever."
        )
    return spec


PACKAGE = "package:"  # a model shipped inside a Python package: package:<distribution>/<module>/<path in it>


def in_package(path: Path) -> str | None:
    """`package:<distribution>/<module>/<rest>` for a folder inside an installed package (site-packages), as
    another machine can find it again (`pip install <distribution>`); None elsewhere."""
    import importlib.metadata as md

    parts = path.parts
    for i, part in enumerate(parts[:-1]):
        if part in ("site-packages", "dist-packages"):
            module, rest = parts[i + 1], "/".join(parts[i + 2 :])
            dists = md.packages_distributions().get(module)
            return f"{PACKAGE}{dists[0]}/{module}/{rest}" if dists and rest else None
    return None


def relative_to_run(path: str | None, run_dir: Path) -> str | None:
    """`path` the way another machine finds it again: relative to the run directory when it lies inside it
    (so a copied or moved run still loads), `package:...` when it lies inside an installed Python package (the
    packaged MiniLM: not the venv's absolute path), a hub id as it is, any other folder by its absolute path."""
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(Path(run_dir).resolve()))
    except ValueError:  # outside the run
        if not Path(path).exists():
            return str(path)  # a hub id
        return in_package(Path(path).resolve()) or str(Path(path).resolve())


def locate(name: str, run_dir: Path, what: str = "the model") -> str:
    """A model named in retriever.json, found on this machine: a path inside the run directory, a
    `package:` model in its installed package, a folder that exists, or a hub id (left to the hub's cache).
    A package that is not installed, or an absolute folder that is not here, is one clear error."""
    if (Path(run_dir) / name).exists():
        return str(Path(run_dir) / name)
    if name.startswith(PACKAGE):
        import importlib.util

        dist, module, rest = name.removeprefix(PACKAGE).split("/", 2)
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            raise RagtuneError(
                f"{Path(run_dir) / RETRIEVER_FILE} names {what} from the Python package {dist}, which is not installed "
                f"here: pip install {dist} (the run used it as {module}/{rest})."
            )
        return str(Path(list(found.submodule_search_locations)[0]) / rest)
    if Path(name).is_absolute() and not Path(name).exists():
        raise RagtuneError(
            f"{Path(run_dir) / RETRIEVER_FILE} names {what} at {name}, a folder this machine does not have: copy the "
            "model there, or give the run a model by hub id (base_model.name_or_path=org/name with base_model.revision) "
            "so that any machine can fetch it."
        )
    return name


def with_tokenizer(chunker: dict, rename) -> dict:
    """The chunker config with the tokenizer it counts word pieces with renamed by `rename` (where it has one)."""
    out = json.loads(json.dumps(chunker))
    for holder in (out.get("fit_window") or {}, out):
        named = holder.get("tokenizer") if isinstance(holder, dict) else None
        if isinstance(named, dict) and named.get("name_or_path"):
            named["name_or_path"] = rename(named["name_or_path"])
    return out


def local_chunker(chunker: dict, run_dir: Path) -> dict:
    """The chunker config with its tokenizer found on this machine (`locate`); where it is not, the run's own
    trained model's tokenizer (finetuning leaves the tokenizer as it was), else the error naming what to install."""

    def found(name: str) -> str:
        try:
            return locate(name, run_dir, "the chunker's tokenizer")
        except RagtuneError:
            own = Path(run_dir) / "model"
            if (own / "tokenizer_config.json").is_file():
                return str(own)
            raise

    return with_tokenizer(chunker, found)
