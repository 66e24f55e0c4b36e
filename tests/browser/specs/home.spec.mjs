// The home page: a card per application, with its service's live status.
import { test, expect } from '../fixtures.mjs';

test('the home page welcomes the visitor and lists the applications with their live status', async ({ page }) => {
  await page.goto('/');
  await expect(page).toHaveTitle(/Agora/);
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Welcome to Agora');

  const cards = page.locator('.card');
  await expect(cards.locator('.card-title')).toHaveText([
    'Jokes', 'Crowdfunding', 'Image classification', 'Media conversion', 'Shop', 'Drone delivery',
  ]);
  await expect(page.locator('.card-disabled .coming-soon')).toHaveText(['Coming soon', 'Coming soon']);

  // Rendered by the server, then kept up to date by polling /api/status: every service is running.
  for (const service of ['jokes', 'projects', 'classifier', 'media']) {
    const badge = page.locator(`.card [data-service-status="${service}"]`);
    await expect(badge).toHaveText('up');
    await expect(badge).toHaveClass(/\bbadge-up\b/);
  }
});

test('the home page leads to each application', async ({ page }) => {
  for (const [title, heading, path] of [
    ['Jokes', 'Jokes', '/jokes'],
    ['Crowdfunding', 'Crowdfunding', '/crowdfunding'],
    ['Image classification', 'Image classification', '/classify'],
    ['Media conversion', 'Media conversion', '/media'],
  ]) {
    await page.goto('/');
    await page.locator('.card').getByRole('link', { name: title, exact: true }).click();
    await expect(page).toHaveURL(path);
    await expect(page.getByRole('heading', { level: 1 })).toHaveText(heading);
  }
  await page.getByRole('link', { name: 'System status', exact: true }).click();
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('System status');
});

test('every page fits a phone screen without sideways scrolling', async ({ page }) => {
  await page.setViewportSize({ width: 375, height: 740 });
  for (const path of ['/', '/jokes', '/crowdfunding', '/classify', '/media', '/status', '/account/login', '/account/signup']) {
    await page.goto(path);
    await expect(page.getByRole('heading', { level: 1 })).toBeVisible();
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    expect(width, `${path} is wider than the phone`).toBeLessThanOrEqual(375);
  }
});

test('the navigation leads to each application and marks the page the visitor is on', async ({ page }) => {
  await page.goto('/');
  const nav = page.getByRole('navigation', { name: 'Main' });
  for (const [name, path, heading] of [
    ['Crowdfunding', '/crowdfunding', 'Crowdfunding'],
    ['Image classification', '/classify', 'Image classification'],
    ['Media', '/media', 'Media conversion'],
  ]) {
    await nav.getByRole('link', { name, exact: true }).click();
    await expect(page).toHaveURL(path);
    await expect(page.getByRole('heading', { level: 1 })).toHaveText(heading);
    await expect(nav.locator('[aria-current="page"]')).toHaveText(name);
  }
});
