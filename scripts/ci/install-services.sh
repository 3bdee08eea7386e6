#!/usr/bin/env bash
# install-services.sh - install what the Slurm and SSH integration tests start (tests/services/):
# munge, slurmctld, slurmd, Slurm clients, OpenSSH server, rsync, tmux (Debian packages), and the
# headless Chromium (+ a font) that renders the campaign report in tests/report/test_browser.py.
# Idempotent and quick when everything is there (one dpkg-query per package, no apt call).
# Debian's postinst scripts would start the system daemons through /etc/init.d; a denying
# policy-rc.d is put in place while installing so that nothing but the tests' own daemons runs.
set -euo pipefail

PKGS="munge slurmctld slurmd slurm-client openssh-server openssh-client rsync tmux chromium fonts-dejavu-core"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -z "$missing" ]; then
  echo "install-services: all present ($PKGS)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-services: missing:$missing; run as root to install" >&2
  exit 1
fi
added_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  added_policy=1
fi
cleanup() { [ "$added_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d; return 0; }
trap cleanup EXIT
echo "install-services: apt-get install$missing"
apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "install-services: done"
