// The account pages: sign up, log out, log in; the header says who is signed in.
import { test, expect, newUsername, PASSWORD } from '../fixtures.mjs';

test('a visitor signs up, sees their name, logs out and logs in again', async ({ page, context }) => {
  const username = newUsername('ada');
  await page.goto('/');
  await page.getByRole('link', { name: 'Sign up' }).click();
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Create an account');
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign up' }).click();

  await expect(page).toHaveURL('/');
  await expect(page.locator('#account')).toContainText(`Signed in as ${username}`);
  const session = (await context.cookies()).find((c) => c.name === 'agora_session');
  expect(session, 'the session cookie').toMatchObject({ httpOnly: true, sameSite: 'Lax' });

  await page.getByRole('button', { name: 'Log out' }).click();
  await expect(page).toHaveURL('/');
  await expect(page.locator('#account')).not.toContainText(username);
  await expect(page.locator('#account').getByRole('link', { name: 'Log in' })).toBeVisible();

  await page.getByRole('link', { name: 'Log in' }).click();
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Log in');
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill('not the password');
  await page.getByRole('button', { name: 'Log in' }).click();
  await expect(page.getByRole('alert')).toHaveText('Wrong username or password.');
  await expect(page.getByLabel('Username')).toHaveValue(username);
  await expect(page.locator('#current-user')).toHaveCount(0);

  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await expect(page).toHaveURL('/');
  await expect(page.locator('#current-user')).toHaveText(username);
  // The session survives a page load.
  await page.goto('/jokes');
  await expect(page.locator('#current-user')).toHaveText(username);
});

test('sign up refuses a username that is taken, saying so', async ({ page }) => {
  const username = newUsername('bob');
  await page.goto('/account/signup');
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign up' }).click();
  await expect(page.locator('#current-user')).toHaveText(username);
  await page.getByRole('button', { name: 'Log out' }).click();

  await page.goto('/account/signup');
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign up' }).click();
  await expect(page.getByRole('alert')).toContainText('already taken');
  await expect(page.locator('#current-user')).toHaveCount(0);
});

test('logging in from a page returns to that page', async ({ page }) => {
  const username = newUsername('eve');
  await page.goto('/classify');
  await page.locator('#account').getByRole('link', { name: 'Sign up' }).click();
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign up' }).click();
  await expect(page).toHaveURL('/classify');
  await expect(page.locator('#current-user')).toHaveText(username);
  await page.getByRole('button', { name: 'Log out' }).click();

  await page.goto('/crowdfunding');
  await page.locator('#account').getByRole('link', { name: 'Log in' }).click();
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await expect(page).toHaveURL('/crowdfunding');
  await expect(page.locator('#current-user')).toHaveText(username);
});
