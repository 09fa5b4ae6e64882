"""API groups behind a header key, as tritonserver's --http-restricted-api / --grpc-restricted-protocol.

`<api>[,<api>...]:<key>=<value>`, repeatable; an API may be in one group only. A request to
a restricted API must carry header (HTTP) or metadata (gRPC) `<key>` equal to `<value>`,
compared in constant time; otherwise it is refused with 403 / PERMISSION_DENIED.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from modelserve.errors import Forbidden

# Triton's API names; the ones modelserve does not serve (shared-memory, trace, logging) are accepted and moot
APIS = (
    "health",
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
)


@dataclass(frozen=True)
class Restriction:
    key: str  # lower case: HTTP header names and gRPC metadata keys are case-insensitive
    value: str


@dataclass(frozen=True)
class Restrictions:
    by_api: dict[str, Restriction] = field(default_factory=dict)

    @classmethod
    def parse(cls, specs: Sequence[str], flag: str) -> Restrictions:
        """Parse the flag values; ValueError with a one-line reason for a malformed one."""
        by_api: dict[str, Restriction] = {}
        for spec in specs:
            apis, sep, pair = spec.partition(":")
            key, eq, value = pair.partition("=")
            if not sep or not eq or not apis or not key.strip() or not value:
                raise ValueError(f"{flag}={spec!r}: expected <api>[,<api>...]:<key>=<value>")
            restriction = Restriction(key.strip().lower(), value)
            for api in (a.strip() for a in apis.split(",")):
                if api not in APIS:
                    raise ValueError(f"{flag}: unknown api {api!r}; expected one of {', '.join(APIS)}")
                if api in by_api:
                    raise ValueError(f"{flag}: api {api!r} can not be specified in multiple config groups")
                by_api[api] = restriction
        return cls(by_api)

    def check(self, api: str, header: Callable[[str], str | None]) -> None:
        """Refuse the call unless it carries the restricted API's key and value."""
        restriction = self.by_api.get(api)
        if restriction is None:
            return
        given = header(restriction.key)
        if given is None or not hmac.compare_digest(given.encode(), restriction.value.encode()):
            raise Forbidden(f"This API is restricted, expecting header '{restriction.key}'")
