#!/usr/bin/env bash
# Local stand-ins for the base images docker/compose.yaml needs, for a Docker engine that cannot
# pull from Docker Hub:
#
#   python:3.11-slim  Debian bookworm (minbase) with python3 (3.11), pip, python-is-python3;
#                     Debian's EXTERNALLY-MANAGED marker removed (the official image has none)
#   postgres:15       Debian's postgresql-15, with postgres-entrypoint.sh (POSTGRES_* variables)
#   mariadb:11        Debian's mariadb-server (10.11), with mariadb-entrypoint.sh (MARIADB_*) and
#                     a healthcheck.sh for --connect and --innodb_initialized
#
# Each root filesystem is made with mmdebstrap from the Debian mirror that this machine's apt
# already uses (read from /etc/apt/sources.list*), and tagged under the official name, labelled
# org.gearsql.standin=<name> and org.gearsql.standin.recipe=<hash of this folder and the mirror>.
# An image with the same recipe is reused for 30 days (GEARSQL_STANDIN_MAX_AGE_DAYS);
# GEARSQL_STANDIN_REBUILD=1 makes it anew.
#
#   bash docker/standins/build.sh                     # all three
#   bash docker/standins/build.sh postgres:15         # some
#
# Needs root (mmdebstrap's root mode), mmdebstrap and a Docker engine. DOCKER names the client
# (default: docker). GEARSQL_DEBIAN_MIRROR and GEARSQL_DEBIAN_SECURITY_MIRROR override the
# mirrors read from apt.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
read -r -a DOCKER_CMD <<< "${DOCKER:-docker}"
SUITE=bookworm   # Python 3.11 and PostgreSQL 15, as in python:3.11-slim and postgres:15
LOGDIR=${GEARSQL_STANDIN_LOGDIR:-$(mktemp -d)}
MAX_AGE_DAYS=${GEARSQL_STANDIN_MAX_AGE_DAYS:-30}   # then made anew, with the mirror's updates

dk() { "${DOCKER_CMD[@]}" "$@"; }

# The Debian mirror and security mirror apt uses: the URIs of the entries for this machine's
# own release (one-line .list files and deb822 .sources files).
apt_mirrors() {
    python3 - <<'PY'
import glob, re
codename = ""
for line in open("/etc/os-release"):
    if line.startswith("VERSION_CODENAME="):
        codename = line.split("=", 1)[1].strip().strip('"')
entries = []
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
        if m:
            entries.append((m.group(1), m.group(2)))
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(path).read()):
        fields, key = {}, None
        for line in stanza.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                entries.append((uri, suite))
main = next((u for u, s in entries if s == codename), "")
security = next((u for u, s in entries if s in (codename + "-security", codename + "/updates")), "")
print(main.rstrip("/"), security.rstrip("/"))
PY
}

read -r APT_MAIN APT_SECURITY < <(apt_mirrors)
MIRROR=${GEARSQL_DEBIAN_MIRROR:-${APT_MAIN:-}}
SECURITY=${GEARSQL_DEBIAN_SECURITY_MIRROR:-${APT_SECURITY:-}}
if [ -z "$MIRROR" ]; then
    echo "build.sh: no Debian mirror found in /etc/apt/sources.list*; set GEARSQL_DEBIAN_MIRROR" >&2
    exit 1
fi
SOURCES=("deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main")
if [ -n "$SECURITY" ]; then
    SOURCES+=("deb $SECURITY $SUITE-security main")
fi

packages_of() {
    case "$1" in
        python:3.11-slim) echo python3,python3-pip,python-is-python3,passwd,ca-certificates,netbase,tzdata ;;
        postgres:15) echo postgresql-15 ;;
        mariadb:11) echo mariadb-server ;;
        *) echo "build.sh: no stand-in for $1" >&2; return 1 ;;
    esac
}

recipe_of() {  # what the image is made from: this folder's files, the packages, the mirrors
    {
        cat "$HERE"/build.sh
        case "$1" in
            postgres:15) cat "$HERE"/postgres* ;;
            mariadb:11) cat "$HERE"/mariadb* ;;
        esac
        packages_of "$1"
        printf '%s\n' "${SOURCES[@]}"
    } | sha256sum | cut -c1-16
}

current() {  # the image is a stand-in made from this recipe, in the last MAX_AGE_DAYS days
    local label created
    label=$(dk image inspect -f '{{index .Config.Labels "org.gearsql.standin.recipe"}}' "$1" \
            2>/dev/null) || return 1
    [ "$label" = "$(recipe_of "$1")" ] || return 1
    created=$(dk image inspect -f '{{.Created}}' "$1")
    [ $(( $(date +%s) - $(date -d "$created" +%s) )) -lt $(( MAX_AGE_DAYS * 86400 )) ]
}

mmdebstrap_tar() {  # IMAGE: the root filesystem as a tar on stdout
    local image=$1 customize
    case "$image" in
        python:3.11-slim)
            customize='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' ;;
        postgres:15)  # the package makes a cluster 15/main; the entrypoint makes its own
            customize='rm -rf "$1"/etc/postgresql/15/main "$1"/var/lib/postgresql/15/main' ;;
        mariadb:11)   # the package initialises /var/lib/mysql; the entrypoint does, from the env
            customize='rm -rf "$1"/var/lib/mysql; mkdir -p "$1"/var/lib/mysql; chroot "$1" chown mysql:mysql /var/lib/mysql' ;;
    esac
    # Without manuals, documentation (but the copyright files) and translations, as Debian's
    # -slim images: less to unpack and to import.
    mmdebstrap --quiet --variant=minbase --mode=root --format=tar \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --hook-dir=/usr/share/mmdebstrap/hooks/eatmydata \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --include="$(packages_of "$image")" \
        --customize-hook="$customize" \
        "$SUITE" - "${SOURCES[@]}"
}

build_one() {
    local image=$1 recipe name log
    recipe=$(recipe_of "$image")
    name=${image%%:*}
    log="$LOGDIR/standin-$name.log"
    local labels=(--change "LABEL org.gearsql.standin=$name"
                  --change "LABEL org.gearsql.standin.recipe=$recipe")
    # The root filesystem is imported under a name of its own and the image is tagged only
    # once everything worked: a failed mmdebstrap still hands `docker import` a tar (an empty
    # one), and an image tagged with this recipe would be taken as current by the next run.
    local rootfs="gearsql-standin-rootfs:$name"
    case "$image" in
        python:3.11-slim)
            mmdebstrap_tar "$image" 2>"$log" | dk import "${labels[@]}" \
                --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$rootfs" >/dev/null
            dk tag "$rootfs" "$image"
            dk rmi "$rootfs" >/dev/null
            ;;
        *)
            mmdebstrap_tar "$image" 2>"$log" | dk import - "$rootfs" >/dev/null
            dk build --force-rm --network none --build-arg ROOTFS="$rootfs" \
                --label "org.gearsql.standin=$name" --label "org.gearsql.standin.recipe=$recipe" \
                -f "$HERE/$name.Dockerfile" -t "$image" "$HERE" >>"$log" 2>&1
            dk rmi "$rootfs" >/dev/null
            ;;
    esac
}

main() {
    local images=("$@") image todo=() pids=() failed=0 start
    [ ${#images[@]} -gt 0 ] || images=(python:3.11-slim postgres:15 mariadb:11)
    for image in "${images[@]}"; do
        packages_of "$image" >/dev/null
        if [ -z "${GEARSQL_STANDIN_REBUILD:-}" ] && current "$image"; then
            echo "stand-in $image: reused (recipe $(recipe_of "$image"))"
        else
            todo+=("$image")
        fi
    done
    [ ${#todo[@]} -gt 0 ] || return 0
    command -v mmdebstrap >/dev/null || { echo "build.sh: mmdebstrap is not installed" >&2; return 1; }
    echo "stand-ins ${todo[*]}: mmdebstrap $SUITE from ${SOURCES[*]}"
    start=$SECONDS
    # In parallel: most of the time goes to dpkg inside each root filesystem.
    for image in "${todo[@]}"; do
        build_one "$image" &
        pids+=($!)
    done
    for i in "${!todo[@]}"; do
        if wait "${pids[$i]}"; then
            echo "stand-in ${todo[$i]}: built ($(dk image inspect -f '{{.Size}}' "${todo[$i]}" \
                  | awk '{printf "%d MB", $1/1e6}'))"
        else
            failed=1
            echo "stand-in ${todo[$i]}: FAILED; the end of its log:" >&2
            tail -n 30 "$LOGDIR/standin-${todo[$i]%%:*}.log" >&2 || true
        fi
    done
    echo "stand-ins made in $((SECONDS - start)) s"
    return "$failed"
}

main "$@"
