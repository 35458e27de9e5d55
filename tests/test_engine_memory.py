"""The engine-only process stays small: loading AOT kernels imports no package metadata."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from support.fresh_python import fresh_python

from kernels.build import cachepaths


def test_dist_version_reads_what_importlib_metadata_reads() -> None:
    assert cachepaths._dist_version("numba") == metadata.version("numba")
    assert cachepaths._dist_version("numpy") == metadata.version("numpy")
    assert cachepaths._dist_version("no_such_package_here") == "none"


def test_naming_the_aot_module_imports_no_package_metadata() -> None:
    # importlib.metadata pulls in email, zipfile, csv...: 3 MB of peak RSS in the agent
    code = (
        "import sys\n"
        "from kernels.build import cachepaths\n"
        "from kernels.exec import backend\n"
        "cachepaths.module_name('generic')\n"
        "heavy = {'importlib.metadata', 'email', 'zipfile', 'numba'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    assert fresh_python(code).strip() == "[]"


def test_engine_import_path_loads_no_openssl() -> None:
    # hashlib loads OpenSSL's libcrypto (3.7 MB of peak RSS); kernels.digest does without
    code = (
        "import sys\n"
        "import edge_agent.engine.engine, edge_agent.bundle_io\n"
        "from kernels.exec import backend\n"
        "print(sorted({'_hashlib', 'hashlib'} & set(sys.modules)))\n"
    )
    assert fresh_python(code).strip() == "[]"


def test_digest_matches_hashlib(tmp_path: Path) -> None:
    import hashlib

    from kernels import digest

    data = bytes(range(256)) * 5000  # over one read block of file_sha256 when it is small
    h = digest.sha256(data[:7])
    h.update(data[7:])
    assert h.digest() == hashlib.sha256(data).digest()
    assert digest.sha256().hexdigest() == hashlib.sha256().hexdigest()
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert digest.file_sha256(path, block=4096) == hashlib.sha256(data).hexdigest()
    assert cachepaths.file_sha256(path) == hashlib.sha256(data).hexdigest()
