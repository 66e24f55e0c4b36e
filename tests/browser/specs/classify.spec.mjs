// Image classification: a sample image or an uploaded one goes through the job
// queue, and the page shows the job's state and the top 5 answers.
import { test, expect } from '../fixtures.mjs';

const FINISHED = { timeout: 60_000 }; // queued, then a worker runs the model (debug build)

test('a sample image is classified and the top answer is what it shows', async ({ page }) => {
  await page.goto('/classify');
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Image classification');
  // The models and sample images come with the page.
  await expect(page.getByLabel('Model').locator('option')).not.toHaveCount(0);
  await page.getByLabel('Sample image').selectOption('cat');
  await page.getByRole('button', { name: 'Classify' }).click();

  await expect(page.locator('#job-state')).toHaveText('Job finished', FINISHED);
  await expect(page.locator('#top5 li')).toHaveCount(5);
  await expect(page.locator('#top5 .bar-label').first()).toHaveText(/cat/);
  await expect(page.locator('#preview')).toBeVisible();
  // The job is remembered in the recent list, with its answer.
  const recent = page.locator('#recent tbody tr').first();
  await expect(recent.locator('td[data-label="Image"]')).toHaveText('cat');
  await expect(recent.locator('td[data-label="State"]')).toHaveText('finished');
  await expect(recent.locator('td[data-label="Top answer"]')).toHaveText(/cat/);
});

test('an uploaded photo is classified', async ({ page }) => {
  await page.goto('/classify');
  await page.getByLabel('…or upload your own').setInputFiles(
    new URL('../../../services/classifier/assets/coffee.jpg', import.meta.url).pathname,
  );
  await page.getByRole('button', { name: 'Classify' }).click();
  await expect(page.locator('#job-state')).toHaveText('Job finished', FINISHED);
  await expect(page.locator('#top5 .bar-label').first()).toHaveText('espresso');
  await expect(page.locator('#top5 li')).toHaveCount(5);
  await expect(page.locator('#recent tbody tr').first().locator('td[data-label="Image"]')).toHaveText('coffee.jpg');
});
