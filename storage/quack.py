"""DuckDB's Quack protocol: the daemon serves its live store; clients query it
through `storage.reader.QuackReader`.

The extensions ship as PyPI packages pinned to DuckDB 1.5.5 and are LOADed from
the packages' own files, so nothing is downloaded at run time. Measured here:
serving and writing on one connection gives HTTP 500, so the daemon writes
through a separate cursor (the Store's writer) while its connection serves.
"""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

import duckdb


class QuackError(RuntimeError):
    """Cannot serve or reach a store over Quack; the message is one line for a person."""


def _extension_file(module_name: str, ext: str) -> str:
    module = __import__(module_name)
    base = Path(str(module.__file__)).parent / "extensions"
    found = sorted(base.glob(f"*/{ext}.duckdb_extension"))
    if not found:
        raise QuackError(f"{module_name}: {ext}.duckdb_extension not found under {base}")
    return str(found[-1])


def load_extensions(con: duckdb.DuckDBPyConnection) -> None:
    for module_name, ext in (
        ("duckdb_extension_httpfs", "httpfs"),
        ("duckdb_extension_quack", "quack"),
    ):
        con.execute(f"LOAD '{_extension_file(module_name, ext)}'")


def new_token() -> str:
    """A fresh access token: 64 hex digits (never starts with '-' on a command line)."""
    return secrets.token_hex(32)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def parse_endpoint(text: str) -> tuple[str, int]:
    """'quack:HOST:PORT' or 'HOST:PORT' -> (host, port); raises QuackError."""
    body = text.removeprefix("quack:")
    host, sep, port = body.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise QuackError(f"{text!r}: expected quack:HOST:PORT")
    return host, int(port)


def serve(con: duckdb.DuckDBPyConnection, host: str, port: int, token: str) -> str:
    """Serve `con`'s database on host:port (port 0: a free one); returns the endpoint."""
    load_extensions(con)
    if port == 0:
        port = free_port(host)
    endpoint = f"quack:{host}:{port}"
    try:
        con.execute("CALL quack_serve(?, token := ?)", [endpoint, token])
    except duckdb.Error as exc:
        raise QuackError(f"cannot serve on {host}:{port}: {str(exc).splitlines()[0]}") from exc
    return endpoint
