#!/usr/bin/env bash
# Installs Debian's `prometheus` package (it brings `prometheus` and `promtool`) when `promtool`
# is missing. Idempotent. The package's postinst may try to start the service; in a container
# without systemd it cannot, and any daemon it did leave running is stopped here (the tests start
# their own prometheus on free ports).
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    echo "ensure-prometheus: $(promtool --version 2>&1 | head -n1) already installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n)
else
    echo "ensure-prometheus: promtool is missing and neither root nor sudo is available;" >&2
    echo "  install Debian's 'prometheus' package (apt-get install prometheus)" >&2
    exit 1
fi

running_before=$(pgrep -x prometheus || true)
echo "ensure-prometheus: installing Debian package 'prometheus' (for promtool) with apt-get"
"${SUDO[@]}" apt-get update -qq
# policy-rc.d exit 101 tells invoke-rc.d not to start services, so postinst leaves no daemon.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod +x "$policy"
    created_policy=1
fi
status=0
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends prometheus || status=$?
if [ "$created_policy" -eq 1 ]; then
    "${SUDO[@]}" rm -f "$policy"
fi
[ "$status" -eq 0 ] || exit "$status"

for pid in $(pgrep -x prometheus || true); do
    case " $running_before " in
        *" $pid "*) ;;
        *)
            echo "ensure-prometheus: stopping the daemon the package started (pid $pid)"
            "${SUDO[@]}" kill "$pid" || true
            ;;
    esac
done
echo "ensure-prometheus: $(promtool --version 2>&1 | head -n1) installed"
