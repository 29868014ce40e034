"""The pooled HTTP client of a judge: one deadline per call, a cap on the body, and the
body scrubbed of the API key before anyone parses it."""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Mapping

import httpx

from cj_runner.judges._http_secrets import scrub_bytes
from cj_runner.judges.config import JudgeConfig

#: The most bytes of an answer body read; a longer answer fails the call (``malformed``).
MAX_BODY_BYTES = 1024 * 1024


class _WholeCallTransport(httpx.AsyncBaseTransport):
    """A transport with one deadline for the whole call and a cap on the body.

    httpx's ``timeout`` bounds each network operation, so a server trickling one byte per
    second never times out; here connect, headers and body together must finish within
    ``deadline_s``. The body is read (at most ``max_body`` bytes) and scrubbed of the API
    key before anyone parses it, so no part of an answer can carry the key further.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        deadline_s: float,
        max_body: int,
        secret: str | None,
    ) -> None:
        self._inner = inner
        self._deadline_s = deadline_s
        self._max_body = max_body
        self._secret = secret

    def _timeout(self, request: httpx.Request) -> httpx.ReadTimeout:
        return httpx.ReadTimeout(
            f"no complete answer within timeout_s = {self._deadline_s:g} s", request=request
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline_s
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._inner.handle_async_request(request)
                chunks: list[bytes] = []
                size = 0
                try:
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > self._max_body:
                            raise httpx.DecodingError(
                                f"the answer body is larger than {self._max_body} bytes",
                                request=request,
                            )
                        chunks.append(chunk)
                finally:
                    await response.aclose()
        except TimeoutError:
            raise self._timeout(request) from None
        body = scrub_bytes(b"".join(chunks), self._secret)
        dropped = (b"content-length", b"content-encoding", b"transfer-encoding")
        headers = [(k, v) for k, v in response.headers.raw if k.lower() not in dropped]
        return httpx.Response(
            response.status_code,
            headers=headers,
            content=body,
            request=request,
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes tens of milliseconds: do it once per process.
    return httpx.create_ssl_context()


def make_client(
    config: JudgeConfig,
    headers: Mapping[str, str],
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    secret: str | None = None,
    max_body: int = MAX_BODY_BYTES,
) -> httpx.AsyncClient:
    """One pooled client per judge: ``max_connections`` connections; each call must finish
    within ``timeout_s`` (connect, headers and body together); bodies are read up to
    ``max_body`` bytes (:data:`MAX_BODY_BYTES`) and scrubbed of ``secret`` before they
    are parsed."""
    limits = httpx.Limits(
        max_connections=config.max_connections,
        max_keepalive_connections=config.max_connections,
    )

    def guarded(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        return _WholeCallTransport(
            inner, deadline_s=config.timeout_s, max_body=max_body, secret=secret
        )

    client = httpx.AsyncClient(
        timeout=httpx.Timeout(config.timeout_s),
        limits=limits,
        verify=_ssl_context(),
        headers={"accept-encoding": "identity", **dict(headers)},
        transport=transport,  # None: httpx's own, and proxies from the environment
        follow_redirects=False,
    )
    # httpx offers no hook around its default and proxy transports (HTTPS_PROXY, ... get
    # transports of their own), so each one is wrapped in place: the deadline, the cap
    # and the scrubbing apply whichever way a call goes out
    client._transport = guarded(client._transport)
    client._mounts = {
        pattern: None if mounted is None else guarded(mounted)
        for pattern, mounted in client._mounts.items()
    }
    return client
