"""Keep passwords, account keys and tokens out of everything that prints the configuration.

Celery masks a setting only when its *name* looks secret (`...KEY`, `...PASS...`) and masks its
broker and backend URLs; a URL or connection string under any other name (`flowcraft_redis_url`,
a transport option's `connection_string`) would be shown in clear by `celery report`,
`celery inspect conf` / `stats` and Flower's worker pages. Two measures close that:

- `protect_settings` turns every setting value that carries a credential into `Masked`, a `str`
  that works as usual but whose `repr` is masked (what `celery report` and logs of the settings
  print);
- `censor_inspect_replies` passes the replies of the workers' inspect commands (what
  `celery inspect` and Flower read) through `censor`, which masks credentials in any string.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

MASK = "********"

#: `scheme://user:password@host`: the password part.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:@/\s]*:)(?P<secret>[^@/\s]+)(?=@)")
#: `azurequeue://<account key or SAS token>@https://...`: the whole credential.
_URL_CREDENTIAL = re.compile(r"(?P<head>\bazurequeue://)(?P<secret>(?!DefaultAzureCredential@)[^@\s]+)(?=@)",
                             re.IGNORECASE)
#: `AccountKey=...;` and the other secret parts of Azure connection strings.
_CONNECTION_PART = re.compile(
    r"(?P<head>\b(?:AccountKey|SharedAccessKey|SharedAccessSignature|Password|Pwd)=)(?P<secret>[^;\s]+)",
    re.IGNORECASE)
#: `?sig=...`, `&token=...` and the like in URLs and query strings.
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&;](?:sig|token|access_token|client_secret|password|secret)=)(?P<secret>[^&;\s]+)",
    re.IGNORECASE)
_PATTERNS = (_URL_CREDENTIAL, _URL_PASSWORD, _CONNECTION_PART, _QUERY_SECRET)
#: Settings whose name says the whole value is secret (Celery masks these names too).
_SECRET_NAME = re.compile(r"password|passwd|secret|token|account_key|access_key|credential", re.IGNORECASE)
#: Settings Celery itself parses as URLs and already masks when it prints them.
_CELERY_URL_SETTINGS = frozenset({"broker_url", "broker_read_url", "broker_write_url", "result_backend"})


def mask_text(text: str) -> str:
    """`text` with every password, account key, SAS signature or token in it replaced by MASK."""
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: f"{m.group('head')}{MASK}", text)
    return text


def has_secret(text: str) -> bool:
    """Whether `text` carries a credential that `mask_text` would hide."""
    return mask_text(text) != text


class Masked(str):
    """A setting value that carries a credential: a plain `str` to code, masked in its `repr`."""

    def __repr__(self) -> str:
        """The value with its credentials masked (what `celery report` and `%r` show)."""
        return repr(mask_text(str(self)))


def censor(value: Any, key: str | None = None) -> Any:
    """A copy of a JSON-like value with credentials masked in every string (and the whole value
    of a key whose name says it is secret)."""
    if isinstance(value, Mapping):
        return {k: censor(v, k if isinstance(k, str) else None) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [censor(v) for v in value]
    if isinstance(value, str):
        if key is not None and _SECRET_NAME.search(key) and value:
            return MASK
        return mask_text(str(value))
    return value


def _protect(value: Any, key: str) -> tuple[Any, bool]:
    """`value` with credential-bearing strings (at any depth of dicts) made `Masked`; whether
    anything was."""
    if isinstance(value, dict):
        items = {k: _protect(v, str(k)) for k, v in value.items()}
        if not any(changed for _, changed in items.values()):
            return value, False
        return {k: v for k, (v, _) in items.items()}, True
    if isinstance(value, str) and not isinstance(value, Masked) and value and (
            has_secret(value) or _SECRET_NAME.search(key)):
        return Masked(value), True
    return value, False


def protect_settings(conf: Any) -> None:
    """Make every credential-bearing setting of a Celery configuration `Masked` (in place)."""
    changed = {}
    for key, value in conf.table(with_defaults=False, censored=False).items():
        if key in _CELERY_URL_SETTINGS:
            continue
        protected, wrapped = _protect(value, key)
        if wrapped:
            changed[key] = protected
    if changed:
        conf.update(changed)


def censor_inspect_replies(panel: Any) -> None:
    """Pass every inspect command's reply of Celery's control `panel` through `censor` (once)."""
    for name, handler in list(panel.data.items()):
        meta = panel.meta.get(name)
        if meta is None or meta.type != "inspect" or getattr(handler, "_flowcraft_censored", False):
            continue
        panel.data[name] = _censored(handler)


def _censored(handler: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(handler)
    def reply(state: Any, **kwargs: Any) -> Any:
        return censor(handler(state, **kwargs))

    reply._flowcraft_censored = True  # type: ignore[attr-defined]
    return reply
