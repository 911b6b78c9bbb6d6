#!/usr/bin/env bash
# A throwaway CA and certificates for the 3 etcd members `crm-bench race` starts on 127.0.0.1:
# member-<n>.pem/.key (server and client usage: etcd 3.4 members dial each other with their
# server certificate), client.pem/.key for the load generator, ca.pem. EC P-256, like the
# cluster's own (cluster/make-certs.sh). Usage: make-etcd-certs.sh DIR
set -euo pipefail
dir=${1:?usage: make-etcd-certs.sh DIR}
command -v openssl >/dev/null || { echo "make-etcd-certs: openssl is not installed" >&2; exit 1; }
mkdir -p "$dir"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }

key "$dir/ca.key"
openssl req -x509 -new -key "$dir/ca.key" -sha256 -days 30 -subj "/CN=race etcd CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/ca.pem" 2>/dev/null

sign() { # name, common name, extended usage
    key "$dir/$1.key"
    openssl req -new -key "$dir/$1.key" -subj "/CN=$2" 2>/dev/null |
        openssl x509 -req -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAserial "$dir/ca.srl" -CAcreateserial \
            -days 30 -sha256 -out "$dir/$1.pem" -extfile <(printf '%s\n' \
                "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
                "extendedKeyUsage=$3" "subjectAltName=IP:127.0.0.1,DNS:localhost") 2>/dev/null
}
for n in 1 2 3; do sign "member-$n" "etcd-$n" "serverAuth,clientAuth"; done
sign client race-client clientAuth
echo "make-etcd-certs: CA, 3 member and 1 client certificates in $dir"
