"""Certificates for the TLS tests, made with the openssl command: a CA, a server certificate for
localhost and 127.0.0.1, client certificates signed by the CA, and one signed by another CA."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: Client certificates made by :func:`make_pki` (subject CN; the SAN is ``DNS:<cn>.example``).
CLIENTS = ("app-1", "worker-1", "admin-1")


@dataclass
class Pki:
    directory: Path

    @property
    def ca(self) -> str:
        return str(self.directory / "ca.crt")

    @property
    def server_cert(self) -> str:
        return str(self.directory / "server.crt")

    @property
    def server_key(self) -> str:
        return str(self.directory / "server.key")

    def cert(self, name: str) -> str:
        return str(self.directory / f"{name}.crt")

    def key(self, name: str) -> str:
        return str(self.directory / f"{name}.key")

    def server_args(self, verify_client: bool = True) -> list[str]:
        args = [
            "--ssl",
            "--ssl-certificate",
            self.server_cert,
            "--ssl-key",
            self.server_key,
            "--ssl-ca-file",
            self.ca,
        ]
        return args + (["--ssl-verify-client"] if verify_client else [])

    def client_kwargs(self, name: str | None) -> dict[str, str]:
        """Keyword arguments of the client, worker and admin client for identity ``name``
        (None: only the CA)."""
        if name is None:
            return {"ssl_ca_file": self.ca}
        return {
            "ssl_ca_file": self.ca,
            "ssl_certificate": self.cert(name),
            "ssl_key": self.key(name),
        }


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _key(name: str, cwd: Path) -> None:
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=cwd)


def _signed(name: str, cn: str, san: str, ca: str, cwd: Path, server: bool = False) -> None:
    _key(name, cwd)
    _openssl(
        "req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=cwd
    )
    usage = "serverAuth" if server else "clientAuth"
    (cwd / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={usage}\n"
        f"subjectAltName={san}\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.crt",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-days",
        "3",
        "-sha256",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.crt",
        cwd=cwd,
    )


def _ca(name: str, cn: str, cwd: Path) -> None:
    _key(name, cwd)
    _openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        f"{name}.key",
        "-days",
        "3",
        "-sha256",
        "-subj",
        f"/CN={cn}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        f"{name}.crt",
        cwd=cwd,
    )


def make_pki(directory: Path) -> Pki:
    """Make every file in ``directory`` (world-readable, so that a database server's own user can
    read them too)."""
    directory.mkdir(parents=True, exist_ok=True)
    _ca("ca", "gearsql test CA", directory)
    _signed("server", "localhost", "DNS:localhost,IP:127.0.0.1", "ca", directory, server=True)
    for name in CLIENTS:
        _signed(name, name, f"DNS:{name}.example", "ca", directory)
    _ca("rogue-ca", "someone else's CA", directory)
    _signed("rogue", "app-1", "DNS:app-1.example", "rogue-ca", directory)
    for path in directory.iterdir():
        os.chmod(path, 0o644)
    os.chmod(directory, 0o755)
    return Pki(directory)
