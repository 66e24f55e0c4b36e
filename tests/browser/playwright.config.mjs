// Playwright configuration of the browser tests: Debian's chromium (no browser
// is downloaded) against one `agora up` started by agora.mjs for the whole run.
// See README.md.
import { defineConfig } from '@playwright/test';

export default defineConfig({
  testDir: './specs',
  globalSetup: './agora.mjs',
  // The tests share one system; each makes its own user and project, so files may run side by side.
  workers: Number(process.env.WORKERS || 2),
  retries: 0,
  forbidOnly: Boolean(process.env.CI),
  // Debug builds on a shared 2-core machine: generous waits, never a fixed sleep.
  timeout: 90_000,
  expect: { timeout: 20_000 },
  reporter: [['list']],
  outputDir: './test-results',
  use: {
    // Set by agora.mjs before the workers start (or given, for a running system).
    baseURL: process.env.AGORA_URL,
    browserName: 'chromium',
    viewport: { width: 1280, height: 800 },
    screenshot: 'only-on-failure',
    trace: 'retain-on-failure',
    launchOptions: {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    },
  },
});
