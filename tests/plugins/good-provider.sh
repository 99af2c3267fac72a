#!/bin/sh
# A kubelet credential provider (credentialprovider.kubelet.k8s.io/v1) for the tests: answers
# with credentials for the registry of the requested image, cached for $CACHE (default 6h0m0s),
# and logs each request to $LOG when set.
request=$(cat)
case "$request" in
  *'"kind":"CredentialProviderRequest"'*) ;;
  *) echo "not a CredentialProviderRequest" >&2; exit 2 ;;
esac
image=$(printf '%s' "$request" | sed -n 's/.*"image":"\([^"]*\)".*/\1/p')
registry=${image%%/*}
[ -n "$LOG" ] && printf '%s\n' "$image" >> "$LOG"
n=$(date +%s%N)
cat <<JSON
{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Registry","cacheDuration":"${CACHE:-6h0m0s}","auth":{"$registry":{"username":"plugin-user","password":"plugin-token-$n"}}}
JSON
