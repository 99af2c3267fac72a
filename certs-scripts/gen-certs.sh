#!/usr/bin/env bash
# Makes a CA and a serving certificate for pullsecret-injector with openssl, for clusters
# without cert-manager. Prints the base64 caBundle on standard output; everything else goes
# to standard error. See certs-scripts/README.md.
set -euo pipefail

usage() {
  cat >&2 <<'USAGE'
usage: gen-certs.sh (--service NAME --namespace NS | --host HOST...) [--host HOST...]
                    [--out DIR] [--days N] [--create-secret NAME [--namespace NS]] [--force]
  --service NAME         Service the API server calls (SANs NAME, NAME.NS, NAME.NS.svc, NAME.NS.svc.cluster.local)
  --namespace NS         its namespace; with --host alone, the namespace of --create-secret's Secret
  --host HOST            a DNS name or IP address to add (for a webhook outside the cluster); repeatable
  --out DIR              where to write ca.crt, ca.key, tls.crt, tls.key (default: ./certs)
  --days N               validity in days (default: 365)
  --create-secret NAME   also create or update the kubernetes.io/tls Secret NAME in NS with kubectl
  --force                overwrite existing keys in DIR
USAGE
}

die() { echo "gen-certs.sh: $*" >&2; usage; exit 2; }

service="" namespace="" out="./certs" days=365 secret="" force=0
hosts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --service) [ $# -ge 2 ] || die "--service needs a value"; service=$2; shift 2 ;;
    --namespace) [ $# -ge 2 ] || die "--namespace needs a value"; namespace=$2; shift 2 ;;
    --host) [ $# -ge 2 ] || die "--host needs a value"; hosts+=("$2"); shift 2 ;;
    --out) [ $# -ge 2 ] || die "--out needs a value"; out=$2; shift 2 ;;
    --days) [ $# -ge 2 ] || die "--days needs a value"; days=$2; shift 2 ;;
    --create-secret) [ $# -ge 2 ] || die "--create-secret needs a value"; secret=$2; shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done

dns_label='^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'
if [ -n "$service" ]; then
  [ -n "$namespace" ] || die "--service needs --namespace"
  [[ $service =~ $dns_label ]] || die "--service: not a valid Service name: $service"
fi
# Without --service, --namespace only says where --create-secret puts the Secret (a webhook
# reached at --host, outside the cluster, keeps its TLS Secret in some namespace all the same).
if [ -n "$namespace" ]; then
  [[ $namespace =~ $dns_label ]] || die "--namespace: not a valid namespace name: $namespace"
fi
[ -n "$service" ] || [ ${#hosts[@]} -gt 0 ] || die "give --service and --namespace, or --host"
[[ $days =~ ^[1-9][0-9]*$ ]] || die "--days: not a positive number: $days"
if [ -n "$secret" ]; then
  [ -n "$namespace" ] || die "--create-secret needs --namespace"
  command -v kubectl >/dev/null || die "--create-secret needs kubectl"
fi

sans=()
cn=""
if [ -n "$service" ]; then
  for name in "$service" "$service.$namespace" "$service.$namespace.svc" "$service.$namespace.svc.cluster.local"; do
    sans+=("DNS:$name")
  done
  cn="$service.$namespace.svc"
fi
ip_re='^([0-9]{1,3}\.){3}[0-9]{1,3}$'
for host in "${hosts[@]}"; do
  if [[ $host =~ $ip_re ]] || [[ $host == *:* ]]; then
    sans+=("IP:$host")
  elif [[ $host =~ ^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$ ]]; then
    sans+=("DNS:$host")
  else
    die "--host: not a DNS name or IP address: $host"
  fi
  [ -n "$cn" ] || cn=$host
done
san_list=$(IFS=,; echo "${sans[*]}")

mkdir -p "$out"
for f in ca.key ca.crt tls.key tls.crt; do
  if [ -e "$out/$f" ] && [ "$force" -eq 0 ]; then
    echo "gen-certs.sh: $out/$f exists; use --force to replace it" >&2
    exit 1
  fi
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
umask 077

# ECDSA P-256: cheap handshakes, which matter when the API server opens new connections.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/ca.key" 2>/dev/null
openssl req -x509 -new -key "$tmp/ca.key" -sha256 -days "$days" -subj "/CN=pullsecret-injector-ca" \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$tmp/ca.crt" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/tls.key" 2>/dev/null
openssl req -new -key "$tmp/tls.key" -subj "/CN=$cn" -out "$tmp/tls.csr" 2>/dev/null
cat > "$tmp/ext.cnf" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$san_list
EXT
openssl x509 -req -in "$tmp/tls.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" -CAcreateserial \
  -days "$days" -sha256 -extfile "$tmp/ext.cnf" -out "$tmp/tls.crt" 2>/dev/null
openssl verify -CAfile "$tmp/ca.crt" "$tmp/tls.crt" >/dev/null

for f in ca.key ca.crt tls.key tls.crt; do
  cp "$tmp/$f" "$out/$f"
done
chmod 600 "$out/ca.key" "$out/tls.key"
chmod 644 "$out/ca.crt" "$out/tls.crt"
echo "wrote $out/{ca.crt,ca.key,tls.crt,tls.key} for $san_list, valid $days days" >&2

if [ -n "$secret" ]; then
  kubectl -n "$namespace" create secret generic "$secret" --type=kubernetes.io/tls \
    --from-file=tls.crt="$out/tls.crt" --from-file=tls.key="$out/tls.key" --from-file=ca.crt="$out/ca.crt" \
    --dry-run=client -o yaml | kubectl apply -f - >&2
fi

echo "caBundle (certs.secret.caBundle):" >&2
base64 < "$out/ca.crt" | tr -d '\n'
echo
