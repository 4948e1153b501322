"""A throwaway CA with a server and a client certificate, made with the openssl command."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _signed(directory: Path, name: str, extensions: str) -> tuple[Path, Path]:
    key, request, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    extfile = directory / f"{name}.ext"
    extfile.write_text(extensions)
    _openssl("req", *EC_KEY, "-keyout", key, "-out", request, "-subj", f"/CN={name}")
    _openssl(
        "x509", "-req", "-in", request, "-CA", directory / "ca.crt", "-CAkey", directory / "ca.key",
        "-CAcreateserial", "-days", "2", "-out", cert, "-extfile", extfile,
    )  # fmt: skip
    return cert, key


def make_tls_files(directory: Path) -> TlsFiles:
    _openssl(
        "req", "-x509", *EC_KEY, "-keyout", directory / "ca.key", "-out", directory / "ca.crt",
        "-subj", "/CN=crisync test CA", "-days", "2",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign,cRLSign",
    )  # fmt: skip
    common = "basicConstraints=CA:FALSE\nauthorityKeyIdentifier=keyid\n"
    server_cert, server_key = _signed(
        directory,
        "localhost",
        common + "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    client_cert, client_key = _signed(
        directory, "crisync", common + "extendedKeyUsage=clientAuth\n"
    )
    return TlsFiles(directory / "ca.crt", server_cert, server_key, client_cert, client_key)


def password_listener(port: int, password_file: Path) -> str:
    """mosquitto.conf text: a listener that wants a user and password from the file."""
    return f"""
listener {port} 127.0.0.1
allow_anonymous false
password_file {password_file}
"""


def tls_listener(port: int, files: TlsFiles, password_file: Path) -> str:
    """mosquitto.conf text: TLS, a client certificate and a password required."""
    tls = (
        f"cafile {files.ca}\ncertfile {files.server_cert}\nkeyfile {files.server_key}\n"
        "require_certificate true\n"
    )
    return password_listener(port, password_file) + tls


def password_file(path: Path, username: str, password: str) -> Path:
    path.touch(mode=0o600)
    subprocess.run(
        ["mosquitto_passwd", "-b", str(path), username, password],
        check=True,
        capture_output=True,
    )
    return path
