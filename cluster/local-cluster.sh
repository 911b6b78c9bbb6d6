#!/usr/bin/env bash
# Starts or stops a local cluster of crm-node processes on 127.0.0.1.
#
#   cluster/local-cluster.sh up [MEMBERS]   # default 3; builds nothing: run `make up`
#   cluster/local-cluster.sh down
#
# Everything lives under run/local/ (override with CRM_RUN_DIR): certs/, node-<id>.yaml,
# node-<id>/data, node-<id>.log, node-<id>.pid, and cluster.json, which crmctl reads by default.
# Ports: peer 7001+, client 7101+, admin 7201+, health 7301+, front gRPC 7401+, front HTTP 7501+
# (CRM_BASE_PORT moves them all).
# Binaries come from .build/release (CRM_BIN overrides).
set -euo pipefail
cd "$(dirname "$0")/.."

run=${CRM_RUN_DIR:-run/local}
bin=${CRM_BIN:-.build/release}
base=${CRM_BASE_PORT:-7000}

up() {
    local count=${1:-3}
    [[ $count =~ ^[1-9]$ ]] || { echo "local-cluster: MEMBERS must be 1 to 9" >&2; exit 2; }
    [ -x "$bin/crm-node" ] || { echo "local-cluster: $bin/crm-node is missing; run \`make up\` (it builds first)" >&2; exit 1; }
    mkdir -p "$run"
    local ids members=""
    ids=$(seq -s, 1 "$count")
    cluster/make-certs.sh "$run/certs" "$ids" crmctl bench >/dev/null
    for id in $(seq 1 "$count"); do
        members+="  - {id: $id, peer: \"127.0.0.1:$((base + id))\", client: \"127.0.0.1:$((base + 100 + id))\", admin: \"127.0.0.1:$((base + 200 + id))\"}"$'\n'
    done
    for id in $(seq 1 "$count"); do
        if [ -f "$run/node-$id.pid" ] && kill -0 "$(cat "$run/node-$id.pid")" 2>/dev/null; then
            echo "local-cluster: member $id is already running (pid $(cat "$run/node-$id.pid")); \`make down\` stops it" >&2
            exit 1
        fi
        cat > "$run/node-$id.yaml" <<YAML
# Member $id of the local cluster (written by cluster/local-cluster.sh).
id: $id
data_dir: node-$id/data
master_key_file: certs/master-$id.key
listen:
  peer: "127.0.0.1:$((base + id))"
  client: "127.0.0.1:$((base + 100 + id))"
  admin: "127.0.0.1:$((base + 200 + id))"
  health: "127.0.0.1:$((base + 300 + id))"
members:
$members
tls:
  ca: certs/ca.pem
  cert: certs/member-$id.pem
  key: certs/member-$id.key
admins: [crmctl]
front:
  grpc: "127.0.0.1:$((base + 400 + id))"
  http: "127.0.0.1:$((base + 500 + id))"
YAML
    done
    local json_members=""
    for id in $(seq 1 "$count"); do
        "$bin/crm-node" --config "$run/node-$id.yaml" >> "$run/node-$id.log" 2>&1 &
        echo $! > "$run/node-$id.pid"
        json_members+="${json_members:+,}{\"id\": $id, \"peer\": \"127.0.0.1:$((base + id))\", \"client\": \"127.0.0.1:$((base + 100 + id))\", \"admin\": \"127.0.0.1:$((base + 200 + id))\", \"health\": \"127.0.0.1:$((base + 300 + id))\", \"front\": \"127.0.0.1:$((base + 400 + id))\", \"front_http\": \"127.0.0.1:$((base + 500 + id))\", \"pid\": $(cat "$run/node-$id.pid"), \"config\": \"node-$id.yaml\"}"
    done
    cat > "$run/cluster.json" <<JSON
{"members": [$json_members],
 "tls": {"ca": "certs/ca.pem", "cert": "certs/client-crmctl.pem", "key": "certs/client-crmctl.key"}}
JSON
    echo "local-cluster: started $count members (logs: $run/node-<id>.log); waiting for a leader"
    for _ in $(seq 1 100); do
        if "$bin/crmctl" status --cluster "$run/cluster.json" --json --timeout 1 2>/dev/null | grep -q '"leader_id" : [1-9]'; then
            "$bin/crmctl" status --cluster "$run/cluster.json"
            cat <<USAGE

The cluster is up. From the repository root:
  $bin/crmctl status                  # every member, its role, log positions and health
  $bin/crmctl kv put greeting hello   # writes go to the leader through any member
  $bin/crmctl kv get greeting
  $bin/crmctl members list
  make down                                   # stops exactly these processes
USAGE
            return 0
        fi
        sleep 0.2
    done
    echo "local-cluster: no leader after 20 s; see $run/node-*.log" >&2
    exit 1
}

down() {
    local any=0
    for pidfile in "$run"/node-*.pid; do
        [ -f "$pidfile" ] || continue
        any=1
        local pid
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            if kill -0 "$pid" 2>/dev/null; then
                echo "local-cluster: pid $pid did not stop in 10 s; killing it" >&2
                kill -KILL "$pid"
            fi
            echo "local-cluster: stopped pid $pid ($(basename "$pidfile" .pid))"
        fi
        rm -f "$pidfile"
    done
    [ $any -eq 1 ] || echo "local-cluster: nothing to stop in $run"
}

case "${1:-}" in
    up) up "${2:-3}" ;;
    down) down ;;
    *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
