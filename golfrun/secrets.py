"""What counts as a secret, and how it is kept out of everything golfrun writes.

Any environment-variable-like name containing TOKEN, KEY, SECRET or PASSWORD (case-insensitive)
is a secret, plus a few known names; TOKENS (a count: TRAIN_BATCH_TOKENS) and TOKENIZER
(TOKENIZER_PATH) are not. Values are replaced, never truncated, so a reader can still
see that the variable was set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***REDACTED***"
_SECRET_NAME = re.compile(r"(TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
# Names that match the pattern but hold nothing secret (public key paths are not secret).
_NOT_SECRET = {"PUBLIC_KEY", "SSH_PUBLIC_KEY"}
_NOT_CREDENTIAL_WORDS = re.compile(r"TOKENS|TOKENIZER", re.IGNORECASE)
_PRIVATE_KEY_BLOCK = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL
)


def is_secret_name(name: str) -> bool:
    # "TOKENS" is a count (TRAIN_BATCH_TOKENS = "8192") and "TOKENIZER" a file (TOKENIZER_PATH), not
    # credentials: taking them for one would scrub every "8192" and the tokenizer's path out of
    # trainer logs and summaries.
    return name.upper() not in _NOT_SECRET and bool(_SECRET_NAME.search(_NOT_CREDENTIAL_WORDS.sub("", name)))


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of `env` with the value of every secret-named variable replaced."""
    return {k: (REDACTED if is_secret_name(k) else v) for k, v in env.items()}


def redact_text(text: str, secret_values: list[str] | tuple[str, ...] = ()) -> str:
    """Remove private-key blocks and the given literal secret values from free text."""
    text = _PRIVATE_KEY_BLOCK.sub(REDACTED, text)
    for value in secret_values:
        if value and len(value) >= 4:
            text = text.replace(value, REDACTED)
    return text


def redact_data(data: Any) -> Any:
    """Redact secret-named keys anywhere in nested dicts/lists (for JSON documents)."""
    if isinstance(data, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and is_secret_name(k) and v not in (None, "") else redact_data(v))
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [redact_data(v) for v in data]
    if isinstance(data, str):
        return _PRIVATE_KEY_BLOCK.sub(REDACTED, data)
    return data


def secret_values_from_env(env: Mapping[str, str]) -> list[str]:
    """The values of secret-named variables in `env`: to scrub from logs captured from processes."""
    return [v for k, v in env.items() if is_secret_name(k) and v]


_PEM_BEGIN_BYTES = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")


def secrets_in_bytes(data: bytes, secret_values: list[str] | tuple[str, ...] = ()) -> list[str]:
    """What secret a binary holds: "a private key block", or "the value of a secret variable" (as
    UTF-8 or UTF-16, the encodings a pickled or serialized string takes). Never the value itself."""
    found = ["a private key block"] if _PEM_BEGIN_BYTES.search(data) else []
    for value in secret_values:
        if value and len(value) >= 4 and any(v in data for v in (value.encode(), value.encode("utf-16-le"))):
            found.append("the value of a secret variable")
            break
    return found


_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
_PEM_END = re.compile(r"-----END [A-Z ]*PRIVATE KEY-----")


class LineRedactor:
    """Redacts a stream line by line, including private-key blocks that span many lines.

    `redact_text` needs the whole block in one string; a log written as it streams only ever sees
    one line, so this remembers whether it is inside a BEGIN … END block and drops its body.
    """

    def __init__(self, secret_values: list[str] | tuple[str, ...] = ()) -> None:
        self._secrets = tuple(secret_values)
        self._in_key = False

    def __call__(self, line: str) -> str:
        if self._in_key:
            end = _PEM_END.search(line)
            if end is None:
                return ""
            self._in_key = False
            line = line[end.end():]
            if not line.strip():  # the block ended the line: nothing of it remains to write
                return ""
        line = redact_text(line, self._secrets)
        begin = _PEM_BEGIN.search(line)
        if begin is not None:  # a block that does not end on this line
            self._in_key = True
            newline = "\n" if line.endswith("\n") else ""
            line = line[: begin.start()] + REDACTED + newline
        return line
