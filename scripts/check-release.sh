#!/usr/bin/env bash
# The release check: `python -m build` makes the sdist and (from the sdist) the wheel; the wheel
# must hold every tracked file of the package; installed into a fresh venv, away from this
# checkout, it must run: --version, validate on the shipped profiles and examples, quickstart's
# preflight (--check: builds and downloads nothing), a completion script. About 20-30 s.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "check-release: building the sdist and the wheel"
if ! .venv/bin/python -m build --outdir "$work/dist" . >"$work/build.log" 2>&1; then
  tail -40 "$work/build.log"
  exit 1
fi
version="$(.venv/bin/python -c 'from llamasup._version import __version__; print(__version__)')"
wheel="$work/dist/llamasup-$version-py3-none-any.whl"
sdist="$work/dist/llamasup-$version.tar.gz"
test -f "$wheel" && test -f "$sdist"

# every tracked file under src/llamasup (Python or data: schema, py.typed, UI files) is in
# the wheel, and the sdist has what the README and the Dockerfile point to
git ls-files src/llamasup | sed 's|^src/||' | sort >"$work/tracked"
.venv/bin/python - "$wheel" "$sdist" "$work/tracked" <<'PY'
import sys, tarfile, zipfile
wheel, sdist, tracked = sys.argv[1:]
names = set(zipfile.ZipFile(wheel).namelist())
missing = [line for line in open(tracked).read().split() if line not in names]
if missing:
    sys.exit(f"check-release: missing from the wheel: {', '.join(missing)}")
top = f"{sdist.rsplit('/', 1)[1][: -len('.tar.gz')]}/"
members = {m[len(top):] for m in tarfile.open(sdist).getnames()}
wanted = ["README.md", "CHANGELOG.md", "LICENSE", "Dockerfile", "schemas/profiles.schema.json",
          "profiles/llamasup.yaml", "examples/systemd/llamasup.service"]
absent = [name for name in wanted if name not in members]
if absent:
    sys.exit(f"check-release: missing from the sdist: {', '.join(absent)}")
PY

echo "check-release: installing the wheel into a clean venv"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check "$wheel[quickstart]" \
  2> >(grep -v '^WARNING: Location' >&2)
llamasup="$work/venv/bin/llamasup"
cd "$work"   # nothing may come from the checkout's src/

test "$("$llamasup" --version)" = "llamasup $version"
export LLAMASUP_INFERENCE_KEY=example   # the examples name it
for set in profiles examples/coding-host/profiles.yaml examples/multi-model/profiles.yaml \
  examples/gitops/profiles; do
  # warnings (model files that live on real hosts) are expected; errors fail
  "$llamasup" validate "$root/$set" >/dev/null 2>>"$work/validate.log" || {
    cat "$work/validate.log"
    exit 1
  }
done
# an empty model directory: the preflight must find the package to write the model from
LLAMASUP_MODELS="$work/models" "$llamasup" quickstart --check "$root/profiles"
test ! -e "$work/models"
"$llamasup" completion bash | bash -n
echo "check-release: ok (llamasup $version: sdist, wheel, clean install)"
