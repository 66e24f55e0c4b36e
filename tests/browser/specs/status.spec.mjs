// The status page: every service behind the gateway, up, with its instances.
import { test, expect } from '../fixtures.mjs';

test('the status page lists every service as up with a healthy instance', async ({ page }) => {
  await page.goto('/status');
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('System status');
  for (const service of ['auth', 'classifier', 'jokes', 'media', 'projects']) {
    const panel = page.locator('section.panel').filter({ has: page.getByRole('heading', { name: service, exact: true }) });
    await expect(panel.locator(`[data-service-status="${service}"]`)).toHaveText('up');
    await expect(panel.locator('.stat').filter({ hasText: 'Healthy instances' }).locator('dd')).toHaveText('1 / 1');
    await expect(panel.locator('.stat').filter({ hasText: 'Circuit' }).locator('dd')).toHaveText('closed');
    await expect(panel.locator('td[data-label="Address"]')).toHaveText([/^127\.0\.0\.1:\d+$/]);
    await expect(panel.locator('td[data-label="Health"]')).toHaveText(['healthy']);
  }
});
