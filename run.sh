#!/usr/bin/env bash
# xgrad's one entry point: installs what is missing (Debian packages), configures, builds, and
#   ./run.sh test            builds and runs the whole test suite (ctest), then again under
#                            ASan + UBSan
#   ./run.sh test-release    the Release suite only (quicker)
#   ./run.sh train [flags]   trains the default example (flags go to train_fashion_mnist)
#   ./run.sh bench           benchmarks against PyTorch
#   ./run.sh test-sanitize   the test suite under ASan + UBSan
#   ./run.sh build           only builds
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)

PACKAGES=(cmake g++ make ccache libxtensor-dev libxtensor-blas-dev libxsimd-dev libboost-test-dev
  libopenblas-dev zlib1g-dev nlohmann-json3-dev libcli11-dev dataset-fashion-mnist gnuplot-nox
  python3-numpy)

install_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "run.sh: installing ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# OpenBLAS reads these when it loads: pick the fast kernel for this CPU, one BLAS thread (our
# own OpenMP threads parallelise over the batch).
blas_env() {
  if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
    if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX
    elif grep -qw avx2 /proc/cpuinfo; then export OPENBLAS_CORETYPE=Haswell; fi
  fi
  export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
}

# ccache keys on paths relative to the checkout, so a fresh clone elsewhere reuses the cache.
export CCACHE_BASEDIR="$ROOT" CCACHE_NOHASHDIR=1

build() {  # build DIR [cmake args...]
  local dir=$1
  shift
  cmake -S "$ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" > "$dir.configure.log" 2>&1 ||
    { cat "$dir.configure.log"; exit 1; }
  cmake --build "$dir" -j "$(nproc)"
}

run_tests() {  # run_tests DIR [cmake args...]
  local dir=$1
  shift
  mkdir -p "$dir"
  build "$dir" "$@"
  echo "run.sh: ctest in $dir" >&2
  (cd "$dir" && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j "$(nproc)")
}

cmd=${1:-build}
[ $# -gt 0 ] && shift
install_packages "${PACKAGES[@]}"
blas_env
mkdir -p build
case "$cmd" in
  build)
    build build ;;
  test)
    # The Release suite, then the same suite under ASan + UBSan (both fit CI's time on 2 cores).
    run_tests build
    run_tests build-sanitize -DXGRAD_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo ;;
  test-release)
    run_tests build ;;
  test-sanitize)
    run_tests build-sanitize -DXGRAD_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo ;;
  train)
    build build
    if [ -x build/examples/train_fashion_mnist ]; then
      exec build/examples/train_fashion_mnist "$@"
    else
      exec build/examples/custom_op
    fi ;;
  bench)
    # PyTorch is the benchmark's peer, not a dependency: without it run_bench prints xgrad alone.
    install_packages python3-torch ||
      echo "run.sh: python3-torch could not be installed; the benchmark runs without PyTorch" >&2
    build build
    exec /usr/bin/python3 bench/run_bench.py "$@" ;;
  *)
    echo "usage: ./run.sh [build|test|test-release|test-sanitize|train|bench] [args...]" >&2
    exit 2 ;;
esac
