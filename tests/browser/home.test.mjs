// End-to-end browser test of the Agora web UI.
//
// Drives Debian's chromium (/usr/bin/chromium) with playwright-core against a
// running gateway:  BASE_URL=http://127.0.0.1:8080 node home.test.mjs
// (tests/browser/run.sh starts `agora up` and does that for you).
//
// Checks the home page, the jokes page (first joke, "Tell me another", a
// category), the status page and the Swagger UI, and saves screenshots to
// tests/browser/screenshots/. Exits non-zero with a clear message on failure.

import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const BASE_URL = (process.env.BASE_URL || '').replace(/\/+$/, '');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT_MS = Number(process.env.TIMEOUT_MS || 15000);
const HERE = dirname(fileURLToPath(import.meta.url));
const SHOTS = join(HERE, 'screenshots');

const PHONE = { width: 375, height: 740 };
const LAPTOP = { width: 1280, height: 800 };

if (!BASE_URL) {
  console.error('FAIL: set BASE_URL, e.g. BASE_URL=http://127.0.0.1:8080 node home.test.mjs');
  process.exit(2);
}

class TestFailure extends Error {}

function check(cond, message) {
  if (!cond) throw new TestFailure(message);
}

let current = 'setup';
const passed = [];
async function step(name, fn) {
  current = name;
  const t0 = Date.now();
  await fn();
  passed.push(name);
  console.log(`ok   ${name} (${Date.now() - t0} ms)`);
}

async function shot(page, file) {
  const path = join(SHOTS, file);
  await page.screenshot({ path, fullPage: true });
  console.log(`     screenshot ${path}`);
}

/** Fails if the page is wider than its viewport (sideways scrolling on phones). */
async function noHorizontalOverflow(page, what) {
  const { scroll, client } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    client: document.documentElement.clientWidth,
  }));
  check(scroll <= client + 1, `${what}: page is ${scroll}px wide in a ${client}px viewport (horizontal scrolling)`);
}

/** Waits until #joke holds non-empty text different from `previous`; returns it. */
async function waitForJoke(page, previous, what) {
  try {
    await page.waitForFunction(
      (prev) => {
        const t = (document.querySelector('#joke')?.textContent || '').trim();
        return t.length > 0 && t !== prev;
      },
      previous,
      { timeout: TIMEOUT_MS },
    );
  } catch {
    const err = await page.locator('#joke-error').textContent().catch(() => '');
    throw new TestFailure(`${what}: no joke appeared in #joke within ${TIMEOUT_MS} ms` +
      (err && err.trim() ? ` (error shown: ${err.trim()})` : ''));
  }
  const errorHidden = await page.locator('#joke-error').isHidden();
  check(errorHidden, `${what}: the error box is visible: ${await page.locator('#joke-error').textContent()}`);
  return (await page.locator('#joke').textContent()).trim();
}

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-quic',
      '--no-first-run',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const pageErrors = [];
  const consoleErrors = [];
  try {
    const context = await browser.newContext({ viewport: LAPTOP });
    context.setDefaultTimeout(TIMEOUT_MS);
    const page = await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(`${page.url()}: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(`${page.url()}: ${m.text()} [${m.location().url || '?'}]`);
    });

    await step('home page', async () => {
      const res = await page.goto(`${BASE_URL}/`, { waitUntil: 'load' });
      check(res && res.status() === 200, `GET / answered ${res && res.status()}`);
      const title = await page.title();
      check(/Agora/.test(title), `home title is ${JSON.stringify(title)}, expected it to mention Agora`);
      const h1 = (await page.locator('h1').first().textContent()).trim();
      check(h1 === 'Welcome to Agora', `home heading is ${JSON.stringify(h1)}, expected "Welcome to Agora"`);
      const cards = await page.locator('.card').count();
      check(cards >= 1, 'home page shows no application cards');
      const badge = page.locator('.card:has(a[href="/jokes"]) .badge');
      check((await badge.count()) === 1, 'the jokes card has no status badge');
      const text = (await badge.textContent()).trim();
      check(['up', 'down', 'degraded', 'unknown'].includes(text), `jokes badge says ${JSON.stringify(text)}`);
      // The badge is polled live (app.js); the service is running, so it must become "up".
      await page.waitForFunction(
        () => document.querySelector('.card:has(a[href="/jokes"]) .badge')?.textContent.trim() === 'up',
        null, { timeout: TIMEOUT_MS },
      ).catch(async () => {
        throw new TestFailure(`jokes badge never became "up" (it says ${JSON.stringify((await badge.textContent()).trim())})`);
      });
      check(await badge.evaluate((el) => el.classList.contains('badge-up')), 'jokes badge says up but lacks the badge-up class');
      await noHorizontalOverflow(page, 'home at 1280px');
      await shot(page, 'home.png');
      await page.setViewportSize(PHONE);
      await noHorizontalOverflow(page, 'home at 375px');
      await shot(page, 'home-phone.png');
      await page.setViewportSize(LAPTOP);
      // The site follows prefers-color-scheme; keep a picture of the dark theme too.
      await page.emulateMedia({ colorScheme: 'dark' });
      await page.waitForTimeout(500); // let the 150 ms colour transitions finish
      await shot(page, 'home-dark.png');
      await page.emulateMedia({ colorScheme: 'light' });
    });

    let joke = '';
    await step('jokes page: first joke', async () => {
      await Promise.all([page.waitForURL(`${BASE_URL}/jokes`), page.click('.card a[href="/jokes"]')]);
      check(/Jokes/.test(await page.title()), `jokes page title is ${JSON.stringify(await page.title())}`);
      joke = await waitForJoke(page, '', 'first joke');
      console.log(`     joke: ${joke}`);
    });

    await step('jokes page: "Tell me another"', async () => {
      const answered = page.waitForResponse((r) => new URL(r.url()).pathname === '/joke');
      await page.click('#new-joke');
      const res = await answered;
      check(res.status() === 200, `GET /joke answered ${res.status()}`);
      const body = await res.json();
      check(typeof body.joke === 'string' && body.joke.trim(), `GET /joke gave no joke: ${JSON.stringify(body)}`);
      // Jokes are random, so the new one may equal the old: wait for the one just fetched.
      await page.waitForFunction((want) => document.querySelector('#joke')?.textContent.trim() === want, body.joke.trim())
        .catch(() => { throw new TestFailure('the joke fetched by "Tell me another" never appeared in #joke'); });
      check(await page.locator('#joke-error').isHidden(), 'the error box is visible after "Tell me another"');
      joke = body.joke.trim();
      console.log(`     joke: ${joke}`);
    });

    await step('jokes page: category', async () => {
      const options = await page.locator('#category option').evaluateAll((os) => os.map((o) => o.value).filter(Boolean));
      check(options.length > 0, 'the #category select offers no categories (page could not ask the jokes service?)');
      const category = options[0];
      const answered = page.waitForResponse((r) => {
        const u = new URL(r.url());
        return u.pathname === '/joke' && u.searchParams.get('category') === category;
      });
      // Choosing a category fetches a joke from it straight away (app.js listens to "change").
      await page.selectOption('#category', category);
      const res = await answered.catch(() => {
        throw new TestFailure(`choosing category ${JSON.stringify(category)} did not fetch /joke?category=${category}`);
      });
      check(res.status() === 200, `GET /joke?category=${category} answered ${res.status()}`);
      const body = await res.json();
      check(typeof body.joke === 'string' && body.joke.trim(), `GET /joke?category=${category} gave no joke: ${JSON.stringify(body)}`);
      await page.waitForFunction((want) => document.querySelector('#joke')?.textContent.trim() === want, body.joke.trim())
        .catch(() => { throw new TestFailure(`the ${category} joke from the service never appeared in #joke`); });
      console.log(`     ${category} joke: ${body.joke.trim()}`);
      await noHorizontalOverflow(page, 'jokes at 1280px');
      await shot(page, 'jokes.png');
      await page.setViewportSize(PHONE);
      await noHorizontalOverflow(page, 'jokes at 375px');
      await shot(page, 'jokes-phone.png');
      await page.setViewportSize(LAPTOP);
    });

    await step('status page', async () => {
      const res = await page.goto(`${BASE_URL}/status`);
      check(res && res.status() === 200, `GET /status answered ${res && res.status()}`);
      const section = page.locator('section.panel', { has: page.locator('h2', { hasText: /^jokes$/ }) });
      check((await section.count()) === 1, '/status does not list the jokes service');
      const badge = (await section.locator('[data-service-status="jokes"]').textContent()).trim();
      check(badge === 'up', `/status shows jokes as ${JSON.stringify(badge)}, expected "up"`);
      const rows = await section.locator('tbody tr').count();
      check(rows >= 1, '/status lists no instance of jokes');
      const addr = (await section.locator('tbody tr td[data-label="Address"]').first().textContent()).trim();
      check(/^127\.0\.0\.1:\d+$/.test(addr), `jokes instance address is ${JSON.stringify(addr)}`);
      await noHorizontalOverflow(page, 'status at 1280px');
      await shot(page, 'status.png');
      await page.setViewportSize(PHONE);
      await noHorizontalOverflow(page, 'status at 375px');
      await shot(page, 'status-phone.png');
      await page.setViewportSize(LAPTOP);
    });

    await step('API docs (Swagger UI)', async () => {
      const res = await page.goto(`${BASE_URL}/docs/`);
      check(res && res.status() === 200, `GET /docs/ answered ${res && res.status()}`);
      await page.waitForSelector('.swagger-ui', { timeout: TIMEOUT_MS })
        .catch(() => { throw new TestFailure('/docs/ never rendered a .swagger-ui element'); });
      // Wait until the spec is loaded and at least one operation is listed.
      await page.waitForSelector('.swagger-ui .opblock', { timeout: TIMEOUT_MS })
        .catch(async () => {
          const err = await page.locator('.swagger-ui .errors-wrapper, .swagger-ui .loading-container').first().textContent().catch(() => '');
          throw new TestFailure(`Swagger UI listed no API operation${err ? `: ${err.trim()}` : ''}`);
        });
      await shot(page, 'docs.png');
    });

    await step('classification: a sample moves to finished with a top-5 chart', async () => {
      const res = await page.goto(`${BASE_URL}/classify`);
      check(res && res.status() === 200, `GET /classify answered ${res && res.status()}`);
      await page.waitForSelector('#model option', { state: 'attached', timeout: TIMEOUT_MS });
      await page.selectOption('#image', 'cat');
      await page.click('#classify-submit');
      await page.waitForSelector('#job-state[data-state="finished"]', { timeout: 60000 })
        .catch(async () => { throw new TestFailure(`job did not finish: ${await page.locator('#job-state').textContent()}`); });
      const rows = await page.locator('#top5 li').count();
      check(rows === 5, `the chart shows ${rows} bars, expected 5`);
      const first = (await page.locator('#top5 li .bar-label').first().textContent()) || '';
      check(/cat/i.test(first), `the cat's top answer is ${JSON.stringify(first)}`);
      check(await page.locator('#recent tbody tr').count() >= 1, 'the recent-jobs list is empty');
      await shot(page, 'classify.png');
    });

    await step('sign up, see who is logged in, log out', async () => {
      const username = `ada-${Date.now()}`;
      await page.goto(`${BASE_URL}/account/signup`);
      await page.fill('#username', username);
      await page.fill('#password', 'a long and unusual passphrase');
      await Promise.all([page.waitForURL(`${BASE_URL}/`), page.click('#signup-submit')]);
      const who = (await page.locator('#current-user').textContent({ timeout: TIMEOUT_MS })) || '';
      check(who.trim() === username, `header shows ${JSON.stringify(who)}, expected ${username}`);
      const cookies = await context.cookies(BASE_URL);
      const session = cookies.find((c) => c.name === 'agora_session');
      check(session && session.httpOnly, 'the session cookie is missing or readable by scripts');
      check(session.sameSite === 'Lax', `the session cookie is SameSite=${session.sameSite}`);
      await shot(page, 'logged-in.png');
      await Promise.all([page.waitForURL(`${BASE_URL}/`), page.click('#logout')]);
      check(await page.locator('#current-user').count() === 0, 'still logged in after logging out');
      await page.goto(`${BASE_URL}/account/login`);
      await page.fill('#username', username);
      await page.fill('#password', 'not the password');
      await page.click('#login-submit');
      await page.waitForSelector('#form-error', { timeout: TIMEOUT_MS });
      const error = (await page.locator('#form-error').textContent()) || '';
      check(/wrong username or password/i.test(error), `login error says ${JSON.stringify(error)}`);
      await page.fill('#password', 'a long and unusual passphrase');
      await Promise.all([page.waitForURL(`${BASE_URL}/`), page.click('#login-submit')]);
      check(((await page.locator('#current-user').textContent()) || '').trim() === username, 'log-in did not log in');
    });

    await step('crowdfunding: propose a project, vote, reply, find it first in the list', async () => {
      // The body is read only on failure (a page that navigates away drops it).
      const expectStatus = async (res, want, what) => {
        if (res.status() !== want) throw new TestFailure(`${what} answered ${res.status()}: ${await res.text().catch(() => '?')}`);
      };
      // Still signed in from the previous step.
      const user = ((await page.locator('#current-user').textContent()) || '').trim();
      check(user, 'not signed in at the start of the crowdfunding step');
      await page.goto(`${BASE_URL}/`);
      await Promise.all([page.waitForURL(`${BASE_URL}/crowdfunding`), page.click('.card a[href="/crowdfunding"]')]);
      check(/Crowdfunding/.test(await page.title()), `crowdfunding page title is ${JSON.stringify(await page.title())}`);
      await page.waitForSelector('#propose-form', { timeout: TIMEOUT_MS })
        .catch(() => { throw new TestFailure('a signed-in user sees no #propose-form on /crowdfunding'); });
      await page.waitForSelector('#list-loading', { state: 'hidden' });
      check(await page.locator('#list-error').isHidden(), `the list shows an error: ${await page.locator('#list-error').textContent()}`);

      await page.fill('#project-name', 'Popee the Performer');
      await page.fill('#tagline', 'an apprentice clown in Wolf Circus');
      await page.fill('#tags', 'clown, circus');
      await page.fill('#problems', 'short temper\nself centered');
      await page.fill('#solutions', 'play the drums');
      const proposed = page.waitForResponse((r) => new URL(r.url()).pathname === '/projects/propose');
      await page.click('#propose-submit');
      const res = await proposed;
      await expectStatus(res, 201, 'POST /projects/propose');
      // The page navigates at once, so the body is gone: the id comes from the Location header.
      const id = (/^\/projects\/(\d+)$/.exec(res.headers().location || '') || [])[1];
      check(id, `POST /projects/propose gave Location ${JSON.stringify(res.headers().location)}`);
      await page.waitForURL(`${BASE_URL}/crowdfunding/${id}`)
        .catch(async () => { throw new TestFailure(`no navigation to /crowdfunding/${id}: ${await page.locator('#propose-error').textContent()}`); });

      // The project, then its threads (which may still be pending for a moment).
      await page.waitForFunction(() => document.querySelector('#project-name')?.textContent === 'Popee the Performer')
        .catch(async () => { throw new TestFailure(`the project page shows ${JSON.stringify(await page.locator('#project-name').textContent())}: ${await page.locator('#project-error').textContent()}`); });
      const tags = await page.locator('#project-tags .tag').allTextContents();
      check(tags.join(',') === 'clown,circus', `the project's tags are ${JSON.stringify(tags)}`);
      const author = (await page.locator('#project-meta strong').textContent()).trim();
      check(author === user, `the project is by ${JSON.stringify(author)}, expected ${user}`);
      await page.waitForFunction(
        () => document.querySelectorAll('#problems > .thread').length === 2 && document.querySelectorAll('#solutions > .thread').length === 1,
        null, { timeout: 30000 },
      ).catch(async () => {
        throw new TestFailure(`expected 2 problems and 1 solution, got ${await page.locator('#problems > .thread').count()} and ` +
          `${await page.locator('#solutions > .thread').count()} (notice: ${await page.locator('#threads-notice').textContent()})`);
      });
      const problems = await page.locator('#problems > .thread > .thread-body > .thread-message').allTextContents();
      check(problems.join('|') === 'short temper|self centered', `problems shown: ${JSON.stringify(problems)}`);
      const solutions = await page.locator('#solutions > .thread > .thread-body > .thread-message').allTextContents();
      check(solutions.join('|') === 'play the drums', `solutions shown: ${JSON.stringify(solutions)}`);
      check((await page.locator('#problems-count').textContent()) === '2', 'the problems heading does not count 2');

      // Up-vote "short temper": the count becomes 1 and the button is pressed, also after a reload (my_vote).
      const problem = page.locator('#problems > .thread').first();
      const threadId = await problem.getAttribute('data-thread-id');
      const up = page.locator(`#thread-${threadId} > .votes > .vote-up`);
      check((await up.locator('.vote-count').textContent()) === '0', 'a new problem does not start at 0 up-votes');
      const voted = page.waitForResponse((r) => new URL(r.url()).pathname === `/threads/${threadId}/vote`);
      await up.click();
      const vote = await voted;
      await expectStatus(vote, 200, `POST /threads/${threadId}/vote`);
      const upOne = (sel) => document.querySelector(`${sel} .vote-count`)?.textContent === '1' &&
        document.querySelector(sel)?.getAttribute('aria-pressed') === 'true';
      const upSel = `#thread-${threadId} > .votes > .vote-up`;
      await page.waitForFunction(upOne, upSel)
        .catch(async () => { throw new TestFailure(`after the up-vote the count is ${await up.locator('.vote-count').textContent()}, pressed=${await up.getAttribute('aria-pressed')}`); });
      await page.reload();
      await page.waitForFunction(upOne, upSel)
        .catch(async () => { throw new TestFailure(`after a reload the up-vote shows ${await up.locator('.vote-count').textContent()}, pressed=${await up.getAttribute('aria-pressed')}`); });

      // Reply to "self centered": the reply appears nested under it.
      const second = page.locator('#problems > .thread').nth(1);
      const parentId = await second.getAttribute('data-thread-id');
      await page.click(`#thread-${parentId} > .thread-body > .thread-actions .link-button`);
      await page.fill(`#reply-${parentId}`, 'he is working on it');
      const replied = page.waitForResponse((r) => new URL(r.url()).pathname === `/projects/${id}/threads`);
      await page.click(`#thread-${parentId} .reply-form button[type="submit"]`);
      const reply = await replied;
      await expectStatus(reply, 201, `POST /projects/${id}/threads`);
      const nested = page.locator(`#thread-${parentId} > .thread-body > .replies > .thread > .thread-body > .thread-message`);
      await nested.first().waitFor({ timeout: TIMEOUT_MS })
        .catch(() => { throw new TestFailure('the reply does not appear nested under its thread'); });
      check((await nested.first().textContent()) === 'he is working on it', `the nested reply says ${JSON.stringify(await nested.first().textContent())}`);
      check(await page.locator('#problems > .thread').count() === 2, 'the reply was listed as a top-level problem');
      check(await page.locator('#action-error').isHidden(), `an error is shown: ${await page.locator('#action-error').textContent()}`);
      await noHorizontalOverflow(page, 'project at 1280px');
      await shot(page, 'project.png');
      await page.setViewportSize(PHONE);
      await noHorizontalOverflow(page, 'project at 375px');
      await shot(page, 'project-phone.png');
      await page.setViewportSize(LAPTOP);

      // Back to the list: the new project comes first.
      await Promise.all([page.waitForURL(`${BASE_URL}/crowdfunding`), page.click('.cf-back a')]);
      await page.waitForSelector('#project-list > li', { timeout: TIMEOUT_MS })
        .catch(async () => { throw new TestFailure(`the project list stays empty: ${await page.locator('#list-error').textContent()}`); });
      const first = (await page.locator('#project-list > li .project-title').first().textContent()).trim();
      check(first === 'Popee the Performer', `the first project listed is ${JSON.stringify(first)}`);
      const href = await page.locator('#project-list > li .project-title a').first().getAttribute('href');
      check(href === `/crowdfunding/${id}`, `the first project links to ${href}`);
      await noHorizontalOverflow(page, 'crowdfunding at 1280px');
      await shot(page, 'crowdfunding.png');
      await page.setViewportSize(PHONE);
      await noHorizontalOverflow(page, 'crowdfunding at 375px');
      await shot(page, 'crowdfunding-phone.png');
      await page.setViewportSize(LAPTOP);
    });

    const real = pageErrors;
    check(real.length === 0, `uncaught JavaScript errors:\n  ${real.join('\n  ')}`);
    const consoleReal = consoleErrors.filter((e) => !/favicon/i.test(e));
    if (consoleReal.length) {
      console.log(`note: console errors seen (not failing):\n  ${consoleReal.join('\n  ')}`);
    }
    await context.close();
  } finally {
    await browser.close();
  }
}

main().then(
  () => {
    console.log(`PASS: ${passed.length} browser checks against ${BASE_URL}`);
  },
  (err) => {
    const msg = err instanceof TestFailure ? err.message : (err && err.stack) || String(err);
    console.error(`FAIL [${current}]: ${msg}`);
    process.exitCode = 1;
  },
);
