#!/bin/sh
# Makes a private CA and a server certificate for clued in DIR (default /certs), once: a
# volume that already holds them is left alone. Clients trust DIR/ca.pem.
#   CLUED_TLS_NAMES  subjectAltName of the server certificate
#                    (default DNS:clued,DNS:localhost,IP:127.0.0.1,IP:::1)
set -eu
dir=${1:-/certs}
names=${CLUED_TLS_NAMES:-DNS:clued,DNS:localhost,IP:127.0.0.1,IP:::1}
if [ -s "$dir/server.pem" ] && [ -s "$dir/server.key" ] && [ -s "$dir/ca.pem" ]; then
  echo "gen-certs: certificates already in $dir"
  exit 0
fi
mkdir -p "$dir"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj "/CN=clued private CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=clued" \
  -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$names" >"$dir/server.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
  -CAcreateserial -days 825 -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null
# The CA signs this one certificate and is then forgotten, so the volume clued mounts holds
# no key that could mint others. To renew, remove the volume and start again.
rm -f "$dir/server.csr" "$dir/server.ext" "$dir/ca.srl" "$dir/ca.key"
chmod 644 "$dir/ca.pem" "$dir/server.pem"
# clued runs as nobody and must read its key; nobody else needs to.
chown 65534:65534 "$dir/server.key" 2>/dev/null || chmod 644 "$dir/server.key"
chmod 400 "$dir/server.key"
echo "gen-certs: made $dir/ca.pem and a server certificate for $names"
