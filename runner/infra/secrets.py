"""API keys: from the environment or a secrets file the user names, never from a config.

Configs name a key with `${secret:OPENAI_API_KEY,default}`. Until a job starts (`reveal`), the
resolver answers `***redacted***`, so `python -m runner --cfg job --resolve` prints no key; the job
itself gets the value. Every value read this way is masked in log records (console and run.log).

Configs that leave the process (results.json, W&B, a cache entry's manifest) go through `redact`,
which hides the values of credential keys (`api_key`, `hf_token`, `Authorization`, ...) and any
secret inside a value (a key in a URL's query string), and nothing else: `max_tokens` and
`tokenizer_name` stay visible. Secrets are the values read through `${secret:...}`, the credential-named
variables of the environment (an LLM client reads `OPENAI_API_KEY` itself) and of `secrets_file`; a
literal key on the command line is refused before Hydra writes it anywhere (`literal_secret_override`). Cache keys
go through `key_view`, which puts one fixed marker in place of each such value: a credential decides who
pays for an answer, not what the answer is, so a rotated API key still hits the LLM's cached answers (asked
again at temperature 0.7, every chunk would get new questions and the run a new eval set), and no key,
nor a hash of one, lands on disk.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from runner.infra.errors import RagtuneError

REDACTED = "***redacted***"
_state = {"revealed": False}
_values: set[str] = set()


# The last word of a key's name (snake_case, camelCase or kebab-case) says it holds a credential:
# `api_key`, `hf_token`, `client_secret`, `Authorization`; not `max_tokens`, `tokenizer_name`.
_CREDENTIAL = re.compile(
    r"(?:^|_)(?:api_?key|access_?key|secret_?key|private_?key|subscription_?key|secret|password|passwd|"
    r"passphrase|credentials?|authorization|auth|cookie|token)$"
)


def is_secret_key(name: object) -> bool:
    """True for a config key whose value is a credential."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(name)).lower().replace("-", "_")
    return bool(_CREDENTIAL.search(snake))


MIN_SECRET = 4  # shorter values are never looked for inside other text


def _replace_secrets(obj, key, replace):
    """`obj` with the value of every credential key replaced whole, and every secret the run has read
    replaced where it stands inside a longer value (`https://host/v1?key=<secret>`)."""
    if isinstance(obj, dict):
        return {k: _replace_secrets(v, k, replace) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_replace_secrets(v, key, replace) for v in obj]
    if not isinstance(obj, str) or not obj or obj == REDACTED:
        return obj
    if is_secret_key(key):
        return replace(obj)
    for value in sorted(_values, key=len, reverse=True):
        if len(value) >= MIN_SECRET and value in obj:
            obj = obj.replace(value, replace(value))
    return obj


def redact(tree):
    """A copy of a config tree with every credential value, and every secret inside a value, replaced by
    `***redacted***`; nothing else."""
    return _replace_secrets(tree, None, lambda v: REDACTED)


CREDENTIAL = "***credential***"  # what a credential is in a cache key: present, whatever its value


def key_view(tree):
    """A copy of a config tree for a cache key: each credential value (or secret inside a value) replaced by
    one marker, so two configs that differ only in a secret get the same key and no key holds the secret."""
    return _replace_secrets(tree, None, lambda v: CREDENTIAL)


def register_environment() -> list[str]:
    """Every environment variable whose name says it holds a credential (`OPENAI_API_KEY`, `HF_TOKEN`) is a
    secret of the run, read through `${secret:...}` or not: an LLM client reads its key from the
    environment itself, and the key must still be masked wherever it would appear. Returns the names."""
    names = [name for name, value in os.environ.items() if value and len(value) >= MIN_SECRET and is_secret_key(name)]
    _values.update(os.environ[n] for n in names)
    return names


def _literal_secrets(key: str, value) -> list[str]:
    """The dotted keys under `key` that name a credential and hold a literal value (not null, not `${...}`)."""
    if isinstance(value, dict):
        return [k for name, v in value.items() for k in _literal_secrets(f"{key}.{name}", v)]
    if isinstance(value, list):
        return [k for i, v in enumerate(value) for k in _literal_secrets(f"{key}[{i}]", v)]
    literal = value is not None and str(value) != "" and str(value).lower() not in ("null", "none") and "${" not in str(value)
    return [key] if literal and is_secret_key(key.split(".")[-1].split("[")[0]) else []


def _override_value(arg: str):
    """(the key, the value) of a command-line override as Hydra parses it: a dict or a list where the value
    is one (`qa_generator.llm={api_key:sk-...}`); the text after `=` where Hydra cannot parse it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        override = OverridesParser.create().parse_overrides([arg])[0]
        return override.key_or_group, override.value()
    except Exception:  # noqa: BLE001 - Hydra reports a malformed override itself, later
        key, _, value = arg.lstrip("+~").partition("=")
        return key, value


def literal_secret_override(args: list[str]) -> str | None:
    """The message for a command-line override that gives a credential key a literal value
    (`qa_generator.llm.api_key=sk-...`, or one inside a dict: `qa_generator.llm={api_key:sk-...}`,
    `qa_generator.llm.default_headers={Authorization:...}`), or None: the value would be in the run directory's
    name, the sweep's job names, .hydra/ and W&B before anything could mask it."""
    for arg in args:
        if "=" not in arg:
            continue
        found = _literal_secrets(*_override_value(arg))
        if found:
            key = found[0]
            return (
                f"{key}= on the command line would write the key into the run's directory name, .hydra/ and W&B "
                "(the value is not shown here); put it in an environment variable (export OPENAI_API_KEY=... for "
                "the openai configs, which read ${secret:OPENAI_API_KEY}) or in a secrets_file=PATH of KEY=VALUE "
                f"lines, and point the config at it: {key}='${{secret:NAME}}'."
            )
    return None


def secret(name: str, default: str | None = None) -> str | None:
    """The `${secret:NAME,default}` resolver: the environment variable NAME (or the default)."""
    value = os.environ.get(name)
    if not value:
        return default
    _values.add(value)
    return value if _state["revealed"] else REDACTED


def load_secrets_file(path: str | None) -> list[str]:
    """`KEY=VALUE` lines (`#` comments, optional `export `, optional quotes) into the environment,
    without overriding a variable already set there; returns the names read."""
    if not path:
        return []
    file = Path(path).expanduser()
    if not file.is_file():
        raise RagtuneError(
            f"secrets_file={path} does not exist; give a file of KEY=VALUE lines "
            "(for example OPENAI_API_KEY=sk-...), or leave secrets_file unset and export the key."
        )
    names = []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)", line)
        if not match:
            raise RagtuneError(f"secrets_file={path}, line {n}, is not KEY=VALUE (the value is not shown); fix that line.")
        name, value = match.group(1), match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        os.environ.setdefault(name, value)
        if is_secret_key(name) and len(value) >= MIN_SECRET:  # a credential; `MODE=auto` masks nothing
            _values.add(value)
        names.append(name)
    return names


def reveal() -> None:
    """From now on, `${secret:...}` resolves to the real value (a job is running)."""
    _state["revealed"] = True


def mask(text: str) -> str:
    for value in sorted(_values, key=len, reverse=True):
        if len(value) >= MIN_SECRET:
            text = text.replace(value, REDACTED)
    return text


class RedactSecrets(logging.Filter):
    """Masks every secret value the run has read in a log record, whatever logger wrote it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _values:
            message = record.getMessage()
            masked = mask(message)
            if masked != message:
                record.msg, record.args = masked, None
        return True


def protect_logs() -> None:
    """Put the filter on every handler of the root logger (console and the job's run.log)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())
