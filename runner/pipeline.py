"""The runner: the one place that knows the order of the stages.

    load -> chunk -> split -> generate -> finetune -> evaluate -> ship -> export -> report

`run` sets a job up (secrets, checks, resume, the tracker) and calls `experiment`, the whole experiment
read top to bottom: each numbered step calls the stages (each a plain function in
runner/stages/<stage>/, memoised through the stage cache) and lands what they computed in the job's
output directory. Around it: the data stages are wired in runner/data_stages.py, the base model's
choices and cached evaluation in runner/base_eval.py, the finetune method's run-dependent settings in
runner/finetune_setup.py, what a job shares and how it names and resumes itself in runner/job.py, and
what it reports (results.json, W&B, the console) in runner/report/run_report.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from runner.base_eval import base_index, base_keys, choose_before, evaluate_base, truncation_report
from runner.checks import validate
from runner.data.eval_set import EvalSet
from runner.data_stages import chunk_plan, chunks_corpus, describe_data, prepare_data
from runner.finetune_setup import finetune_overrides
from runner.infra.devices import share_machine
from runner.infra.errors import RagtuneError
from runner.infra.fingerprint import model_fingerprint, short_identity
from runner.infra.models import ensure_built, load_model, resolve_device, resolve_precision
from runner.infra.secrets import load_secrets_file, protect_logs, redact, register_environment, reveal
from runner.infra.stage_cache import StageCache
from runner.job import Job, finished_result, job_number, run_identity, run_key, stage
from runner.report.results import compare_metrics, flatten, metric_value, versions
from runner.report.run_report import report, write_tables
from runner.stages.evaluate.dimensions import score_dimensions
from runner.stages.evaluate.around_training import base_weights, merge_on_dev, rankings_before, shippable_rows
from runner.stages.evaluate.engines import evaluate_with_engine
from runner.stages.evaluate.guards import score_guards
from runner.stages.evaluate.retrievers import Before
from runner.stages.evaluate.scoring import EvalResult
from runner.stages.export.exporting import export_all
from runner.stages.ship.retriever import add_model_card, model_card, settings
from runner.stages.ship.shipping import data_hashes, ship_spec, shipped_models
from runner.stages.ship.verdict import decide

log = logging.getLogger("ragtune")


@dataclass
class Trained:
    """The finetune step's outcome; all None when the run does not train (finetune=none)."""

    model_dir: Path | None = None
    tuned_model: object = None
    tuned: EvalResult | None = None  # the finetuned model on the eval set
    merged_model: object = None  # the WiSE-FT merge, when it won on dev
    merged: EvalResult | None = None
    run_dev: object = None  # the shipped model's dev ranking, for the hybrids' fusion choice
    llama_index: str | None = None  # how a LlamaIndex app loads the trained model (Finetuned.llama_index)
    tuned_dir: Path | None = None  # the finetuned model as trained: model_dir, or finetuned_model/ beside a kept merge
    adapter: str | None = None  # finetune=adapter: the adapter's class (the model is the base model + tuned_dir)

    @property
    def run_model(self):
        return self.merged_model if self.merged_model is not None else self.tuned_model

    @property
    def run_result(self) -> EvalResult | None:
        return self.merged if self.merged_model is not None else self.tuned

    def shipped(self, deploy: str) -> tuple[Path | None, EvalResult | None]:
        """(the directory, the eval result) of the trained model behind the verdict's row: the unmerged
        finetuned model when `finetuned` ships beside a kept merge, else the run's model."""
        if deploy == "finetuned":
            return self.tuned_dir, self.tuned
        return self.model_dir, self.run_result


def run(cfg: DictConfig) -> float | None:
    """Run one experiment; return the value of `cfg.optimized_metric` (what sweepers maximise)."""
    load_secrets_file(cfg.secrets_file)  # API keys: the environment, or the file the user names
    register_environment()  # credential-named variables are masked even where a client reads them itself
    reveal()
    protect_logs()
    validate(cfg)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = redact(OmegaConf.to_container(cfg, resolve=True))
    ensure_built(cfg.base_model)  # a model the config builds is a file the run key reads: built first, keyed the same each time
    key = run_key(config, experiment)
    if cfg.resume:
        done = finished_result(out / "results.json", key)
        if done is not None:
            log.info("[resume] %s already holds the results of this config, its files and code: skipped", out)
            return metric_value(done["metrics"], cfg.optimized_metric, done.get("verdict", {}).get("deploy"))
    share = share_machine(job_number())
    tracker = instantiate(cfg.logger)
    name, group = run_identity(cfg, out)
    tracker.start(
        flatten(config), out, name=name, group=group, state_dir=Path(cfg.paths.root) / ".wandb", objective=cfg.optimized_metric
    )
    exit_code = 1
    try:
        value = experiment(cfg, out, config, share, tracker, key)
        exit_code = 0
        return value
    finally:
        tracker.finish(exit_code)


def experiment(cfg: DictConfig, out: Path, config: dict, share: dict, tracker, key: str = "") -> float:
    """The stages in order. Every choice is made on the training side (before training) or the dev split
    (after it); the eval set is only scored.

    Longer than the style's 60 lines on purpose: it is the one page that shows the whole run in order."""
    timings: dict[str, float] = {}
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    with stage("load_model", timings):  # first: a model that cannot be loaded fails at once
        model = load_model(cfg.base_model, device)
    metric = cfg.optimized_metric.split("/", 1)[1]
    job = Job(cfg, out, device, precision, metric, StageCache(cfg.cache.dir, cfg.cache.enabled), tracker, timings)
    train_finetune = bool(cfg.finetune.get("_target_"))

    # 1. load -> chunk -> split -> generate, and the dev and eval sets (cached stages)
    chunking = chunk_plan(cfg, model)
    pairs, dev_set, eval_set = prepare_data(cfg, job.stages, train_finetune, job.counts, chunking)
    describe_data(out, pairs, dev_set, eval_set, job.counts)

    # 2. choices before training, on every training-side question: the window, BM25, the base hybrid (cached)
    decided = choose_before(cfg, model, pairs, dev_set, device, precision, metric, job.stages)
    truncation = truncation_report(model, pairs, eval_set, decided.records)
    cache = job.stages.status

    # 3. the base model on the eval set (cached); BM25's rankings; the guards' base
    base = evaluate_base(cfg, model, eval_set, device, precision, job.stages)
    timings.update(job.stages.timings)
    with stage("baselines_before", timings):
        before = rankings_before_training(job, model, base, dev_set, eval_set, decided)
    chunk_choice = {"chunk_size": chunking.record} if chunks_corpus(cfg, train_finetune) else {}
    choices = {**chunk_choice, **decided.records}

    # 4. finetune (within the time budget, the best epoch on dev), merge on dev, evaluate on the eval set
    trained = finetune(job, model, pairs, dev_set, eval_set, before, choices) if train_finetune else Trained()

    # 5. every retriever a user could ship, the guards, the verdict
    with stage("baselines", timings):  # BM25 and the hybrids on the eval set (the finetuned one's weight chosen on dev)
        rows, fusions, fusion_choices = shippable_rows(
            cfg,
            before,
            base=base,
            tuned=trained.tuned,
            merged=trained.merged,
            run_model=trained.run_model,
            run_result=trained.run_result,
            dev=dev_set,
            eval_set=eval_set,
            metric=metric,
            precision=precision,
            run_dev=trained.run_dev,
        )
        choices.update(fusion_choices)
    with stage("guards", timings):
        guards, flagged = score_guards(
            cfg,
            before,
            run_model=trained.run_model,
            tuned_model=trained.tuned_model,
            merged_kept=trained.merged is not None,
            precision=precision,
            metric=metric,
        )
    with stage("statistics", timings):  # BCa intervals, randomization p-values, the verdict
        metrics = compare_metrics(base, trained.tuned, cfg.evaluate.bootstrap, cfg.seed)
        verdict = decide({r: res.per_query[metric] for r, res in rows.items()}, metric, cfg.evaluate.bootstrap, cfg.seed, flagged)
    timings.update(job.stages.timings)
    metrics.update({r: res.metrics for r, res in rows.items() if r not in ("base", "finetuned")})
    metrics["vs_verdict"] = verdict.pop("vs_deploy")

    # 6. ship: retriever.json (the model each row was scored with) and the model card, so an app rebuilds what
    #    the verdict says
    models = shipped_models(cfg, trained.model_dir, trained.tuned_dir, trained.merged_model is not None, trained.adapter)
    spec = ship_spec(cfg, out, verdict, models, model.max_seq_length, precision, before, fusions, chunking.config)
    verdict["settings"] = settings(spec)
    ship_dir, ship_result = trained.shipped(verdict["deploy"])  # the trained model the verdict ships, else the run's
    if trained.model_dir:
        card = model_card(
            {**verdict, "vs_deploy": metrics["vs_verdict"]},
            metric,
            config=config,
            hashes=data_hashes(pairs, dev_set, eval_set),
            choices=choices,
        )
        add_model_card(ship_dir, card)

    # 7. export: that model as ONNX / int8 / static, each scored paired against it and timed
    exports = {}
    if cfg.export and trained.model_dir:
        with stage("export", timings):
            passages = [pairs.corpus[k] for k in sorted(pairs.corpus)]  # int8 calibration: training text only
            exports = export_all(cfg, job.stages, ship_dir, ship_result, eval_set, metric, out, device, passages)
    dimensions = {}
    if trained.model_dir:  # loss=matryoshka: every trained width scored against the full one
        with stage("dimensions", timings):
            dimensions = score_dimensions(cfg, trained.model_dir, trained.run_result, eval_set, metric, out)

    # 8. report: per_query.csv, results.json, W&B, the console
    write_tables(job, eval_set, rows, choices)
    results = {
        "metrics": metrics,
        "verdict": verdict,
        "choices": choices,
        "guards": guards,
        "retriever": spec,
        "config": config,
        "timings_s": timings,
        "cache": cache,
        "counts": job.counts,
        "truncation": truncation,
        "exports": exports,
        "dimensions": dimensions,
        "device": device,
        "precision": precision,
        "machine_share": share,
        "model_dir": str(trained.model_dir) if trained.model_dir else None,
        "run_dir": str(out),
        "run_key": key,  # what resume=true compares: the config, the files it names, the code, the libraries
        "versions": versions(),
    }
    value = report(job, results, spec, trained.llama_index)
    failed = [row["error"] for row in exports.values() if "error" in row]
    if failed:  # after results.json: the model, the verdict and the other exports stay
        raise RagtuneError(" ".join(failed) + f" The run's model and results are in {out}.")
    return value


def rankings_before_training(job: Job, model, base: EvalResult, dev_set, eval_set, decided) -> Before:
    """BM25's rankings (settings chosen on the training side), the base model's eval ranking, the guards' base."""
    cfg, stages, device, precision = job.cfg, job.stages, job.device, job.precision
    keys = base_keys(cfg, model, eval_set, device, precision, stages)
    return rankings_before(
        cfg,
        model,
        model_id=keys["model_id"],
        base=base,
        base_index=lambda: base_index(cfg, model, eval_set, keys, precision, stages),
        dev=dev_set,
        eval_set=eval_set,
        precision=precision,
        base_eval=lambda guard: evaluate_base(cfg, model, guard, device, precision, stages, record=False),
        decided=decided,
    )


def finetune(job: Job, model, pairs, dev_set, eval_set, before: Before, choices: dict) -> Trained:
    """Train with the configured method, merge with the base on dev (WiSE-FT), score the result on the
    eval set. The method's own choices (epochs, time budget, best epoch) land in `choices`."""
    cfg, out, timings = job.cfg, job.out, job.timings
    base_state = base_weights(cfg, model, dev_set)
    trained = Trained()
    with stage("finetune", timings):  # within finetune.time_budget_s; the best epoch on dev
        train, record = instantiate(cfg.finetune), {}
        finetuned = train(
            model=model,
            pairs=pairs,
            output_dir=out,
            device=job.device,
            on_log=job.tracker.log,
            **finetune_overrides(cfg, dev_set, job.metric, job.precision, record, choices.get("max_seq_length")),
        )
        trained.model_dir, trained.tuned_model = finetuned.model_dir, finetuned.encoder
        trained.llama_index, trained.adapter = finetuned.llama_index, finetuned.adapter_class
        tuned_dev = record.pop("dev_ranking", None)
        choices.update(record)
    with stage("merge", timings):  # WiSE-FT on the dev split; a merge that wins becomes model/
        trained.merged_model, choices["merge"], run_dev = merge_on_dev(
            cfg,
            base_state,
            trained.tuned_model,
            before=before,
            dev=dev_set,
            metric=job.metric,
            precision=job.precision,
            model_dir=trained.model_dir,
            tuned_dev=tuned_dev,
            adapter=trained.adapter,
        )
        trained.run_dev = run_dev if run_dev is not None else tuned_dev
    job.tracker.log_model(trained.model_dir)
    with stage("evaluate_finetuned", timings):
        trained.tuned_dir = out / "finetuned_model" if trained.merged_model is not None else trained.model_dir
        trained.tuned = evaluate_saved(job, trained.tuned_model, eval_set, trained.tuned_dir)
        if trained.merged_model is not None:
            trained.merged = evaluate_saved(job, trained.merged_model, eval_set, trained.model_dir)
    return trained


def evaluate_saved(job: Job, model, eval_set: EvalSet, model_dir: Path) -> EvalResult:
    """A trained model on the eval set, identified by the content of the directory it was saved to."""
    return evaluate_with_engine(
        model,
        eval_set,
        job.cfg.evaluate,
        model_path=str(model_dir),
        precision=job.precision,
        model_id=short_identity(str(model_dir), model_fingerprint(str(model_dir))),
        device=job.device,
        base_model_cfg=job.cfg.base_model,
    )
