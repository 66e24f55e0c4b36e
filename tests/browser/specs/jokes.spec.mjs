// The jokes page: a joke on arrival, another on request, one of a chosen category.
import { readFileSync } from 'node:fs';
import { test, expect } from '../fixtures.mjs';

// The jokes service's own corpus: what the page may show, by category.
const corpus = JSON.parse(readFileSync(new URL('../../../services/jokes/src/corpus.json', import.meta.url), 'utf8'));
const jokesOf = (category) => corpus.filter((j) => !category || j.category === category).map((j) => j.joke);
const oneOf = (jokes) => new RegExp(`^(${jokes.map((j) => j.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|')})$`);
const categories = [...new Set(corpus.map((j) => j.category))].sort();

test('the jokes page shows a joke and tells another on request', async ({ page }) => {
  await page.goto('/jokes');
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Jokes');
  const joke = page.locator('#joke');
  await expect(joke).toHaveText(oneOf(jokesOf()));

  // "Tell me another" asks /joke from the page; the joke it got is the one shown.
  const answer = page.waitForResponse((r) => new URL(r.url()).pathname === '/joke');
  await page.getByRole('button', { name: 'Tell me another' }).click();
  const body = await (await answer).json();
  expect(jokesOf()).toContain(body.joke);
  await expect(joke).toHaveText(body.joke);
  await expect(page.locator('#joke-error')).toBeHidden();
  await expect(page).toHaveURL('/jokes'); // the script answered, not a page load
});

test('choosing a category shows a joke of that category', async ({ page }) => {
  await page.goto('/jokes');
  const select = page.getByLabel('Category');
  await expect(select.locator('option')).toHaveText(['Any category', ...categories.map((c) => c[0].toUpperCase() + c.slice(1))]);
  for (const category of categories) {
    const answer = page.waitForResponse((r) => new URL(r.url()).searchParams.get('category') === category);
    await select.selectOption(category);
    const body = await (await answer).json();
    await expect(page.locator('#joke')).toHaveText(body.joke);
    expect(jokesOf(category)).toContain(body.joke);
  }
});

test.describe('without JavaScript', () => {
  test.use({ javaScriptEnabled: false });

  test('the jokes page still shows a joke, and the form gets one of the chosen category', async ({ page }) => {
    await page.goto('/jokes');
    await expect(page.locator('#joke')).toHaveText(oneOf(jokesOf()));
    const category = categories[categories.length - 1];
    await page.getByLabel('Category').selectOption(category);
    await page.getByRole('button', { name: 'Tell me another' }).click();
    await expect(page).toHaveURL(`/jokes?category=${category}`);
    await expect(page.getByLabel('Category')).toHaveValue(category);
    await expect(page.locator('#joke')).toHaveText(oneOf(jokesOf(category)));
  });
});
