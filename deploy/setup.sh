#!/usr/bin/env bash
# Install what hubkeeper's local stack and its tests need, on a fresh Debian machine, as root.
# Idempotent: what is already there is left alone. Python packages go into ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pair in dockerd:docker.io nginx:nginx debootstrap:debootstrap npm:npm \
    prometheus-alertmanager:prometheus-alertmanager mvn:maven runuser:util-linux openssl:openssl \
    prometheus:prometheus docker-compose:docker-compose systemd-analyze:systemd \
    chromium:chromium; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The storage watcher's tests: a FUSE test filesystem (fusepy loads libfuse2) and a real
# NFS server (nfs-ganesha with rpcbind) in a network namespace (iproute2, util-linux).
storage=()
command -v fusermount3 >/dev/null 2>&1 || storage+=(fuse3)
ldconfig -p | grep -q 'libfuse\.so\.2' || storage+=(libfuse2)
command -v rpcbind >/dev/null 2>&1 || storage+=(rpcbind)
command -v ganesha.nfsd >/dev/null 2>&1 || storage+=(nfs-ganesha)
compgen -G '/usr/lib/*/ganesha/libfsalvfs.so' >/dev/null || storage+=(nfs-ganesha-vfs)
command -v ip >/dev/null 2>&1 || storage+=(iproute2)
if ((${#storage[@]})); then
    echo "setup: installing ${storage[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${storage[@]}" >/dev/null
fi

# PostgreSQL for hubs on two hosts (tests start throwaway clusters: deploy/postgres.py) and
# keepalived for NGINX's floating address. Debian's postgresql-common would create and start
# a `main` cluster on install: turned off before the server package comes in (as the
# official postgres image does); nothing here relies on a system cluster.
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    echo "setup: installing postgresql (without a main cluster)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-common >/dev/null
    sed -ri 's/^#? *create_main_cluster *=.*/create_main_cluster = false/' \
        /etc/postgresql-common/createcluster.conf
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
if ! command -v keepalived >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
    echo "setup: installing keepalived (its NGINX check runs curl)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq keepalived curl >/dev/null
fi

command -v configurable-http-proxy >/dev/null 2>&1 || npm install -g --silent configurable-http-proxy
# Go builds Elastic's Lumberjack server for the log shipper's Logstash-output tests.
if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null
fi

# Rust (cargo) builds the log shipper's native fast path (native/) as pip installs hubkeeper:
# rustup's if there is one, else Debian's (cargo-web: bookworm's plain cargo is too old).
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cargo-web >/dev/null
fi

# Debian's own python3, as on a production host (README, "Installing for production"): a
# build other tools put first in PATH (pyenv's, say) may lack its optimizations, and
# hubkeeper's daemons run a seventh slower there (tests/bench/shipping.py).
if ! /usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1; then
    echo "setup: installing python3-venv"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[hub,test]'
# Elasticsearch for the shipper's tests and the local stack: Maven Central, cached outside the repo.
# 9.x runs on the Java 21+ under /usr/lib/jvm; 8.x (tested too) on Java 17 to 21: Debian's 17.
if ! compgen -G '/usr/lib/jvm/java-17-openjdk-*/bin/java' >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi
.venv/bin/python -m hubkeeper.deploy.elasticsearch install >/dev/null
echo "setup: ok"
