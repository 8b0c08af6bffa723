# Sourced: start and stop a throwaway PostgreSQL and Redis on free loopback ports.
# Usage: start_databases DIR  → exports DATABASE_URL, REDIS_URL; stop_databases stops them.

# Directory of the newest PostgreSQL server binaries (Debian keeps them off PATH).
postgres_bin_dir() {
  local dir
  if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"
    return 0
  fi
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] && { echo "$dir"; return 0; }
  return 1
}

# Runs a PostgreSQL tool as the data directory's owner: initdb refuses to run as root.
as_postgres_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

start_databases() {
  local dir=$1 bin pg_port redis_port
  bin=$(postgres_bin_dir) || fail "PostgreSQL server binaries not found; run the set-up"
  mkdir -p "$dir"
  # As root, the servers run as `postgres`, which must be able to reach $dir: mktemp -d makes
  # its folder (the parent here) private to root.
  [ "$(id -u)" -eq 0 ] && chmod o+x "$(dirname "$dir")" "$dir"
  DATABASES_DIR=$dir

  pg_port=$(free_port)
  mkdir -p "$dir/pg"
  [ "$(id -u)" -eq 0 ] && chown -R postgres: "$dir/pg"
  as_postgres_owner "$bin/initdb" -D "$dir/pg/data" --auth=trust --username=postgres \
    --encoding=UTF8 --no-sync >"$dir/pg/initdb.log" 2>&1 ||
    { cat "$dir/pg/initdb.log"; fail "initdb failed"; }
  # fsync off: a test database that survives a power cut is not worth the time.
  as_postgres_owner "$bin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $dir/pg -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
    start >/dev/null || { cat "$dir/pg/server.log"; fail "PostgreSQL did not start"; }
  export DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
  note "PostgreSQL $("$bin/postgres" --version | awk '{ print $3 }') on 127.0.0.1:$pg_port"

  redis_port=$(free_port)
  mkdir -p "$dir/redis"
  redis-server --port "$redis_port" --bind 127.0.0.1 --daemonize yes --save '' --appendonly no \
    --dir "$dir/redis" --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log" ||
    fail "redis-server did not start"
  for _ in $(seq 1 50); do
    redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
  done
  redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG || { cat "$dir/redis/redis.log"; fail "Redis did not answer"; }
  export REDIS_URL="redis://127.0.0.1:$redis_port"
  note "Redis $(redis-server --version | awk '{ print $3 }' | cut -d= -f2) on 127.0.0.1:$redis_port"
}

stop_databases() {
  local dir=${DATABASES_DIR:-} bin
  [ -n "$dir" ] || return 0
  if [ -f "$dir/redis/redis.pid" ]; then
    kill "$(cat "$dir/redis/redis.pid")" 2>/dev/null || true
  fi
  if bin=$(postgres_bin_dir) && [ -d "$dir/pg/data" ]; then
    as_postgres_owner "$bin/pg_ctl" -D "$dir/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  DATABASES_DIR=""
}
