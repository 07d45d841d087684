#!/bin/sh
# The sample service of `slapos up`: greets, then keeps a heartbeat file fresh (the
# promise checks it) until stopped.
# usage: hello.sh NAME HEARTBEAT_FILE
echo "hello, $1: serving from $(pwd)"
while :; do
    date -u +%Y-%m-%dT%H:%M:%SZ > "$2.tmp" && mv "$2.tmp" "$2"
    sleep 2
done
