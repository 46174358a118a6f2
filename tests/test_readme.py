"""README.md and docs/*.md against the code, so the guide cannot drift from conf/:
- every `group=option` they name is an option of conf/ (hydra/launcher: or of Hydra's plugins);
- every command line they show (`python -m runner ...`, `ragtune ...`, `make run ARGS="..."`, a bench
  script's overrides after ` -- `) parses, its group choices compose, and each `key.sub=value` it sets is
  a key of that composition (a key of a non-default option, `qa_generator.path` with `qa_generator=file`,
  is looked up in the config that option brings);
- every dotted override quoted in prose is a key of some composition of the options;
- docs/options.md's option table lists exactly the options there are;
- the files, `runner.*` modules, make targets and links they point at exist.
Nothing runs: Hydra's compose only, cached per set of group choices (a compose costs about 0.2 s)."""

from __future__ import annotations

import os
import re
import shlex
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OPTIONS_PAGE = ROOT / "docs" / "options.md"

# examples that are wrong on purpose (the failure table shows what ragtune says about them)
DELIBERATELY_WRONG = {"corpus=wikipedia", "finetune.learing_rate", "finetune.lr", "qa_generator.llm.default_headers"}
# groups a user never picks: debug=... chooses debug_finetune itself
INTERNAL_GROUPS = {"debug_finetune"}


def conf_groups() -> dict[str, set[str]]:
    """group -> its options: every folder of conf/ that holds option files (hydra/launcher, qa_generator/llm too)."""
    out = {}
    for folder in sorted(p for p in CONF.rglob("*") if p.is_dir()):
        options = {p.stem for p in folder.glob("*.yaml")}
        group = folder.relative_to(CONF).as_posix()
        if options and group not in INTERNAL_GROUPS:
            out[group] = options
    return out


GROUPS = conf_groups()
GROUP_RE = re.compile(
    r"(?<![\w./$:{-])(?:\+\+|\+|~)?(" + "|".join(sorted(map(re.escape, GROUPS), key=len, reverse=True)) + r")=([\w,|\\]*)"
)
DOTTED_RE = re.compile(r"(?<![\w./$:{+~-])([a-z_]\w*(?:\.[\w@]+)+)=")
ENV = r"^(?:[A-Z_]+=\S*\s+)*"
COMMAND_RE = re.compile(ENV + r"(python -m runner|ragtune)(?=\s|$)(?!\s+cache\b)")


def is_group(key: str) -> bool:
    key = key.lstrip("+~")
    return key in GROUPS or key.startswith("hydra/")


# -- reading the pages ------------------------------------------------------------------------------------


def snippets(page: Path) -> tuple[list[str], list[str]]:
    """(code lines, inline code spans) of a markdown page: lines of fenced (not python) and indented blocks,
    a shell line continued with a backslash joined; spans outside them (a span may wrap onto the next line)."""
    lines, prose, fence = [], [], None
    text = re.sub(r"\\\n\s*", " ", page.read_text(encoding="utf-8"))
    for line in text.splitlines():
        m = re.match(r"\s*```(\w*)", line)
        if m:
            fence = None if fence is not None else m.group(1)
            continue
        if fence is not None:
            if fence != "python":
                lines.append(line)
        elif line.startswith("    ") and not line.lstrip().startswith(("-", "|")):
            lines.append(line)
        else:
            prose.append(line)
    spans = [s.replace("\n", " ") for s in re.findall(r"`([^`]+)`", "\n".join(prose))]
    return lines, spans


def as_command(text: str) -> str | None:
    """A runner command line as `python -m runner OVERRIDES...`: `python -m runner ...` and `ragtune ...`
    themselves, `make run ARGS="..."`, and a `bench/` script's runner overrides after ` -- `; else None."""
    text = text.strip()
    if COMMAND_RE.match(text):
        return text
    if m := re.match(ENV + r"make run ARGS=(\"[^\"]*\"|'[^']*')", text):
        return "python -m runner " + m.group(1)[1:-1]
    if re.match(ENV + r"python bench/\S+\.py .* -- ", text):
        return "python -m runner " + text.split(" -- ", 1)[1]
    return None


def commands(page: Path) -> list[str]:
    """Every runner command line of a page (code lines and spans)."""
    lines, spans = snippets(page)
    return [c for c in map(as_command, lines + spans) if c]


def overrides(command: str) -> list[str]:
    """The KEY=VALUE words of a command line (environment assignments before it dropped; `~` and `$VAR`
    in a value expanded as bash does), a sweep's values reduced to the first one."""
    words = shlex.split(command.replace("\\|", "|"), comments=True)
    start = next(i for i, w in enumerate(words) if w in ("python", "ragtune"))
    out = []
    for word in words[start + 1 :]:
        if word.startswith("[") and word.endswith("]"):
            word = word[1:-1]  # `[precision=fp32]`: an optional override, as the text writes it
        if "=" not in word or word.startswith("-") or word.split("=", 1)[0].isupper():
            continue  # not an override, a flag, or a placeholder (`KEY=V1,V2`)
        key, value = word.split("=", 1)
        value = os.path.expandvars(os.path.expanduser(value))
        out.append(f"{key}={first_of_sweep(value)}")
    return out


def first_of_sweep(value: str) -> str:
    """`a,b,c` -> `a`; commas inside brackets, braces or quotes are part of the value."""
    depth, quote = 0, None
    for i, ch in enumerate(value):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            return value[:i]
    return value


# -- composing ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hydra_ctx():
    from hydra import initialize_config_dir

    from runner.config import register

    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


@lru_cache(maxsize=None)
def composed(choices: tuple[str, ...]):
    from hydra import compose

    return compose(config_name="config", overrides=list(choices), return_hydra_config=True)


def group_options(group: str) -> set[str]:
    """A group's options: its files in conf/, and for Hydra's own groups what the installed plugins bring."""
    from hydra.core.global_hydra import GlobalHydra

    options = set(GROUPS.get(group, ()))
    if group.startswith("hydra/"):
        options |= set(GlobalHydra.instance().config_loader().get_group_options(group))
    return options


def keys_of(node, prefix: str = "") -> set[str]:
    from omegaconf import DictConfig

    out = set()
    for key in node.keys() if isinstance(node, DictConfig) else ():
        path = f"{prefix}{key}"
        out.add(path)
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
            out |= keys_of(child, path + ".")
    return out


def has_key(cfg, key: str) -> bool:
    """`key` (dotted) is a node of `cfg`, its value set or not (`???`)."""
    from omegaconf import DictConfig

    node = cfg
    for part in key.split("."):
        try:
            node = node._get_node(part) if isinstance(node, DictConfig) and not node._is_none() else None
        except Exception:  # noqa: BLE001 - a structured node refuses a key it does not have
            return False
        if node is None:
            return False
    return True


def option_runs() -> list[tuple[str, ...]]:
    """Compositions that together choose every option of every group once: run i takes each top-level
    group's i-th option (hydra/launcher's too); a nested group's options (qa_generator/llm) go with their
    parent option (qa_generator=llm). Not experiment=: a preset sets keys of the options it chooses, which
    these runs hold (and it would refuse to compose with another option of a group it sets)."""
    options = {g: sorted(group_options(g)) for g in [*GROUPS, "hydra/launcher"] if g != "experiment"}
    flat = {g: o for g, o in options.items() if "/" not in g or g.startswith("hydra/")}
    nested = {g: o for g, o in options.items() if g not in flat}
    runs = [tuple(f"{g}={o[i]}" for g, o in flat.items() if i < len(o)) for i in range(max(map(len, flat.values())))]
    for group, opts in nested.items():
        parent, choice = group.rsplit("/", 1)
        runs += [(f"{parent}={choice}", f"{group}={o}") for o in opts]
    return runs


@lru_cache(maxsize=None)
def every_key() -> frozenset[str]:
    """The union of the config's keys over compositions that choose every option of every group."""
    keys = set()
    for run in option_runs():
        try:
            keys |= keys_of(composed(run))
        except Exception:  # noqa: BLE001 - options that do not go together: one at a time
            for one in run:
                keys |= keys_of(composed((one,)))
    return frozenset(keys)


# -- the checks, each a list of problems ------------------------------------------------------------------


def group_problems(page: Path) -> list[str]:
    lines, spans = snippets(page)
    bad = []
    for text in lines + spans:
        for m in GROUP_RE.finditer(text):
            group, values = m.groups()
            for option in filter(None, re.split(r"[,|\\]", values)):
                if f"{group}={option}" not in DELIBERATELY_WRONG and option not in group_options(group):
                    bad.append(f"{group}={option} (in `{text.strip()}`)")
    return bad


def command_problems(page: Path) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    bad = []
    for command in commands(page):
        words = overrides(command)
        if any(w in DELIBERATELY_WRONG or w.split("=", 1)[0] in DELIBERATELY_WRONG for w in words):
            continue
        try:
            parser.parse_overrides(words)
            cfg = composed(tuple(sorted(w for w in words if is_group(w.split("=", 1)[0]))))
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            bad.append(f"{command}\n    -> {type(e).__name__}: {str(e).splitlines()[0]}")
            continue
        for word in words:
            key = word.split("=", 1)[0]
            if not key.startswith(("+", "~")) and not is_group(key) and not has_key(cfg, key):
                bad.append(f"{command}\n    -> {key} is not a key of the config it composes")
    return bad


def prose_problems(page: Path) -> list[str]:
    lines, spans = snippets(page)
    known = every_key()
    bad = []
    for text in lines + spans:
        if as_command(text):
            continue  # whole command lines: composed with their own overrides
        for key in DOTTED_RE.findall(text):
            if key not in known and key not in DELIBERATELY_WRONG:
                bad.append(f"{key} (in `{text.strip()}`)")
    return bad


MAKE_TARGETS = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M))
PATH_RE = re.compile(r"(?<![\w./-])((?:bench|scripts|conf|tests|runner|ragtune|hydra_plugins|docs)/[\w./-]*\w)")
MODULE_RE = re.compile(r"(?<![\w./-])(runner(?:\.\w+)+)")


def module_exists(dotted: str) -> bool:
    """`runner.a.b` names a package or module (what follows a module is an attribute); `runner.conf` is conf/."""
    path = ROOT / "runner"
    for part in dotted.split(".")[1:]:
        if (path / f"{part}.py").is_file():
            return True
        if not (path / part).is_dir():
            return dotted == "runner.conf"
        path = path / part
    return True


def reference_problems(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    code = "\n".join(sum(snippets(page), []))
    bad = [
        f"make {t}: no such Makefile target" for t in re.findall(r"(?<![\w-])make ([a-z][\w-]*)", code) if t not in MAKE_TARGETS
    ]
    for path in PATH_RE.findall(code):
        path = path.split("::")[0]
        if "<" in path or path.startswith("docs/") and not path.endswith(".md"):
            continue  # a placeholder, or docs/ as an example folder of documents
        if not (ROOT / path).exists():
            bad.append(f"{path}: no such file")
    bad += [f"{m}: no such module" for m in MODULE_RE.findall(code) if not module_exists(m)]
    for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not link.startswith(("http://", "https://")) and not (page.parent / link).exists():
            bad.append(f"link {link}: no such file")
    return bad


def option_table(page: Path) -> set[tuple[str, str]]:
    """(group, option) of each row of the page's `| group | option | ... |` table; an empty group cell
    continues the group above, an option cell may list several."""
    rows, group, inside = set(), None, False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("| group | option |"):
            inside = True
        elif inside and not line.startswith("|"):
            break
        elif inside and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            group = cells[0].strip("`") or group
            rows |= {(group, o) for o in re.findall(r"`([\w]+)`", cells[1])}
    return rows


# -- the tests ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_group_option_named_is_an_option_of_conf(page: Path, hydra_ctx):
    bad = group_problems(page)
    assert not bad, f"{page.name} names options that conf/ does not have:\n" + "\n".join(bad)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_line_composes(page: Path, hydra_ctx):
    bad = command_problems(page)
    assert not bad, f"{page.name} shows commands that do not compose:\n" + "\n".join(bad)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_dotted_override_in_prose_is_a_config_key(page: Path, hydra_ctx):
    bad = prose_problems(page)
    assert not bad, f"{page.name} quotes overrides of keys no composition has:\n" + "\n".join(bad)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_files_modules_make_targets_and_links_named_exist(page: Path):
    bad = reference_problems(page)
    assert not bad, f"{page.name}:\n" + "\n".join(bad)


def test_the_option_table_lists_exactly_the_options_there_are(hydra_ctx):
    table = option_table(OPTIONS_PAGE)
    there = {(g, o) for g in [*GROUPS, "hydra/launcher"] for o in group_options(g)}
    assert table == there, f"in docs/options.md's table, not in conf/: {sorted(table - there)}; missing: {sorted(there - table)}"


def test_the_readme_points_at_help_and_every_docs_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "python -m runner --help" in readme
    missing = [p.name for p in PAGES[1:] if f"(docs/{p.name})" not in readme]
    assert not missing, f"README's further reading does not link {missing}"


def test_the_checks_catch_what_they_are_for(tmp_path, hydra_ctx):
    """Guards the guard: a page with one mistake of each kind gets each one reported."""
    page = tmp_path / "bad.md"
    page.write_text(
        "Try `python -m runner corpus=wikipedia2 finetune.epochs=2` or:\n\n"
        "```bash\n"
        "python -m runner qa_generator=file qa_generator.pth=TRAIN.json   # a typo in a key\n"
        "python -m runner qa_generator.path=TRAIN.json                    # a key of a non-default option\n"
        'make run ARGS="finetune.epoch=2"\n'
        "python -m runner -m finetune.learning_rate=1e-5,3e-5 'evaluate.baselines.top_k=[10,20]'\n"
        "make nothing-here\n"
        "```\n\n"
        "Set `finetune.hard_negative.num=1` ([a link](nowhere.md)), see `runner/stages/nowhere.py` and "
        "`runner.stages.nowhere`.\n",
        encoding="utf-8",
    )
    assert [b.split(" ")[0] for b in group_problems(page)] == ["corpus=wikipedia2"]
    found = "\n".join(command_problems(page))
    assert "qa_generator.pth" in found and "-> qa_generator.path is not a key" in found and "finetune.epoch " in found
    assert "learning_rate" not in found and "top_k" not in found
    assert [b.split(" ")[0] for b in prose_problems(page)] == ["finetune.hard_negative.num"]
    found = "\n".join(reference_problems(page))
    assert "make nothing-here" in found and "runner/stages/nowhere.py" in found and "runner.stages.nowhere" in found
    assert "link nowhere.md" in found
    assert overrides("python -m runner -m finetune.learning_rate=1e-5,3e-5 'x.y=[a,b]'  # c=d") == [
        "finetune.learning_rate=1e-5",
        "x.y=[a,b]",
    ]


def test_a_script_beside_a_clone_folder_named_ragtune_imports_the_package(tmp_path):
    """`git clone ... ragtune` then a script in the parent folder: `import ragtune` once found the clone folder
    (a namespace package, no load_retriever) before the installed package."""
    import subprocess
    import sys

    (tmp_path / "ragtune").mkdir()
    (tmp_path / "ragtune" / "README.md").write_text("a clone's top folder: no __init__.py\n")
    script = "import ragtune\nprint(ragtune.load_retriever.__name__, ragtune.builtin_documents.__name__)\n"
    (tmp_path / "app.py").write_text(script)
    r = subprocess.run([sys.executable, "app.py"], cwd=tmp_path, capture_output=True, text=True)
    assert r.stdout.split() == ["load_retriever", "builtin_documents"], r.stderr
