#!/bin/sh
# A credential provider that never answers.
exec sleep 600
