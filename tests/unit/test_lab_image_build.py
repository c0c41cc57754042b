"""The lab's images without a lab: the etcd flag shim and the stand-in's entry
point run under this machine's busybox, and the tarballs are checked member by
member (paths, modes, entry points, what the tools image leaves out).

Running the images on nodes: tests/integration/test_lab_images.py.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import tarfile
from pathlib import Path

import pytest
from cke_adapters import images as images_module
from cke_adapters.images import (
    ETCD_SHIM,
    KUBERNETES_BINARIES,
    ImageError,
    LabImages,
    build_lab_images,
    etcd_shim_script,
    find_busybox,
    kubernetes_stand_in_script,
    lab_engine_images,
    ldd_libraries,
)
from missing import component_missing

from cke_core.render.images import DEFAULT_PAUSE_IMAGE, Images

BUSYBOX = find_busybox()


def require(busybox: bool = True, etcd: bool = False) -> None:
    """The host tools these tests package; missing ones fail in CI (``component_missing``)."""
    if busybox and BUSYBOX is None:
        component_missing("no static busybox (busybox-static)")
    if etcd and not Path("/usr/bin/etcd").is_file():
        component_missing("no Debian etcd (etcd-server)")


@pytest.fixture
def needs_busybox_fixture() -> None:
    require()


needs_busybox = pytest.mark.usefixtures("needs_busybox_fixture")

SHIM_36_FLAGS = ["--feature-gates=InitialCorruptCheck=true,CompactHashCheck=true"]

HOSTILE = [
    "--name=a b  c",
    "it's",
    'say "hi"',
    "$(touch {marker})",
    "`touch {marker}`",
    "${{HOME}}",
    "line1\nline2",
    "trailing newline\n",
    "",
    " ",
    "*",
    "?",
    "-",
    "\\",
    "a;b|c&d>e<f",
    "--initial-cluster=a=https://10.0.0.1:2380,b=https://10.0.0.2:2380",
    "--feature-gatesX=1",
    "--name=--corrupt-check-time=1h",
    "ünïcödé",
]


def recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A fake etcd that writes its argument count and arguments, NUL-separated."""
    out = tmp_path / "argv"
    fake = tmp_path / "fake-etcd"
    fake.write_text(f"#!{BUSYBOX} sh\nprintf '%s\\0' \"$#\" \"$@\" > '{out}'\n")
    fake.chmod(0o755)
    return fake, out


def run_shim(
    tmp_path: Path, args: list[str], cwd: Path | None = None
) -> tuple[subprocess.CompletedProcess[bytes], list[str] | None]:
    fake, out = recorder(tmp_path)
    script = tmp_path / "etcd-shim"
    script.write_bytes(etcd_shim_script(str(fake)))
    proc = subprocess.run(
        [str(BUSYBOX), "sh", str(script), *args],
        capture_output=True,
        cwd=cwd or tmp_path,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
    )
    if not out.exists():
        return proc, None
    words = out.read_bytes().split(b"\0")[:-1]
    count = int(words[0])
    received = [w.decode() for w in words[1:]]
    assert len(received) == count
    return proc, received


# --------------------------------------------------------------------------- the etcd shim


@needs_busybox
def test_shim_passes_hostile_arguments_literally_and_translates_the_36_flags(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "pwned"
    hostile = [h.format(marker=marker) for h in HOSTILE]
    proc, received = run_shim(tmp_path, [*hostile, *SHIM_36_FLAGS, "--corrupt-check-time=3h"])
    assert proc.returncode == 0, proc.stderr
    assert received == [
        *hostile,
        "--experimental-initial-corrupt-check=true",
        "--experimental-corrupt-check-time=3h",
    ]
    assert not marker.exists()
    assert {p.name for p in tmp_path.iterdir()} == {"argv", "fake-etcd", "etcd-shim"}


@needs_busybox
def test_shim_with_no_arguments_passes_none(tmp_path: Path) -> None:
    proc, received = run_shim(tmp_path, [])
    assert proc.returncode == 0
    assert received == []


@needs_busybox
@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["--corrupt-check-time=3h"], ["--experimental-corrupt-check-time=3h"]),
        (["-corrupt-check-time=3h"], ["--experimental-corrupt-check-time=3h"]),
        (["--corrupt-check-time", "1h30m"], ["--experimental-corrupt-check-time=1h30m"]),
        (["-corrupt-check-time", "5m"], ["--experimental-corrupt-check-time=5m"]),
        (
            ["--feature-gates=InitialCorruptCheck=false"],
            ["--experimental-initial-corrupt-check=false"],
        ),
        (["--feature-gates", "CompactHashCheck=true"], []),
        (
            ["-feature-gates=CompactHashCheck=true,InitialCorruptCheck=true"],
            ["--experimental-initial-corrupt-check=true"],
        ),
        (["--feature-gates="], []),
        # after "--" nothing is a flag any more (Go's flag package)
        (["--", "--corrupt-check-time=3h"], ["--", "--corrupt-check-time=3h"]),
        # a value that looks like the flag is still a value
        (
            ["--corrupt-check-time", "--feature-gates=Foo=true"],
            ["--experimental-corrupt-check-time=--feature-gates=Foo=true"],
        ),
        (["--experimental-corrupt-check-time=1h"], ["--experimental-corrupt-check-time=1h"]),
    ],
)
def test_shim_translates_exactly_the_etcd_36_flags(
    tmp_path: Path, given: list[str], expected: list[str]
) -> None:
    proc, received = run_shim(tmp_path, ["--name=x", *given, "--enable-pprof=true"])
    assert proc.returncode == 0, proc.stderr
    assert received == ["--name=x", *expected, "--enable-pprof=true"]


@needs_busybox
@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            ["--feature-gates=InitialCorruptCheck=true,StopGRPCServiceOnDefrag=true"],
            "etcd-shim: feature gate StopGRPCServiceOnDefrag=true has no etcd 3.4 equivalent",
        ),
        (["--feature-gates=InitialCorruptCheck"], "feature gate InitialCorruptCheck has no"),
        (["--corrupt-check-time"], "etcd-shim: flag --corrupt-check-time needs a value"),
        (["--feature-gates"], "etcd-shim: flag --feature-gates needs a value"),
    ],
)
def test_shim_refuses_what_it_cannot_translate(
    tmp_path: Path, given: list[str], message: str
) -> None:
    proc, received = run_shim(tmp_path, given)
    assert proc.returncode == 2
    assert received is None  # etcd never ran
    err = proc.stderr.decode()
    assert message in err
    assert err.count("\n") == 1


@needs_busybox
def test_shim_makes_the_core_s_etcd_flags_acceptable_to_etcd_34(tmp_path: Path) -> None:
    require(etcd=True)
    etcd = Path("/usr/bin/etcd")
    flags = [*SHIM_36_FLAGS, "--corrupt-check-time=3h", "--enable-pprof=true"]
    refused = subprocess.run([str(etcd), *flags, "--version"], capture_output=True, check=False)
    assert refused.returncode != 0  # why the shim exists
    script = tmp_path / "etcd-shim"
    script.write_bytes(etcd_shim_script(str(etcd)))
    accepted = subprocess.run(
        [str(BUSYBOX), "sh", str(script), *flags, "--version"], capture_output=True, check=False
    )
    assert accepted.returncode == 0, accepted.stderr
    assert b"etcd Version: 3.4" in accepted.stdout


def test_shim_target_must_be_a_plain_absolute_path() -> None:
    with pytest.raises(ValueError, match="absolute"):
        etcd_shim_script("etcd")
    with pytest.raises(ValueError, match="absolute"):
        etcd_shim_script("/x'y")


# --------------------------------------------------------------------------- the stand-in


@needs_busybox
def test_stand_in_ignores_its_arguments_and_exits_0_on_term(tmp_path: Path) -> None:
    script = tmp_path / "stand-in"
    script.write_bytes(kubernetes_stand_in_script())
    marker = tmp_path / "pwned"
    proc = subprocess.Popen(
        [str(BUSYBOX), "sh", str(script), "kube-apiserver", f"$(touch {marker})", "--x=y z"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert (
            line
            == "cke-lab kubernetes stand-in: not running kube-apiserver (3 arguments ignored)\n"
        )
        assert proc.poll() is None  # still running
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not marker.exists()


# --------------------------------------------------------------------------- ldd


def test_ldd_lists_the_libraries_of_a_dynamic_binary_and_nothing_for_static_ones(
    tmp_path: Path,
) -> None:
    python = Path("/usr/bin/python3")
    libraries = ldd_libraries(python.resolve())
    assert any(p.startswith("/lib64/ld-linux") or "/ld-linux" in p for p in libraries)
    assert any(Path(p).name.startswith("libc.so") for p in libraries)
    assert all(Path(p).is_absolute() and v == Path(p) for p, v in libraries.items())
    if BUSYBOX is not None:
        assert ldd_libraries(BUSYBOX) == {}
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    assert ldd_libraries(script) == {}


# --------------------------------------------------------------------------- built tarballs


def members(tarball: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(tarball) as tar:
        return {m.name: m for m in tar.getmembers()}


def content(tarball: Path, name: str) -> bytes:
    with tarfile.open(tarball) as tar:
        extracted = tar.extractfile(name)
        assert extracted is not None
        return extracted.read()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[LabImages, Path]:
    require(etcd=True)
    cache = tmp_path_factory.mktemp("image-cache")
    return build_lab_images(cache, etcd=Path("/usr/bin/etcd")), cache


def test_etcd_image_has_etcd_its_libraries_busybox_and_the_shim_as_entrypoint(
    built: tuple[LabImages, Path],
) -> None:
    images, _ = built
    etcd = images.etcd
    assert etcd.name.startswith("localhost/cke-lab/etcd:3.4.")
    found = members(etcd.tarball)
    assert found["usr/local/bin/etcd"].mode & 0o111
    assert found[ETCD_SHIM.lstrip("/")].mode == 0o755
    assert content(etcd.tarball, ETCD_SHIM.lstrip("/")) == etcd_shim_script()
    for library in ldd_libraries(Path("/usr/bin/etcd")):
        assert library.lstrip("/") in found
    assert found["bin/sh"].issym()
    assert found["bin/sh"].linkname == "busybox"
    for directory in ("var/lib/etcd", "tmp", "var/tmp", "run"):
        assert found[directory].isdir()
    assert etcd.changes == (
        f'ENTRYPOINT ["{ETCD_SHIM}"]',
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV ETCD_DATA_DIR=/var/lib/etcd",
        "VOLUME /var/lib/etcd",
    )


def test_tools_image_has_python_the_stdlib_rivers_needs_and_nothing_pruned(
    built: tuple[LabImages, Path],
) -> None:
    images, _ = built
    tools = images.tools
    found = members(tools.tarball)
    python = Path("/usr/bin/python3").resolve()
    assert str(python).lstrip("/") in found
    assert found["usr/bin/python3"].issym()
    rivers = content(tools.tarball, "usr/local/bin/rivers")
    assert rivers.startswith(f"#!{python} -I\n".encode())
    assert b"def main(" in rivers
    assert found["usr/local/bin/rivers"].mode == 0o755
    stdlib = f"usr/lib/{python.name}"
    for module in ("asyncio/base_events.py", "argparse.py", "logging/__init__.py", "os.py"):
        assert f"{stdlib}/{module}" in found
        cached = [n for n in found if n.startswith(f"{stdlib}/") and "__pycache__" in n]
        assert cached  # byte-compiled: the read-only root cannot take .pyc at run time
    for pruned in ("test/", "idlelib/", "tkinter/", "ensurepip/", "unittest/", "lib2to3/"):
        assert not any(n.startswith(f"{stdlib}/{pruned}") for n in found), pruned
    assert found["cni_plugins/bin"].isdir()
    assert "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in tools.changes
    assert not any(c.startswith("ENTRYPOINT") for c in tools.changes)  # args start with rivers


def test_stand_in_image_runs_the_stand_in_script(built: tuple[LabImages, Path]) -> None:
    images, _ = built
    assert images.kubernetes_stand_in
    kube = images.kubernetes
    assert kube.name.startswith("localhost/cke-lab/kubernetes-stand-in:")
    assert content(kube.tarball, "usr/local/bin/kubernetes-stand-in") == (
        kubernetes_stand_in_script()
    )
    assert kube.changes[0] == 'ENTRYPOINT ["/usr/local/bin/kubernetes-stand-in"]'


def test_images_are_built_once_and_named_by_their_content(
    built: tuple[LabImages, Path],
) -> None:
    images, cache = built
    assert build_lab_images(cache, etcd=Path("/usr/bin/etcd")) is images  # memoised
    tarballs = {p: p.stat().st_mtime_ns for p in cache.glob("*.tar")}
    assert len(tarballs) == 3
    images_module._built.clear()  # a new process: only the cache is left
    again = build_lab_images(cache, etcd=Path("/usr/bin/etcd"))
    assert again == images
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.tar")} == tarballs  # not rebuilt
    for image in images.all():
        digest = image.name.rsplit(":", 1)[1].rsplit("-", 1)[-1]
        assert digest in image.tarball.name
    index = json.loads(next(cache.glob("etcd-*.json")).read_text())
    assert index["name"] == images.etcd.name


def test_a_corrupt_cache_entry_is_rebuilt(built: tuple[LabImages, Path], tmp_path: Path) -> None:
    images, cache = built
    copy = tmp_path / "cache"
    copy.mkdir()
    for f in cache.iterdir():
        copy.joinpath(f.name).write_bytes(f.read_bytes())
    stand_in = copy / images.kubernetes.tarball.name
    stand_in.write_bytes(b"truncated")
    images_module._built.clear()
    rebuilt = build_lab_images(copy, etcd=Path("/usr/bin/etcd"))
    assert rebuilt.kubernetes.name == images.kubernetes.name
    assert stand_in.stat().st_size == images.kubernetes.size


def test_engine_images_name_the_lab_images_and_keep_the_other_pins(
    built: tuple[LabImages, Path],
) -> None:
    images, _ = built
    value = lab_engine_images(images)
    assert isinstance(value, Images)
    assert (value.etcd, value.tools, value.kubernetes) == (
        images.etcd.name,
        images.tools.name,
        images.kubernetes.name,
    )
    assert value.pause == DEFAULT_PAUSE_IMAGE


def fake_kubernetes(directory: Path, names: tuple[str, ...] = KUBERNETES_BINARIES) -> Path:
    directory.mkdir()
    for name in names:
        binary = directory / name
        binary.write_text(f"#!/bin/sh\necho {name}\n")
        binary.chmod(0o755)
    return directory


def test_k8s_bin_gives_a_real_kubernetes_image_with_the_binaries_on_path(
    built: tuple[LabImages, Path], tmp_path: Path
) -> None:
    _, cache = built
    k8s = fake_kubernetes(tmp_path / "k8s")
    images = build_lab_images(cache, k8s_bin=k8s, etcd=Path("/usr/bin/etcd"))
    assert not images.kubernetes_stand_in
    kube = images.kubernetes
    assert kube.name.startswith("localhost/cke-lab/kubernetes:")
    found = members(kube.tarball)
    for name in KUBERNETES_BINARIES:
        assert found[f"usr/local/kubernetes/bin/{name}"].mode & 0o111
    path = "/usr/local/kubernetes/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert kube.changes == (f"ENV PATH={path}",)
    assert found["bin/sh"].issym()


def test_k8s_bin_without_every_binary_is_one_clear_error(
    built: tuple[LabImages, Path], tmp_path: Path
) -> None:
    _, cache = built
    k8s = fake_kubernetes(tmp_path / "k8s", KUBERNETES_BINARIES[:3])
    with pytest.raises(ImageError) as failed:
        build_lab_images(cache, k8s_bin=k8s, etcd=Path("/usr/bin/etcd"))
    message = str(failed.value)
    assert message == (
        f"--k8s-bin {k8s}: no executable kubelet, kube-proxy (needs "
        + ", ".join(KUBERNETES_BINARIES)
        + ")"
    )
    with pytest.raises(ImageError, match="not a directory"):
        build_lab_images(cache, k8s_bin=tmp_path / "absent", etcd=Path("/usr/bin/etcd"))


def test_tarballs_are_reproducible(built: tuple[LabImages, Path]) -> None:
    images, _ = built
    with tarfile.open(fileobj=io.BytesIO(images.etcd.read())) as tar:
        assert {m.mtime for m in tar.getmembers()} == {0}
        assert {(m.uid, m.gid) for m in tar.getmembers()} == {(0, 0)}


def test_rivers_must_use_the_standard_library_only(tmp_path: Path) -> None:
    require(etcd=True)
    rivers = tmp_path / "rivers.py"
    rivers.write_text("import os\nimport cke_no_such_module\n")
    with pytest.raises(ImageError) as failed:
        build_lab_images(tmp_path / "cache", rivers_source=rivers, etcd=Path("/usr/bin/etcd"))
    assert str(failed.value) == (
        f"{rivers} imports cke_no_such_module: not available in the tools image "
        "(rivers must use the standard library only)"
    )
    hack = Path("/usr/lib/python3/dist-packages/_distutils_hack/__init__.py")
    if hack.is_file():  # a module Debian's python finds outside its standard library
        rivers.write_text("import _distutils_hack\n")
        with pytest.raises(ImageError, match=r"needs .*_distutils_hack.*outside the standard"):
            build_lab_images(tmp_path / "cache", rivers_source=rivers, etcd=Path("/usr/bin/etcd"))
