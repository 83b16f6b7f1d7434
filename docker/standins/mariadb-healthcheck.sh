#!/bin/sh
# healthcheck.sh of the mariadb:11 stand-in (docker/standins/build.sh), for the two checks
# gearsql's compose file asks of the official image's script:
#   --connect             the server answers, and not the temporary one of the first start
#                         (which skips networking)
#   --innodb_initialized  InnoDB is up
# It connects as root over the socket, where root@localhost authenticates by unix_socket.
set -eu
query() {
    mariadb --protocol=socket -uroot --batch --skip-column-names -e "$1"
}
[ $# -gt 0 ] || set -- --connect
for check in "$@"; do
    case "$check" in
        --connect)
            [ "$(query 'SELECT @@skip_networking')" = 0 ] ;;
        --innodb_initialized)
            [ "$(query "SELECT 1 FROM information_schema.ENGINES WHERE engine = 'InnoDB'
                        AND support IN ('YES', 'DEFAULT', 'ENABLED')")" = 1 ] ;;
        *)
            echo "healthcheck.sh (stand-in): unsupported check $check" >&2
            exit 2 ;;
    esac
done
