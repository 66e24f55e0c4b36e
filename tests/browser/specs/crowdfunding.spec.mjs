// Crowdfunding: propose a project, vote on its problems, reply in its threads,
// and what a visitor (even without JavaScript) sees of it afterwards.
import { test, expect, signUp } from '../fixtures.mjs';

test('a user proposes a project, votes, replies and comments, and a visitor sees it all', async ({ page, browser }, testInfo) => {
  const user = await signUp(page, 'popee-fan');
  const name = `Popee the Performer ${Date.now().toString(36)}`;

  await page.goto('/');
  await page.locator('.card').getByRole('link', { name: 'Crowdfunding' }).click();
  await expect(page).toHaveURL('/crowdfunding');
  await expect(page.getByRole('heading', { name: 'Propose a project' })).toBeVisible();

  // The form says what is missing before anything is sent.
  await page.getByRole('button', { name: 'Propose' }).click();
  await expect(page.locator('#error-project_name')).toHaveText('Give the project a name.');
  await expect(page).toHaveURL('/crowdfunding');

  const form = page.locator('#propose-form');
  await form.getByLabel('Name', { exact: true }).fill(name);
  await form.getByLabel('Tagline', { exact: true }).fill('an apprentice clown in Wolf Circus');
  await form.getByLabel('Tags', { exact: true }).fill('clown, circus');
  await form.getByLabel('Problems', { exact: true }).fill('short temper\nself centered');
  await form.getByLabel('Solutions', { exact: true }).fill('play the drums');
  await form.getByRole('button', { name: 'Propose' }).click();

  // Its page: the project, then its problems and solutions (created a moment later).
  await expect(page).toHaveURL(/\/crowdfunding\/\d+$/);
  const projectUrl = new URL(page.url()).pathname;
  await expect(page.getByRole('heading', { level: 1 })).toHaveText(name);
  await expect(page.locator('#project-tagline')).toHaveText('an apprentice clown in Wolf Circus');
  await expect(page.locator('#project-tags .tag')).toHaveText(['clown', 'circus']);
  await expect(page.locator('#project-meta')).toContainText(`Proposed by ${user}`);
  const message = ':scope > .thread-body > .thread-message';
  const problems = page.locator('#problems > .thread');
  await expect(problems.locator(message)).toHaveText(['short temper', 'self centered']);
  await expect(page.locator('#solutions > .thread').locator(message)).toHaveText(['play the drums']);
  await expect(page.locator('#problems-count')).toHaveText('2');
  // The script has taken over the threads (votes and replies work from here).
  await expect(page.locator('#project')).toHaveAttribute('data-loaded', 'true');

  // Up-vote "short temper": counted, pressed, and still so after a reload.
  const temper = problems.first();
  const up = temper.locator(':scope > .votes > .vote-up');
  const down = temper.locator(':scope > .votes > .vote-down');
  await expect(up).toHaveAccessibleName('Up-votes: 0');
  await up.click();
  await expect(up.locator('.vote-count')).toHaveText('1');
  await expect(up).toHaveAttribute('aria-pressed', 'true');
  await page.reload();
  await expect(up.locator('.vote-count')).toHaveText('1');
  await expect(up).toHaveAttribute('aria-pressed', 'true');
  await expect(page.locator('#project')).toHaveAttribute('data-loaded', 'true');
  // Changing one's mind moves the vote.
  await down.click();
  await expect(down.locator('.vote-count')).toHaveText('1');
  await expect(down).toHaveAttribute('aria-pressed', 'true');
  await expect(up.locator('.vote-count')).toHaveText('0');
  await expect(up).toHaveAttribute('aria-pressed', 'false');

  // Reply to "self centered": the reply appears nested under it.
  const centered = problems.nth(1);
  await centered.locator(':scope > .thread-body > .thread-actions').getByRole('button', { name: 'Reply' }).click();
  await centered.getByLabel('Your reply').fill('he is working on it');
  await centered.getByRole('button', { name: 'Post reply' }).click();
  await expect(centered.locator(':scope > .thread-body > .replies > .thread').locator(message)).toHaveText(['he is working on it']);
  await expect(problems).toHaveCount(2);

  // A comment on the project.
  await page.getByLabel('Add a').selectOption('COMMENT');
  await page.getByLabel('Message').fill('what a show');
  await page.getByRole('button', { name: 'Post', exact: true }).click();
  await expect(page.locator('#comments > .thread').locator(message)).toHaveText(['what a show']);
  await expect(page.locator('#comments-count')).toHaveText('1');
  await expect(page.locator('#action-error')).toBeHidden();

  // Back to the list: the project comes first.
  await page.getByRole('link', { name: '← All projects' }).click();
  await expect(page).toHaveURL('/crowdfunding');
  await expect(page.locator('#project-list > li .project-title').first()).toHaveText(name);

  // A visitor without JavaScript gets all of it from the server, and may not vote or reply.
  const visitor = await browser.newContext({ baseURL: testInfo.project.use.baseURL, javaScriptEnabled: false });
  const their = await visitor.newPage();
  await their.goto('/crowdfunding');
  await expect(their.locator('#project-list > li .project-title').first()).toHaveText(name);
  await expect(their.locator('#project-list > li .project-tagline').first()).toHaveText('an apprentice clown in Wolf Circus');
  await expect(their.locator('#propose-login')).toContainText('to propose a project');
  await expect(their.locator('#propose-form')).toHaveCount(0);
  await their.getByRole('link', { name, exact: true }).click();
  await expect(their).toHaveURL(projectUrl);
  await expect(their.getByRole('heading', { level: 1 })).toHaveText(name);
  const theirProblems = their.locator('#problems > .thread');
  await expect(theirProblems.locator(message)).toHaveText(['short temper', 'self centered']);
  await expect(theirProblems.first().locator(':scope > .votes > .vote-down .vote-count')).toHaveText('1');
  await expect(theirProblems.first().locator(':scope > .votes > .vote-up .vote-count')).toHaveText('0');
  await expect(theirProblems.first().locator(':scope > .votes > button').first()).toBeDisabled();
  await expect(theirProblems.nth(1).locator(':scope > .thread-body > .replies > .thread').locator(message)).toHaveText(['he is working on it']);
  await expect(their.locator('#comments > .thread').locator(message)).toHaveText(['what a show']);
  await expect(their.locator('#discuss-login')).toContainText('to vote, reply');
  await visitor.close();
});
