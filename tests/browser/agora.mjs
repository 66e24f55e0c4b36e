// Playwright's global setup: starts `agora up` once for all tests and returns
// the teardown that stops it.
//
// The binary comes from AGORA_BIN; it runs on a free port of 127.0.0.1 with a
// throw-away data directory, and the tests find it through AGORA_URL (set here,
// inherited by the workers). With AGORA_URL already set, the tests run against
// that system and nothing is started.
//
// The teardown sends SIGTERM and fails the run if agora does not stop cleanly
// or one of its `agora serve` children outlives it. On failure the agora log is
// kept and its tail printed; on success the log and data directory are removed.

import { execFileSync, spawn } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';

const READY_MS = 120_000; // a cold debug build on a busy machine needs a while
const STOP_MS = 30_000; // agora's own grace period is 10 s
const ORPHAN_WAIT_MS = 5_000;

export default async function startAgora() {
  if (process.env.AGORA_URL) {
    console.log(`[agora] testing the running system at ${process.env.AGORA_URL}`);
    return undefined;
  }
  const bin = process.env.AGORA_BIN;
  if (!bin) {
    throw new Error('set AGORA_BIN to an agora binary (or AGORA_URL to a running system)');
  }
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const dataDir = mkdtempSync(join(tmpdir(), 'agora-browser-data-'));
  const logDir = mkdtempSync(join(tmpdir(), 'agora-browser-log-'));
  const logPath = join(logDir, 'agora.log');
  const log = createWriteStream(logPath);

  console.log(`[agora] ${bin} up --port ${port} --data-dir ${dataDir} (log: ${logPath})`);
  const agora = spawn(bin, ['up', '--port', String(port), '--data-dir', dataDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise((resolve) => agora.on('exit', (code, signal) => resolve([code, signal])));
  // Last resort if the runner dies without its teardown: no agora left running.
  const killOnExit = () => agora.kill('SIGKILL');
  process.on('exit', killOnExit);
  // Both streams go to the log for the whole run (an undrained pipe would block agora).
  agora.stderr.pipe(log, { end: false });
  const ready = new Promise((resolve, reject) => {
    let seen = '';
    agora.stdout.on('data', (chunk) => {
      log.write(chunk);
      if (seen !== null) {
        seen += chunk.toString();
        if (seen.includes(`Agora is up: ${url}`)) {
          seen = null;
          resolve();
        }
      }
    });
    agora.on('error', reject);
    exited.then(([code, signal]) => reject(new Error(`agora exited (${code ?? signal}) before it was up`)));
    setTimeout(() => reject(new Error(`agora was not up within ${READY_MS / 1000} s`)), READY_MS).unref();
  });

  const failed = (message) => {
    log.end();
    console.error(`[agora] ${message}\n[agora] last 60 lines of ${logPath}:\n${tail(logPath, 60)}`);
    return new Error(`${message} (agora log kept at ${logPath})`);
  };

  try {
    await ready;
  } catch (err) {
    if (agora.pid !== undefined) {
      agora.kill('SIGKILL');
      await exited;
    }
    process.off('exit', killOnExit);
    rmSync(dataDir, { recursive: true, force: true });
    throw failed(err.message);
  }
  const children = new Set(childrenOf(agora.pid));
  console.log(`[agora] up at ${url} (pid ${agora.pid}, children ${[...children].join(' ') || 'none'})`);
  process.env.AGORA_URL = url;

  return async function stopAgora() {
    const problems = [];
    if (agora.exitCode === null && agora.signalCode === null) {
      childrenOf(agora.pid).forEach((pid) => children.add(pid));
      agora.kill('SIGTERM');
      const timer = new Promise((resolve) => setTimeout(resolve, STOP_MS, 'timeout'));
      if ((await Promise.race([exited, timer])) === 'timeout') {
        problems.push(`agora did not stop within ${STOP_MS / 1000} s of SIGTERM`);
        agora.kill('SIGKILL');
      }
    } else {
      problems.push(`agora stopped during the tests (${agora.exitCode ?? agora.signalCode})`);
    }
    const [code, signal] = await exited;
    process.off('exit', killOnExit);
    if (code !== 0 && !problems.length) {
      problems.push(`agora exited with ${code ?? signal} after SIGTERM`);
    }
    const orphans = await orphansOf(children);
    if (orphans.length) {
      problems.push(`these agora serve processes outlived agora: ${orphans.join(', ')}`);
      orphans.forEach((pid) => process.kill(Number(pid.split(' ')[0]), 'SIGKILL'));
    }
    rmSync(dataDir, { recursive: true, force: true });
    if (problems.length) {
      throw failed(problems.join('; '));
    }
    log.end();
    rmSync(logDir, { recursive: true, force: true });
    console.log('[agora] stopped; no agora serve process left behind');
  };
}

/** A port nobody listens on right now. */
async function freePort() {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

/** The process ids whose parent is `pid`. */
function childrenOf(pid) {
  try {
    return execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).split(/\s+/).filter(Boolean);
  } catch {
    return []; // pgrep exits 1 when there is none
  }
}

/** Those of `pids` still running `agora serve` after a short wait, as "pid command". */
async function orphansOf(pids) {
  const deadline = Date.now() + ORPHAN_WAIT_MS;
  for (;;) {
    const alive = [...pids].flatMap((pid) => {
      try {
        const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
        return / serve( |$)/.test(cmd) ? [`${pid} (${cmd})`] : [];
      } catch {
        return [];
      }
    });
    if (!alive.length || Date.now() > deadline) {
      return alive;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

function tail(path, lines) {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-lines - 1).join('\n');
  } catch {
    return '(no log)';
  }
}
