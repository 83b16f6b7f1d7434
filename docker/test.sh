#!/usr/bin/env bash
# docker/test.sh: build every image of docker/compose.yaml and run them for real.
#
#   bash docker/test.sh          # from the repository root, as root (CI runs it so)
#
# What it does, in order (docker/README.md, "Tested"):
#   1. A Docker engine: the one that answers (DOCKER_HOST or /var/run/docker.sock), else Debian's
#      docker.io, installed with apt if missing, started here as a dockerd of its own (its own
#      data root, exec root, socket, pid file and bridge; no iptables changes but one rule that
#      keeps its containers from reaching anything outside this machine), stopped at the end.
#      A compose implementation: `docker compose`, else `docker-compose` (apt's, if missing).
#   2. The base images (python:3.11-slim, postgres:15, mariadb:11): used if present, pulled
#      where Docker Hub answers (probed for 5 s), else made locally by docker/standins/build.sh
#      with mmdebstrap from the Debian mirror apt uses (apt-installed if missing). Stand-ins are
#      kept in the engine's data root and reused while their recipe is unchanged.
#   3. Wheels for the images' Python packages, built on the host with pip and served on
#      loopback, so that the builds need no PyPI from inside a container (docker/test-build.yaml).
#   4. `compose build`: every image of compose.yaml, from scratch (the images built here are
#      removed at the end when the engine is this script's own).
#   5. Container checks on the server image, then the compose pipeline end to end; a summary
#      with a closing line "docker: N passed, M failed". Exit status 0 only if all passed.
# Everything it starts (containers, networks, volumes, the wheel server, its dockerd) is
# removed on exit, also on failure or Ctrl-C.
#
# Settings (environment): GEARSQL_DOCKER_PULL=auto|never|always (base images from Docker Hub),
# GEARSQL_DOCKER_STATE (own engine's data root, default /var/lib/gearsql-docker-test),
# GEARSQL_DOCKER_RUN (its exec root, socket and pid file, default /run/gearsql-docker-test),
# GEARSQL_TEST_PROJECT (compose project, default gearsqltest), GEARSQL_STANDIN_REBUILD=1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
START=$SECONDS

PROJECT=${GEARSQL_TEST_PROJECT:-gearsqltest}
STATE=${GEARSQL_DOCKER_STATE:-/var/lib/gearsql-docker-test}
RUNROOT=${GEARSQL_DOCKER_RUN:-/run/gearsql-docker-test}
BRIDGE=gsqtest0                 # the own engine's default bridge, made and removed here
BRIDGE_CIDR=172.30.0.1/24
POOL=172.31.0.0/16              # compose networks of the own engine
GUARD=(FORWARD -s 172.30.0.0/15 ! -d 172.30.0.0/15 -m comment --comment gearsql-docker-test
       -j DROP)
BASE_IMAGES=(python:3.11-slim postgres:15 mariadb:11)
BUILT_IMAGES=(gearsql:latest gearsql-examples:latest gearsql-postgres:15)
GRACE=10                        # seconds docker stop waits before SIGKILL
LABEL="org.gearsql.test=$PROJECT"

WORK=$(mktemp -d /tmp/gearsql-docker-test.XXXXXX)
RESULTS=$WORK/results
: > "$RESULTS"
OWN_ENGINE=0
ENGINE_UP=0
APT_UPDATED=0
COMPOSE=()

log() { printf '== [%3d s] %s\n' $((SECONDS - START)) "$*"; }
note() { printf '   %s\n' "$*"; }
fail() { printf '   FAILED: %s\n' "$*" >&2; return 1; }
phase() { printf '%s|%s\n' "$1" "$2" >> "$WORK/phases"; }

# ---------------------------------------------------------------------------------- helpers

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        fail "needs root to apt-get install $*"
        return 1
    fi
    if [ "$APT_UPDATED" = 0 ]; then
        note "apt-get update"
        apt-get update -qq >"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log"; return 1; }
        APT_UPDATED=1
    fi
    note "apt-get install $*"
    apt-get install -y -qq --no-install-recommends "$@" >>"$WORK/apt.log" 2>&1 \
        || { tail -30 "$WORK/apt.log"; return 1; }
}

wait_for() {  # SECONDS WHAT COMMAND...: run COMMAND every half second until it succeeds
    local limit=$1 what=$2 deadline=$((SECONDS + $1))
    shift 2
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            fail "timed out after $limit s waiting for $what"
            return 1
        fi
        sleep 0.5
    done
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

gs() {  # the host's gearsql, from this checkout
    PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" python3 -m gearsql "$@"
}

status_of() {  # FUNCTION FIELD: total/running/workers of FUNCTION on the published server
    gs status -p "$GEARSQL_PORT" --timeout 5 --json | python3 -c '
import json, sys
rows = [r for r in json.load(sys.stdin) if r["function"] == sys.argv[1]]
print(rows[0][sys.argv[2]] if rows else 0)' "$1" "$2"
}

dc() { "${COMPOSE[@]}" -p "$PROJECT" -f docker/compose.yaml -f docker/test-build.yaml "$@"; }

cid() {  # SERVICE: its container (running or not), by compose's labels
    docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" \
        --filter "label=com.docker.compose.service=$1" | sed -n 1p
}

health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$1"; }

wait_healthy() {  # CONTAINER SECONDS
    local deadline=$((SECONDS + $2)) state
    while :; do
        state=$(health "$1" 2>/dev/null || echo gone)
        [ "$state" = healthy ] && return 0
        if [ "$SECONDS" -ge "$deadline" ]; then
            fail "container $1 is '$state', not healthy, after $2 s"
            return 1
        fi
        sleep 0.5
    done
}

workers_ge() { [ "$(status_of "$1" workers)" -ge "$2" ]; }  # FUNCTION N

exited() { [ "$(docker inspect -f '{{.State.Status}}' "$1")" = exited ]; }

# Logs are read whole before grep: with pipefail, `docker logs | grep -q` could fail on SIGPIPE.
container_logs_have() {  # CONTAINER TEXT
    local out
    out=$(docker logs "$1" 2>&1)
    grep -qF -- "$2" <<< "$out"
}

logs_have() {  # SERVICE TEXT: the service's log (stdout and stderr) contains TEXT
    container_logs_have "$(cid "$1")" "$2"
}

psql_app() { dc exec -T postgres psql -U postgres -d app -v ON_ERROR_STOP=1 -qAt -c "$1"; }
mariadb_app() { dc exec -T mariadb mariadb -uroot -pgearsql app -e "$1"; }

# -------------------------------------------------------------------------- engine, compose

engine_answers() { timeout 15 docker info >/dev/null 2>&1; }

start_engine() {
    mkdir -p "$STATE" "$RUNROOT"
    local pidfile=$RUNROOT/docker.pid old
    # A dockerd of an earlier run of this script that was killed before its cleanup.
    if [ -s "$pidfile" ]; then
        old=$(cat "$pidfile")
        if kill -0 "$old" 2>/dev/null && grep -qF -- "$STATE" "/proc/$old/cmdline" 2>/dev/null; then
            note "stopping the dockerd (pid $old) an earlier run left"
            stop_dockerd "$old"
        fi
        rm -f "$pidfile"
    fi
    unmount_under "$RUNROOT"
    OWN_ENGINE=1   # from here on, the cleanup undoes what follows
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge || return 1
        ip addr add "$BRIDGE_CIDR" dev "$BRIDGE" || return 1
    fi
    ip link set "$BRIDGE" up || return 1
    iptables -C "${GUARD[@]}" 2>/dev/null || iptables -I "${GUARD[@]}" || return 1
    export DOCKER_HOST="unix://$RUNROOT/docker.sock"
    # In a session of its own: a Ctrl-C of this script must not stop it before the cleanup has
    # removed what it runs.
    setsid dockerd --data-root "$STATE" --exec-root "$RUNROOT/exec" -H "$DOCKER_HOST" \
        --pidfile "$pidfile" --bridge "$BRIDGE" --default-address-pool "base=$POOL,size=24" \
        --iptables=false --ip-masq=false --ip-forward=false --log-level warn \
        >"$WORK/dockerd.log" 2>&1 &
    if ! wait_for 60 "dockerd to answer on $DOCKER_HOST" docker info; then
        tail -30 "$WORK/dockerd.log" >&2
        return 1
    fi
    ENGINE_UP=1
}

stop_dockerd() {  # PID
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    kill -KILL "$pid" 2>/dev/null || true
}

unmount_under() {  # DIR: every mount point under DIR, deepest first
    awk -v d="$1/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
}

setup_engine() {
    # Not in a subshell, and called from an `if`: so no errexit here, every step returns.
    if ! command -v docker >/dev/null; then
        apt_install docker.io || return 1
    fi
    if engine_answers; then
        note "using the Docker engine that answers (${DOCKER_HOST:-/var/run/docker.sock})"
        ENGINE_UP=1
    else
        command -v dockerd >/dev/null || apt_install docker.io || return 1
        note "no engine answers: starting dockerd (data root $STATE, socket $RUNROOT/docker.sock)"
        start_engine || return 1
        # The legacy builder: docker.io's daemon, whatever client (a newer client would
        # otherwise ask for buildx).
        export DOCKER_BUILDKIT=0
    fi
    if docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    else
        command -v docker-compose >/dev/null || apt_install docker-compose || return 1
        COMPOSE=(docker-compose)
    fi
    note "engine: Docker $(docker version -f '{{.Server.Version}}')," \
         "$( [ "$OWN_ENGINE" = 1 ] && echo "started here" || echo "already running")"
    note "compose: $("${COMPOSE[@]}" version 2>/dev/null | sed -n 1p)"
    printf 'engine: Docker %s (%s); compose: %s\n' "$(docker version -f '{{.Server.Version}}')" \
        "$( [ "$OWN_ENGINE" = 1 ] && echo "a dockerd started by this script" \
            || echo "the engine already running")" \
        "$("${COMPOSE[@]}" version 2>/dev/null | sed -n 1p)" > "$WORK/engine"
}

# ------------------------------------------------------------------------------ base images

registry_answers() {  # Docker Hub answers within 5 s (a 401 is an answer)
    timeout 8 python3 - <<'PY' >/dev/null 2>&1
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen("https://registry-1.docker.io/v2/", timeout=5)
except urllib.error.HTTPError:
    pass
except Exception:
    sys.exit(1)
PY
}

standin_of() { docker image inspect -f '{{index .Config.Labels "org.gearsql.standin"}}' "$1" 2>/dev/null; }

prepare_bases() {
    local image pull=${GEARSQL_DOCKER_PULL:-auto} registry=unknown need=()
    for image in "${BASE_IMAGES[@]}"; do
        if [ "$pull" != always ] && docker image inspect "$image" >/dev/null 2>&1 \
                && [ -z "$(standin_of "$image")" ]; then
            note "$image: present (not a stand-in)"
            continue
        fi
        if [ "$pull" != never ] && [ "$registry" = unknown ]; then
            if [ "$pull" = always ] || registry_answers; then registry=yes; else registry=no; fi
            note "Docker Hub: $( [ "$registry" = yes ] && echo answers || echo "does not answer (5 s probe)")"
        fi
        if [ "$registry" = yes ]; then
            note "$image: docker pull"
            if timeout 600 docker pull -q "$image" >/dev/null; then
                continue
            fi
            note "$image: pull failed"
        fi
        need+=("$image")
    done
    if [ ${#need[@]} -gt 0 ]; then
        command -v mmdebstrap >/dev/null || apt_install mmdebstrap
        GEARSQL_STANDIN_LOGDIR=$WORK bash docker/standins/build.sh "${need[@]}"
    fi
    : > "$WORK/bases"
    for image in "${BASE_IMAGES[@]}"; do
        local standin
        standin=$(standin_of "$image")
        printf '%s|%s|%s\n' "$image" \
            "$( [ -n "$standin" ] && echo "local stand-in (docker/standins, Debian bookworm)" \
                || echo "official image")" \
            "$(docker image inspect -f '{{.Size}}' "$image")" >> "$WORK/bases"
    done
}

# ----------------------------------------------------------------------------------- wheels

serve_wheels() {
    python3 - > "$WORK/requirements.txt" <<'PY'
import re
try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib
project = tomllib.load(open("pyproject.toml", "rb"))
extras = project["project"]["optional-dependencies"]
reqs = list(project["project"]["dependencies"])
for extra in ("fast", "postgres", "mysql"):   # docker/Dockerfile: pip install '.[fast,postgres,mysql]'
    reqs += extras[extra]
reqs += project["build-system"]["requires"] + ["wheel"]
reqs += re.findall(r"pip install '([^.'][^']*)'", open("docker/Dockerfile").read())  # aiosmtpd
print("\n".join(reqs))
PY
    note "pip wheel: $(tr '\n' ' ' < "$WORK/requirements.txt")"
    python3 -m pip wheel -q --wheel-dir "$WORK/wheels" -r "$WORK/requirements.txt" \
        >"$WORK/wheels.log" 2>&1 || { tail -30 "$WORK/wheels.log"; return 1; }
    note "$(find "$WORK/wheels" -name '*.whl' | wc -l) wheels"
    local port
    port=$(free_port)
    python3 -m http.server --bind 127.0.0.1 --directory "$WORK/wheels" "$port" \
        >"$WORK/wheel-server.log" 2>&1 &
    echo $! > "$WORK/wheel-server.pid"   # for cleanup: this runs in a subshell
    echo "http://127.0.0.1:$port/" > "$WORK/wheel-server.url"
    wait_for 15 "the wheel server" python3 -c \
        "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/', timeout=2)"
    note "served on http://127.0.0.1:$port/"
}

# ----------------------------------------------------------------------------------- build

build_images() {
    local image
    if [ "$OWN_ENGINE" = 1 ]; then  # from scratch: no layers of an earlier run
        docker rmi -f "${BUILT_IMAGES[@]}" >/dev/null 2>&1 || true
    fi
    # Each line of the build's output with the second it came, for the times below.
    if ! timeout 1200 "${COMPOSE[@]}" -p "$PROJECT" -f docker/compose.yaml \
            -f docker/test-build.yaml build --force-rm 2>&1 \
            | while IFS= read -r line; do printf '%s %s\n' "$EPOCHSECONDS" "$line"; done \
            >"$WORK/build.log"; then
        tail -60 "$WORK/build.log"
        fail "compose build"
        return 1
    fi
    awk '{ t = $1; sub(/^[0-9]+ /, "") }
         /^Building [a-z-]+$/ { if (name) printf "(%d s)\n", t - t0; name = $2; t0 = t;
                                printf "Building %s ", name; next }
         /^Successfully tagged/ { printf "-> %s ", $3; next }
         /^Step [0-9]+\/[0-9]+ : (FROM|RUN)/ || /^Successfully installed/ {
             if (!seen[$0]++) steps = steps "\n      " substr($0, 1, 150) }
         END { if (name) printf "(%d s)\n", t - t0; print substr(steps, 2) }' \
        "$WORK/build.log" | sed 's/^/   /'
    : > "$WORK/built"
    for image in "${BUILT_IMAGES[@]}"; do
        printf '%s|%s\n' "$image" "$(docker image inspect -f '{{.Size}}' "$image")" >> "$WORK/built"
    done
}

# ------------------------------------------------------------------------- container checks

check_server_healthy() {
    local c t0=$SECONDS
    dc up -d gearsql >"$WORK/up-gearsql.log" 2>&1 || { cat "$WORK/up-gearsql.log"; return 1; }
    c=$(cid gearsql)
    wait_healthy "$c" 90
    note "healthy $((SECONDS - t0)) s after 'up' (healthcheck:" \
         "$(docker inspect -f '{{join .Config.Healthcheck.Test " "}}' "$c"))"
    docker logs "$c" 2>&1 | grep -F 'listening on' | tail -n 1 | sed 's/^/   log: /'
    gs status -p "$GEARSQL_PORT" --timeout 5 >/dev/null
}

check_non_root() {
    local c user uids
    c=$(cid gearsql)
    user=$(docker image inspect -f '{{.Config.User}}' gearsql:latest)
    [ "$user" = gearsql ] || fail "the image's USER is '$user'"
    # shellcheck disable=SC2016
    uids=$(docker exec "$c" sh -c 'for f in /proc/[0-9]*/status; do
        sed -n "s/^Uid:[[:space:]]*\([0-9]*\).*/\1/p" "$f" 2>/dev/null; done; true' | sort -un)
    note "image USER $user; uids of every process in the container: $(echo $uids)"
    [ -n "$uids" ] || fail "no process found"
    ! grep -qx 0 <<< "$uids" || fail "a process runs as root"
    [ "$(docker exec "$c" id -un)" = gearsql ] || fail "docker exec does not run as gearsql"
}

check_restart_replay() {
    local c line out i
    c=$(cid gearsql)
    gs submit -p "$GEARSQL_PORT" -b -f ci_replay ci-job-1 ci-job-2 ci-job-3 ci-job-4 ci-job-5
    [ "$(status_of ci_replay total)" = 5 ] || fail "5 jobs not queued"
    note "5 background jobs submitted from the host; docker restart"
    docker restart -t "$GRACE" "$c" >/dev/null
    wait_healthy "$c" 90
    line=$(docker logs "$c" 2>&1 | grep -F 'jobs replayed' | tail -n 1)
    note "log after the restart: $line"
    grep -qF ', 5 jobs replayed' <<< "$line" || fail "the restarted server did not replay 5 jobs"
    [ "$(status_of ci_replay total)" = 5 ] || fail "the 5 jobs are not queued after the restart"
    out=$(timeout 60 docker run --rm --label "$LABEL" --network "${PROJECT}_default" \
          gearsql:latest work --servers gearsql:4730 -f ci_replay -c 5)
    for i in 1 2 3 4 5; do
        grep -qF "ci-job-$i" <<< "$out" || fail "a worker container did not get ci-job-$i"
    done
    note "a worker container then ran all 5 (gearsql work -c 5)"
    [ "$(status_of ci_replay total)" = 0 ] || fail "jobs left in the queue"
}

check_worker_container() {
    local w out code
    w=$(docker run -d --label "$LABEL" --network "${PROJECT}_default" gearsql:latest \
        work --servers gearsql:4730 -f ci_upper -- tr a-z A-Z)
    wait_for 30 "the worker container to register" workers_ge ci_upper 1
    out=$(gs submit -p "$GEARSQL_PORT" -t 30000 -f ci_upper 'hello from the host')
    note "host: gearsql submit -f ci_upper 'hello from the host' -> '$out'"
    [ "$out" = "HELLO FROM THE HOST" ] || fail "unexpected answer"
    docker stop -t "$GRACE" "$w" >/dev/null
    code=$(docker inspect -f '{{.State.ExitCode}}' "$w")
    note "the worker container stopped by SIGTERM with status $code"
    docker rm "$w" >/dev/null
    [ "$code" = 0 ] || fail "the worker exited with $code"
}

stop_and_measure() {  # CONTAINER WHAT
    local c=$1 what=$2 t0 t1 ms code
    t0=$(date +%s%N)
    docker stop -t "$GRACE" "$c" >/dev/null
    t1=$(date +%s%N)
    ms=$(( (t1 - t0) / 1000000 ))
    code=$(docker inspect -f '{{.State.ExitCode}}' "$c")
    note "$what: stopped in $ms ms (grace $GRACE s), exit status $code," \
         "log: $(docker logs "$c" 2>&1 | tail -n 1 | cut -c1-80)"
    [ "$code" = 0 ] || fail "$what exited with $code (137 would be SIGKILL after the grace period)"
    [ "$ms" -lt $((GRACE * 1000)) ] || fail "$what took the whole grace period"
    grep -qF 'gearsql stopped' <<< "$(docker logs "$c" 2>&1 | tail -n 3)" \
        || fail "no 'gearsql stopped' in the log"
}

check_sigterm() {
    local plain
    stop_and_measure "$(cid gearsql)" "compose's gearsql (init: true)"
    # The Dockerfile's own default command, gearsql as PID 1 (docker run without --init).
    plain=$(docker run -d --label "$LABEL" gearsql:latest)
    wait_for 30 "the plain container to listen" container_logs_have "$plain" 'listening on'
    stop_and_measure "$plain" "docker run gearsql (PID 1, default command)"
    docker rm "$plain" >/dev/null
}

check_image_sizes() {
    local image size
    while IFS='|' read -r image size; do
        note "$(printf '%-26s %5d MB  built here' "$image" $((size / 1000000)))"
    done < "$WORK/built"
    while IFS='|' read -r image kind size; do
        note "$(printf '%-26s %5d MB  base: %s' "$image" $((size / 1000000)) "$kind")"
    done < "$WORK/bases"
}

# -------------------------------------------------------------------------- pipeline checks

check_pipeline_up() {
    local s setup code
    timeout 600 "${COMPOSE[@]}" -p "$PROJECT" -f docker/compose.yaml -f docker/test-build.yaml \
        up -d >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; fail "compose up"; return 1; }
    setup=$(cid setup)
    wait_for 120 "the setup job to finish" exited "$setup"
    code=$(docker inspect -f '{{.State.ExitCode}}' "$setup")
    docker logs "$setup" 2>&1 | tail -n 3 | sed 's/^/   setup: /'
    [ "$code" = 0 ] || fail "setup exited with $code"
    for s in gearsql postgres mariadb relay-postgres relay-mariadb tweet-worker mail-worker \
             tweet-sink smtp-sink; do
        [ "$(docker inspect -f '{{.State.Status}}' "$(cid "$s")")" = running ] \
            || fail "service $s is not running"
    done
    note "postgres: $(health "$(cid postgres)"), mariadb: $(health "$(cid mariadb)")," \
         "all 9 long-running services up"
    wait_healthy "$(cid gearsql)" 60
    wait_for 60 "the send_tweet worker" workers_ge send_tweet 1
    wait_for 60 "the send_mail worker" workers_ge send_mail 1
    docker logs "$(cid relay-mariadb)" 2>&1 | sed -n 1,2p | cut -c1-150 | sed 's/^/   relay-mariadb: /'
    docker logs "$(cid relay-postgres)" 2>&1 | sed -n 1,2p | cut -c1-150 | sed 's/^/   relay-postgres: /'
}

check_pipeline_postgres() {
    local token=$TOKEN
    psql_app "INSERT INTO blog_entries (title, url) VALUES ('CI PostgreSQL $token', 'https://example.org/pg')"
    psql_app "INSERT INTO outgoing_mail (recipient, subject, body)
              VALUES ('pg-$token@example.com', 'CI from PostgreSQL', 'Sent by docker/test.sh')"
    wait_for 60 "the tweet at the HTTP sink" logs_have tweet-sink "CI PostgreSQL $token - https://example.org/pg"
    wait_for 60 "the mail at the SMTP sink" logs_have smtp-sink "pg-$token@example.com"
    docker logs "$(cid tweet-sink)" 2>&1 | grep -F "CI PostgreSQL $token" | sed 's/^/   tweet-sink: /'
    docker logs "$(cid smtp-sink)" 2>&1 | grep -F "pg-$token@example.com" | sed -n 's/^/   smtp-sink: /; 1,2p'
}

check_pipeline_mariadb() {
    local token=$TOKEN
    mariadb_app "INSERT INTO blog_entries (title, url) VALUES ('CI MariaDB $token', 'https://example.org/my')"
    mariadb_app "INSERT INTO outgoing_mail (recipient, subject, body)
                 VALUES ('my-$token@example.com', 'CI from MariaDB', 'Sent by docker/test.sh')"
    wait_for 60 "the tweet at the HTTP sink" logs_have tweet-sink "CI MariaDB $token - https://example.org/my"
    wait_for 60 "the mail at the SMTP sink" logs_have smtp-sink "my-$token@example.com"
    docker logs "$(cid tweet-sink)" 2>&1 | grep -F "CI MariaDB $token" | sed 's/^/   tweet-sink: /'
    docker logs "$(cid smtp-sink)" 2>&1 | grep -F "my-$token@example.com" | sed -n 's/^/   smtp-sink: /; 1,2p'
}

check_pipeline_rollback() {
    local token=$TOKEN
    psql_app "BEGIN; INSERT INTO outgoing_mail (recipient, body)
              VALUES ('rolledback-$token@example.com', 'never sent'); ROLLBACK;"
    psql_app "INSERT INTO outgoing_mail (recipient, subject, body)
              VALUES ('after-$token@example.com', 'after the rollback', 'x')"
    wait_for 60 "the committed mail" logs_have smtp-sink "after-$token@example.com"
    ! logs_have smtp-sink "rolledback-$token@example.com" || fail "the rolled-back mail was sent"
    note "a rolled-back insert sent nothing; the insert committed after it was sent"
}

check_sql_foreground() {
    local out
    out=$(psql_app "SELECT gearsql.gman_do('send_tweet', 'direct from PostgreSQL $TOKEN')")
    note "SELECT gearsql.gman_do('send_tweet', ...) -> $out"
    grep -qF "direct from PostgreSQL $TOKEN" <<< "$out" || fail "unexpected result"
    logs_have tweet-sink "direct from PostgreSQL $TOKEN" || fail "not at the HTTP sink"
}

# ------------------------------------------------------------------------- running, cleanup

FAILED=0
run_check() {  # NAME FUNCTION: FUNCTION in a subshell with errexit; PASS or FAIL recorded
    local name=$1 t0=$SECONDS rc
    log "check: $name"
    set +e
    (set -e; "$2")
    rc=$?
    set -e
    if [ "$rc" = 0 ]; then
        printf 'PASS|%s|%s\n' $((SECONDS - t0)) "$name" >> "$RESULTS"
    else
        printf 'FAIL|%s|%s\n' $((SECONDS - t0)) "$name" >> "$RESULTS"
        FAILED=1
    fi
}

run_step() {  # NAME FUNCTION: a step the checks need; stop here if it fails
    local name=$1 t0=$SECONDS rc
    log "$name"
    set +e
    (set -e; "$2")
    rc=$?
    set -e
    phase "$name" $((SECONDS - t0))
    if [ "$rc" != 0 ]; then
        printf 'FAIL|%s|%s\n' $((SECONDS - t0)) "$name" >> "$RESULTS"
        FAILED=1
        summary
        exit 1
    fi
}

# setup_engine sets variables (COMPOSE, DOCKER_HOST, OWN_ENGINE) the rest needs: not in a
# subshell.
engine_step() {
    local t0=$SECONDS
    log "Docker engine and compose"
    if ! setup_engine; then
        printf 'FAIL|%s|%s\n' $((SECONDS - t0)) "Docker engine and compose" >> "$RESULTS"
        FAILED=1
        [ -s "$WORK/dockerd.log" ] && tail -30 "$WORK/dockerd.log"
        summary
        exit 1
    fi
    phase "Docker engine and compose" $((SECONDS - t0))
}

diagnostics() {
    [ "$ENGINE_UP" = 1 ] && [ ${#COMPOSE[@]} -gt 0 ] || return 0
    log "diagnostics: compose ps and the last lines of every service's log"
    dc ps 2>&1 | sed 's/^/   /' || true
    dc logs --no-color --tail 25 2>&1 | sed 's/^/   /' || true
}

summary() {
    local status name secs image size kind passed failed
    echo
    log "summary"
    [ -s "$WORK/engine" ] && note "$(cat "$WORK/engine")"
    if [ -s "$WORK/bases" ]; then
        while IFS='|' read -r image kind size; do
            note "$(printf 'base  %-24s %5d MB  %s' "$image" $((size / 1000000)) "$kind")"
        done < "$WORK/bases"
    fi
    if [ -s "$WORK/built" ]; then
        while IFS='|' read -r image size; do
            note "$(printf 'built %-24s %5d MB' "$image" $((size / 1000000)))"
        done < "$WORK/built"
    fi
    if [ -s "$WORK/phases" ]; then
        while IFS='|' read -r name secs; do
            note "$(printf '%4d s  %s' "$secs" "$name")"
        done < "$WORK/phases"
    fi
    while IFS='|' read -r status secs name; do
        note "$(printf '%s %4d s  %s' "$status" "$secs" "$name")"
    done < "$RESULTS"
    passed=$(grep -c '^PASS' "$RESULTS" || true)
    failed=$(grep -c '^FAIL' "$RESULTS" || true)
    note "total $((SECONDS - START)) s"
    echo "docker: $passed passed, $failed failed"
}

cleanup() {
    local rc=$? t0=$SECONDS
    trap - EXIT INT TERM
    set +e
    echo
    log "cleanup"
    if [ -s "$WORK/wheel-server.pid" ]; then
        kill "$(cat "$WORK/wheel-server.pid")" 2>/dev/null
    fi
    if [ "$ENGINE_UP" = 1 ]; then
        local running
        running=$(docker ps -q --filter "label=com.docker.compose.project=$PROJECT")
        # All at once (compose stops them level by level, in the order of depends_on).
        [ -z "$running" ] || docker stop -t "$GRACE" $running >/dev/null
        if [ ${#COMPOSE[@]} -gt 0 ]; then
            dc down -v --remove-orphans -t "$GRACE" >"$WORK/down.log" 2>&1 \
                || tail -20 "$WORK/down.log"
            note "compose down: $((SECONDS - t0)) s"
        fi
        local left
        left=$(docker ps -aq --filter "label=$LABEL")
        [ -z "$left" ] || docker rm -f $left >/dev/null
        if [ "$OWN_ENGINE" = 1 ]; then
            # The base images stay in the data root for the next run; what was built here goes.
            docker rmi -f "${BUILT_IMAGES[@]}" >/dev/null 2>&1
            docker container prune -f >/dev/null 2>&1
            docker image prune -f >/dev/null 2>&1
            docker volume prune -f >/dev/null 2>&1
        fi
        note "containers, networks and volumes of project $PROJECT removed ($((SECONDS - t0)) s)"
    fi
    if [ "$OWN_ENGINE" = 1 ]; then
        if [ -s "$RUNROOT/docker.pid" ]; then
            stop_dockerd "$(cat "$RUNROOT/docker.pid")"
        fi
        ip link del "$BRIDGE" 2>/dev/null
        while iptables -C "${GUARD[@]}" 2>/dev/null; do iptables -D "${GUARD[@]}"; done
        unmount_under "$RUNROOT"   # dockerd leaves its netns/default mounted
        rm -rf "$RUNROOT"
        note "dockerd stopped; bridge $BRIDGE and its iptables rule removed (data root $STATE kept)"
    fi
    rm -rf "$WORK"
    note "cleanup took $((SECONDS - t0)) s; docker/test.sh took $((SECONDS - START)) s"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------------------------ main

main() {
    if [ "$(id -u)" != 0 ] && ! engine_answers; then
        echo "docker/test.sh: no Docker engine answers, and starting one needs root" >&2
        exit 1
    fi
    command -v python3 >/dev/null || apt_install python3
    if ! python3 -c 'import click' 2>/dev/null; then
        python3 -m pip install -q 'click>=8.1.3,<9'
    fi

    GEARSQL_PORT=$(free_port)
    GEARSQL_POSTGRES_PORT=$(free_port)
    GEARSQL_MARIADB_PORT=$(free_port)
    export GEARSQL_PORT GEARSQL_POSTGRES_PORT GEARSQL_MARIADB_PORT
    TOKEN=$(date +%s)-$$
    export TOKEN

    engine_step
    # What a killed earlier run may have left in this project.
    dc down -v --remove-orphans -t 1 >/dev/null 2>&1 || true
    run_step "base images" prepare_bases
    run_step "wheels on the host" serve_wheels
    GEARSQL_TEST_WHEELS_URL=$(cat "$WORK/wheel-server.url")   # docker/test-build.yaml
    export GEARSQL_TEST_WHEELS_URL
    run_step "compose build (every image of compose.yaml)" build_images

    note "ports published on 127.0.0.1: gearsql $GEARSQL_PORT, postgres $GEARSQL_POSTGRES_PORT," \
         "mariadb $GEARSQL_MARIADB_PORT"
    run_check "server image starts, passes the compose healthcheck" check_server_healthy
    run_check "the image runs as a non-root user" check_non_root
    run_check "background jobs survive docker restart with the queue volume" check_restart_replay
    run_check "a worker container answers a foreground job from the host" check_worker_container
    run_check "SIGTERM stops the server cleanly within the grace period" check_sigterm
    run_check "image sizes" check_image_sizes
    run_check "pipeline: compose up (PostgreSQL, MariaDB, setup, relays, workers, sinks)" check_pipeline_up
    run_check "pipeline: PostgreSQL rows reach the HTTP and SMTP sinks" check_pipeline_postgres
    run_check "pipeline: MariaDB rows reach the HTTP and SMTP sinks" check_pipeline_mariadb
    run_check "pipeline: a rolled-back PostgreSQL insert sends nothing" check_pipeline_rollback
    run_check "pipeline: gman_do from PostgreSQL, answered by the tweet worker" check_sql_foreground

    [ "$FAILED" = 0 ] || diagnostics
    summary
    [ "$FAILED" = 0 ]
}

main "$@"
