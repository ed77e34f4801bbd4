#!/bin/sh
# One-shot init of the compose platform, run by the `init` service before any hub starts:
#   1. the development PKI in the pki volume, once (later runs keep it: `certs init` never
#      overwrites a CA, and a new CA would lock out every certificate already copied out);
#   2. the database schema (`xinqiao migrate`): the hubs run `serve --no-migrate`.
# Safe to run again: each `docker compose up` does.
set -eu

config=/etc/xinqiao/xinqiao.toml
pki=/etc/xinqiao/pki

if [ -f "$pki/ca.crt" ]; then
    echo "init: keeping the PKI in $pki"
else
    # localhost and 127.0.0.1 are always in the hub certificate; hub-1 and hub-2 are the names
    # the containers reach each other by.
    xinqiao certs init --out "$pki" --host hub-1 --host hub-2
fi

xinqiao migrate --config "$config"
echo "init: done"
