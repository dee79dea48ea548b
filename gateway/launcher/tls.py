"""Certificates for `geogate up --tls`: a private CA and one server certificate for
127.0.0.1/::1/localhost, made with the ``openssl`` command (no extra Python package).

Every node and gateway serves the same certificate; gateways verify nodes against the
CA, and a caller passes ``--cacert RUN_DIR/tls/ca.pem`` to curl.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LocalTLS", "make_local_tls"]

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_SERVER_EXT = """subjectAltName = IP:127.0.0.1, IP:::1, DNS:localhost
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
"""


@dataclass(frozen=True, slots=True)
class LocalTLS:
    ca: Path
    cert: Path
    key: Path


def make_local_tls(directory: Path, days: int = 30) -> LocalTLS:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("--tls needs the openssl command (Debian: apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    tls = LocalTLS(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    ca_key, csr, ext = directory / "ca.key", directory / "server.csr", directory / "server.ext"
    ext.write_text(_SERVER_EXT, encoding="ascii")
    for argv in (
        [openssl, "req", "-x509", *_EC, "-days", str(days), "-subj", "/CN=geogate local CA",
         "-keyout", str(ca_key), "-out", str(tls.ca)],
        [openssl, "req", *_EC, "-subj", "/CN=127.0.0.1", "-keyout", str(tls.key), "-out", str(csr)],
        [openssl, "x509", "-req", "-in", str(csr), "-CA", str(tls.ca), "-CAkey", str(ca_key), "-CAcreateserial",
         "-days", str(days), "-extfile", str(ext), "-out", str(tls.cert)],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"openssl failed: {' '.join(argv[1:3])}: {done.stderr.strip()[-500:]}")
    for path in (ca_key, tls.key):
        path.chmod(0o600)
    return tls
