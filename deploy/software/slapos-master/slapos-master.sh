#!/bin/sh
# The instance side of the slapos-master release, in partition P, as its user, under
# slapgrid's supervisor. A `replica` instance:
#
#   slapos-master P enroll-replica (etc/run)      its certificate from its one-time token
#   slapos-master P replica        (etc/service)  `slapos master run`, once certified
#   slapos-master P join           (etc/run)      `slapos master join` once it serves
#   slapos-master P check          (etc/promise)  the group counts it and has a leader
#   slapos-master P leave          (sbin/destroy) `slapos master leave`: the partition is
#                                                 wiped only once the group forgets it
#   slapos-master P backups        (etc/service)  `slapos cluster backup schedule` of this
#                                                 replica (none unless backup-every-minutes)
#   slapos-master P backup-fresh   (etc/promise)  the newest backup is recent enough
#
# A `gateway` instance (another partition, another user: it never sees the replica's key):
#
#   slapos-master P enroll-gateway (etc/run)      its certificate from its one-time token
#   slapos-master P gateway        (etc/service)  `slapos gateway run` in front of the group
#   slapos-master P serving        (etc/promise)  it serves HTTPS on its address, and the
#                                                 masters accept its certificate
#
# The values of etc/slapos-master.env come from the instance's parameters (slapgrid wrote
# each as one quoted word): they are data. Each is checked for the shape it must have
# before it reaches a command line (always as --option=value, so a value starting with a
# dash is no option) or the gateway's configuration, and words are never globbed.
set -euf
P="$1"
CMD="$2"
. "$P/etc/slapos-master.env"

refuse() {
  echo "slapos-master: $1 is not $2: refusing it" >&2
  exit 1
}
# Digits.
is_number() { case "$1" in '' | *[!0-9]*) return 1 ;; esac; }
# An IPv6 or IPv4 address.
is_ip() { case "$1" in '' | *[!0-9A-Fa-f:.]*) return 1 ;; esac; }
# host:port or [v6]:port: letters, digits, dots, dashes, colons and brackets.
is_address() { case "$1" in '' | *[!]0-9A-Za-z.:[-]*) return 1 ;; esac; }
# A comma-separated list of addresses (each checked).
check_addresses() {
  for m in $(printf '%s' "$2" | tr ',' ' '); do
    is_address "$m" || refuse "$1" "a list of host:port addresses"
  done
}

# A TOML basic string: the partition's paths go into the gateway's configuration.
toml_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/[\\"]/\\&/g')"; }

case "$P" in *[[:cntrl:]]*) refuse "the partition's path" "a path without control characters" ;; esac
is_number "$REPLICA_ID" || refuse "replica-id" "a number"
is_ip "$IPV6" || refuse "the partition's address" "an IP address"
SLAPOS="$SOFTWARE/bin/slapos"
TLS="$P/etc/tls"

# The replica's side (etc/slapos-master.env of a `replica` instance).
replica_side() {
  is_number "$API_PORT" || refuse "api-port" "a number"
  check_addresses join-via "$JOIN_VIA"
  REPLICA_CRT="$TLS/replica-$REPLICA_ID.crt"
  REPLICA_KEY="$TLS/replica-$REPLICA_ID.key"
  OWN_API="[$IPV6]:$API_PORT"
}

# The replica's scheduled backups (backup-* parameters).
backup_side() {
  is_number "$BACKUP_EVERY_MINUTES" || refuse "backup-every-minutes" "a number"
  is_number "$BACKUP_KEEP" || refuse "backup-keep" "a number"
  is_number "$BACKUP_MAX_AGE_MINUTES" || refuse "backup-max-age-minutes" "a number"
  BACKUP_TO="${BACKUP_DIR:-$P/srv/backups}"
  case "$BACKUP_TO" in /*) ;; *) refuse "backup-dir" "an absolute path" ;; esac
  case "$BACKUP_TO" in *[[:cntrl:]]*) refuse "backup-dir" "a path without control characters" ;; esac
  case "$BACKUP_URL" in
    '') ;;
    https://*[!]0-9A-Za-z.:/_~%@[-]*) refuse "backup-url" "an https:// URL of letters, digits and . : / _ ~ % @ [ ] -" ;;
    https://?*) ;;
    *) refuse "backup-url" "an https:// URL" ;;
  esac
  MAX_AGE="$BACKUP_MAX_AGE_MINUTES"
  [ "$MAX_AGE" -gt 0 ] || MAX_AGE=$((BACKUP_EVERY_MINUTES * 2 + 10))
}

# The gateway's side (etc/slapos-master.env of a `gateway` instance).
gateway_side() {
  is_number "$GATEWAY_PORT" || refuse "gateway-port" "a number"
  check_addresses masters "$MASTERS"
  GATEWAY_ID="gateway:r$REPLICA_ID"
  GATEWAY_CRT="$TLS/gateway-r$REPLICA_ID.crt"
  GATEWAY_KEY="$TLS/gateway-r$REPLICA_ID.key"
  OWN_URL="https://[$IPV6]:$GATEWAY_PORT/"
}

as_replica() {
  SLAPOS_MASTER_TLS_CERT="$REPLICA_CRT" SLAPOS_MASTER_TLS_KEY="$REPLICA_KEY" \
    SLAPOS_MASTER_TLS_CA="$TLS/ca.pem" "$SLAPOS" "$@"
}

as_gateway() {
  SLAPOS_MASTER_TLS_CERT="$GATEWAY_CRT" SLAPOS_MASTER_TLS_KEY="$GATEWAY_KEY" \
    SLAPOS_MASTER_TLS_CA="$TLS/ca.pem" "$SLAPOS" "$@"
}

wait_for() {
  while [ ! -s "$1" ]; do sleep 1; done
}

# `slapos cluster status --json` through $1 lists this replica as a voter with a leader.
counted_by() {
  as_replica cluster status --json --via="$1" 2>/dev/null |
    grep -q "\"leader\": *[0-9]" &&
  as_replica cluster status --json --via="$1" 2>/dev/null |
    tr -d ' \n' | grep -q "{\"id\":$REPLICA_ID,\"role\":\"voter\""
}

case "$CMD" in
enroll-replica)
  replica_side
  umask 077
  if [ ! -s "$REPLICA_CRT" ]; then
    "$SLAPOS" master enroll --gateway="$ENROLL_GATEWAY" --token="$REPLICA_TOKEN" \
      --identity="replica:$REPLICA_ID" --ca="$TLS/group-ca.pem" --out="$TLS"
  fi
  ;;
replica)
  replica_side
  wait_for "$REPLICA_CRT"
  exec "$SLAPOS" master run --config="$P/etc/replica.toml"
  ;;
join)
  replica_side
  wait_for "$REPLICA_CRT"
  # Until the replica serves its API (it starts beside this one-shot).
  tries=0
  until as_replica cluster status --json --via="$OWN_API" >/dev/null 2>&1; do
    tries=$((tries + 1))
    [ "$tries" -lt 120 ] || { echo "the replica does not serve $OWN_API"; exit 1; }
    sleep 1
  done
  if [ -n "$JOIN_VIA" ]; then
    # Idempotent: a member already there at the same addresses is only promoted if need be.
    as_replica master join --config="$P/etc/replica.toml" --via="$JOIN_VIA"
  fi
  ;;
backups)
  replica_side
  backup_side
  if [ "$BACKUP_EVERY_MINUTES" -gt 0 ]; then
    wait_for "$REPLICA_CRT"
  fi
  # From this very replica (its own disk, no transfer between regions), as the replica.
  export SLAPOS_MASTER_TLS_CERT="$REPLICA_CRT" SLAPOS_MASTER_TLS_KEY="$REPLICA_KEY" \
    SLAPOS_MASTER_TLS_CA="$TLS/ca.pem"
  set -- --via="$OWN_API" --dir="$BACKUP_TO" \
    --every-secs="$((BACKUP_EVERY_MINUTES * 60))" --keep="$BACKUP_KEEP" --from-any
  # (also the system's authorities and the group's: the place may be either's)
  [ -z "$BACKUP_URL" ] || set -- "$@" --upload="$BACKUP_URL"
  exec "$SLAPOS" cluster backup schedule "$@"
  ;;
backup-fresh)
  replica_side
  backup_side
  [ "$BACKUP_EVERY_MINUTES" -gt 0 ] || exit 0
  if [ -n "$BACKUP_URL" ]; then
    exec "$SLAPOS" cluster backup age --dir="$BACKUP_TO" --max-secs="$((MAX_AGE * 60))" --uploaded
  fi
  exec "$SLAPOS" cluster backup age --dir="$BACKUP_TO" --max-secs="$((MAX_AGE * 60))"
  ;;
check)
  replica_side
  for i in 1 2 3 4 5 6 7 8 9 10; do
    counted_by "$OWN_API" && exit 0
    sleep 1
  done
  echo "replica $REPLICA_ID is not a voter of a group with a leader (seen from $OWN_API)"
  exit 1
  ;;
leave)
  replica_side
  # The replica is stopped already (slapgrid stops a partition before its destroy hook):
  # the others remove it, and must keep a quorum without it.
  via="$JOIN_VIA"
  [ -n "$via" ] || { echo "no join-via: nobody to ask to remove replica $REPLICA_ID"; exit 1; }
  members=$(as_replica cluster status --json --via="$via" | tr -d ' \n')
  case "$members" in
  *"{\"id\":$REPLICA_ID,"*) as_replica master leave --id="$REPLICA_ID" --via="$via" ;;
  *"\"members\":"*) echo "replica $REPLICA_ID is no longer a member" ;;
  *) echo "the group at $via does not answer"; exit 1 ;;
  esac
  ;;
enroll-gateway)
  gateway_side
  umask 077
  if [ ! -s "$GATEWAY_CRT" ]; then
    "$SLAPOS" master enroll --gateway="$ENROLL_GATEWAY" --token="$GATEWAY_TOKEN" \
      --identity="$GATEWAY_ID" --ca="$TLS/group-ca.pem" --out="$TLS"
  fi
  ;;
gateway)
  gateway_side
  [ -n "$MASTERS" ] || refuse "masters" "a list of host:port addresses"
  wait_for "$GATEWAY_CRT"
  masters=""
  for m in $(printf '%s' "$MASTERS" | tr ',' ' '); do
    masters="${masters:+$masters, }\"$m\""
  done
  cat > "$P/etc/gateway.toml" <<CONF
# Written by slapos-master at each start (the masters: its replica first).
listen = "[$IPV6]:$GATEWAY_PORT"
masters = [$masters]
tls_cert = $(toml_str "$GATEWAY_CRT")
tls_key = $(toml_str "$GATEWAY_KEY")
client_ca = $(toml_str "$TLS/ca.pem")

[master_tls]
cert = $(toml_str "$GATEWAY_CRT")
key = $(toml_str "$GATEWAY_KEY")
ca = $(toml_str "$TLS/ca.pem")

# The releases the group publishes (slapos release publish), and the one this gateway
# runs, served again at the address it was published at.
[releases]
dir = $(toml_str "$P/srv/releases")
serve_installed = [$(toml_str "$SOFTWARE")]
CONF
  exec "$SLAPOS" gateway run --config="$P/etc/gateway.toml"
  ;;
serving)
  gateway_side
  for i in 1 2 3 4 5 6 7 8 9 10; do
    if "$SLAPOS" gateway check --url="$OWN_URL" --ca="$TLS/ca.pem" >/dev/null 2>&1 &&
      as_gateway cluster status --json --via="$MASTERS" 2>/dev/null |
      grep -q "\"leader\": *[0-9]"; then
      exit 0
    fi
    sleep 1
  done
  echo "the gateway of replica $REPLICA_ID does not serve $OWN_URL, or the masters refuse it"
  exit 1
  ;;
*)
  echo "usage: slapos-master P enroll-replica|replica|join|check|leave|enroll-gateway|gateway|serving" >&2
  exit 2
  ;;
esac
