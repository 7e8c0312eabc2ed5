"""``pnp-ovss prepare --download``: fetch the official archives a benchmark needs into ``--downloads``.

One download is fetched from its official URL (or from ``--mirror``, another host serving the same file names)
into ``<into>/<name>.part``, resumed with an HTTP ``Range`` request after a cut transfer (here or in an earlier
run), retried with exponential backoff on connection errors, timeouts, short transfers and HTTP 429/5xx, then
checked against the published size and md5 and renamed into place. A file that fails the check is kept apart
as ``<name>.bad-md5`` and never renamed to the official name.

Downloads served only after a login (Cityscapes) are not fetched: the message says where to register, which
file to put in which folder, and that ``pnp-ovss prepare`` then reads it from there. Standard library only
(plus tqdm for the progress bar); nothing touches the network at import time.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from . import plans, sources
from .sources import Download, PrepareError, VerifiedCache

#: bytes read per chunk of the transfer
CHUNK = 1 << 20
#: the longest wait between two tries, whatever the backoff says
MAX_DELAY = 300.0
USER_AGENT = "pnp-ovss-prepare (python urllib)"


class _Retryable(Exception):
    """A failure worth another try (the reason is logged)."""


# --- names, URLs and messages -----------------------------------------------------------------------------


def source_url(download: Download, mirror: str | None) -> str:
    """Where the download is fetched from: the mirror's copy of the official file name, or the official URL."""
    if mirror:
        return mirror.rstrip("/") + "/" + urllib.parse.quote(download.file_names[0])
    return download.url


def shown_url(url: str) -> str:
    """A URL as messages show it: any ``user:password@`` removed."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def partial_path(final: Path) -> Path:
    return final.with_name(final.name + ".part")


def rejected_path(final: Path) -> Path:
    return final.with_name(final.name + ".bad-md5")


def login_message(gated: list[Download], into: Path) -> str:
    """What to do for downloads served only after a login: register, download, put them in ``into``."""
    into = Path(into)
    lines = [f"{len(gated)} file(s) are served only after a login, so pnp-ovss cannot download them:"]
    for d in gated:
        where = d.login or f"the site serving {shown_url(d.url)}"
        lines.append(f"  {d.file_names[0]} ({d.title}): register at {where}, log in, download it "
                     f"({shown_url(d.url)}) and put it in {into}/")
    lines.append(f"then run `pnp-ovss prepare` again: it reads them from {into} "
                 f"(or pass --mirror URL, a host serving these file names)")
    return "\n".join(lines)


def backoff_delay(backoff: float, retry: int) -> float:
    """Seconds before retry number ``retry`` (1-based): backoff * 2**(retry-1), plus up to 10 % jitter."""
    base = min(backoff * 2 ** (retry - 1), MAX_DELAY)
    return base + random.uniform(0, 0.1 * base)


def parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of ``bytes 100-199/1000`` or ``bytes */1000``; None for what is not given."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start is not None else None), (int(total) if total != "*" else None)


def _content_length(resp) -> int | None:
    value = resp.headers.get("Content-Length")
    return int(value) if value and value.strip().isdigit() else None


def _is_html(resp) -> bool:
    return (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml")


def _size_text(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


# --- checking ---------------------------------------------------------------------------------------------


def mismatch(download: Download, path: Path, *, cache: VerifiedCache | None = None, log=print) -> str | None:
    """How ``path`` differs from the published size and md5 (e.g. ``md5 X, expected Y``), or None when it
    matches (or nothing is published). The md5 is computed once: a match is remembered in ``cache``."""
    size = path.stat().st_size
    if download.size is not None and size != download.size:
        return f"{size} bytes, expected {download.size}"
    if download.md5 is None or (cache is not None and cache.known(path, download.md5)):
        return None
    log(f"checking the md5 of {path} ({_size_text(size)}) ...")
    got = sources.md5_of(path)
    if got != download.md5:
        return f"md5 {got}, expected {download.md5}"
    if cache is not None:
        cache.add(path, download.md5)
    return None


def already_there(download: Download, into: Path) -> Path | None:
    """The archive or extracted folder of ``download`` found in ``into`` by :func:`sources.locate`, or None."""
    try:
        return sources.locate(download, into)[1]
    except PrepareError:
        return None


# --- the transfer -----------------------------------------------------------------------------------------


def _http_error(exc: urllib.error.HTTPError, url: str, download: Download, into: Path) -> Exception:
    """A 4xx/5xx answer as a retry (429, 5xx) or a PrepareError (the rest: retrying would not help)."""
    status, reason = exc.code, exc.reason
    if status == 429 or status >= 500:
        return _Retryable(f"HTTP {status} {reason} from {shown_url(url)}")
    if status in (401, 403) or download.login:
        return PrepareError(f"{shown_url(url)}: HTTP {status} {reason}.\n" + login_message([download], into))
    return PrepareError(f"{shown_url(url)}: HTTP {status} {reason} — not downloadable from there; check the URL "
                        f"(or the --mirror), or download {download.file_names[0]} yourself into {into}/")


def _close_quietly(resp) -> None:
    with contextlib.suppress(Exception):  # an error answer without a body has nothing to close
        resp.close()


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _transfer_once(url: str, part: Path, download: Download, into: Path, *, progress: bool, timeout: float,
                   verify: bool, log) -> None:
    """One request: append to (or restart) ``part``. Raises _Retryable when another try may finish it."""
    name = download.file_names[0]
    offset = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        _close_quietly(exc)
        if exc.code == 416 and offset:
            _, total = parse_content_range(exc.headers.get("Content-Range") if exc.headers else None)
            total = total if total is not None else (download.size if verify else None)
            if total is None or total == offset:
                log(f"{name}: the server has no bytes past the {_size_text(offset)} already in {part}; "
                    f"taken as complete, checking it")
                return
            part.unlink()
            raise _Retryable(f"{part} holds {offset} bytes but the file on the server has {total}; "
                             f"starting again from zero") from None
        raise _http_error(exc, url, download, into) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _Retryable(f"cannot connect to {shown_url(url)} ({reason})") from None
    with resp:
        if _is_html(resp):
            raise PrepareError(f"{shown_url(url)}: answered an HTML page where the {name} archive was expected "
                               f"(a login or landing page); nothing was written.\n" + login_message([download], into))
        status = getattr(resp, "status", None) or 200
        if status == 206:
            start, total = parse_content_range(resp.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise _Retryable(f"asked for bytes {offset}- and the server answered bytes from {start}; "
                                 f"starting again from zero")
            if total is None and _content_length(resp) is not None:
                total = offset + _content_length(resp)
            mode = "ab"
        else:
            if offset:
                log(f"{name}: the server ignored the Range request (HTTP {status}); "
                    f"downloading again from the start (the {_size_text(offset)} in {part} are discarded)")
            offset, total, mode = 0, _content_length(resp), "wb"
        expected = total if total is not None else (download.size if verify else None)
        _copy_body(resp, part, mode, offset, expected, name=name, progress=progress)


def _copy_body(resp, part: Path, mode: str, offset: int, expected: int | None, *, name: str, progress: bool) -> None:
    from tqdm import tqdm

    got = offset
    read = getattr(resp, "read1", resp.read)  # what has arrived: a stalled transfer keeps the bytes before it
    with open(part, mode) as fh, tqdm(total=expected, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                                      desc=name, file=sys.stderr, disable=not progress, leave=False) as bar:
        try:
            while block := read(CHUNK):
                fh.write(block)
                got += len(block)
                bar.update(len(block))
        except (http.client.HTTPException, OSError) as exc:
            fh.flush()
            raise _Retryable(f"transfer cut at {got} of {expected if expected is not None else '?'} bytes "
                             f"({exc.__class__.__name__}: {exc})") from None
    if expected is not None and got < expected:
        raise _Retryable(f"transfer cut short at {got} of {expected} bytes")


def _transfer(url: str, part: Path, download: Download, into: Path, *, progress: bool, retries: int,
              backoff: float, timeout: float, verify: bool, log, sleep) -> None:
    """Bring ``part`` to the whole file, retrying with backoff; each try resumes from the bytes in ``part``."""
    name = download.file_names[0]
    reason = ""
    for retry in range(retries + 1):
        if retry:
            delay = backoff_delay(backoff, retry)
            log(f"{name}: retry {retry}/{retries} in {delay:.1f} s: {reason}")
            sleep(delay)
        try:
            _transfer_once(url, part, download, into, progress=progress, timeout=timeout, verify=verify, log=log)
            return
        except _Retryable as exc:
            reason = str(exc)
    kept = part.stat().st_size if part.exists() else 0
    raise PrepareError(f"{shown_url(url)}: gave up after {retries} retries ({reason}); "
                       + (f"the {_size_text(kept)} fetched are kept in {part} and a rerun resumes from there"
                          if kept else f"download {name} into {into}/ yourself, or try again later"))


def _publish(part: Path, final: Path, url: str, download: Download, *, verify: bool,
             cache: VerifiedCache | None, log) -> None:
    """Rename the finished ``part`` to ``final`` when it is the official file; else keep it apart and stop."""
    problem = mismatch(download, part, log=log) if verify else None
    if problem:
        bad = rejected_path(final)
        os.replace(part, bad)
        raise PrepareError(f"{shown_url(url)}: the downloaded {download.file_names[0]} is not the official file "
                           f"({problem}); {final} was not written, the bytes are kept in {bad} for inspection — "
                           f"delete it and rerun, or try another --mirror")
    os.replace(part, final)
    if verify and download.md5 is not None and cache is not None:
        cache.add(final, download.md5)


def fetch(download: Download, into: Path, *, mirror: str | None = None, progress: bool = True, retries: int = 5,
          backoff: float = 2.0, timeout: float = 60, log=print, sleep=time.sleep, verify: bool = True,
          cache: VerifiedCache | None = None) -> Path:
    """Download ``download`` into ``into/<file_names[0]>`` (from ``mirror`` when given) and return that path.

    A complete file already there is checked and kept (no network); a ``.part`` from a cut transfer is resumed.
    ``verify=False`` skips the published size/md5 (a repacked mirror copy); ``cache`` remembers verified md5s.
    """
    into = Path(into)
    name = download.file_names[0]
    final = into / name
    if final.is_file():
        problem = mismatch(download, final, cache=cache, log=log) if verify else None
        if problem:
            raise PrepareError(f"{final}: already there but not the official {name} ({problem}); move it away "
                               f"or delete it and rerun to download it again from {shown_url(source_url(download, mirror))}")
        log(f"{name}: already in {into}, not downloaded again")
        return final
    if download.login and not mirror:
        raise PrepareError(login_message([download], into))
    url = source_url(download, mirror)
    into.mkdir(parents=True, exist_ok=True)
    part = partial_path(final)
    resumed = part.stat().st_size if part.exists() else 0
    log(f"{name}: downloading {shown_url(url)}"
        + (f" (resuming after the {_size_text(resumed)} in {part})" if resumed else ""))
    _transfer(url, part, download, into, progress=progress, retries=retries, backoff=backoff, timeout=timeout,
              verify=verify, log=log, sleep=sleep)
    _publish(part, final, url, download, verify=verify, cache=cache, log=log)
    log(f"{name}: {_size_text(final.stat().st_size)} written to {final}")
    return final


def fetch_for_dataset(name: str, into: Path, *, mirror: str | None = None, progress: bool = True, log=print,
                      **kw) -> list[Path]:
    """Fetch every download benchmark ``name`` needs into ``into`` (those already there, as an archive or an
    extracted folder, are kept); returns their paths. Downloads served only after a login are listed in one
    PrepareError, raised after every other download has been fetched."""
    keys = plans.NEEDS.get(name)
    if keys is None:
        raise PrepareError(f"{name}: no official downloads are known for this dataset "
                           f"(known: {', '.join(plans.NEEDS)})")
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    paths, gated = [], []
    for key in keys:
        download = sources.DOWNLOADS[key]
        found = already_there(download, into)
        if found is not None:
            log(f"{download.title}: found {found}, not downloaded")
            paths.append(found)
        elif download.login and not mirror:
            gated.append(download)
        else:
            paths.append(fetch(download, into, mirror=mirror, progress=progress, log=log, **kw))
    if gated:
        raise PrepareError(login_message(gated, into))
    return paths
