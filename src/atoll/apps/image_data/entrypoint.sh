#!/bin/sh
# atoll's MariaDB entrypoint (runs as the unprivileged mysql user, no capabilities).
#
# On an empty data volume: initialise the datadir, set root's password from
# /run/secrets/root-password and create the monitoring/maintenance user named in
# /run/secrets/mysql-client.cnf (password from /run/secrets/monitor-password).
# Secrets are read from files and fed to mariadbd on stdin: never in argv,
# the environment or the log. Then mariadbd runs in the foreground as PID 1.
set -eu

DATADIR=/var/lib/mysql
SECRETS=/run/secrets
MONITOR_USER=atoll

log() { echo "atoll-entrypoint: $*" >&2; }

# SQL string literal body of a file's first line: backslash and quote escaped.
sql_escape() { head -n 1 "$1" | tr -d '\r\n' | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g"; }

mkdir -p /run/mysqld

if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
    exec "$@"   # a command, not mariadbd options
fi

if [ ! -d "$DATADIR/mysql" ]; then
    for f in root-password monitor-password; do
        if [ ! -s "$SECRETS/$f" ]; then
            log "missing secret $SECRETS/$f: cannot initialise an empty datadir"
            exit 1
        fi
    done
    log "initialising an empty datadir in $DATADIR"
    # A half-initialised datadir from an interrupted first start is started over.
    find "$DATADIR" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
    # One bootstrap run: the system tables, then our users (an --extra-file on the
    # container's private /tmp tmpfs, readable by us only, removed right after).
    umask 077
    init=/tmp/atoll-init.sql
    {
        echo "FLUSH PRIVILEGES;"
        printf "ALTER USER 'root'@'localhost' IDENTIFIED BY '%s';\n" "$(sql_escape "$SECRETS/root-password")"
        printf "CREATE USER '%s'@'localhost' IDENTIFIED BY '%s';\n" "$MONITOR_USER" "$(sql_escape "$SECRETS/monitor-password")"
        echo "GRANT SELECT, PROCESS, RELOAD, LOCK TABLES, SHOW VIEW, EVENT, TRIGGER, BINLOG MONITOR, SLAVE MONITOR ON *.* TO '$MONITOR_USER'@'localhost';"
        echo "CREATE DATABASE IF NOT EXISTS atoll_health;"
        echo "GRANT ALL ON atoll_health.* TO '$MONITOR_USER'@'localhost';"
    } > "$init"
    if ! mariadb-install-db --datadir="$DATADIR" --auth-root-authentication-method=normal \
        --skip-test-db --skip-name-resolve --skip-log-bin --extra-file="$init" >/tmp/install-db.log 2>&1; then
        rm -f "$init"
        log "initialising the datadir failed"
        # Never echo a password: mask whatever follows IDENTIFIED BY.
        sed -e "s/\(IDENTIFIED BY\) .*/\1 ***/I" /tmp/install-db.log >&2
        exit 1
    fi
    rm -f "$init"
    umask 022
    touch "$DATADIR/.atoll-initialised"
    log "datadir initialised"
fi

exec mariadbd --datadir="$DATADIR" "$@"
