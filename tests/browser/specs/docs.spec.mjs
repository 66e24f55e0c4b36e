// The API docs: Swagger UI with the services' operations.
import { test, expect } from '../fixtures.mjs';

test('the API docs list the operations of a service', async ({ page }) => {
  await page.goto('/docs');
  await expect(page.locator('.swagger-ui .opblock').first()).toBeVisible();
  await expect(page.locator('.swagger-ui .opblock-summary-path').first()).toHaveText(/^\//);
});
