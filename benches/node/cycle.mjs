// The cycle benchmark's Node.js side: `acquireImmediately` + `release` of a fresh
// @verrou/core lock per cycle, on the Redis at URL, with IN_FLIGHT concurrent loops on
// distinct keys, for SECONDS (after a short warm-up, so that the JIT has compiled the loop).
// Prints one JSON line: {"cycles_per_second", "p50_us", "p99_us"}.
//
//     node cycle.mjs URL IN_FLIGHT SECONDS ROUND

import { Redis } from 'ioredis'
import { LockFactory } from '@verrou/core'
import { RedisStore } from '@verrou/core/drivers/redis'

const WARM_UP_MS = 300
const TTL_MS = 30_000

const [url, inFlight, seconds, round] = process.argv.slice(2)
const connection = new Redis(url)
const factory = new LockFactory(new RedisStore({ connection }))

/** Runs the loops for `ms`; the cycles per second and each cycle's latency in microseconds. */
async function run(ms, tag) {
  const latencies = []
  const started = performance.now()
  const deadline = started + ms
  await Promise.all(
    Array.from({ length: Number(inFlight) }, async (_, task) => {
      const key = `bench:node:${round}:${tag}:${task}`
      let cycleStarted = performance.now()
      while (cycleStarted < deadline) {
        const lock = factory.createLock(key, TTL_MS)
        if (!(await lock.acquireImmediately())) throw new Error(`${key} is free, yet not taken`)
        await lock.release()
        const now = performance.now()
        latencies.push((now - cycleStarted) * 1000)
        cycleStarted = now
      }
    }),
  )
  const elapsed = (performance.now() - started) / 1000
  return { cyclesPerSecond: latencies.length / elapsed, latencies }
}

await run(WARM_UP_MS, 'warm-up')
const { cyclesPerSecond, latencies } = await run(Number(seconds) * 1000, 'measured')
latencies.sort((a, b) => a - b)
const at = (quantile) => latencies[Math.min(latencies.length - 1, Math.floor(quantile * latencies.length))] ?? 0
console.log(JSON.stringify({ cycles_per_second: cyclesPerSecond, p50_us: at(0.5), p99_us: at(0.99) }))
connection.disconnect()
