#!/bin/sh
# A credential provider that fails, as one without cloud credentials does.
cat >/dev/null
echo "no credentials in this environment" >&2
exit 1
