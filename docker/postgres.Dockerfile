# PostgreSQL 15 with PL/Python (plpython3u), which the gman_* functions are written in; the
# official image does not include it.
FROM postgres:15
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-plpython3-15 \
    && rm -rf /var/lib/apt/lists/*
