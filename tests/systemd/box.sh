#!/usr/bin/env bash
# A Debian bookworm system booted with systemd as PID 1 in a container (systemd-nspawn), to
# run edge-agent's units under real systemd: Type=notify, WatchdogSec=, DynamicUser=,
# SystemCallFilter=, RestrictAddressFamilies=. Needs root; installs debootstrap and
# systemd-container from Debian's packages when missing. The base root file system is built
# once into BASE and never changed: each boot runs on a fresh overlay of it (nspawn
# --volatile=overlay), so every run installs from scratch. The container shares the host's
# network, so pip inside it reaches the same package indexes as the host (its pip
# configuration and local wheel folders are bound in read-only).
#
#   box.sh up BASE RUN [--bind HOST:CONTAINER ...]   build BASE (first time), boot into RUN
#   box.sh run RUN -- COMMAND [ARG ...]              run a command inside
#   box.sh down RUN                                  power off
set -euo pipefail
cmd=${1:-}
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ -n "$cmd" ] || usage

init_pid() {  # the container's PID 1 (systemd): a child or grandchild of the nspawn process
  local np c p; np=$(cat "$1/nspawn.pid" 2>/dev/null) || return 1
  kill -0 "$np" 2>/dev/null || return 1
  for c in "$np" $(pgrep -P "$np" -x systemd-nspawn); do
    p=$(pgrep -P "$c" -x systemd | head -1)
    [ -n "$p" ] && { echo "$p"; return 0; }
  done
  return 1
}

pip_binds() {  # the host's pip configuration files and local package folders
  python3 - <<'PY'
import os, re, subprocess
out = subprocess.run(["python3", "-m", "pip", "config", "debug"], capture_output=True,
                     text=True).stdout
for f in re.findall(r"^\s+(/\S+), exists: True", out, re.M):
    print("file:" + f)
values = [v for k, v in os.environ.items() if k.startswith("PIP_")]
values += re.findall(r"^\s+\S+: (.*)$", out, re.M)
seen = set()
for v in values:
    for w in v.replace("'", " ").split():
        w = w.removeprefix("file://")
        if not w.startswith("/") or not os.path.exists(w) or w.startswith(("/etc/ssl", "/usr", "/proc")):
            continue
        d = w if os.path.isdir(w) else os.path.dirname(w)
        if os.path.basename(d.rstrip("/")) == "simple":  # a local index: files sit beside it
            d = os.path.dirname(d.rstrip("/"))
        if d not in seen and d != "/":
            seen.add(d)
            print("bind:" + d)
PY
}

case "$cmd" in
  up)
    base=${2:?base directory}; run=${3:?run directory}; shift 3
    need=()
    command -v debootstrap >/dev/null || need+=(debootstrap)
    command -v systemd-nspawn >/dev/null || need+=(systemd-container)
    command -v script >/dev/null || need+=(bsdutils)
    if [ ${#need[@]} -gt 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    mkdir -p "$base" "$run"
    if [ ! -x "$base/root/lib/systemd/systemd" ]; then
      echo "box: building $base/root (debootstrap, a minute or two) ..." >&2
      rm -rf "$base/root"
      debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,dbus,python3,python3-venv,python3-pip \
        bookworm "$base/root" >"$base/debootstrap.log" 2>&1 \
        || { tail -5 "$base/debootstrap.log" >&2; exit 1; }
    fi
    if init_pid "$run" >/dev/null; then echo "box: already up" >&2; exit 0; fi
    # Files the container needs from the host go into an overlay-able copy, not the base.
    etc_binds=("--bind-ro=/etc/ssl/certs/ca-certificates.crt")
    binds=()
    while IFS= read -r line; do
      case "$line" in
        file:*) binds+=("--bind-ro=${line#file:}") ;;
        bind:*) binds+=("--bind-ro=${line#bind:}") ;;
      esac
    done < <(pip_binds)
    while [ $# -gt 0 ]; do
      case "$1" in --bind) binds+=("--bind=$2"); shift 2 ;; *) echo "box: unknown option $1" >&2; exit 2 ;; esac
    done
    # nspawn wants a terminal: `script` gives it one. No host systemd: --register=no --keep-unit.
    # `exec`, so that nspawn is script's child whichever shell script runs (dash forks).
    setsid script -qfc "exec systemd-nspawn -D '$base/root' --volatile=overlay --boot \
      --machine=edgebox$$ --register=no --keep-unit ${etc_binds[*]} ${binds[*]:-}" \
      "$run/console.log" </dev/null >/dev/null 2>&1 &
    echo $! >"$run/script.pid"
    for _ in $(seq 1 90); do
      np=$(pgrep -P "$(cat "$run/script.pid")" -x systemd-nspawn | head -1 || true)
      [ -n "$np" ] && echo "$np" >"$run/nspawn.pid"
      if pid=$(init_pid "$run") && [ -n "$pid" ]; then
        state=$(nsenter -t "$pid" -a systemctl is-system-running 2>/dev/null || true)
        case "$state" in running|degraded) echo "box: up, systemd $state (init pid $pid)" >&2; exit 0 ;; esac
      fi
      sleep 1
    done
    echo "box: the container did not come up; the end of $run/console.log:" >&2
    tail -n 40 "$run/console.log" >&2 || true
    exit 1 ;;
  run)
    run=${2:?run directory}; shift 2
    [ "${1:-}" = "--" ] && shift
    pid=$(init_pid "$run") || { echo "box: not up ($0 up BASE $run)" >&2; exit 1; }
    exec nsenter -t "$pid" -a "$@" ;;
  down)
    run=${2:?run directory}
    if pid=$(init_pid "$run"); then nsenter -t "$pid" -a systemctl poweroff >/dev/null 2>&1 || true; fi
    for _ in $(seq 1 30); do
      np=$(cat "$run/nspawn.pid" 2>/dev/null || true)
      { [ -z "$np" ] || ! kill -0 "$np" 2>/dev/null; } && break
      sleep 1
    done
    sp=$(cat "$run/script.pid" 2>/dev/null || true)
    [ -n "$sp" ] && kill "$sp" 2>/dev/null || true
    rm -f "$run/nspawn.pid" "$run/script.pid"
    echo "box: down" >&2 ;;
  *) usage ;;
esac
