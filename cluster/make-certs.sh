#!/usr/bin/env bash
# Creates the cluster CA, member certificates, client certificates and master-key files for a
# local or multi-host cluster, with the openssl command-line tool. Existing files are kept, so
# the script is safe to run again (delete a file to have it made anew).
#
#   cluster/make-certs.sh DIR MEMBERS [CLIENT...]
#     DIR      where to write (created 0700): ca.pem, member-<id>.pem/.key,
#              client-<name>.pem/.key, master-<id>.key, crm.key and backup.key (shared by every member):
#              what members and clients need
#              (copy a member only its own files, ca.pem and crm.key)
#     MEMBERS  member ids, comma-separated (1,2,3); a member's certificate names it as
#              URI crm://member/<id>, for localhost and 127.0.0.1 plus $CRM_CERT_HOSTS
#              (comma-separated DNS names or IP addresses of the hosts that run members)
#     CLIENT   client identities (default: crmctl); a client certificate names its identity
#              as URI crm://client/<name>
#
# The CA's private key is kept apart, in $CRM_CA_DIR (default DIR.ca, created 0700), never
# in DIR: nothing deployed to a member can sign certificates. Keep it offline between uses.
# Keys are EC P-256, private keys and master keys are written 0600, certificates 0644; member
# and client certificates are valid for 825 days, the CA for 10 years.
set -euo pipefail

if [ $# -lt 2 ]; then
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
dir=$1
members=$2
ca_dir=${CRM_CA_DIR:-$dir.ca}
shift 2
clients=("$@")
[ ${#clients[@]} -eq 0 ] && clients=(crmctl)

command -v openssl >/dev/null || { echo "make-certs: openssl is not installed (apt-get install openssl)" >&2; exit 1; }
umask 077
mkdir -p "$dir" "$ca_dir"
chmod 700 "$dir" "$ca_dir"
# An older layout kept the CA key with the member files: move it out.
if [ -f "$dir/ca.key" ] && [ ! -f "$ca_dir/ca.key" ]; then
    mv "$dir/ca.key" "$ca_dir/ca.key"
    echo "make-certs: moved the CA key out of $dir to $ca_dir/ca.key"
fi

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }

if [ ! -f "$dir/ca.pem" ]; then
    new_key "$ca_dir/ca.key"
    openssl req -x509 -new -key "$ca_dir/ca.key" -sha256 -days 3650 -subj "/CN=crm cluster CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$dir/ca.pem" 2>/dev/null
    chmod 644 "$dir/ca.pem"
    echo "make-certs: created the cluster CA $dir/ca.pem (its key: $ca_dir/ca.key)"
fi

# sign NAME SUBJECT SAN EXTENDED_KEY_USAGE
sign() {
    local name=$1 subject=$2 san=$3 usage=$4
    [ -f "$dir/$name.pem" ] && return 0
    new_key "$dir/$name.key"
    local extensions
    extensions=$(mktemp)
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
        "$usage" "$san" > "$extensions"
    openssl req -new -key "$dir/$name.key" -subj "$subject" 2>/dev/null |
        openssl x509 -req -CA "$dir/ca.pem" -CAkey "$ca_dir/ca.key" -CAserial "$ca_dir/ca.srl" -CAcreateserial -days 825 -sha256 \
            -extfile "$extensions" -out "$dir/$name.pem" 2>/dev/null
    rm -f "$extensions"
    chmod 644 "$dir/$name.pem"
    echo "make-certs: created $dir/$name.pem ($san)"
}

hosts="DNS:localhost,IP:127.0.0.1"
IFS=',' read -r -a extra_hosts <<< "${CRM_CERT_HOSTS:-}"
for host in "${extra_hosts[@]}"; do
    [ -z "$host" ] && continue
    if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then hosts+=",IP:$host"; else hosts+=",DNS:$host"; fi
done

IFS=',' read -r -a member_ids <<< "$members"
for id in "${member_ids[@]}"; do
    [[ $id =~ ^[1-9][0-9]*$ ]] || { echo "make-certs: member id '$id' is not a positive integer" >&2; exit 2; }
    sign "member-$id" "/CN=crm-member-$id" "URI:crm://member/$id,$hosts" "serverAuth,clientAuth"
    if [ ! -f "$dir/master-$id.key" ]; then
        openssl rand -hex 32 > "$dir/master-$id.key"
        chmod 600 "$dir/master-$id.key"
        echo "make-certs: created $dir/master-$id.key"
    fi
done
# The CRM key-encryption key: one file, the same on every member (copy it, never regenerate it
# for one member: a member with another key serves no CRM call).
if [ ! -f "$dir/crm.key" ]; then
    openssl rand -hex 32 > "$dir/crm.key"
    chmod 600 "$dir/crm.key"
    echo "make-certs: created $dir/crm.key"
fi
# The backup key-encryption key: wraps each backup's data key (not the CRM key, so that backup
# files and this key alone open no personal field). Keep a copy off the cluster's hosts.
if [ ! -f "$dir/backup.key" ]; then
    openssl rand -hex 32 > "$dir/backup.key"
    chmod 600 "$dir/backup.key"
    echo "make-certs: created $dir/backup.key"
fi
for client in "${clients[@]}"; do
    [[ $client =~ ^[A-Za-z0-9._-]+$ ]] || { echo "make-certs: client name '$client' may use letters, digits, '.', '_' and '-'" >&2; exit 2; }
    sign "client-$client" "/CN=$client" "URI:crm://client/$client" "clientAuth"
done
rm -f "$dir/ca.srl"
[ -f "$dir/ca.key" ] && { echo "make-certs: $dir/ca.key must not be deployed with the member files" >&2; exit 1; }
exit 0
