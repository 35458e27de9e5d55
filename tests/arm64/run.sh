#!/usr/bin/env bash
# edge-agent on an emulated arm64 board: Debian bookworm arm64 under QEMU user-mode
# emulation (binfmt_misc), installed with the real deploy/install.sh, then
#   1. the kernel/engine bit-exactness tests as a Pi 4 (cortex-a72: no int8 dot product,
#      the portable kernels) and as a Pi 5 (cortex-a76: the dot-product kernels, if any),
#   2. the bundled model's integer results on the board vs golden results computed on
#      this (x86-64) host in the same run, bit for bit, on both CPUs,
#   3. an end-to-end smoke test of the installed agent, a flip round by the agent itself
#      included (tests/arm64/smoke.py),
#   4. one bit-flip recalibration round, compared with the host's (tests/arm64/flip.py).
# The base rootfs is cached under $EDGE_AGENT_ARM64_CACHE (default .arm64-rootfs/, git
# ignored); every run installs onto a fresh overlay of it, so the install is always
# tested from scratch. Needs root. If emulation cannot start it says why and fails.
# Usage: tests/arm64/run.sh   (environment: EDGE_AGENT_ARM64_CACHE: the cache directory;
#        EDGE_AGENT_HOST_PYTHON: the host Python for the golden results, default .venv's;
#        EDGE_AGENT_ARM64_PYTEST_ARGS: extra pytest arguments for the board tests, e.g. -x)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${EDGE_AGENT_ARM64_CACHE:-$repo/.arm64-rootfs}
base=$cache/base
run=$cache/run
board=$run/root
t0=$SECONDS

die() { echo "arm64: FAIL: $*" >&2; exit 1; }
step() { echo "=== arm64 [$((SECONDS - t0))s] $*" >&2; }
[ "$(id -u)" = 0 ] || die "needs root (chroot, mounts, binfmt_misc); run it as root or with sudo"
mkdir -p "$cache"
cache=$(cd "$cache" && pwd); base=$cache/base; run=$cache/run; board=$run/root

# The host's Python with edge-agent's dependencies and pip: golden results, test tools.
hostpy=${EDGE_AGENT_HOST_PYTHON:-$repo/.venv/bin/python}
[ -x "$hostpy" ] || die "no host Python with edge-agent's dependencies at $hostpy" \
  "(scripts/test.sh creates .venv; or set EDGE_AGENT_HOST_PYTHON)"

# ---------------------------------------------------------------- the board
step "base rootfs (cached in $base)"
PYTHON=$hostpy bash "$here/rootfs.sh" "$base"

mounts=()
cleanup() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}" 2>/dev/null || true
  done
  mounts=()
}
trap cleanup EXIT
mnt() {  # mnt TARGET mount-args...: mount and remember for cleanup
  local target=$1; shift
  mkdir -p "$target"
  mount "$@" "$target" || die "mount $* $target failed"
  mounts+=("$target")
}

# Refuse to delete anything while something is still mounted below $run (a bind mount
# of the checkout in a leftover board would otherwise be deleted with it).
if awk '{print $2}' /proc/mounts | grep -q "^$run/"; then
  die "something is still mounted under $run (an earlier run killed hard?); unmount it first"
fi
rm -rf "$run"
mkdir -p "$run/upper" "$run/work" "$board" "$cache/pip-cache"
if mount -t overlay overlay -o "lowerdir=$base,upperdir=$run/upper,workdir=$run/work" "$board" \
    2>/dev/null; then
  mounts+=("$board")
else  # e.g. the cache on an overlay file system itself (some containers)
  echo "arm64: overlayfs unavailable here, copying the base rootfs instead" >&2
  cp -a "$base/." "$board/"
fi
mnt "$board/proc" -t proc proc
mnt "$board/dev" --bind /dev
mnt "$board/dev/pts" --bind /dev/pts
mnt "$board/sys" --bind /sys
mnt "$board/src" --bind "$repo"
mount -o remount,bind,ro "$board/src" || die "cannot make the checkout read-only in the board"
mnt "$board/root/.cache/pip" --bind "$cache/pip-cache"  # wheels survive between runs
cp /etc/resolv.conf "$board/etc/resolv.conf"

# in_board CPU COMMAND...: run COMMAND on the board emulating CPU, with a clean environment
# (plus board_env), behind board_prefix (e.g. a private network namespace).
board_env=()
board_prefix=()
in_board() {
  local cpu=$1; shift
  ${board_prefix[@]+"${board_prefix[@]}"} env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 TERM=dumb QEMU_CPU="$cpu" PYTHONDONTWRITEBYTECODE=1 ${board_env[@]+"${board_env[@]}"} \
    chroot "$board" "$@"
}
[ "$(in_board cortex-a72 uname -m)" = aarch64 ] || die "the board does not run as aarch64"

# ---------------------------------------------------------------- the install
step "install with deploy/install.sh --no-start (as on a Pi; no running systemd on the board)"
[ -f "$repo/deploy/install.sh" ] || die "deploy/install.sh is missing"
# PIP_CERT: the host's CA bundle (copied in by rootfs.sh) for a proxy on the way to PyPI.
board_env=(PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
in_board cortex-a72 bash /src/deploy/install.sh --no-start \
  || die "deploy/install.sh failed on the board"
board_env=()
unit=/etc/systemd/system/edge-agent.service
for f in "$unit" /etc/edge-agent/agent.toml /etc/edge-agent/model.eab; do
  [ -f "$board$f" ] || die "the install left no $f"
done
wants=/etc/systemd/system/multi-user.target.wants/edge-agent.service
[ "$(in_board cortex-a72 readlink -f "$wants")" = "$unit" ] \
  || die "the unit is not enabled: $wants does not lead to $unit"
entry=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$board$unit")
[ -n "$entry" ] && [ -x "$board$entry" ] || die "$unit: ExecStart ${entry:-(none)} is not installed"
py=$(head -1 "$board$entry" | sed -n 's/^#! *//p')
[ -n "$py" ] && [ -x "$board$py" ] || die "cannot find the Python of $entry"
in_board cortex-a72 "$entry" --version || die "$entry --version failed"
echo "arm64: installed and enabled $unit, entry point $entry (python $py)" >&2
if in_board cortex-a72 "$py" -c 'import torch' 2>/dev/null; then
  die "torch is installed on the board: the agent must not need it"
fi
# Tests import edge_agent from the install, never from /src (-P: no cwd/script dir first).
pyt=(env PYTHONPATH=/opt/testtools "$py" -P)

# ---------------------------------------------------------------- bit-exactness
step "golden results of the bundled model on this host ($(uname -m))"
PYTHONPATH=$repo "$hostpy" -P "$here/golden.py" compute "$run/golden.npz" \
  || die "computing the golden results on the host failed"
cp "$run/golden.npz" "$board/tmp/golden.npz"

mapfile -t bitexact < <(cd "$repo" && ls tests/test_kernels*.py tests/test_engine*.py \
                          tests/test_reference*.py tests/test_packing*.py 2>/dev/null)
[ ${#bitexact[@]} -gt 0 ] || die "no kernel/engine test files found"

# board_tests NAME QEMU_CPU [NUMBA_CPU_NAME]
board_tests() {
  local name=$1 cpu=$2 numba_cpu=${3:-} dot isas want
  trap - EXIT  # runs in a subshell: the mounts are the parent's to clean up
  step "$name ($cpu${numba_cpu:+, NUMBA_CPU_NAME=$numba_cpu}): CPU check"
  # EDGE_AGENT_TEST_AOT=0: the board has no C compiler (its install JIT-compiles), so the
  # engine tests' ahead-of-time variants are skipped there (they run on the host).
  board_env=(EDGE_AGENT_JIT_CACHE=/var/tmp/jit-$cpu EDGE_AGENT_TEST_SUBPROCESS_TIMEOUT_S=1500
             EDGE_AGENT_TEST_AOT=0 ${numba_cpu:+NUMBA_CPU_NAME=$numba_cpu})
  dot=$(in_board "$cpu" "$py" -c '
try:
    from numpy._core._multiarray_umath import __cpu_features__ as f
except ImportError:
    from numpy.core._multiarray_umath import __cpu_features__ as f
print(int(f["ASIMDDP"]))')
  # the ISA the engine must choose: generic without the dot product; with it, the
  # engine's aarch64 dot-product path if it has one
  isas=$(in_board "$cpu" "${pyt[@]}" -c 'from kernels.codegen import isa; print(*isa.ISAS)')
  if [ "$cpu" = cortex-a72 ]; then
    [ "$dot" = 0 ] || die "$cpu emulation reports the int8 dot product (ASIMDDP)"
    want=generic
  else
    [ "$dot" = 1 ] || die "$cpu emulation does not report the int8 dot product (ASIMDDP)"
    want=$(tr ' ' '\n' <<<"$isas" | grep -vxE 'generic|avx512[a-z0-9_]*|avx2[a-z0-9_]*' | head -1 || true)
    if [ -z "$want" ]; then
      echo "arm64: NOTE: the engine has no aarch64 dot-product kernels (ISAs: $isas);" \
           "the $name run checks the generic kernels compiled for $numba_cpu" >&2
      want=generic
    fi
  fi
  # --timeout: the first test compiles every kernel, minutes under emulation
  step "$name: bit-exactness tests (${bitexact[*]}), kernels $want"
  in_board "$cpu" "${pyt[@]}" -m pytest -p no:cacheprovider -q -o addopts=-ra \
      --rootdir=/src --basetemp="/tmp/pytest-$cpu" --timeout=1800 --durations=12 \
      ${EDGE_AGENT_ARM64_PYTEST_ARGS:-} "${bitexact[@]/#//src/}" \
    || die "$name: kernel/engine tests failed on the board"
  step "$name: bundled model vs the golden results"
  in_board "$cpu" "${pyt[@]}" /src/tests/arm64/golden.py check /tmp/golden.npz --expect-isa "$want" \
    || die "$name: the bundled model's integer results differ from the host's"
  step "$name: passed"
}
# The two boards in parallel (each numba compile is single-threaded; CI has 2 cores).
( board_tests "Pi 4" cortex-a72 2>&1 | sed -u 's/^/[Pi 4] /' >&2 ) & pi4=$!
( board_tests "Pi 5" cortex-a76 cortex-a76 2>&1 | sed -u 's/^/[Pi 5] /' >&2 ) & pi5=$!
rc4=0; wait $pi4 || rc4=$?
rc5=0; wait $pi5 || rc5=$?
[ $rc4 = 0 ] && [ $rc5 = 0 ] || die "the Pi 4 and/or Pi 5 checks failed (see above)"

# ---------------------------------------------------------------- the agent
step "end-to-end smoke test of the installed agent (Pi 4 CPU, private network namespace)"
# Its own network namespace: the installed default ports cannot clash with the host's.
board_prefix=(unshare --net sh -c 'ip link set lo up && exec "$@"' sh)
# The agent's JIT cache starts from the Pi 4 run's (same kernels, same CPU): a cold start
# compiles for minutes under emulation (on a real board: not measured).
in_board cortex-a72 "$py" -P /src/tests/arm64/smoke.py --unit "$unit" \
    --seed-jit-cache /var/tmp/jit-cortex-a72 || die "end-to-end smoke test failed"
board_prefix=()

# One bit-flip recalibration round on the board through the library, compared with the
# same round on this host, bit for bit (the smoke test above checks that the installed
# agent runs rounds by itself).
step_recalibration() {
  step "bit-flip recalibration round: on this host, then on the board (Pi 4 CPU)"
  PYTHONPATH=$repo "$hostpy" -P "$here/flip.py" --write "$run/flip.npz" \
    || die "the bit-flip round failed on the host"
  cp "$run/flip.npz" "$board/tmp/flip.npz"
  board_env=(EDGE_AGENT_JIT_CACHE=/var/tmp/jit-cortex-a72)
  in_board cortex-a72 "$py" -P /src/tests/arm64/flip.py --compare /tmp/flip.npz \
    || die "the bit-flip round failed on the board or differs from the host's"
  board_env=()
}
step_recalibration

step "all arm64 checks passed in $((SECONDS - t0)) s; CPU time (user, system) of this"\
     "script and of all it ran:"
times >&2
