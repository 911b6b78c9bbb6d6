#!/usr/bin/env bash
# Starts or stops a local cluster of crm-node processes on 127.0.0.1.
#
#   cluster/local-cluster.sh up [MEMBERS]   # default 3; builds nothing: run `make up`
#   cluster/local-cluster.sh down           # stops every member
#   cluster/local-cluster.sh stop ID        # stops one member (SIGTERM: it hands off leadership)
#   cluster/local-cluster.sh start ID       # starts it again from its data
#
# Everything lives under run/local/ (override with CRM_RUN_DIR): certs/, node-<id>.yaml,
# node-<id>/data, node-<id>.log, node-<id>.pid, and cluster.json, which crmctl reads by default.
# Ports: peer 7001+, client 7101+, admin 7201+, health 7301+, front gRPC 7401+, front HTTP 7501+
# (CRM_BASE_PORT moves them all).
# Binaries come from .build/release (CRM_BIN overrides). CRM_AUDIT_READS=async writes the
# configs with crm.audit_reads: async (for measuring what synchronous read audit costs);
# CRM_MFA=optional lets users sign in with a password alone (benchmarks that sign in many times);
# CRM_MAX_SUBJECTS_PER_HOUR raises the exfiltration guard's bound (500) for benchmarks that read
# thousands of persons as one user.
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
    cluster/make-certs.sh "$run/certs" "$ids" crmctl app >/dev/null
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
crm:
  key_file: certs/crm.key
  audit_reads: ${CRM_AUDIT_READS:-sync}
  mfa: ${CRM_MFA:-required}
  max_subjects_per_hour: ${CRM_MAX_SUBJECTS_PER_HOUR:-500}
backup:
  targets: [backups/node-$id-a, backups/node-$id-b]
  key_file: certs/backup.key
front:
  grpc: "127.0.0.1:$((base + 400 + id))"
  http: "127.0.0.1:$((base + 500 + id))"
YAML
    done
    for id in $(seq 1 "$count"); do launch "$id"; done
    write_cluster_file
    echo "local-cluster: started $count members (logs: $run/node-<id>.log); waiting for a leader"
    wait_until_healthy "$count" || { echo "local-cluster: no leader after 20 s; see $run/node-*.log" >&2; exit 1; }
    "$bin/crmctl" status --cluster "$run/cluster.json"
    cat <<USAGE

The cluster is up. From the repository root:
  $bin/crmctl status                  # every member, its role, log positions and health
  $bin/crmctl kv put greeting hello   # writes go to the leader through any member
  $bin/crmctl kv get greeting
  $bin/crmctl members list
  cluster/local-cluster.sh stop 2             # stop one member; \`start 2\` brings it back
  make down                                   # stops exactly these processes
Applications use the \`app\` identity (client_tls in $run/cluster.json), not crmctl's admin one.
USAGE
}

# Starts member $1 from its config (written by `up`), recording its pid.
launch() {
    local id=$1
    "$bin/crm-node" --config "$run/node-$id.yaml" >> "$run/node-$id.log" 2>&1 &
    echo $! > "$run/node-$id.pid"
}

# The members' configs on disk, in id order.
member_ids() {
    for config in "$run"/node-*.yaml; do
        [ -f "$config" ] || continue
        basename "$config" .yaml | sed 's/^node-//'
    done | sort -n
}

# cluster.json: every member's endpoints and pid; `tls` is the operator's (crmctl, an admin),
# `client_tls` an application's (crm-bench and applications).
write_cluster_file() {
    local json_members="" id pid
    for id in $(member_ids); do
        pid=$(cat "$run/node-$id.pid" 2>/dev/null || echo 0)
        json_members+="${json_members:+,}{\"id\": $id, \"peer\": \"127.0.0.1:$((base + id))\", \"client\": \"127.0.0.1:$((base + 100 + id))\", \"admin\": \"127.0.0.1:$((base + 200 + id))\", \"health\": \"127.0.0.1:$((base + 300 + id))\", \"front\": \"127.0.0.1:$((base + 400 + id))\", \"front_http\": \"127.0.0.1:$((base + 500 + id))\", \"pid\": $pid, \"config\": \"node-$id.yaml\"}"
    done
    cat > "$run/cluster.json" <<JSON
{"members": [$json_members],
 "tls": {"ca": "certs/ca.pem", "cert": "certs/client-crmctl.pem", "key": "certs/client-crmctl.key"},
 "client_tls": {"ca": "certs/ca.pem", "cert": "certs/client-app.pem", "key": "certs/client-app.key"}}
JSON
}

# Waits (20 s at most) until a leader is known and then (10 s more at most) until every one of
# $1 members reports itself healthy, so that the status shown is not a moment after the election.
wait_until_healthy() {
    local expected=$1 status
    for _ in $(seq 1 100); do
        status=$("$bin/crmctl" status --cluster "$run/cluster.json" --json --timeout 1 2>/dev/null || true)
        if grep -q '"leader_id" : [1-9]' <<<"$status"; then
            for _ in $(seq 1 50); do
                [ "$(grep -c '"health" : "healthy"' <<<"$status")" -ge "$expected" ] && return 0
                sleep 0.2
                status=$("$bin/crmctl" status --cluster "$run/cluster.json" --json --timeout 1 2>/dev/null || true)
            done
            return 0
        fi
        sleep 0.2
    done
    return 1
}

# Stops the member whose pid file is $1: SIGTERM, then SIGKILL after 10 s.
stop_pidfile() {
    local pidfile=$1 pid
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
}

stop_one() {
    local id=$1
    [[ $id =~ ^[1-9]$ ]] || { echo "local-cluster: ID must be a member id (1 to 9)" >&2; exit 2; }
    [ -f "$run/node-$id.pid" ] || { echo "local-cluster: member $id is not running (no $run/node-$id.pid)" >&2; exit 1; }
    stop_pidfile "$run/node-$id.pid"
    write_cluster_file
}

start_one() {
    local id=$1
    [[ $id =~ ^[1-9]$ ]] || { echo "local-cluster: ID must be a member id (1 to 9)" >&2; exit 2; }
    [ -f "$run/node-$id.yaml" ] || { echo "local-cluster: no member $id in $run (\`up\` first)" >&2; exit 1; }
    if [ -f "$run/node-$id.pid" ] && kill -0 "$(cat "$run/node-$id.pid")" 2>/dev/null; then
        echo "local-cluster: member $id is already running (pid $(cat "$run/node-$id.pid"))" >&2
        exit 1
    fi
    launch "$id"
    write_cluster_file
    echo "local-cluster: started member $id (pid $(cat "$run/node-$id.pid"), log $run/node-$id.log)"
}

down() {
    local any=0
    for pidfile in "$run"/node-*.pid; do
        [ -f "$pidfile" ] || continue
        any=1
        stop_pidfile "$pidfile"
    done
    [ $any -eq 1 ] || echo "local-cluster: nothing to stop in $run"
}

case "${1:-}" in
    up) up "${2:-3}" ;;
    down) down ;;
    stop) stop_one "${2:-}" ;;
    start) start_one "${2:-}" ;;
    *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
