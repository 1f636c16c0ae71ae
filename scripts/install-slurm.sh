#!/usr/bin/env bash
# Install a local single-node SLURM toolchain (Debian/Ubuntu packages slurm-wlm + munge).
#
# Idempotent: if `sbatch`, `slurmctld`, `slurmd`, `munged` and `munge` are all on PATH it prints so and
# exits 0 without touching the system. Otherwise it runs `apt-get update` once and installs the missing
# packages non-interactively. Used by tests/slurm_cluster.py (LocalSlurm) and by CI.
#
# It only installs packages: it does not start daemons or write a munge key (LocalSlurm does that
# under a temporary directory).
#
# Exit codes: 0 installed or already present; 1 cannot install (not root and no sudo, no apt-get,
# apt failure).
set -euo pipefail

# sbin directories are not on PATH for every user; the daemons live there.
export PATH="$PATH:/usr/sbin:/sbin"

have_all() {
    local c
    for c in sbatch squeue sinfo slurmctld slurmd munged munge unmunge; do
        command -v "$c" >/dev/null 2>&1 || return 1
    done
}

if have_all; then
    echo "install-slurm: already installed ($(command -v sbatch), $(command -v munged)); nothing to do"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-slurm: SLURM/munge missing and apt-get not available; install slurm-wlm and munge by hand" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install-slurm: SLURM/munge missing; need root (or passwordless sudo) to apt-get install" >&2
        exit 1
    fi
fi

pkgs=()
command -v sbatch >/dev/null 2>&1 && command -v slurmctld >/dev/null 2>&1 \
    && command -v slurmd >/dev/null 2>&1 || pkgs+=(slurm-wlm)
command -v munged >/dev/null 2>&1 && command -v unmunge >/dev/null 2>&1 || pkgs+=(munge)
# slurm-wlm pulls in munge, but keep munge explicit.
if [[ " ${pkgs[*]} " == *" slurm-wlm "* && " ${pkgs[*]} " != *" munge "* ]]; then pkgs+=(munge); fi

export DEBIAN_FRONTEND=noninteractive
echo "install-slurm: installing ${pkgs[*]} with apt-get"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null

if have_all; then
    echo "install-slurm: installed: $(dpkg-query -W -f='${Package} ${Version} ' slurm-wlm munge 2>/dev/null)"
    exit 0
fi
echo "install-slurm: apt-get finished but SLURM/munge commands are still missing" >&2
exit 1
