#!/bin/sh
# Entrypoint of the mariadb:11 stand-in (docker/standins/build.sh): Debian's mariadb-server, set
# up from the environment the way the official image's docker-entrypoint.sh does, for the
# variables gearsql's compose file and tests use:
#   MARIADB_ROOT_PASSWORD, or MARIADB_ALLOW_EMPTY_ROOT_PASSWORD / MARIADB_RANDOM_ROOT_PASSWORD
#   (one is required), MARIADB_ROOT_HOST (default %), MARIADB_DATABASE, MARIADB_USER and
#   MARIADB_PASSWORD (the MYSQL_* names too), and the *.sql and *.sh files of
#   /docker-entrypoint-initdb.d, run once, on an empty data directory.
# Arguments that start with '-' are options for mariadbd, as upstream (compose.yaml passes
# --log-bin ...). root@localhost also authenticates by unix_socket, which healthcheck.sh uses.
set -eu

if [ "${1#-}" != "$1" ]; then
    set -- mariadbd "$@"
fi
case "$1" in
    mariadbd|mysqld) ;;
    *) exec "$@" ;;
esac

datadir=/var/lib/mysql
socket=/run/mysqld/mysqld.sock

env_or_mysql() {  # the MARIADB_ variable, else its MYSQL_ alias, else $2
    eval "value=\${MARIADB_$1:-\${MYSQL_$1:-}}"
    printf '%s' "${value:-$2}"
}
sql_string() {  # a value as an SQL string literal's contents
    printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g"
}

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$datadir" /run/mysqld
    chown mysql:mysql "$datadir" /run/mysqld
fi

if [ "$(id -u)" = 0 ] && [ ! -d "$datadir/mysql" ]; then
    root_password=$(env_or_mysql ROOT_PASSWORD "")
    if [ -n "$(env_or_mysql RANDOM_ROOT_PASSWORD "")" ]; then
        root_password=$(tr -dc 'A-Za-z0-9' < /dev/urandom | head -c 32)
        echo "GENERATED ROOT PASSWORD: $root_password"
    elif [ -z "$root_password" ] && [ -z "$(env_or_mysql ALLOW_EMPTY_ROOT_PASSWORD "")" ]; then
        echo "error: the database is uninitialized and MARIADB_ROOT_PASSWORD," \
             "MARIADB_ALLOW_EMPTY_ROOT_PASSWORD or MARIADB_RANDOM_ROOT_PASSWORD is not set" >&2
        exit 1
    fi
    root_host=$(env_or_mysql ROOT_HOST %)
    database=$(env_or_mysql DATABASE "")
    user=$(env_or_mysql USER "")
    password=$(env_or_mysql PASSWORD "")

    echo "initializing $datadir"
    mariadb-install-db --user=mysql --datadir="$datadir" --auth-root-authentication-method=normal \
        --skip-test-db --rpm --default-time-zone=SYSTEM >/dev/null

    # A temporary server on the socket only, for the users, the database and the init scripts.
    "$@" --user=mysql --skip-networking --socket="$socket" --default-time-zone=SYSTEM &
    pid=$!
    i=0
    until mariadb --protocol=socket --socket="$socket" -uroot -e 'SELECT 1' >/dev/null 2>&1; do
        i=$((i + 1))
        if [ "$i" -gt 60 ] || ! kill -0 "$pid" 2>/dev/null; then
            echo "error: the temporary server did not start" >&2
            exit 1
        fi
        sleep 1
    done

    rp=$(sql_string "$root_password")
    {
        echo "SET @@SESSION.SQL_LOG_BIN = 0;"
        echo "DROP USER IF EXISTS root@'127.0.0.1', root@'::1';"
        echo "EXECUTE IMMEDIATE CONCAT('DROP USER IF EXISTS root@''', @@hostname, '''');"
        echo "ALTER USER root@localhost IDENTIFIED VIA mysql_native_password"
        echo "    USING PASSWORD('$rp') OR unix_socket;"
        if [ "$root_host" != localhost ]; then
            rh=$(sql_string "$root_host")
            echo "CREATE USER root@'$rh' IDENTIFIED BY '$rp';"
            echo "GRANT ALL ON *.* TO root@'$rh' WITH GRANT OPTION;"
        fi
        if [ -n "$database" ]; then
            echo "CREATE DATABASE IF NOT EXISTS \`$(printf '%s' "$database" | sed 's/`/``/g')\`;"
        fi
        if [ -n "$user" ]; then
            echo "CREATE USER '$(sql_string "$user")'@'%' IDENTIFIED BY '$(sql_string "$password")';"
            if [ -n "$database" ]; then
                echo "GRANT ALL ON \`$(printf '%s' "$database" | sed 's/`/``/g')\`.*" \
                     "TO '$(sql_string "$user")'@'%';"
            fi
        fi
    } | mariadb --protocol=socket --socket="$socket" -uroot

    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh) echo "running $f"; . "$f" ;;
            *.sql) echo "running $f"
                   mariadb --protocol=socket --socket="$socket" -uroot ${database:+"$database"} < "$f" ;;
            *) if [ -e "$f" ]; then echo "ignoring $f"; fi ;;
        esac
    done

    mariadb-admin --protocol=socket --socket="$socket" -uroot shutdown
    wait "$pid" || true
    echo "MariaDB init process done. Ready for start up."
fi

if [ "$(id -u)" = 0 ]; then
    exec setpriv --reuid=mysql --regid=mysql --init-groups "$@"
fi
exec "$@"
