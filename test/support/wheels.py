"""Build small, real wheels for upload tests without any build backend."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def make_wheel(directory: Path, name: str, version: str, payload: str = "", data: bytes = b"") -> Path:
    """Write ``name-version-py3-none-any.whl`` with one module and return its path.

    ``payload`` goes into the module so that different wheels differ in bytes;
    ``data`` into a file beside it, stored as it is (a wheel of a given size).
    """
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f'VERSION = "{version}"\nPAYLOAD = {payload!r}\n'.encode(),
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: sentry test wheel\n"
        ).encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: sentry-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    if data:
        files[f"{module}/data.bin"] = data
    record_lines = [f"{path},{_record_hash(content)},{len(content)}" for path, content in files.items()]
    record_lines.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record_lines) + "\n").encode()
    wheel = Path(directory) / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, content in files.items():
            info = zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            stored = path.endswith(".bin")  # random bytes: deflating gains nothing
            archive.writestr(info, content, compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
    return wheel
