"""Container images without a registry: build a root filesystem tarball here,
``import`` it into each node's container storage over SSH.

No registry is reachable in the lab (environment.md), so images are made
locally: :func:`rootfs_tar` packs host files (a static binary, or a dynamic one
plus what ``ldd`` lists) into a tarball, and :func:`load_image` feeds it to
``{cli} import - NAME`` on a node through the SSH command's standard input (no
file is copied, no shell is involved). :func:`busybox_rootfs` is the smallest
useful image: Debian's ``busybox-static`` (``apt-get install busybox-static``)
with a symlink per applet, about 2 MB.

Use a fully qualified name (``localhost/cke-test/busybox:1``): podman prefixes
unqualified names with ``localhost/``, so the name a container reports would
differ from the one asked for.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Literal

from cke_adapters.ssh import CommandFailed, SSHPool

__all__ = [
    "BUSYBOX_CANDIDATES",
    "ImageError",
    "busybox_rootfs",
    "find_busybox",
    "load_image",
    "load_image_everywhere",
    "rootfs_tar",
]

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
"""Where Debian's ``busybox-static`` (and ``busybox``) install the binary."""

_DIRECTORIES = ("bin", "dev", "etc", "proc", "sys", "tmp", "run", "var", "root")
_IMPORT_TIMEOUT = 120.0


class ImageError(RuntimeError):
    """An image cannot be built or loaded; the message is one line."""


def find_busybox() -> Path | None:
    """A static busybox on this machine, or None."""
    for candidate in BUSYBOX_CANDIDATES:
        path = Path(candidate)
        if path.is_file() and _is_static(path):
            return path
    found = shutil.which("busybox")
    if found is not None and _is_static(Path(found)):
        return Path(found)
    return None


def _is_static(path: Path) -> bool:
    """Whether ``path`` is an ELF executable without a program interpreter
    (``PT_INTERP``), i.e. one that runs alone in an empty root filesystem."""
    try:
        with path.open("rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    if len(head) < 64 or not head.startswith(b"\x7fELF"):
        return False
    wide = head[4] == 2
    order: Literal["little", "big"] = "little" if head[5] == 1 else "big"

    def num(offset: int, size: int) -> int:
        return int.from_bytes(head[offset : offset + size], order)

    phoff, phentsize, phnum = (
        (num(32, 8), num(54, 2), num(56, 2)) if wide else (num(28, 4), num(42, 2), num(44, 2))
    )
    if phoff + phentsize * phnum > len(head):
        return False
    return all(num(phoff + i * phentsize, 4) != 3 for i in range(phnum))  # 3 = PT_INTERP


def _member_name(path: str) -> str:
    pure = PurePosixPath("/", path)
    if ".." in pure.parts:
        raise ImageError(f"image path {path!r} must not contain '..'")
    return str(pure.relative_to("/"))


def rootfs_tar(
    files: Mapping[str, Path | bytes],
    *,
    symlinks: Mapping[str, str] | None = None,
    directories: Iterable[str] = _DIRECTORIES,
    executable: Iterable[str] = (),
) -> bytes:
    """A root filesystem as an uncompressed tarball (bytes).

    ``files`` maps a path in the image to a host file (copied with its mode) or
    to content (mode 0644, or 0755 for paths in ``executable``); ``symlinks``
    maps a path in the image to its target; ``directories`` are created with
    mode 0755 (``tmp`` with 1777). Owner is root, timestamps zero, entries sorted,
    so the same input gives the same bytes.
    """
    members: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}
    execs = {_member_name(p) for p in executable}

    def add_dir(name: str) -> None:
        parts = PurePosixPath(name).parts
        for i in range(1, len(parts) + 1):
            sub = str(PurePosixPath(*parts[:i]))
            if sub not in members:
                info = tarfile.TarInfo(sub)
                info.type = tarfile.DIRTYPE
                info.mode = 0o1777 if sub == "tmp" else 0o755
                members[sub] = (info, None)

    for d in directories:
        add_dir(_member_name(d))
    for path, source in files.items():
        name = _member_name(path)
        parent = str(PurePosixPath(name).parent)
        if parent != ".":
            add_dir(parent)
        if isinstance(source, bytes):
            data, mode = source, 0o755 if name in execs else 0o644
        else:
            try:
                data = Path(source).read_bytes()
                mode = Path(source).stat().st_mode & 0o7777
            except OSError as exc:
                raise ImageError(f"cannot read {source} for image path {path}: {exc}") from exc
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        members[name] = (info, data)
    for path, target in (symlinks or {}).items():
        name = _member_name(path)
        parent = str(PurePosixPath(name).parent)
        if parent != ".":
            add_dir(parent)
        info = tarfile.TarInfo(name)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        info.mode = 0o777
        members[name] = (info, None)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(members):
            info, content = members[name]
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return buffer.getvalue()


def busybox_rootfs(busybox: Path | None = None) -> bytes:
    """A tarball of a root filesystem with a static busybox and one symlink per
    applet in ``/bin`` (``sh``, ``printf``, ``env``, ``sleep``, ``cat`` ...)."""
    binary = busybox or find_busybox()
    if binary is None:
        raise ImageError(
            "no static busybox found (looked at "
            + ", ".join(BUSYBOX_CANDIDATES)
            + "): apt-get install busybox-static"
        )
    listed = subprocess.run([str(binary), "--list"], capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        raise ImageError(f"{binary} --list failed: {' '.join(listed.stderr.split())}")
    applets = sorted({a.strip() for a in listed.stdout.split() if a.strip()} - {"busybox"})
    links = {f"bin/{a}": "busybox" for a in applets if "/" not in a}
    return rootfs_tar({"bin/busybox": binary}, symlinks=links)


async def load_image(
    pool: SSHPool,
    address: str,
    tarball: bytes,
    name: str,
    *,
    cli: str = "podman",
    changes: Sequence[str] = (),
    timeout: float = _IMPORT_TIMEOUT,
) -> None:
    """Import ``tarball`` as image ``name`` into ``address``'s container storage:
    ``{cli} import [--change=C]... - NAME`` with the tarball on standard input.
    Replaces an image of the same name."""
    argv = [cli, "import", *(f"--change={c}" for c in changes), "-", name]
    try:
        await pool.run(address, argv, stdin=tarball, timeout=timeout)
    except CommandFailed as exc:
        detail = " ".join(exc.stderr.decode("utf-8", "replace").split())
        raise ImageError(f"{address}: importing image {name} failed: {detail}") from exc


async def load_image_everywhere(
    pool: SSHPool,
    addresses: Iterable[str],
    tarball: bytes,
    name: str,
    *,
    cli: str = "podman",
    changes: Sequence[str] = (),
    timeout: float = _IMPORT_TIMEOUT,
) -> None:
    """:func:`load_image` on every node, concurrently."""
    await asyncio.gather(
        *(
            load_image(pool, a, tarball, name, cli=cli, changes=changes, timeout=timeout)
            for a in addresses
        )
    )
