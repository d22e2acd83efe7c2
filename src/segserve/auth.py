"""Bearer-token authentication for both transports.

Tokens come from ``SEGSERVE_AUTH_TOKENS`` (comma separated) and ``SEGSERVE_AUTH_TOKENS_FILE`` (one a line,
``#`` comments), several at once so that clients can move to a new token before the old one is removed.
With no token configured, authentication is off. A presented token is compared with every configured
token in constant time (``hmac.compare_digest``), so timing tells nothing about how much of it matched.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from segserve.errors import Unauthenticated
from segserve.settings import Settings

SCHEME = "bearer"


class TokenAuth:
    """Checks ``Authorization: Bearer <token>`` values (HTTP header or gRPC metadata)."""

    def __init__(self, tokens: list[str]) -> None:
        self._tokens = [t.encode() for t in tokens]

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenAuth:
        """The tokens of the settings (see ``tokens``)."""
        return cls(tokens(settings))

    def check(self, authorization: str | None) -> None:
        """Raise Unauthenticated unless authentication is off or ``authorization`` carries a configured token."""
        if not self._tokens:
            return
        if not authorization:
            raise Unauthenticated("this server needs a token: send 'authorization: Bearer <token>'")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != SCHEME or not token.strip():
            raise Unauthenticated("the authorization is not of the form 'Bearer <token>'")
        presented = token.strip().encode()
        matched = False
        for known in self._tokens:  # every token is compared, whatever matched before
            matched |= hmac.compare_digest(presented, known)
        if not matched:
            raise Unauthenticated("the token is not accepted by this server")


def tokens(settings: Settings) -> list[str]:
    """The accepted bearer tokens: SEGSERVE_AUTH_TOKENS, then the lines of SEGSERVE_AUTH_TOKENS_FILE (a line
    starting with # is a comment). Raises ValueError if the file cannot be read."""
    accepted = [t.strip() for t in settings.auth_tokens.split(",") if t.strip()]
    if settings.auth_tokens_file:
        path = Path(settings.auth_tokens_file)
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ValueError(f"SEGSERVE_AUTH_TOKENS_FILE={path} cannot be read: {exc}") from exc
        accepted += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return accepted
