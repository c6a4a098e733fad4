#!/usr/bin/env bash
# Makes a throwaway CA, a server certificate for localhost/127.0.0.1 and a client
# certificate, for trying TLS and mTLS locally (see README, TLS). Not for production.
#
#   scripts/test-ca.sh [OUT_DIR]          # default ./test-ca
#   HASHMATCH_TLS_NAMES="DNS:match.internal,IP:10.0.0.5" scripts/test-ca.sh   # extra names
#
# Writes OUT_DIR/{ca,server,client}.{crt,key} (PEM, unencrypted EC P-256 keys), valid for
# HASHMATCH_TLS_DAYS days (default 30). Refuses to overwrite an existing ca.key.
set -euo pipefail
out=${1:-test-ca}
days=${HASHMATCH_TLS_DAYS:-30}
names="DNS:localhost,IP:127.0.0.1,IP:::1${HASHMATCH_TLS_NAMES:+,$HASHMATCH_TLS_NAMES}"
if ! command -v openssl >/dev/null; then
    echo "test-ca: openssl is not installed" >&2
    exit 1
fi
if [[ -e "$out/ca.key" ]]; then
    echo "test-ca: $out/ca.key exists; remove $out or pass another folder" >&2
    exit 1
fi
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
umask 077  # private keys readable by their owner only

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

key "$out/ca.key"
openssl req -x509 -new -key "$out/ca.key" -sha256 -days "$days" -subj "/CN=hashmatch test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$out/ca.crt"

issue() {  # issue NAME CN EXTENSIONS
    key "$out/$1.key"
    openssl req -new -key "$out/$1.key" -subj "/CN=$2" -out "$tmp/$1.csr"
    printf '%s\n' "$3" >"$tmp/$1.ext"
    openssl x509 -req -in "$tmp/$1.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
        -CAcreateserial -CAserial "$tmp/ca.srl" -sha256 -days "$days" \
        -extfile "$tmp/$1.ext" -out "$out/$1.crt" 2>/dev/null
}

issue server localhost "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$names"
issue client "hashmatch test client" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
chmod 644 "$out"/*.crt

cat <<EOM
test-ca: wrote $out/ca.crt, server.crt/.key ($names), client.crt/.key ($days days)
  serve:  hashmatch serve --tls-cert $out/server.crt --tls-key $out/server.key --tls-client-ca $out/ca.crt
  client: hashmatch-client --ca-file $out/ca.crt --cert-file $out/client.crt --key-file $out/client.key ...
EOM
