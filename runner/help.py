"""`ragtune --help`: the config groups a user chooses from and the top-level knobs, one line each,
read from the config tree itself (each option file's first comment line, config.yaml's defaults list
and its commented knobs), so the page cannot drift from conf/. Hydra's own page: `--hydra-help`.
"""

from __future__ import annotations

import re
from pathlib import Path

# groups that exist for the machinery, not for a user to pick: debug=... chooses debug_finetune itself
INTERNAL = frozenset({"debug_finetune"})
# options the installed Hydra plugins bring to a group, next to the files in conf/
PLUGINS = {
    "hydra/launcher": {
        "basic": "one job after the other (Hydra's default)",
        "joblib": "parallel jobs on this machine (hydra-joblib-launcher)",
        "submitit_local": "jobs as local subprocesses through submitit",
        "submitit_slurm": "submitit's own SLURM launcher (slurm: ragtune's settings for it)",
    }
}
USAGE = """\
ragtune: finetune a sentence-embedding model for RAG retrieval, and say with numbers which retriever to ship.

  ragtune                                   the default experiment, end to end
  ragtune GROUP=OPTION KEY=VALUE ...        e.g. ragtune corpus=directory corpus.path=docs/ finetune.epochs=1
  ragtune -m KEY=V1,V2 ...                  a sweep (Hydra multirun); hparams_search=optuna for a search
  ragtune --cfg job                         the composed config; nothing runs
  ragtune cache list|clear|...              the stage cache
  ragtune --hydra-help                      Hydra's own options
"""


def describe(path: Path, width: int = 100) -> str:
    """The first sentence of a config file's leading comment (a `@package` line skipped), at most
    `width` characters, cut at a word."""
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text.startswith("#"):
            break
        text = text.lstrip("#").strip()
        if text.startswith("@package"):
            continue
        if not text or text.startswith(("python ", "ragtune ")):  # the example commands end the prose
            break
        words.extend(text.split())
        if re.search(r"[.:]$|\. ", text):
            break
    sentence = re.split(r"(?<=\.)\s", " ".join(words), maxsplit=1)[0].rstrip(".:;,")
    if len(sentence) > width:
        sentence = sentence[:width].rsplit(" ", 1)[0].rstrip(",;:(") + " ..."
    return sentence


def defaults(conf: Path) -> dict[str, str]:
    """config.yaml's defaults list: group -> the option chosen (or "null")."""
    chosen = {}
    for line in (conf / "config.yaml").read_text(encoding="utf-8").splitlines():
        m = re.match(r"\s+-\s+(?:optional\s+)?([\w/]+):\s*([\w${}]+)", line)
        if m:
            chosen[m.group(1)] = m.group(2)
    return chosen


def groups(conf: Path) -> dict[str, dict[str, str]]:
    """group -> {option: description}, every folder of conf/ that holds options (hydra/launcher too)."""
    out = {}
    for folder in sorted(p for p in conf.rglob("*") if p.is_dir()):
        group = folder.relative_to(conf).as_posix()
        options = sorted(folder.glob("*.yaml"))
        if group in INTERNAL or not options:
            continue
        out[group] = dict(sorted({**PLUGINS.get(group, {}), **{p.stem: describe(p) for p in options}}.items()))
    return out


def knobs(conf: Path) -> list[tuple[str, str, str]]:
    """config.yaml's top-level `key: value  # comment` lines: (key, default, comment)."""
    out = []
    for line in (conf / "config.yaml").read_text(encoding="utf-8").splitlines():
        m = re.match(r"([a-z_]+):\s+(\S[^#]*?)\s+#\s*(.*)$", line)
        if m and m.group(1) not in ("defaults", "hydra"):
            out.append(m.groups())
    return out


def _value_text(value) -> str:
    """A default as the command line writes it: null, true, [0.9,1.2], 0.15."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_value_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def _comments(cls) -> dict[str, str]:
    """{field: its comment}: the one on the field's line, else on the line that closes a field written over
    several lines, else the comment lines above it."""
    import inspect

    lines = [re.sub(r"\s*# type: ignore\[\w+\]", "", line.strip()) for line in inspect.getsource(cls).splitlines()[2:]]
    out, above, current = {}, "", None
    for text in lines:
        if text.startswith("#"):
            above = (above + " " + text.lstrip("# ")).strip()
            continue
        m = re.match(r"(\w+)\s*:", text)
        if m:
            current = m.group(1)
            out[current] = above
            above = ""
        comment = re.search(r"#\s*(?!type:)(.*)$", text)
        if current and comment and comment.group(1).strip():
            out[current] = comment.group(1).strip()
    return out


def schema_knobs(width: int = 100) -> list[tuple[str, str, str]]:
    """The knobs of the choices and the verdict (evaluate.baselines, dev, merge, guard): (key, default, what it
    is), the default from the schema's fields (a field written over several lines included) and the text from
    the comment on or above the field's line, so the page says what the code says."""
    import dataclasses

    from runner.stages.evaluate.schema import BaselinesConfig, MergeConfig
    from runner.stages.ship.schema import GuardConfig
    from runner.stages.split.schema import DevConfig

    out = []
    for prefix, cls in (
        ("evaluate.baselines", BaselinesConfig),
        ("dev", DevConfig),
        ("merge", MergeConfig),
        ("guard", GuardConfig),
    ):
        comments = _comments(cls)
        for f in dataclasses.fields(cls):
            value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            what = comments.get(f.name, "").split(". ")[0]
            what = what if len(what) <= width else what[:width].rsplit(" ", 1)[0] + " ..."
            out.append((f"{prefix}.{f.name}", _value_text(value), what))
    return out


def help_text(conf: str | Path) -> str:
    conf = Path(conf)
    chosen = {"hydra/launcher": "basic", **defaults(conf)}
    lines = [USAGE, "Config groups (GROUP=OPTION; * the default):"]
    for group, options in groups(conf).items():
        default = chosen.get(group, "null")
        lines.append(f"  {group}" + ("" if default != "null" else "   (none by default)"))
        width = max(len(o) for o in options) + 2
        for option, text in options.items():
            mark = "*" if option == default else " "
            lines.append(f"    {mark}{option:<{width}}{text}")
    lines += ["", "Top-level knobs (KEY=VALUE; every group's own keys: ragtune --cfg job):"]
    for key, value, text in knobs(conf):
        lines.append(f"  {key + '=' + value:<36} {text}")
    lines += ["", "The choices' and the verdict's knobs (what a run chooses from your data: docs/auto.md, docs/verdict.md):"]
    for key, value, text in schema_knobs():
        lines.append(f"  {key + '=' + value:<36} {text}")
    lines += ["", "Guide: README.md; measurements: docs/."]
    return "\n".join(lines) + "\n"
