"""Admin API access: bearer tokens stored as SHA-256 hashes, each with a principal name
and a role (``viewer`` < ``operator`` < ``admin``).

The tokens file (``admin_tokens_file``)::

    tokens:
      - {name: alice, role: operator, sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8}

Only hashes are stored, so the file can be read by the gateway's whole team without
handing out tokens; ``geogate admin hash-token`` prints the hash of a new token.
Comparison is constant-time over every entry, and a token is never logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

import yaml
from aiohttp import web

from geogate.shared.config import ConfigError
from geogate.shared.errors import Forbidden, Unauthorized

__all__ = ["ROLES", "Principal", "TokenBook", "hash_token"]

ROLES = ("viewer", "operator", "admin")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str

    def can(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True)
class TokenBook:
    entries: tuple[tuple[bytes, Principal], ...] = ()

    @classmethod
    def load(cls, path: str | None) -> TokenBook:
        if not path:
            return cls()
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read admin tokens {path}: {exc}") from exc
        entries = []
        for i, item in enumerate(data.get("tokens") or ()):
            if not isinstance(item, dict) or not {"name", "role", "sha256"} <= set(item):
                raise ConfigError(f"{path}: tokens[{i}] needs name, role and sha256")
            role, digest = str(item["role"]), str(item["sha256"]).lower()
            if role not in ROLES:
                raise ConfigError(f"{path}: tokens[{i}]: role must be one of {ROLES}, not {role!r}")
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ConfigError(f"{path}: tokens[{i}]: sha256 must be 64 hex digits (the token's SHA-256)")
            entries.append((bytes.fromhex(digest), Principal(str(item["name"]), role)))
        return cls(tuple(entries))

    def authenticate(self, request: web.Request) -> Principal:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("this needs an admin token: Authorization: Bearer <token>")
        if not self.entries:
            raise Unauthorized("no admin tokens are configured on this gateway (admin_tokens_file)")
        try:
            presented = hashlib.sha256(token.strip().encode()).digest()
        except UnicodeEncodeError:  # bytes that are not UTF-8 in the header: no token of ours
            raise Unauthorized("the admin token is not valid") from None
        found: Principal | None = None
        for digest, principal in self.entries:  # no early exit: the time taken says nothing
            if hmac.compare_digest(presented, digest):
                found = principal
        if found is None:
            raise Unauthorized("the admin token is not valid")
        return found

    def require(self, request: web.Request, role: str) -> Principal:
        principal = self.authenticate(request)
        if not principal.can(role):
            raise Forbidden(f"{principal.name} has role {principal.role}; this needs {role}")
        return principal
