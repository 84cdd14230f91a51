#!/usr/bin/env bash
# Install the peer spam filters from Debian's packages. Safe to run repeatedly:
# it skips everything when all binaries are already there, and runs
# `apt-get update` at most once per boot (marker in /tmp) since apt-get install
# fails on a machine whose package lists were never fetched.
set -euo pipefail

need=(bogofilter spamassassin sa-learn crm rspamd rspamc rspamadm redis-server redis-cli)
missing=0
for b in "${need[@]}"; do
    command -v "$b" >/dev/null 2>&1 || missing=1
done
if [[ $missing == 0 ]]; then
    echo "install.sh: all peers already installed" >&2
    exit 0
fi

SUDO=""
[[ $(id -u) == 0 ]] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

marker=/tmp/.chaff-peers-apt-updated
if [[ ! -e $marker ]]; then
    $SUDO apt-get update
    touch "$marker"
fi

# bogofilter pulls in its Berkeley DB flavour; spamassassin brings sa-learn and
# the Perl Mail::SpamAssassin modules (replay.py uses them directly for scores);
# crm114 provides `crm`; rspamd and redis-server are used only on loopback.
# --no-install-recommends keeps out spamd/daemons and MTAs we do not need.
$SUDO apt-get install -y --no-install-recommends \
    bogofilter spamassassin crm114 rspamd redis-server redis-tools

# The packages start system daemons (rspamd, redis) under systemd where there
# is one; replay.py runs its own private instances and does not use them.
echo "install.sh: done" >&2
