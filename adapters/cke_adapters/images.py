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

The lab's images (docs/adr/0009-lab-images.md)
----------------------------------------------
:func:`build_lab_images` makes the three images the engine runs on lab nodes
from what this machine has, :func:`load_lab_images` imports them on every node,
and :func:`lab_engine_images` is the ``cke_core`` ``Images`` value naming them:

* **etcd** (``localhost/cke-lab/etcd:3.4.23-<digest>``): Debian's
  ``/usr/bin/etcd`` and the libraries ``ldd`` lists, a static busybox, and
  ``/usr/local/bin/etcd-shim`` as ENTRYPOINT (:func:`etcd_shim_script`), which
  turns the etcd 3.6 flags CKE renders into their etcd 3.4 forms; data in
  ``/var/lib/etcd`` (``ETCD_DATA_DIR``, a volume the engine mounts).
* **tools** (``localhost/cke-lab/tools:<digest>``): Debian's python3 with the
  part of its standard library that ``rivers`` needs, ``/usr/local/bin/rivers``
  (``cke_daemon/rivers.py``), busybox, an empty ``/cni_plugins/bin``.
* **kubernetes**: without binaries, ``localhost/cke-lab/kubernetes-stand-in:<digest>``,
  busybox whose ENTRYPOINT ignores its arguments and runs until SIGTERM
  (:func:`kubernetes_stand_in_script`); with a directory of the five binaries,
  ``localhost/cke-lab/kubernetes:<digest>`` with them on ``PATH`` (CKE's
  arguments start with the program name).

``<digest>`` is the start of the SHA-256 of the tarball and its ``--change``
options: the same content always gets the same name, and a changed one a new
name, so a node that lists the name has exactly this image. Tarballs are
cached in a directory, indexed by a hash of their inputs (the builder's own
source, each input file's path, size and modification time, generated
content), so a second build reads one small index file.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Literal

import attrs

from cke_adapters.runtime import image_listed
from cke_adapters.ssh import CommandFailed, SSHPool
from cke_core.render.images import Images

__all__ = [
    "BUSYBOX_CANDIDATES",
    "DEFAULT_IMAGE_CACHE",
    "ETCD_SHIM",
    "KUBERNETES_BINARIES",
    "LAB_REPOSITORY",
    "ImageError",
    "LabImage",
    "LabImages",
    "build_lab_images",
    "busybox_rootfs",
    "etcd_shim_script",
    "find_busybox",
    "find_system_python",
    "kubernetes_stand_in_script",
    "lab_engine_images",
    "ldd_libraries",
    "load_image",
    "load_image_everywhere",
    "load_lab_images",
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


def _require_busybox(busybox: Path | None = None) -> Path:
    binary = busybox or find_busybox()
    if binary is None:
        raise ImageError(
            "no static busybox found (looked at "
            + ", ".join(BUSYBOX_CANDIDATES)
            + "): apt-get install busybox-static"
        )
    return binary


def _busybox_links(binary: Path) -> dict[str, str]:
    """``bin/<applet>`` -> ``busybox`` for every applet of ``binary``."""
    listed = subprocess.run([str(binary), "--list"], capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        raise ImageError(f"{binary} --list failed: {' '.join(listed.stderr.split())}")
    applets = sorted({a.strip() for a in listed.stdout.split() if a.strip()} - {"busybox"})
    return {f"bin/{a}": "busybox" for a in applets if "/" not in a}


def busybox_rootfs(busybox: Path | None = None) -> bytes:
    """A tarball of a root filesystem with a static busybox and one symlink per
    applet in ``/bin`` (``sh``, ``printf``, ``env``, ``sleep``, ``cat`` ...)."""
    binary = _require_busybox(busybox)
    return rootfs_tar({"bin/busybox": binary}, symlinks=_busybox_links(binary))


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


# =========================================================================== lab images

LAB_REPOSITORY = "localhost/cke-lab"
"""Where the lab's images are named: ``localhost/cke-lab/<image>:<tag>``."""

DEFAULT_IMAGE_CACHE = Path("/var/cache/cke-lab/images")
"""Default directory of built tarballs (see :func:`build_lab_images`)."""

KUBERNETES_BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
)
"""What a ``--k8s-bin`` directory must hold for a real Kubernetes image."""

ETCD_SHIM = "/usr/local/bin/etcd-shim"
"""ENTRYPOINT of the lab's etcd image (:func:`etcd_shim_script`)."""

_ETCD_BINARY = "/usr/local/bin/etcd"
_ETCD_DATA_DIR = "/var/lib/etcd"
_STAND_IN = "/usr/local/bin/kubernetes-stand-in"
_RIVERS = "/usr/local/bin/rivers"
_K8S_BIN_DIR = "/usr/local/kubernetes/bin"
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_IMAGE_DIRECTORIES = (*_DIRECTORIES, "usr/local/bin", "var/tmp")
_CACHE_FORMAT = 1
_DIGEST_LENGTH = 12
_SYSTEM_PYTHON = Path("/usr/bin/python3")

# Standard-library packages rivers never reaches at run time, though a static
# scan finds them through optional or function-level imports (asyncio -> ssl,
# concurrent.futures -> multiprocessing, inspect -> importlib.metadata ...).
# The integration tests run rivers from the image, so a wrong guess fails there.
_RIVERS_EXCLUDES = (
    "_bz2", "_hashlib", "_lzma", "_pydecimal", "_ssl", "bz2", "ctypes", "curses", "dbm",
    "decimal", "distutils", "doctest", "email", "ensurepip", "ftplib", "http", "idlelib",
    "imaplib", "importlib.metadata", "importlib.resources", "lib2to3", "lzma", "mailbox",
    "multiprocessing", "nntplib", "pdb", "pydoc", "pydoc_data", "readline", "smtplib", "sqlite3",
    "ssl", "tarfile", "test", "tkinter", "turtle", "turtledemo", "unittest", "urllib", "venv",
    "xml", "xmlrpc", "zipfile",
)  # fmt: skip
_PRUNED_PARTS = frozenset({"test", "tests", "idlelib", "tkinter", "ensurepip", "__pycache__"})

# Run by the image's own interpreter: the modules it loads at start-up, and the
# closure of rivers' imports (modulefinder scans function bodies too).
_PYTHON_PROBE = """
import sys
startup = sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})
import json, modulefinder, sysconfig
finder = modulefinder.ModuleFinder(excludes=[e for e in sys.argv[2].split(",") if e])
finder.run_script(sys.argv[1])
print(json.dumps({
    "startup": startup,
    "found": sorted({m.__file__ for m in finder.modules.values() if m.__file__}),
    "missing": sorted(n for n, by in finder.badmodules.items() if "__main__" in by),
    "stdlib": sysconfig.get_paths()["stdlib"],
}))
"""


# Run by the image's interpreter: byte-compile each (image path, host file) into
# <argv[1]>/<cache path of the image path>, as unchecked-hash .pyc files (valid
# whatever the sources' timestamps: the tarball zeroes them, and the read-only
# root file system could not take a .pyc written at run time).
_PYTHON_COMPILE = """
import importlib.util, json, py_compile, sys
mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
for image_path, host_path in json.load(sys.stdin):
    target = sys.argv[1] + importlib.util.cache_from_source(image_path)
    py_compile.compile(host_path, target, image_path, True, 0, mode)
"""


def etcd_shim_script(etcd: str = _ETCD_BINARY) -> bytes:
    """The etcd image's ENTRYPOINT (busybox ``sh``): CKE renders etcd 3.6 flags,
    Debian's etcd 3.4 refuses the unknown ones, so exactly these are rewritten
    and every other argument is passed on as it came (never split or expanded):

    * ``--feature-gates=InitialCorruptCheck=V`` -> ``--experimental-initial-corrupt-check=V``
    * ``--feature-gates=CompactHashCheck=V`` -> nothing (etcd 3.4 has no such check)
    * ``--corrupt-check-time=D`` -> ``--experimental-corrupt-check-time=D``

    also spelled with one dash or with the value as the next argument (Go's
    ``flag`` accepts all four); after ``--`` nothing is rewritten. Any other
    feature gate is refused (exit 2) rather than silently dropped. Then it
    ``exec``s ``etcd``.
    """
    if not etcd.startswith("/") or "'" in etcd:
        raise ValueError(f"etcd {etcd!r}: give an absolute path without quotes")
    return f"""#!/bin/sh
# cke-lab etcd image: etcd 3.6 flags rendered by CKE -> etcd 3.4 (docs/adr/0009-lab-images.md).
#   --feature-gates=InitialCorruptCheck=V  ->  --experimental-initial-corrupt-check=V
#   --feature-gates=CompactHashCheck=V     ->  (dropped: etcd 3.4 has no compact hash check)
#   --corrupt-check-time=D                 ->  --experimental-corrupt-check-time=D
# Also -flag=V, --flag V and -flag V; nothing after "--". Every other argument
# is passed on unchanged: the list is rebuilt in "$@", never split or expanded.
want=
literal=
for arg do
    shift
    if [ -n "$literal" ]; then
        set -- "$@" "$arg"
        continue
    fi
    if [ -n "$want" ]; then
        flag=$want
        value=$arg
        want=
    else
        case $arg in
            --) literal=1; set -- "$@" "$arg"; continue ;;
            --feature-gates=*|-feature-gates=*) flag=feature-gates; value=${{arg#*=}} ;;
            --feature-gates|-feature-gates) want=feature-gates; continue ;;
            --corrupt-check-time=*|-corrupt-check-time=*)
                flag=corrupt-check-time; value=${{arg#*=}} ;;
            --corrupt-check-time|-corrupt-check-time) want=corrupt-check-time; continue ;;
            *) set -- "$@" "$arg"; continue ;;
        esac
    fi
    if [ "$flag" = corrupt-check-time ]; then
        set -- "$@" "--experimental-corrupt-check-time=$value"
        continue
    fi
    rest=$value,
    while [ -n "$rest" ]; do
        gate=${{rest%%,*}}
        rest=${{rest#*,}}
        case $gate in
            '') ;;
            InitialCorruptCheck=*)
                set -- "$@" "--experimental-initial-corrupt-check=${{gate#*=}}" ;;
            CompactHashCheck=*) ;;
            *) printf 'etcd-shim: feature gate %s has no etcd 3.4 equivalent\\n' "$gate" >&2
               exit 2 ;;
        esac
    done
done
if [ -n "$want" ]; then
    printf 'etcd-shim: flag --%s needs a value\\n' "$want" >&2
    exit 2
fi
exec '{etcd}' "$@"
""".encode()


def kubernetes_stand_in_script() -> bytes:
    """ENTRYPOINT of the Kubernetes stand-in image: accepts any arguments,
    ignores them, and runs until SIGTERM (then exits 0 at once: as PID 1 a
    shell only receives the signals it traps). The trap is set before the one
    line it prints, so whoever has read that line knows TERM is handled."""
    return b"""#!/bin/sh
# cke-lab Kubernetes stand-in (docs/adr/0009-lab-images.md): no Kubernetes
# binaries in this lab; the engine still runs the containers with CKE's
# arguments. Ignores them and runs until SIGTERM.
trap 'exit 0' TERM INT
printf 'cke-lab kubernetes stand-in: not running %s (%s arguments ignored)\\n' "${1:-}" "$#"
while :; do
    sleep 3600 &
    wait $!
done
"""


def _is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def ldd_libraries(binary: Path) -> dict[str, Path]:
    """What a dynamic ELF file needs at run time (its shared libraries and the
    program interpreter), as image path -> host file, from ``ldd``. Empty for a
    static binary or a script."""
    if not _is_elf(binary) or _is_static(binary):
        return {}
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ImageError(f"ldd {binary} failed: {' '.join(proc.stderr.split()) or 'no output'}")
    libraries: dict[str, Path] = {}
    for line in proc.stdout.splitlines():
        words = line.split()
        if not words:
            continue
        if "not found" in line:
            raise ImageError(f"{binary} needs {words[0]}, which ldd cannot find")
        path = words[2] if len(words) > 2 and words[1] == "=>" else words[0]
        if path.startswith("/"):  # not linux-vdso.so.1
            libraries[path] = Path(path)
    return libraries


def _needs(files: Mapping[str, Path | bytes]) -> dict[str, Path]:
    """The libraries of every host file in ``files``."""
    libraries: dict[str, Path] = {}
    for source in files.values():
        if isinstance(source, Path):
            libraries.update(ldd_libraries(source))
    return libraries


def find_system_python() -> tuple[Path, Path]:
    """Debian's interpreter and its standard library: ``(/usr/bin/python3.X,
    /usr/lib/python3.X)``. Not a virtualenv's or pyenv's: the image needs the
    interpreter whose standard library sits where it will look for it."""
    interpreter = _SYSTEM_PYTHON.resolve()
    match = re.fullmatch(r"python(\d+\.\d+)", interpreter.name)
    stdlib = interpreter.parent.parent / "lib" / interpreter.name
    if match is None or not interpreter.is_file() or not (stdlib / "os.py").is_file():
        raise ImageError(
            f"no system python3 with its standard library ({_SYSTEM_PYTHON} -> {interpreter}): "
            "apt-get install python3"
        )
    return interpreter, stdlib


def _default_rivers_source() -> Path:
    """``cke_daemon/rivers.py`` beside this package (a wheel) or one level up (a
    source tree). Read as a file: adapters do not import the daemon package."""
    here = Path(__file__).resolve().parent
    for root in (here.parent, here.parent.parent):
        candidate = root / "cke_daemon" / "rivers.py"
        if candidate.is_file():
            return candidate
    raise ImageError("cke_daemon/rivers.py not found next to cke_adapters; pass rivers_source")


def _rivers_stdlib(python: Path, stdlib: Path, rivers: Path) -> dict[str, Path]:
    """The standard-library files rivers needs, image path -> host file."""
    found = json.loads(
        _image_python(
            python,
            [_PYTHON_PROBE, str(rivers), ",".join(_RIVERS_EXCLUDES)],
            f"scanning the imports of {rivers}",
        )
    )
    if found["missing"]:
        raise ImageError(
            f"{rivers} imports {', '.join(found['missing'])}: not available in the tools image "
            "(rivers must use the standard library only)"
        )
    root = Path(found["stdlib"])
    outside = [f for f in found["found"] if not Path(f).is_relative_to(root) and f != str(rivers)]
    if outside:
        raise ImageError(f"{rivers} needs {outside[0]}, outside the standard library {root}")
    wanted = {Path(f) for f in [*found["startup"], *found["found"]] if Path(f).is_relative_to(root)}
    wanted.update((root / "encodings").glob("*.py"))  # codecs are looked up by name
    files: dict[str, Path] = {}
    for path in sorted(wanted):
        relative = path.relative_to(root)
        if _PRUNED_PARTS.intersection(relative.parts[:-1]):
            continue
        files[str(stdlib / relative)] = path
    return files


def _bytecode(python: Path, sources: Mapping[str, Path]) -> dict[str, bytes]:
    """Unchecked-hash ``.pyc`` files of ``sources`` (image path -> host file),
    compiled by the image's interpreter: image path of each ``.pyc`` -> content."""
    with tempfile.TemporaryDirectory(prefix="cke-lab-pyc-") as out:
        pairs = [[image, str(host)] for image, host in sources.items()]
        _image_python(
            python, [_PYTHON_COMPILE, out], "byte-compiling the tools image", json.dumps(pairs)
        )
        root = Path(out)
        return {"/" + str(f.relative_to(root)): f.read_bytes() for f in root.rglob("*.pyc")}


def _image_python(python: Path, script: list[str], what: str, stdin: str = "") -> str:
    """The standard output of ``python -I -c SCRIPT ARGS...`` (the image's
    interpreter); ``ImageError`` naming ``what`` with the end of its stderr."""
    proc = subprocess.run(
        [str(python), "-I", "-c", *script],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        detail = " ".join(proc.stderr.split())[-300:]
        raise ImageError(f"{what} failed: {detail}")
    return proc.stdout


def _stat_input(path: Path) -> list[object]:
    """What identifies an input file in a cache key (a rebuild reinstalls it)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ImageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return [str(path), str(path.resolve()), st.st_size, st.st_mtime_ns]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@attrs.frozen
class LabImage:
    """One built lab image: its name, its cached tarball and the ``--change``
    options ``podman import`` applies (ENTRYPOINT, ENV, VOLUME)."""

    name: str
    tarball: Path
    changes: tuple[str, ...]
    size: int

    def read(self) -> bytes:
        try:
            return self.tarball.read_bytes()
        except OSError as exc:
            raise ImageError(f"cannot read the tarball of {self.name}: {exc}") from exc


@attrs.frozen
class LabImages:
    """The lab's etcd, tools and Kubernetes images (stand-in or real)."""

    etcd: LabImage
    tools: LabImage
    kubernetes: LabImage
    kubernetes_stand_in: bool

    def all(self) -> tuple[LabImage, ...]:
        return (self.etcd, self.tools, self.kubernetes)


def lab_engine_images(images: LabImages) -> Images:
    """The ``Images`` the engine decides with in the lab: etcd, tools and
    kubernetes are the lab's names; pause, CoreDNS and unbound keep CKE's pins
    (the lab runs no pods)."""
    return Images(etcd=images.etcd.name, kubernetes=images.kubernetes.name, tools=images.tools.name)


@attrs.frozen
class _Recipe:
    """How to build one image: ``inputs`` identify it in the cache; ``build``
    returns the tarball and the tag's prefix (e.g. the etcd version)."""

    repository: str
    inputs: tuple[object, ...]
    changes: tuple[str, ...]
    build: Callable[[], tuple[bytes, str]]


def _builder_digest() -> str:
    """This module's source: changing how images are built invalidates the cache."""
    return _digest(Path(__file__).read_bytes())


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cached(cache_dir: Path, recipe: _Recipe) -> LabImage:
    """The recipe's image from the cache, building it on a miss."""
    key_material = json.dumps(
        {
            "format": _CACHE_FORMAT,
            "builder": _builder_digest(),
            "repository": recipe.repository,
            "inputs": recipe.inputs,
            "changes": recipe.changes,
        },
        sort_keys=True,
    )
    key = _digest(key_material.encode())
    index = cache_dir / f"{recipe.repository}-{key[:32]}.json"
    try:
        entry = json.loads(index.read_text())
        tarball = cache_dir / entry["tarball"]
        if tarball.stat().st_size == entry["size"]:
            return LabImage(entry["name"], tarball, tuple(entry["changes"]), entry["size"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    data, tag_prefix = recipe.build()
    digest = _digest(data + b"\0".join(c.encode() for c in recipe.changes))
    name = f"{LAB_REPOSITORY}/{recipe.repository}:{tag_prefix}{digest[:_DIGEST_LENGTH]}"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tarball = cache_dir / f"{recipe.repository}-{digest}.tar"
        if not (tarball.is_file() and tarball.stat().st_size == len(data)):
            _write_atomic(tarball, data)
        entry = {
            "name": name,
            "tarball": tarball.name,
            "changes": list(recipe.changes),
            "size": len(data),
        }
        _write_atomic(index, json.dumps(entry, indent=1).encode())
    except OSError as exc:
        raise ImageError(f"cannot write the image cache {cache_dir}: {exc}") from exc
    return LabImage(name, tarball, recipe.changes, len(data))


def _etcd_recipe(etcd: Path, busybox: Path) -> _Recipe:
    shim = etcd_shim_script()
    libraries = ldd_libraries(etcd)
    changes = (
        f'ENTRYPOINT ["{ETCD_SHIM}"]',
        f"ENV PATH={_PATH}",
        f"ENV ETCD_DATA_DIR={_ETCD_DATA_DIR}",
        f"VOLUME {_ETCD_DATA_DIR}",
    )

    def build() -> tuple[bytes, str]:
        proc = subprocess.run([str(etcd), "--version"], capture_output=True, text=True, check=False)
        version = re.search(r"etcd Version:\s*([0-9][0-9A-Za-z.+-]*)", proc.stdout)
        files: dict[str, Path | bytes] = {
            _ETCD_BINARY: etcd,
            **libraries,
            "bin/busybox": busybox,
            ETCD_SHIM: shim,
        }
        tar = rootfs_tar(
            files,
            symlinks=_busybox_links(busybox),
            directories=(*_IMAGE_DIRECTORIES, _ETCD_DATA_DIR),
            executable=[ETCD_SHIM],
        )
        return tar, f"{version.group(1)}-" if version else ""

    inputs = tuple(_stat_input(p) for p in (etcd, *libraries.values(), busybox))
    return _Recipe("etcd", (*inputs, _digest(shim)), changes, build)


def _tools_recipe(rivers: Path, busybox: Path) -> _Recipe:
    python, stdlib = find_system_python()
    try:
        source = rivers.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read {rivers}: {exc.strerror or exc}") from exc
    script = f"#!{python} -I\n".encode() + source
    changes = (f"ENV PATH={_PATH}", "ENV LANG=C.UTF-8")

    def build() -> tuple[bytes, str]:
        modules = _rivers_stdlib(python, stdlib, rivers)
        sources = {image: host for image, host in modules.items() if image.endswith(".py")}
        files: dict[str, Path | bytes] = {str(python): python, **modules}
        files.update(_needs(files))
        files.update(_bytecode(python, sources))
        files["bin/busybox"] = busybox
        files[_RIVERS] = script
        links = _busybox_links(busybox)
        if python.name != "python3":
            links[str(python.with_name("python3")).lstrip("/")] = python.name
        tar = rootfs_tar(
            files,
            symlinks=links,
            directories=(*_IMAGE_DIRECTORIES, "cni_plugins/bin"),
            executable=[_RIVERS],
        )
        return tar, ""

    watched = (python, *ldd_libraries(python).values(), stdlib, stdlib / "os.py", busybox)
    inputs = tuple(_stat_input(p) for p in watched)
    return _Recipe("tools", (*inputs, _digest(script)), changes, build)


def _stand_in_recipe(busybox: Path) -> _Recipe:
    script = kubernetes_stand_in_script()
    changes = (f'ENTRYPOINT ["{_STAND_IN}"]', f"ENV PATH={_PATH}")

    def build() -> tuple[bytes, str]:
        files: dict[str, Path | bytes] = {"bin/busybox": busybox, _STAND_IN: script}
        tar = rootfs_tar(
            files,
            symlinks=_busybox_links(busybox),
            directories=_IMAGE_DIRECTORIES,
            executable=[_STAND_IN],
        )
        return tar, ""

    return _Recipe("kubernetes-stand-in", (_stat_input(busybox), _digest(script)), changes, build)


def _kubernetes_binaries(k8s_bin: Path) -> dict[str, Path]:
    if not k8s_bin.is_dir():
        raise ImageError(f"--k8s-bin {k8s_bin}: not a directory")
    binaries = {name: k8s_bin / name for name in KUBERNETES_BINARIES}
    missing = [n for n, p in binaries.items() if not (p.is_file() and os.access(p, os.X_OK))]
    if missing:
        raise ImageError(
            f"--k8s-bin {k8s_bin}: no executable {', '.join(missing)} "
            f"(needs {', '.join(KUBERNETES_BINARIES)})"
        )
    return binaries


def _kubernetes_recipe(k8s_bin: Path, busybox: Path) -> _Recipe:
    binaries = _kubernetes_binaries(k8s_bin)
    changes = (f"ENV PATH={_K8S_BIN_DIR}:{_PATH}",)

    def build() -> tuple[bytes, str]:
        files: dict[str, Path | bytes] = {
            f"{_K8S_BIN_DIR}/{name}": path for name, path in binaries.items()
        }
        files.update(_needs(files))
        files["bin/busybox"] = busybox
        tar = rootfs_tar(files, symlinks=_busybox_links(busybox), directories=_IMAGE_DIRECTORIES)
        return tar, ""

    inputs = tuple(_stat_input(p) for p in (*binaries.values(), busybox))
    return _Recipe("kubernetes", inputs, changes, build)


_built: dict[tuple[str, ...], LabImages] = {}
_build_lock = threading.Lock()


def build_lab_images(
    cache_dir: Path = DEFAULT_IMAGE_CACHE,
    *,
    k8s_bin: Path | None = None,
    rivers_source: Path | None = None,
    etcd: Path | None = None,
    busybox: Path | None = None,
) -> LabImages:
    """The lab's images, built once per process and cache directory.

    ``k8s_bin``: a directory with the five Kubernetes binaries for a real
    Kubernetes image (default: the stand-in). ``etcd`` defaults to the etcd on
    ``PATH`` (Debian's ``etcd-server``); ``rivers_source`` to this installation's
    ``cke_daemon/rivers.py``. Raises :class:`ImageError` (one line) when an
    input is missing.
    """
    cache = Path(cache_dir).absolute()
    binary = _require_busybox(busybox)
    rivers = (rivers_source or _default_rivers_source()).absolute()
    etcd_path = etcd or (Path(found) if (found := shutil.which("etcd")) else None)
    if etcd_path is None:
        raise ImageError("etcd not found on PATH: apt-get install etcd-server")
    k8s = Path(k8s_bin).absolute() if k8s_bin is not None else None
    memo = (str(cache), str(k8s), str(rivers), str(etcd_path), str(binary))
    with _build_lock:
        built = _built.get(memo)
        if built is None:
            kubernetes = (
                _kubernetes_recipe(k8s, binary) if k8s is not None else _stand_in_recipe(binary)
            )
            built = LabImages(
                etcd=_cached(cache, _etcd_recipe(etcd_path.absolute(), binary)),
                tools=_cached(cache, _tools_recipe(rivers, binary)),
                kubernetes=_cached(cache, kubernetes),
                kubernetes_stand_in=k8s is None,
            )
            _built[memo] = built
        return built


async def load_lab_images(
    ssh_pool: SSHPool,
    addresses: Iterable[str],
    runtime_cli: str = "podman",
    images: LabImages | None = None,
    *,
    cache_dir: Path = DEFAULT_IMAGE_CACHE,
    timeout: float = _IMPORT_TIMEOUT,
) -> dict[str, tuple[str, ...]]:
    """Import the lab's images on every node, nodes in parallel; a node that
    already lists an image (same name = same content) skips it. Returns the
    names imported per node. ``images`` defaults to :func:`build_lab_images`
    of ``cache_dir``."""
    if images is None:
        images = await asyncio.to_thread(build_lab_images, cache_dir)
    contents: dict[str, bytes] = {}

    async def one(address: str) -> tuple[str, ...]:
        try:
            out = await ssh_pool.run(
                address,
                [runtime_cli, "image", "list", "--format", "{{.Repository}}:{{.Tag}}"],
                timeout=timeout,
            )
        except CommandFailed as exc:
            detail = " ".join(exc.stderr.decode("utf-8", "replace").split())
            raise ImageError(f"{address}: listing images failed: {detail}") from exc
        listed = [line.strip() for line in out.stdout.decode().splitlines() if line.strip()]
        imported = []
        for image in images.all():
            if image_listed(image.name, listed):
                continue
            if image.name not in contents:
                contents[image.name] = await asyncio.to_thread(image.read)
            await load_image(
                ssh_pool,
                address,
                contents[image.name],
                image.name,
                cli=runtime_cli,
                changes=image.changes,
                timeout=timeout,
            )
            imported.append(image.name)
        return tuple(imported)

    targets = list(dict.fromkeys(addresses))
    results = await asyncio.gather(*(one(a) for a in targets))
    return dict(zip(targets, results, strict=True))
