#!/usr/bin/env bash
# Clean-build times, side by side in one run: this crate (default features,
# dependencies included) at HEAD, optionally at another revision, and
# Google's official crates for the same job (google-cloud-aiplatform-v1 with
# only `job-service`, plus google-cloud-storage), each in a fresh target
# directory, in an order that alternates every round.
#
#   scripts/bench/build-compare.sh [ROUNDS] [BASE_REV]
#   CARGO_INCREMENTAL=0 scripts/bench/build-compare.sh [ROUNDS] [BASE_REV]
#
# Built as the workspace root, this crate compiles incrementally (cargo's
# default for local packages), while Google's crates, like any registry
# dependency, do not. With CARGO_INCREMENTAL=0 every build compiles the way
# a project that depends on this crate from the registry compiles it: the
# like-for-like comparison. The mode is printed first.
#
# A third build, `deps`, is the floor: this crate's manifest and lock file,
# verbatim, with every source file empty, so it compiles exactly
# the dependencies and build dependencies (default features) and none of
# this crate's own code or generated stubs. Whatever ratio `deps` shows is
# the least any code on top of these dependencies can reach.
#
# Prints one line a build and, per round, the ratios to Google's crates.
# Needs the crates in the local registry cache (or network access to it).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-2}
BASE=${2:-}
WORK=$(mktemp -d /tmp/vb-build-compare.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

git worktree add --detach "$WORK/ours" HEAD >/dev/null 2>&1
trap 'git worktree remove --force "$WORK/ours" >/dev/null 2>&1 || true; [ -n "$BASE" ] && git worktree remove --force "$WORK/base" >/dev/null 2>&1; rm -rf "$WORK"' EXIT
if [ -n "$BASE" ]; then
    git worktree add --detach "$WORK/base" "$BASE" >/dev/null 2>&1
    # The same dependency versions as HEAD (a revision from before the lock
    # file was committed would otherwise resolve the newest ones).
    cp Cargo.lock "$WORK/base/Cargo.lock"
fi

# The floor: the manifest and lock file of HEAD, verbatim, with every
# source file it names empty (so the lock file fits it exactly and
# `--locked` holds).
mkdir -p "$WORK/deps"
cp "$WORK/ours/Cargo.toml" "$WORK/ours/Cargo.lock" "$WORK/deps/"
python3 - "$WORK/deps" <<'PY'
import os, sys, tomllib
root = sys.argv[1]
manifest = tomllib.load(open(os.path.join(root, "Cargo.toml"), "rb"))
files = {"src/lib.rs": "", "build.rs": "fn main() {}\n"}
default_dir = {"bin": "src/bin", "example": "examples", "test": "tests", "bench": "benches"}
for kind, folder in default_dir.items():
    for target in manifest.get(kind, []):
        path = target.get("path") or f"{folder}/{target['name']}.rs"
        files.setdefault(path, "fn main() {}\n")
for path, text in files.items():
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    open(full, "w").write(text)
PY

mkdir -p "$WORK/google/src"
cat >"$WORK/google/Cargo.toml" <<'EOF'
[package]
name = "google-crates-build"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
google-cloud-aiplatform-v1 = { version = "=1.18.0", default-features = false, features = ["job-service"] }
google-cloud-storage = "=1.21.0"

[workspace]
EOF
echo 'pub use google_cloud_aiplatform_v1; pub use google_cloud_storage;' >"$WORK/google/src/lib.rs"
# Resolve once (not timed), so every build compiles the same versions.
(cd "$WORK/google" && cargo generate-lockfile --quiet)

build() { # name dir
    local dir=$2 target="$WORK/target-$1"
    rm -rf "$target"
    local start end
    start=$(date +%s.%N)
    # A revision from before the lock file was committed resolves afresh;
    # any other failure stops the script.
    (cd "$dir" && CARGO_TARGET_DIR="$target" cargo build --quiet --locked 2>/dev/null \
        || CARGO_TARGET_DIR="$target" cargo build --quiet) || return 1
    end=$(date +%s.%N)
    rm -rf "$target"
    echo "$end - $start" | bc
}

default_mode="cargo default: on for this crate, off for registry crates"
echo "incremental: ${CARGO_INCREMENTAL:-$default_mode}"
names=(google ours deps)
[ -n "$BASE" ] && names+=(base)
for round in $(seq 1 "$ROUNDS"); do
    order=("${names[@]}")
    if [ $((round % 2)) -eq 0 ]; then
        order=($(printf '%s\n' "${names[@]}" | tac))
    fi
    declare -A secs=()
    for n in "${order[@]}"; do
        secs[$n]=$(build "$n" "$WORK/$n") || { echo "build of $n failed" >&2; exit 1; }
        printf 'round %d  %-6s %7.1f s\n' "$round" "$n" "${secs[$n]}"
    done
    printf 'round %d  ours/google %.2f  deps/google %.2f' "$round" \
        "$(echo "${secs[ours]} / ${secs[google]}" | bc -l)" \
        "$(echo "${secs[deps]} / ${secs[google]}" | bc -l)"
    if [ -n "$BASE" ]; then
        printf '  base/google %.2f  ours/base %.2f' \
            "$(echo "${secs[base]} / ${secs[google]}" | bc -l)" \
            "$(echo "${secs[ours]} / ${secs[base]}" | bc -l)"
    fi
    echo
    unset secs
done
