"""Fetching missing data files from mirrors, through pooch.

pooch writes to a temporary file beside the target and moves it into place
only once the checksum matches, so an interrupted or corrupt transfer never
leaves a file that a later run would mistake for good data.  What this module
adds is trying each mirror in turn and turning the many ways a download
fails into one line a user can act on.
"""
from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from laminae.errors import DataError

TIMEOUT = (15, 60)
"""Seconds to connect, and to wait for each chunk: a dead mirror fails fast."""


def fetch(name: str, md5: str, folder: Path, mirrors: Sequence[str]) -> Path:
    """Download ``name`` into ``folder`` from the first mirror that serves it intact."""
    import pooch  # here, not at the top: it pulls in requests, needed only to download
    import requests

    failures = []
    for mirror in mirrors:
        url = f"{mirror.rstrip('/')}/{name}"
        try:
            with _pooch_quiet(pooch.get_logger()):
                path = pooch.retrieve(
                    url,
                    known_hash=f"md5:{md5}",
                    fname=name,
                    path=folder,
                    downloader=pooch.HTTPDownloader(progressbar=sys.stderr.isatty(), timeout=TIMEOUT),
                )
        except requests.RequestException as exc:
            failures.append(f"{url}: {_network_reason(exc)}")
        except ValueError as exc:  # pooch's checksum mismatch
            got = re.search(r"but got (\w+)", str(exc))
            failures.append(f"{url}: md5 is {got[1] if got else 'different'}, expected {md5} (corrupt copy?)")
        except OSError as exc:  # the folder, not the mirror: another mirror will not help
            raise DataError(f"{folder / name}: cannot save the download: {exc.strerror or exc}") from None
        else:
            return Path(path)
    tried = "; ".join(failures) or "no mirrors given"
    raise DataError(f"{folder / name}: missing, and downloading it failed ({tried})")


@contextlib.contextmanager
def _pooch_quiet(logger: logging.Logger) -> Iterator[None]:
    """Hide pooch's "Downloading data from ..." log lines: a failure must read as
    one line, and on a terminal the progress bar already shows the transfer."""
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _network_reason(exc: Any) -> str:
    import requests

    text = str(exc)
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason}"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        short = re.search(r"(\d+) bytes read, (\d+) more expected", text)
        detail = f": {short[1]} bytes received, {short[2]} more expected" if short else ""
        return f"transfer interrupted{detail}"
    if isinstance(exc, requests.ConnectionError):
        errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
        return f"cannot connect ({errno[1].strip()})" if errno else "cannot connect"
    return " ".join(text.split()) or type(exc).__name__


def mirror_list(value: Any) -> Any:
    """attrs converter: a TOML list or a single URL string becomes a tuple."""
    if isinstance(value, str):
        return (value,)
    return tuple(value) if isinstance(value, list) else value


def mirror_urls(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """attrs validator: a non-empty tuple of http(s) base URLs."""
    if not (isinstance(value, tuple) and value and all(isinstance(v, str) for v in value)):
        raise TypeError(f"'{attribute.name}' must be a non-empty list of URLs, got {value!r}")
    for url in value:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"'{attribute.name}' must hold http:// or https:// URLs, got {url!r}")
