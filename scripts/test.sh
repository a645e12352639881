#!/usr/bin/env bash
# The project's test command: ./scripts/test.sh [extra `cargo test` arguments]
#
# Runs `cargo test --workspace --all-features` with a private Redis server and a private
# PostgreSQL cluster (see ./scripts/with-servers.sh, which installs them if they are
# missing), then the facade-only build's test.
#
# Set VERROU_REDIS_URL and/or VERROU_POSTGRES_URL to use servers of your own instead
# (nothing is then installed or started for that server).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/with-servers.sh cargo test --workspace --all-features "$@"

# Cargo features unify across the workspace, so the facade's error for a driver whose feature
# is off can only be seen in a build of the facade alone, without the Redis and PostgreSQL
# features.
cargo test -p verrou --no-default-features --features memory --test feature_disabled "$@"
