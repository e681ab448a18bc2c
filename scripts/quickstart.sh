#!/bin/bash
# atoll quickstart: the whole life of a customer database server, on this machine.
#
#   compose v1 -> sign and publish it -> start the fleet control plane (SQLite) and
#   its web console (a login for the customer's operators) -> write a host config -> build a disk image with the config baked in -> power it
#   on in QEMU (first boot provisions it, starts MariaDB and enrols it in the
#   fleet) -> the database answers, the Checkmk agent answers, db01 is in the
#   inventory and on the console's fleet page -> compose v2, roll it out to the customer's databases, publish it ->
#   the host downloads and prepares it (the rollout grants it) -> the "customer"
#   applies it -> it reboots into v2 with the data intact; the rollout finishes.
#
# Installs what it needs first (apt packages, a venv). Run as root on Debian 12.
# Everything is in $ATOLL_QUICKSTART_DIR (default /var/tmp/atoll-quickstart).
# QEMU runs under TCG here (no KVM): boots take minutes, not seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
WORK=${ATOLL_QUICKSTART_DIR:-/var/tmp/atoll-quickstart}
REPO=$WORK/repo WWW=$WORK/www KEYS=$WORK/keys SITE=$WORK/site CONSOLE=$WORK/console.log
FLEET=$WORK/fleet

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
[ -f "$WORK/qemu.pid" ] && kill "$(cat "$WORK/qemu.pid")" 2>/dev/null || true
rm -rf "$WORK"
mkdir -p "$WORK" "$SITE/site" "$FLEET"
chmod 700 "$FLEET"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP_PORT=$(free_port) SSH_PORT=$(free_port) CMK_PORT=$(free_port) FLEET_PORT=$(free_port)
# the operators' CLI talks to the control plane with the admin token made below
export ATOLL_FLEET_SERVER=http://127.0.0.1:$FLEET_PORT ATOLL_FLEET_TOKEN_FILE=$FLEET/admin-token

T0=$(date +%s.%N)
TIMINGS=()
step() {
    printf '\n\033[1m==> %s\033[0m\n' "$*"
    STEP_NAME=$1 STEP_T=$(date +%s.%N)
}
took() {
    local s
    s=$(printf '%.1f' "$(echo "$(date +%s.%N) - $STEP_T" | bc)")
    printf '    (%s s)\n' "$s"
    TIMINGS+=("$(printf '%7s s  %s' "$s" "$STEP_NAME")")
}
die() { echo "quickstart: $*" >&2; tail -n 30 "$CONSOLE" >&2 2>/dev/null || true; exit 1; }
# Run a command on the host over SSH with the site's key, as Ansible or an operator would.
on_host() {
    ssh -i "$SITE/id_ed25519" -p "$SSH_PORT" -o BatchMode=yes -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=10 \
        ops@127.0.0.1 "$@"
}
# Wait until the guest has printed its Nth boot status line (boot-complete's marker).
wait_boot() {
    local n=$1 limit=$2 start=$SECONDS
    until [ "$(cat "$CONSOLE" 2>/dev/null | grep -ac 'ATOLL-BOOT-STATUS ')" -ge "$n" ]; do
        kill -0 "${PIDS[-1]}" 2>/dev/null || die "QEMU exited"
        [ $((SECONDS - start)) -lt "$limit" ] || die "no boot status after ${limit}s"
        sleep 3
    done
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

step "compose v1 from examples/db-host.yaml (bookworm + kernel + Docker + the MariaDB image + agents)"
atoll compose examples/db-host.yaml --repo "$REPO"; took
V1=$(atoll store refs --repo "$REPO" --json | json 'd["site/db"]')

step "sign and publish v1 (TUF; the root key stays offline in $KEYS/root)"
atoll keys init "$KEYS" --to "$WWW"
# --level 6: the quickstart trades download bytes for time (publishers keep the default 19)
atoll publish site/db --repo "$REPO" --to "$WWW" --keys "$KEYS" --level 6
python3 -m http.server --bind 127.0.0.1 --directory "$WWW" "$HTTP_PORT" >"$WORK/http.log" 2>&1 &
PIDS+=($!)
echo "    update server: http://127.0.0.1:$HTTP_PORT/ (the VM reaches it as 10.0.2.2)"; took

step "start the fleet control plane (embedded SQLite) and make db01's one-time enrolment token"
atoll fleet db init --db "sqlite:///$FLEET/control.db" --token-file "$FLEET/admin-token"
# --rollout-tick 5s: the quickstart's rollout advances within seconds (default 30 s)
atoll fleet serve --listen "127.0.0.1:$FLEET_PORT" --db "sqlite:///$FLEET/control.db" \
    --rollout-tick 5s >"$FLEET/serve.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 60); do
    curl -fsS -o /dev/null "http://127.0.0.1:$FLEET_PORT/v1/health" 2>/dev/null && break
    kill -0 "${PIDS[-1]}" 2>/dev/null || { cat "$FLEET/serve.log" >&2; die "atoll fleet serve exited"; }
    sleep 1
done
atoll fleet customers add acme
atoll fleet enrol-token create --customer acme --host db01 --label role=db --label site=quickstart \
    --out "$SITE/site/enrol-token"
echo "    control plane: $ATOLL_FLEET_SERVER (the VM reaches it as 10.0.2.2); admin token: $FLEET/admin-token"
# a console login for acme's operators; the password is generated into a 0600 file
(umask 077; head -c 18 /dev/urandom | base64 | tr -d '\n' >"$FLEET/console-password")
atoll fleet users add ops --role operator --customer acme --password-file "$FLEET/console-password" \
    --db "sqlite:///$FLEET/control.db"
echo "    web console: $ATOLL_FLEET_SERVER/console/ (user ops, password in $FLEET/console-password)"
took

step "write the host config: hostname, an SSH-key user, the database, updates, Checkmk, the fleet"
ssh-keygen -q -t ed25519 -N '' -C ops@quickstart -f "$SITE/id_ed25519"
head -c 32 /dev/urandom | base64 >"$SITE/site/db-root-password"
chmod 600 "$SITE/site/db-root-password"
cp "$WWW/metadata/root.json" "$SITE/site/root.json"
cat >"$SITE/site.yaml" <<EOF
hostname: db01
timezone: Europe/Berlin
users:
  - name: ops
    sudo: true
    ssh_authorized_keys: ["$(cat "$SITE/id_ed25519.pub")"]
apps:
  - name: mariadb
    secrets: {root-password: site/db-root-password}
updates:
  remote: {name: origin, url: "http://10.0.2.2:$HTTP_PORT/", root: site/root.json, channel: site/db}
  policy: {mode: prepare, check_interval_s: 30, jitter_s: 5}
checkmk:
  only_from: [10.0.2.2, 127.0.0.1]
control: {url: "http://10.0.2.2:$FLEET_PORT", enrol_token: site/enrol-token, interval: 30, jitter: 5}
sysctl:
  vm.swappiness: 1
EOF
atoll host-config validate "$SITE/site.yaml"; took

step "build the host image with the config baked in"
atoll image build site/db --repo "$REPO" --config "$SITE/site.yaml" \
    --out "$WORK/db01.qcow2" --size 8G --firmware bios; took

step "power on db01 (QEMU): first boot provisions it, loads the DB image, initialises MariaDB"
qemu-system-x86_64 -accel tcg,thread=multi -cpu qemu64,+rdrand -smp 2 -m 3072 -display none -monitor none \
    -serial "file:$CONSOLE" -device virtio-rng-pci \
    -nic "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22,hostfwd=tcp:127.0.0.1:$CMK_PORT-:6556" \
    -drive "file=$WORK/db01.qcow2,if=virtio,format=qcow2,cache=unsafe" &
PIDS+=($!)
echo "${PIDS[-1]}" >"$WORK/qemu.pid"
echo "    console: $CONSOLE; ssh: ssh -i $SITE/id_ed25519 -p $SSH_PORT ops@127.0.0.1"
wait_boot 1 1800
grep -a 'ATOLL-BOOT-COMPLETE ' "$CONSOLE" | tail -n 1 | sed 's/.*ATOLL-BOOT-COMPLETE /    boot-complete: /' | cut -c1-160
took

step "the database answers a query from this machine (over SSH, with the site's key)"
on_host hostname
on_host "sudo atoll app sql mariadb --root 'SELECT VERSION()'"
on_host "sudo atoll app sql mariadb --root \"CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, item TEXT); INSERT INTO shop.orders SELECT seq, CONCAT('item-', seq) FROM shop.seq_1_to_1000\""
echo "    shop.orders rows: $(on_host "sudo atoll app sql mariadb --root 'SELECT COUNT(*) FROM shop.orders'")"
took

step "the Checkmk agent answers on its port (TCP 6556, forwarded to 127.0.0.1:$CMK_PORT)"
timeout 60 bash -c "cat </dev/tcp/127.0.0.1/$CMK_PORT" >"$WORK/checkmk.txt"
echo "    $(grep -c '^<<<' "$WORK/checkmk.txt") sections, e.g. $(grep -o '^<<<[a-z_]*' "$WORK/checkmk.txt" | head -n 8 | tr -d '<' | tr '\n' ' ')"
grep -a '"atoll ' "$WORK/checkmk.txt" | sed 's/^/    /'
took

step "db01 enrolled itself at first boot and checks in: the fleet inventory"
start=$SECONDS
until atoll fleet hosts --json | json '[h["name"] for h in d if h.get("booted_version")]' | grep -q db01; do
    [ $((SECONDS - start)) -lt 300 ] || die "db01 not in the fleet inventory after 300 s (see $FLEET/serve.log)"
    sleep 5
done
atoll fleet hosts | sed 's/^/    /'
# ... and on the web console's fleet page, logged in as ops (CSRF token, session cookie)
jar=$FLEET/console-cookies
csrf=$(curl -fsS -c "$jar" "$ATOLL_FLEET_SERVER/console/login" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p')
curl -fsS -o /dev/null -b "$jar" -c "$jar" --data-urlencode "csrf=$csrf" --data-urlencode name=ops \
    --data-urlencode "password@$FLEET/console-password" "$ATOLL_FLEET_SERVER/console/login"
curl -fsS -b "$jar" "$ATOLL_FLEET_SERVER/console/fleet" | grep -q '>db01<' \
    || die "db01 is not on the console's fleet page ($ATOLL_FLEET_SERVER/console/fleet)"
echo "    db01 is on the console: $ATOLL_FLEET_SERVER/console/fleet (user ops)"
took

step "compose v2 (adds htop), roll it out to acme's databases, then publish it"
atoll compose examples/db-host-v2.yaml --repo "$REPO"
V2=$(atoll store refs --repo "$REPO" --json | json 'd["site/db"]')
# one wave (a fleet would use e.g. --waves 1,10,100 --soak 1h); the rollout says what
# db01 may do: its own policy (prepare) and the customer's apply decide the rest
atoll fleet rollout create v2-db --customer acme --label role=db --channel site/db \
    --version "1=$V1" --version "2=$V2" --from 1 --to 2 --waves 100 --soak 0s --max-failures 0
atoll publish site/db --repo "$REPO" --to "$WWW" --keys "$KEYS" --level 6
took

step "the host's agent downloads v2 (a delta) and prepares it; nothing reboots (policy: prepare)"
start=$SECONDS
until [ "$(on_host 'sudo atoll --json status' | json '(d.get("prepared") or {}).get("commit")')" = "$V2" ]; do
    [ $((SECONDS - start)) -lt 1200 ] || die "v2 not prepared after 1200 s"
    sleep 10
done
on_host "sudo atoll update check" | sed 's/^/    /' || true
took

step "the customer applies it when it suits them: atoll update apply --reboot"
on_host "sudo atoll update apply --reboot" || true  # the connection drops as it reboots
wait_boot 2 1200
booted=$(on_host 'sudo atoll --json status' | json 'd["booted"]["commit"]')
[ "$booted" = "$V2" ] || die "booted $booted, expected v2 $V2"
took

step "v2 runs, marked good; the data is intact"
on_host "sudo atoll status" | sed 's/^/    /'
rows=$(on_host "sudo atoll app sql mariadb --root 'SELECT COUNT(*) FROM shop.orders'")
[ "$rows" = 1000 ] || die "shop.orders has $rows rows, expected 1000"
echo "    shop.orders rows: $rows; htop: $(on_host 'command -v htop')"
took

step "the rollout sees db01 on v2 at its next check-in and finishes"
start=$SECONDS
while :; do
    state=$(atoll fleet rollout status v2-db --json | json 'd["state"]')
    [ "$state" = finished ] && break
    [ "$state" = running ] || { atoll fleet rollout status v2-db --hosts >&2; die "rollout v2-db is $state"; }
    [ $((SECONDS - start)) -lt 300 ] || die "rollout v2-db not finished after 300 s"
    sleep 5
done
phase=$(atoll fleet rollout status v2-db --hosts --json | json '[h["phase"] for h in d["hosts"] if h["name"] == "db01"][0]')
[ "$phase" = succeeded ] || die "db01 is $phase in rollout v2-db, expected succeeded"
atoll fleet rollout status v2-db | sed 's/^/    /'
atoll fleet events --host db01 --limit 12 | sed 's/^/    /'
took

step "power off"
on_host "sudo systemctl poweroff --check-inhibitors=no" || true  # no logind D-Bus check
for _ in $(seq 60); do kill -0 "${PIDS[-1]}" 2>/dev/null || break; sleep 2; done
took

printf '\n\033[1mquickstart done in %.0f s\033[0m (v1 %s -> v2 %s); everything is in %s\n' \
    "$(echo "$(date +%s.%N) - $T0" | bc)" "${V1:0:12}" "${V2:0:12}" "$WORK"
printf '%s\n' "${TIMINGS[@]}"
