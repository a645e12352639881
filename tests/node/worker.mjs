// A process that uses @verrou/core, the Node.js library, as its users run it, on the Redis or
// PostgreSQL store at URL: the end-to-end tests run it beside verrou's own worker
// (`tests/src/bin/worker.rs`) on one key. On PostgreSQL the table is verrou's default,
// `verrou`, which the test has the Rust store create.
//
//     node worker.mjs redis|postgres URL contend KEY TURNS HOLD_MS RETRY_MS
//         Takes KEY TURNS times (`acquire`, asking every RETRY_MS, giving up after 60 s),
//         holding it HOLD_MS each time; prints `held <start_ns> <end_ns> 0` per turn (wall
//         clock, inside the hold), as the Rust worker does, and `took` on stderr as each turn
//         starts.
//     node worker.mjs redis|postgres URL hand KEY TTL_MS
//         Takes KEY and prints the serialized lock (`JSON.stringify(lock.serialize())`), then
//         exits without releasing it.
//     node worker.mjs redis|postgres URL release SERIALIZED
//         Restores a serialized lock and releases it; prints `released`.

import { Redis } from 'ioredis'
import knex from 'knex'
import { LockFactory } from '@verrou/core'
import { RedisStore } from '@verrou/core/drivers/redis'
import { knexStore } from '@verrou/core/drivers/knex'

const GIVE_UP_MS = 60_000
const TTL_MS = 30_000

const [storeName, url, task, ...args] = process.argv.slice(2)

/** The store and how to close its connection. */
function connect() {
  if (storeName === 'redis') {
    const connection = new Redis(url)
    return { store: new RedisStore({ connection }), close: async () => connection.disconnect() }
  }
  if (storeName === 'postgres') {
    const connection = knex({ client: 'pg', connection: url, pool: { min: 1, max: 2 } })
    const store = knexStore({ connection, autoCreateTable: false }).factory()
    return { store, close: () => connection.destroy() }
  }
  throw new Error(`unknown store ${storeName}: redis or postgres`)
}

/** The wall clock in nanoseconds since the epoch, as the Rust worker prints it (to the
 * microsecond: a double holds microseconds since the epoch exactly, not nanoseconds). */
function epochNanos() {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n
}

/** Takes `key` `turns` times, holding it `holdMs` each time. */
async function contend(factory, key, turns, holdMs) {
  for (let turn = 0; turn < Number(turns); turn++) {
    const lock = factory.createLock(key, TTL_MS)
    if (!(await lock.acquire())) throw new Error(`gave up on ${key} after ${GIVE_UP_MS} ms`)
    const started = epochNanos()
    console.error('took')
    await new Promise((resolve) => setTimeout(resolve, Number(holdMs)))
    const ended = epochNanos()
    console.log(`held ${started} ${ended} 0`)
    await lock.release()
  }
}

/** Takes `key` and prints the serialized lock. */
async function hand(factory, key, ttlMs) {
  const lock = factory.createLock(key, Number(ttlMs))
  if (!(await lock.acquireImmediately())) throw new Error(`${key} is busy`)
  console.log(JSON.stringify(lock.serialize()))
}

/** Restores the lock `serialized` and releases it. */
async function release(factory, serialized) {
  await factory.restoreLock(JSON.parse(serialized)).release()
  console.log('released')
}

const { store, close } = connect()
const retryMs = task === 'contend' ? Number(args[3]) : 10
const factory = new LockFactory(store, { retry: { delay: retryMs, timeout: GIVE_UP_MS } })
const tasks = { contend, hand, release }
if (!tasks[task]) throw new Error(`unknown task ${task}: contend, hand or release`)
await tasks[task](factory, ...args)
await close()
