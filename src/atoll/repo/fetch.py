"""The network seam: tuf's fetcher interface plus ranged, bounded downloads.

:class:`RangeFetcher` extends ``tuf.ngclient.fetcher.FetcherInterface`` (used
by the ``Updater`` for metadata) with :meth:`RangeFetcher.fetch_range`, which
the client uses to resume a target download and to fetch pack chunks. Every
request has a connect and a read timeout, and every download a byte bound and
a deadline, so a stalled or endless server cannot hang a host.
"""

from __future__ import annotations

import abc
import re
import time
from collections.abc import Iterator, Mapping

import urllib3
from tuf.api import exceptions as tuf_exc
from tuf.ngclient.fetcher import FetcherInterface

__all__ = ["HttpFetcher", "RangeFetcher"]


class RangeFetcher(FetcherInterface):
    """A tuf fetcher that can also fetch a byte range."""

    deadline: float = 600.0

    @abc.abstractmethod
    def _fetch_range(self, url: str, start: int, end: int | None) -> tuple[int, Iterator[bytes]]:
        """Fetch bytes ``start`` .. ``end`` (inclusive; None: to the end).

        Returns:
            (offset the data starts at: ``start``, or 0 when the server ignored
            the range), chunks.
        """

    def fetch_range(self, url: str, start: int, end: int | None,
                    max_length: int) -> tuple[int, Iterator[bytes]]:
        """Like :meth:`_fetch_range`, bounded in bytes and in time.

        Raises:
            tuf.api.exceptions.DownloadError: (and subclasses) on any failure,
                more than ``max_length`` bytes, or the deadline passing.
        """
        try:
            offset, chunks = self._fetch_range(url, start, end)
        except tuf_exc.DownloadError:
            raise
        except Exception as exc:
            raise tuf_exc.DownloadError(f"failed to download {url}: {exc}") from exc
        return offset, self._bounded(url, chunks, max_length)

    def _bounded(self, url: str, chunks: Iterator[bytes], max_length: int) -> Iterator[bytes]:
        got = 0
        stop = time.monotonic() + self.deadline
        try:
            for chunk in chunks:
                got += len(chunk)
                if got > max_length:
                    raise tuf_exc.DownloadLengthMismatchError(
                        f"{url}: server sent more than the signed length ({max_length} bytes)")
                if time.monotonic() > stop:
                    raise tuf_exc.SlowRetrievalError(
                        f"{url}: download took longer than {self.deadline:.0f}s")
                yield chunk
        except tuf_exc.DownloadError:
            raise
        except Exception as exc:
            raise tuf_exc.DownloadError(f"failed to download {url}: {exc}") from exc


class HttpFetcher(RangeFetcher):
    """HTTP(S) through urllib3 with timeouts; honours ``Range``."""

    def __init__(self, *, connect_timeout: float = 10.0, read_timeout: float = 30.0,
                 deadline: float = 600.0, chunk_size: int = 256 << 10):
        self.timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self.deadline = deadline
        self.chunk_size = chunk_size
        self.pool = urllib3.PoolManager(retries=urllib3.Retry(total=2, redirect=3, read=0),
                                        headers={"User-Agent": "atoll"})

    def _request(self, url: str, headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
        try:
            resp = self.pool.request("GET", url, headers=headers, preload_content=False,
                                     timeout=self.timeout)
        except urllib3.exceptions.MaxRetryError as exc:
            if isinstance(exc.reason, urllib3.exceptions.TimeoutError):
                raise tuf_exc.SlowRetrievalError(f"{url}: timed out") from exc
            raise tuf_exc.DownloadError(f"{url}: {exc.reason}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise tuf_exc.DownloadError(f"{url}: {exc}") from exc
        if resp.status >= 400:
            resp.release_conn()
            raise tuf_exc.DownloadHTTPError(f"{url}: HTTP {resp.status}", resp.status)
        return resp

    def _chunks(self, resp: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
        try:
            # read1 hands over whatever arrived, so a connection cut mid-way still
            # leaves the bytes received on disk (a later run resumes from there).
            while chunk := resp.read1(self.chunk_size):
                yield chunk
        except urllib3.exceptions.TimeoutError as exc:
            raise tuf_exc.SlowRetrievalError("read timed out") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise tuf_exc.DownloadError(f"transfer failed: {exc}") from exc
        finally:
            resp.release_conn()

    def _fetch(self, url: str) -> Iterator[bytes]:
        resp = self._request(url, {})
        return self._bounded(url, self._chunks(resp), 1 << 40)

    def _fetch_range(self, url: str, start: int, end: int | None) -> tuple[int, Iterator[bytes]]:
        if not start and end is None:
            return 0, self._chunks(self._request(url, {}))
        resp = self._request(url, {"Range": f"bytes={start}-{'' if end is None else end}"})
        if resp.status != 206:
            return 0, self._chunks(resp)  # the server ignores ranges: the whole file
        length = _partial_length(resp.headers, start, end)
        if length is None:
            # A 206 that is not the range asked for (no or another Content-Range, or a
            # Content-Length that does not fit it): where its bytes start is unknown, so it
            # is handled as a server that ignores ranges: the whole file, from byte 0.
            resp.release_conn()
            return 0, self._chunks(self._request(url, {}))
        return start, self._exactly(url, self._chunks(resp), length)

    @staticmethod
    def _exactly(url: str, chunks: Iterator[bytes], length: int) -> Iterator[bytes]:
        got = 0
        for chunk in chunks:
            got += len(chunk)
            if got > length:
                raise tuf_exc.DownloadError(
                    f"{url}: the server sent more than the {length} bytes its Content-Range "
                    "announced (a broken server or proxy)")
            yield chunk


_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def _partial_length(headers: Mapping[str, str], start: int, end: int | None) -> int | None:
    """The length of a 206 answer to ``Range: bytes=start-end`` when its headers say it
    is exactly that range (or, for an open end, the range from ``start``); else None."""
    m = _CONTENT_RANGE.match((headers.get("Content-Range") or "").strip())
    if m is None:
        return None
    first, last = int(m.group(1)), int(m.group(2))
    if first != start or last < first or (end is not None and last > end):
        return None
    length = last - first + 1
    declared = headers.get("Content-Length")
    if declared is not None and declared.strip() != str(length):
        return None
    return length
