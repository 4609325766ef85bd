#!/usr/bin/env bash
# Installs Debian's munge and slurm-wlm for the Slurm tests (tests/test_slurm_cluster.py), which
# start a one-node cluster of their own. Idempotent and quiet; never fails the build: without
# root or apt-get it prints one line and the Slurm tests skip with their reason.
set -uo pipefail
# The daemons live in sbin, which a non-login PATH may lack.
PATH="$PATH:/usr/sbin:/sbin"

have_all() {
    command -v munged >/dev/null && command -v mungekey >/dev/null \
        && command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null
}

have_all && exit 0
if ! command -v apt-get >/dev/null; then
    echo "install-slurm: no apt-get here; the Slurm tests will skip" >&2
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-slurm: not root, munge/slurm-wlm not installed; the Slurm tests will skip" >&2
    exit 0
fi
log=$(mktemp)
export DEBIAN_FRONTEND=noninteractive
# The packages' postinst scripts start system daemons via invoke-rc.d; policy-rc.d exit 101
# forbids that (the tests start their own daemons on their own paths).
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
fi
cleanup() {
    [ "$made_policy" -eq 1 ] && rm -f "$policy"
    rm -f "$log"
}
trap cleanup EXIT
if apt-get update -qq >"$log" 2>&1 \
    && apt-get install -y -qq --no-install-recommends munge slurm-wlm >>"$log" 2>&1; then
    status=0
else
    status=1
fi
if [ "$status" -ne 0 ] || ! have_all; then
    echo "install-slurm: apt-get install munge slurm-wlm failed; the Slurm tests will skip:" >&2
    tail -n 5 "$log" >&2
fi
exit 0
