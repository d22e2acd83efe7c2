"""A gRPC client's connection to a segserve server: the address, the channel (TLS, a client certificate, the
message-size limits), the bearer token, and the server's retry hint.

Its defaults are the server's own settings (``segserve.settings.Settings``, the same SEGSERVE_* variables), so
that a client started beside ``make serve`` needs no option: the address is ``localhost:SEGSERVE_GRPC_PORT``,
the token the first of SEGSERVE_AUTH_TOKENS (or SEGSERVE_AUTH_TOKENS_FILE), TLS is on when
SEGSERVE_TLS_CERT_FILE is set (trusting that certificate), and the message limit is
SEGSERVE_GRPC_MAX_MESSAGE_BYTES. ``segserve inspect`` and the load harness (``loadtests.harness``) connect
through it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from segserve.auth import tokens
from segserve.errors import RETRY_PUSHBACK
from segserve.settings import Settings


def first_token(settings: Settings) -> str:
    """The first bearer token the server accepts (``segserve.auth.tokens``), or empty."""
    accepted = tokens(settings)
    return accepted[0] if accepted else ""


def default_target(settings: Settings) -> str:
    """Where a server run with ``settings`` on this machine answers gRPC: ``localhost:SEGSERVE_GRPC_PORT``."""
    return f"localhost:{settings.grpc_port}"


@dataclass(frozen=True)
class Connection:
    """How to reach a server over gRPC.

    target: host:port. token: the bearer token sent with every call (empty: none). tls: connect with TLS,
    trusting ``ca_file`` (a CA or the server's own certificate; empty: the system's roots). cert_file and
    key_file: the client certificate mutual TLS asks for. max_message_bytes: the send and receive limit.
    """

    target: str
    token: str = ""
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    max_message_bytes: int = Settings.grpc_max_message_bytes

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        target: str | None = None,
        token: str | None = None,
        ca_file: str | None = None,
        cert_file: str = "",
        key_file: str = "",
    ) -> Connection:
        """The connection to a server run with ``settings``, each argument given overriding it; a CA file or a
        client certificate turns TLS on."""
        ca = settings.tls_cert_file if ca_file is None else ca_file
        return cls(
            target=target or default_target(settings),
            token=first_token(settings) if token is None else token,
            tls=bool(settings.tls or ca or cert_file),
            ca_file=ca,
            cert_file=cert_file,
            key_file=key_file,
            max_message_bytes=settings.grpc_max_message_bytes,
        )

    def problems(self) -> list[str]:
        """What would stop this connection before any call: unreadable files, a certificate without its key."""
        found = []
        if bool(self.cert_file) != bool(self.key_file):
            found.append("a client certificate needs both its certificate file and its key file")
        for label, path in (("CA", self.ca_file), ("client certificate", self.cert_file), ("key", self.key_file)):
            if path and not os.access(path, os.R_OK):
                found.append(f"the {label} file {path} cannot be read")
        if ":" not in self.target.rsplit("]", 1)[-1]:
            found.append(f"the server address {self.target!r} is not HOST:PORT")
        return found

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The bearer token as gRPC metadata (empty without a token)."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def channel(self) -> grpc.Channel:
        """A new gRPC channel to the server (TLS when ``tls``), with the message-size limits."""
        limit = self.max_message_bytes
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
        if not self.tls:
            return grpc.insecure_channel(self.target, options=options)
        with_cert = bool(self.cert_file and self.key_file)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(self.ca_file).read_bytes() if self.ca_file else None,
            private_key=Path(self.key_file).read_bytes() if with_cert else None,
            certificate_chain=Path(self.cert_file).read_bytes() if with_cert else None,
        )
        return grpc.secure_channel(self.target, credentials, options=options)


def retry_pushback(error: grpc.RpcError) -> float | None:
    """Seconds after which the server says a retry may succeed (its ``grpc-retry-pushback-ms`` trailing
    metadata), or None when it gave no hint (retrying the same call cannot help, or the call got no answer)."""
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    hint = dict(trailing or ()).get(RETRY_PUSHBACK)
    try:
        return max(0.0, int(hint) / 1000) if hint is not None else None
    except ValueError:
        return None
