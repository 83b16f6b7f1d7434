# Stand-in for the official mariadb:11 image, on a root filesystem that build.sh makes with
# mmdebstrap from Debian's mariadb-server (bookworm: MariaDB 10.11). Built by build.sh; not for a
# machine that can pull the official image.
ARG ROOTFS
FROM ${ROOTFS}
COPY mariadb-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
COPY mariadb-healthcheck.sh /usr/local/bin/healthcheck.sh
COPY mariadb-container.cnf /etc/mysql/mariadb.conf.d/99-container.cnf
RUN mkdir -p /docker-entrypoint-initdb.d
ENV LANG=C.UTF-8
VOLUME /var/lib/mysql
ENTRYPOINT ["docker-entrypoint.sh"]
EXPOSE 3306
CMD ["mariadbd"]
