"""The image test's images: the base (pulled, or made with debootstrap), Kafka, Prometheus.

No registry may answer here, so the base image is made from Debian's packages: `debootstrap`
(bookworm, minbase, python3) into a folder of the cache, then `docker import`. It is the one
bootstrapped tree: the connector's build stages, Kafka's image (the JRE added with apt in a
`docker build`) and Prometheus' image all start from it. The folder and the imported image
carry a key made from what they were built from (suite, packages, the tidy step), so a change
there makes a new one instead of reusing a stale one. The other images are always `docker
build`: the engine's layer cache skips what did not change. The Debian mirror is the one apt
already uses, read at run time and handed to builds as APT_MIRROR; none is left in an image.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from image_test_engine import EngineError, docker

REPO = Path(__file__).resolve().parent.parent
KAFKA_CONTEXT = REPO / "tools" / "image_test_kafka"
PULL_TIMEOUT_S = 60.0

PYTHON_BASE = "local/python:3.11-bookworm"
PYTHON_PULL = "python:3.11-slim-bookworm"  # the Dockerfile's default, when a registry answers
SUITE = "bookworm"
PACKAGES = "python3,python3-pip,python3-venv,python-is-python3,ca-certificates"
TIDY_VERSION = "1"  # bump when _tidy changes what goes into the tree
KAFKA_IMAGE = "local/kafka:4.1.1"
PROMETHEUS_IMAGE = "local/prometheus:debian"
# On every image built or imported here: what prune() may remove once a newer one replaced it.
LABEL = "org.rpt-connector.image-test"
KEY_LABEL = "org.rpt-connector.image-test.key"


def exists(image: str, env: dict[str, str]) -> bool:
    return _inspect(image, "{{.Id}}", env) is not None


def _inspect(image: str, template: str, env: dict[str, str]) -> str | None:
    try:
        return docker("image", "inspect", "--format", template, image, env=env, timeout=30)
    except EngineError:
        return None


def size_mb(image: str, env: dict[str, str]) -> float:
    return int(docker("image", "inspect", "--format", "{{.Size}}", image, env=env)) / 1e6


def base_key() -> str:
    """What the bootstrapped tree is made from, hashed: the cache's key for it."""
    made_from = f"{SUITE} minbase {PACKAGES} tidy {TIDY_VERSION}"
    return hashlib.sha256(made_from.encode()).hexdigest()[:12]


def python_base(cache: Path, env: dict[str, str]) -> str:
    """The PYTHON_IMAGE for the Dockerfile: the registry's when it answers, else a local one."""
    key = base_key()
    label = _inspect(PYTHON_BASE, '{{index .Config.Labels "' + KEY_LABEL + '"}}', env)
    if label is not None and label.strip() == key:
        return PYTHON_BASE
    if exists(PYTHON_PULL, env) or _pulled(PYTHON_PULL, env):
        return PYTHON_PULL
    _import_debootstrapped(PYTHON_BASE, cache, env, key)
    return PYTHON_BASE


def _pulled(image: str, env: dict[str, str]) -> bool:
    try:
        docker("pull", "--quiet", image, env=env, timeout=PULL_TIMEOUT_S)
    except EngineError as exc:
        print(f"image-test: no registry serves {image}; making a local base image", flush=True)
        print("  " + str(exc).splitlines()[-1][:200], flush=True)
        return False
    return True


def rootfs(cache: Path, key: str) -> Path:
    """The bootstrapped tree for `key` (made now when missing); trees of other keys go."""
    tree = cache / f"rootfs-python-{key}"
    for stale in cache.glob("rootfs-*"):
        if stale != tree and not stale.name.endswith(".partial"):
            _unmount_all(stale)
            shutil.rmtree(stale)
    if not tree.is_dir():
        _debootstrap(tree, PACKAGES, cache / "debs")
    return tree


def _import_debootstrapped(image: str, cache: Path, env: dict[str, str], key: str) -> None:
    tree = rootfs(cache, key)
    started = time.monotonic()
    changes = [
        "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
        f"LABEL {LABEL}=1 {KEY_LABEL}={key}",
        'CMD ["/bin/bash"]',
    ]
    args = [arg for change in changes for arg in ("--change", change)]
    tar = subprocess.Popen(["tar", "-C", str(tree), "-c", "."], stdout=subprocess.PIPE)
    try:
        docker("import", *args, "-", image, env=env, stdin=tar.stdout)
    finally:
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait()
    print(f"image-test: imported {image} in {time.monotonic() - started:.0f}s", flush=True)


def _debootstrap(rootfs: Path, include: str, debs: Path) -> None:
    """bookworm minbase + `include` into rootfs (atomically: a half-made folder is never used)."""
    partial = rootfs.with_name(rootfs.name + ".partial")
    _remove_partial(partial)
    debs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"image-test: debootstrap bookworm minbase + {include} (a few minutes)", flush=True)
    cmd = ["debootstrap", "--variant=minbase", f"--cache-dir={debs}", f"--include={include}"]
    result = subprocess.run(
        [*cmd, SUITE, str(partial), debian_mirror()], capture_output=True, text=True
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip()[-2000:]
        raise EngineError(f"debootstrap failed ({result.returncode}):\n{tail}")
    _unmount_all(partial)  # debootstrap's /proc, should it have left it mounted
    _tidy(partial)
    partial.rename(rootfs)
    print(f"image-test: debootstrap done in {time.monotonic() - started:.0f}s", flush=True)


def _remove_partial(partial: Path) -> None:
    """Delete what an interrupted debootstrap left, never through a mount it left behind.

    debootstrap mounts /proc (and may bind /dev or /sys) inside the new root; a deletion
    that crossed such a mount would reach the host's own files.
    """
    if partial.exists():
        _unmount_all(partial)
        shutil.rmtree(partial)


def _unmount_all(root: Path) -> None:
    for _ in range(2):
        for mount in sorted(_mounts_under(root), key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
    if _mounts_under(root):
        raise EngineError(f"{root}: mounts remain inside ({_mounts_under(root)}); unmount them")


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve()) + "/"
    lines = Path("/proc/mounts").read_text().splitlines()
    return [line.split()[1] for line in lines if line.split()[1].startswith(prefix)]


def _tidy(rootfs: Path) -> None:
    """As in python:*-slim: pip usable, no mirror, no package lists, this network's CA bundle."""
    (rootfs / "etc/apt/sources.list").write_text("")
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if bundle.is_file():
        shutil.copy(bundle, rootfs / "etc/ssl/certs/ca-certificates.crt")
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / junk).glob("*"):
            if path.is_file():
                path.unlink()


def debian_mirror() -> str:
    """The first Debian mirror apt is configured with (deb822 .sources, then sources.list)."""
    for source in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        text = source.read_text()
        for block in text.split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", block, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", block, re.M)
            if uris and suites and "bookworm" in suites.group(1).split():
                return uris.group(1)
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        match = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", legacy.read_text(), re.M)
        if match:
            return match.group(1)
    raise EngineError("no Debian bookworm mirror configured for apt; debootstrap needs one")


def build(
    tag: str, context: Path, env: dict[str, str], target: str | None = None, **build_args: str
) -> float:
    """docker build (legacy builder, host network: there is no bridge); returns seconds."""
    args = [arg for key, value in build_args.items() for arg in ("--build-arg", f"{key}={value}")]
    args += ["--target", target] if target else []
    started = time.monotonic()
    docker(
        "build", "--network=host", "-q", "--label", f"{LABEL}=1", *args, "-t", tag, str(context),
        env={**env, "DOCKER_BUILDKIT": "0"}, timeout=1800,
    )  # fmt: skip
    return time.monotonic() - started


def apt_mirror(base: str) -> str:
    """APT_MIRROR for a build FROM `base`: this host's mirror for the local base (no sources)."""
    return debian_mirror() if base == PYTHON_BASE else ""


def kafka_image(base: str, env: dict[str, str]) -> str:
    """Kafka from the Maven Central jars devkafka fetched (.cache/kafka/lib), on Debian's JRE."""
    with tempfile.TemporaryDirectory(prefix="rpt-kafka-ctx-") as scratch:
        context = Path(scratch)
        shutil.copytree(KAFKA_CONTEXT, context, dirs_exist_ok=True)
        shutil.copytree(REPO / ".cache" / "kafka" / "lib", context / "libs")
        shutil.copy(REPO / "devkafka" / "log4j2.xml", context / "log4j2.xml")
        seconds = build(KAFKA_IMAGE, context, env, BASE_IMAGE=base, APT_MIRROR=apt_mirror(base))
    print(f"image-test: built {KAFKA_IMAGE} in {seconds:.0f}s", flush=True)
    return KAFKA_IMAGE


def prometheus_image(base: str, env: dict[str, str]) -> str:
    """Prometheus from Debian's package (installed on this host by tools/ensure-prometheus.sh)."""
    subprocess.run(["bash", str(REPO / "tools" / "ensure-prometheus.sh")], check=True)
    with tempfile.TemporaryDirectory(prefix="rpt-prom-ctx-") as scratch:
        context = Path(scratch)
        for tool in ("prometheus", "promtool"):
            shutil.copy(shutil.which(tool) or f"/usr/bin/{tool}", context / tool)
        (context / "Dockerfile").write_text(PROMETHEUS_DOCKERFILE)
        seconds = build(PROMETHEUS_IMAGE, context, env, BASE_IMAGE=base)
    print(f"image-test: built {PROMETHEUS_IMAGE} in {seconds:.0f}s", flush=True)
    return PROMETHEUS_IMAGE


def prune(env: dict[str, str]) -> str:
    """Drop this tool's images a rebuild left untagged (with their layers); say what is left."""
    docker("image", "prune", "--force", "--filter", f"label={LABEL}", env=env, timeout=600)
    usage = docker("system", "df", "--format", "{{.Type}} {{.Size}}", env=env).splitlines()
    return ", ".join(line for line in usage if line.strip())


PROMETHEUS_DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY prometheus promtool /bin/
RUN useradd --system --uid 65534 --non-unique --home-dir /prometheus nobody-prom 2>/dev/null; \\
    mkdir -p /prometheus /etc/prometheus && chown 65534:65534 /prometheus
USER 65534
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
"""
