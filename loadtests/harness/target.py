"""Where a segserve server answers and how a client reaches it: the one reader of the target address.

A client reads the server's own settings (``segserve.settings.Settings``, the same SEGSERVE_* variables):

- SEGSERVE_HTTP_PORT and SEGSERVE_GRPC_PORT give the ports; the host is SEGSERVE_GRPC_HOST unless that is a
  wildcard address (the default 0.0.0.0), then 127.0.0.1. SEGSERVE_GRPC_TARGET (host:port) overrides the
  gRPC address, and the scenarios' --http and --grpc flags override both;
- SEGSERVE_GRPC_MAX_MESSAGE_BYTES is the client's gRPC send and receive limit too;
- SEGSERVE_AUTH_TOKENS (or SEGSERVE_AUTH_TOKENS_FILE): the client sends the first token as a bearer token;
- SEGSERVE_TLS_CERT_FILE and SEGSERVE_TLS_KEY_FILE set: TLS on both transports (https), trusting the server's
  certificate file, or LOADTEST_TLS_CA_FILE when its certificate is signed by a CA. With mutual TLS
  (SEGSERVE_TLS_CLIENT_CA_FILE), the client presents LOADTEST_TLS_CERT_FILE and LOADTEST_TLS_KEY_FILE.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass

from segserve.client import Connection
from segserve.client import first_token as _first_token
from segserve.settings import Settings

LOOPBACK = "127.0.0.1"
WILDCARDS = ("", "0.0.0.0", "::", "[::]")


@dataclass(frozen=True)
class Target:
    """A server's two addresses and what a client needs to be answered there."""

    http_url: str
    grpc_target: str
    max_message_bytes: int = Settings.grpc_max_message_bytes
    token: str = ""
    tls: bool = False
    ca_file: str = ""
    client_cert_file: str = ""
    client_key_file: str = ""

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        env: Mapping[str, str] | None = None,
        http: str | None = None,
        grpc: str | None = None,
    ) -> Target:
        """The target of a server run with ``settings``; ``env`` gives the client-only variables (SEGSERVE_GRPC_TARGET,
        LOADTEST_TLS_*; default: this process's environment); ``http`` and ``grpc`` override the addresses."""
        env = os.environ if env is None else env
        host = LOOPBACK if settings.grpc_host in WILDCARDS else settings.grpc_host
        scheme = "https" if settings.tls else "http"
        return cls(
            http_url=(http or f"{scheme}://{host}:{settings.http_port}").rstrip("/"),
            grpc_target=grpc or env.get("SEGSERVE_GRPC_TARGET") or f"{host}:{settings.grpc_port}",
            max_message_bytes=settings.grpc_max_message_bytes,
            token=first_token(settings),
            tls=settings.tls,
            ca_file=env.get("LOADTEST_TLS_CA_FILE") or settings.tls_cert_file,
            client_cert_file=env.get("LOADTEST_TLS_CERT_FILE", ""),
            client_key_file=env.get("LOADTEST_TLS_KEY_FILE", ""),
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, http: str | None = None, grpc: str | None = None) -> Target:
        """The target that ``env``'s settings describe (default: this process's environment)."""
        return cls.from_settings(settings_from(env), env, http, grpc)

    @property
    def connection(self) -> Connection:
        """The gRPC connection (``segserve.client``): the address, TLS, the client certificate, the token."""
        return Connection(
            target=self.grpc_target,
            token=self.token,
            tls=self.tls,
            ca_file=self.ca_file,
            cert_file=self.client_cert_file,
            key_file=self.client_key_file,
            max_message_bytes=self.max_message_bytes,
        )

    @property
    def authorization(self) -> tuple[tuple[str, str], ...]:
        """The bearer token as (header, value) pairs: gRPC metadata, or HTTP headers; empty without a token."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


def settings_from(env: Mapping[str, str] | None = None) -> Settings:
    """The settings that ``env`` gives a server (default: this process's environment)."""
    return Settings.from_env(env)


def first_token(settings: Settings) -> str:
    """The first accepted bearer token (``segserve.client.first_token``), or empty."""
    return _first_token(settings)


def add_target_arguments(parser: argparse.ArgumentParser, transports: tuple[str, ...] = ("grpc", "http")) -> None:
    """Add --grpc and --http (each only if in ``transports``), overriding the addresses the settings give."""
    if "http" in transports:
        parser.add_argument("--http", help="HTTP base URL (default: http://127.0.0.1:$SEGSERVE_HTTP_PORT)")
    if "grpc" in transports:
        parser.add_argument(
            "--grpc", help="gRPC host:port (default: $SEGSERVE_GRPC_TARGET, else 127.0.0.1:$SEGSERVE_GRPC_PORT)"
        )


def target_from_args(args: argparse.Namespace) -> Target:
    """The target of the environment's settings, with the --http and --grpc of ``add_target_arguments``."""
    return Target.from_env(http=getattr(args, "http", None), grpc=getattr(args, "grpc", None))
