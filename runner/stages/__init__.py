"""The pipeline's stages, one folder each, in the order `runner.pipeline` runs them:
load -> chunk -> split -> generate -> finetune -> evaluate -> ship. A stage imports only
infrastructure (`runner.infra`), the data types (`runner.data`) and earlier stages (import-linter's
layers contract in pyproject.toml), never the pipeline, the config or the report."""
