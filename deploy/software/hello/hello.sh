#!/bin/sh
# The sample service of `slapos up`: greets, then keeps a heartbeat file fresh (the
# promise checks it) until stopped. Its arguments are the requester's data: printed with
# printf '%s', never interpreted.
# usage: hello.sh NAME HEARTBEAT_FILE
printf 'hello, %s: serving from %s\n' "$1" "$(pwd)"
while :; do
    date -u +%Y-%m-%dT%H:%M:%SZ > "$2.tmp" && mv -- "$2.tmp" "$2"
    sleep 2
done
