"""API keys: from the environment or a secrets file the user names, never from a config.

Configs name a key with `${secret:OPENAI_API_KEY,default}`. Until a job starts (`reveal`), the
resolver answers `***redacted***`, so `python -m runner --cfg job --resolve` prints no key; the job
itself gets the value. Every value read this way is masked in log records (console and run.log);
results.json and W&B get configs through `report.redact`, which masks secret-looking keys.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from runner.errors import RagtuneError

REDACTED = "***redacted***"
_state = {"revealed": False}
_values: set[str] = set()


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
        raise RagtuneError(f"secrets_file={path} does not exist; give a file of KEY=VALUE lines "
                           "(for example OPENAI_API_KEY=sk-...), or leave secrets_file unset and export the key.")
    names = []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)", line)
        if not match:
            raise RagtuneError(f"secrets_file={path}, line {n}, is not KEY=VALUE (the value is not shown); "
                               "fix that line.")
        name, value = match.group(1), match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        os.environ.setdefault(name, value)
        _values.add(value)
        names.append(name)
    return names


def reveal() -> None:
    """From now on, `${secret:...}` resolves to the real value (a job is running)."""
    _state["revealed"] = True


def mask(text: str) -> str:
    for value in sorted(_values, key=len, reverse=True):
        if len(value) >= 4:
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
