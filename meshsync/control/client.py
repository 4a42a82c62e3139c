"""The CLI side of the control socket: the standard library's HTTP client on a Unix socket,
so commands start fast (no aiohttp to import)."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from meshsync.control.protocol import MAX_ANSWER, ControlError


class NoNode(ControlError):
    """No node answers on the socket: none runs."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise NoNode(f"no meshsync node is running (no answer at {self._path})") from None
        except OSError as e:
            sock.close()
            raise ControlError(f"cannot reach the node at {self._path}: {e.strerror}") from None
        self.sock = sock


def call(sock_path: Path, method: str, endpoint: str, body: dict[str, Any] | None = None,
         query: dict[str, str] | None = None, timeout: float = 30.0) -> Any:
    """One request to the node's API; its result, or ControlError with the node's reason."""
    connection = _UnixConnection(sock_path, timeout)
    try:
        response = _request(connection, method, endpoint, body, query or {})
        raw = response.read(MAX_ANSWER + 1)
    except TimeoutError:
        raise ControlError("the node did not answer in time") from None
    except (http.client.HTTPException, ConnectionError) as e:
        raise ControlError(f"the node closed the connection without answering ({e})") from None
    finally:
        connection.close()
    if len(raw) > MAX_ANSWER:
        raise ControlError("the node's answer is too long")
    try:
        answer = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ControlError(f"the node's answer is not JSON: {e}") from None
    if response.status != 200:
        error = answer.get("error") if isinstance(answer, dict) else None
        raise ControlError(str(error or f"the node answered {response.status}"))
    return answer


def events(sock_path: Path) -> Iterator[dict[str, Any] | None]:
    """The node's events as they come (`GET /v1/events`); None for each keep-alive."""
    connection = _UnixConnection(sock_path, None)
    try:
        response = _request(connection, "GET", "/v1/events", None, {})
        if response.status != 200:
            raise ControlError(f"the node refused to stream its events ({response.status})")
        data = b""
        while line := response.readline(MAX_ANSWER):
            if line.startswith(b"data: "):
                data = line[6:]
            elif line == b":" or line.startswith(b": "):
                yield None
            elif line == b"\n" and data:
                yield json.loads(data)
                data = b""
    except (http.client.HTTPException, ConnectionError, json.JSONDecodeError) as e:
        raise ControlError(f"the node's event stream broke off ({e})") from None
    finally:
        connection.close()
    raise ControlError("the node stopped")


def _request(connection: http.client.HTTPConnection, method: str, endpoint: str,
             body: dict[str, Any] | None, query: dict[str, str]) -> http.client.HTTPResponse:
    target = f"{endpoint}?{urlencode(query)}" if query else endpoint
    payload = None if body is None else json.dumps(body).encode()
    headers = {} if payload is None else {"Content-Type": "application/json"}
    connection.request(method, target, body=payload, headers=headers)
    return connection.getresponse()
