// What every spec shares: `test` whose page fails the test on an uncaught
// JavaScript error, and signing up a fresh user.
import { test as base, expect } from '@playwright/test';

export { expect };

export const PASSWORD = 'a long and unusual passphrase';

export const test = base.extend({
  page: async ({ page }, use) => {
    const errors = [];
    page.on('pageerror', (err) => errors.push(`${page.url()}: ${err.message}`));
    await use(page);
    expect(errors, 'uncaught JavaScript errors on the pages visited').toEqual([]);
  },
});

/** A username no earlier test or run has taken. */
export function newUsername(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
}

/** Signs up a new user through the form and returns their name, shown in the header. */
export async function signUp(page, prefix = 'user') {
  const username = newUsername(prefix);
  await page.goto('/account/signup');
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign up' }).click();
  await expect(page.locator('#current-user')).toHaveText(username);
  return username;
}
