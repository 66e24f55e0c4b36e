// Media conversion: a visitor is asked to log in and comes back; a user uploads a
// small video made with ffmpeg (file input, then drag-and-drop), sees it convert,
// plays and downloads the mp3, and deletes a video. Needs ffmpeg (to make the
// video, and for agora's converter): skipped without it, failed under AGORA_REQUIRE_BACKENDS=1.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test, expect, PASSWORD, newUsername } from '../fixtures.mjs';

const CONVERTED = { timeout: 60_000 }; // queued, then ffmpeg in a debug build on a busy machine

const HAVE_FFMPEG = spawnSync('ffmpeg', ['-version']).status === 0;
if (!HAVE_FFMPEG && process.env.AGORA_REQUIRE_BACKENDS === '1') {
  throw new Error('ffmpeg is required (AGORA_REQUIRE_BACKENDS=1): apt-get install -y --no-install-recommends ffmpeg');
}
test.skip(!HAVE_FFMPEG, 'install ffmpeg to run it: apt-get install -y --no-install-recommends ffmpeg');

/** A 2-second 320x240 video with a tone, made with ffmpeg; its path. */
function makeVideo(path) {
  const made = spawnSync('ffmpeg', [
    '-hide_banner', '-loglevel', 'error', '-y',
    '-f', 'lavfi', '-i', 'testsrc=duration=2:size=320x240:rate=10',
    '-f', 'lavfi', '-i', 'sine=duration=2',
    '-c:v', 'mpeg4', '-c:a', 'aac', '-shortest', path,
  ], { encoding: 'utf8' });
  expect(made.status, `ffmpeg: ${made.stderr}`).toBe(0);
  return path;
}

test('a user uploads a video, follows its conversion, plays and downloads the mp3, and deletes it', async ({ page }, testInfo) => {
  const video = makeVideo(testInfo.outputPath('clip.mp4'));

  // A visitor is asked to log in, and signing up from there comes back here.
  await page.goto('/media');
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Media conversion');
  const login = page.locator('#media-login');
  await expect(login.getByRole('link', { name: 'Log in' })).toHaveAttribute('href', '/account/login?next=%2Fmedia');
  await login.getByRole('link', { name: 'sign up' }).click();
  const username = newUsername('media');
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign up' }).click();
  await expect(page).toHaveURL('/media');
  await expect(page.locator('#current-user')).toHaveText(username);
  await expect(page.locator('#videos-empty')).toBeVisible();
  await expect(page.locator('#conversion-unavailable')).toHaveCount(0);

  // The file input: uploaded, then converted, with the upload box following it.
  await page.getByLabel('Video file').setInputFiles(video);
  await expect(page.locator('#upload-progress-box')).toBeVisible();
  const item = page.locator('.video-item').filter({ has: page.getByRole('heading', { name: 'clip.mp4' }) });
  await expect(item).toHaveAttribute('data-status', 'done', CONVERTED);
  await expect(page.locator('#upload-state')).toHaveText('clip.mp4: converted. Its mp3 is below.');
  await expect(page.locator('#upload-progress')).toHaveJSProperty('value', 100);
  await expect(item.locator('.video-status')).toHaveText('done');
  await expect(item.locator('.video-meta')).toContainText('0:02');

  // The player plays the mp3, and the download link gives it with a useful name.
  const audio = item.locator('audio');
  await expect(audio).toBeVisible();
  const duration = await audio.evaluate((el) => new Promise((resolve, reject) => {
    el.addEventListener('loadedmetadata', () => resolve(el.duration), { once: true });
    el.addEventListener('error', () => reject(new Error(`the player cannot load ${el.src}`)), { once: true });
    el.preload = 'metadata';
    el.load();
  }));
  expect(duration).toBeGreaterThan(1.5);
  expect(duration).toBeLessThan(2.6);
  const link = item.getByRole('link', { name: 'Download mp3' });
  const href = await link.getAttribute('href');
  expect(href).toMatch(/^\/download\?fid=[^&]+$/);
  const mp3 = await page.request.get(href);
  expect(mp3.status()).toBe(200);
  expect(mp3.headers()['content-type']).toBe('audio/mpeg');
  expect(mp3.headers()['content-disposition']).toContain('clip.mp3');
  const bytes = await mp3.body();
  // An ID3 tag, or an MPEG audio frame's sync word.
  expect(bytes.subarray(0, 3).toString('latin1') === 'ID3' || (bytes[0] === 0xff && (bytes[1] & 0xe0) === 0xe0)).toBe(true);

  // Dropped on the page: the same, a second video, newest first.
  const dropped = readFileSync(video).toString('base64');
  const transfer = await page.evaluateHandle((b64) => {
    const raw = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const data = new DataTransfer();
    data.items.add(new File([raw], 'dropped.mp4', { type: 'video/mp4' }));
    return data;
  }, dropped);
  await page.dispatchEvent('#drop-zone', 'drop', { dataTransfer: transfer });
  const second = page.locator('.video-item').filter({ has: page.getByRole('heading', { name: 'dropped.mp4' }) });
  await expect(second).toHaveAttribute('data-status', 'done', CONVERTED);
  await expect(page.locator('.video-item .video-name')).toHaveText(['dropped.mp4', 'clip.mp4']);

  // The hook a notification stream calls refreshes a video at once.
  const id = await second.getAttribute('data-video-id');
  expect(await page.evaluate((videoId) => window.mediaNotified({ video_id: videoId }), id)).toBe(true);

  // The page as the server renders it shows both, and deleting one removes it for good.
  await page.reload();
  await expect(page.locator('.video-item .video-name')).toHaveText(['dropped.mp4', 'clip.mp4']);
  await expect(second.locator('audio')).toBeVisible();
  await second.getByRole('button', { name: 'Delete' }).click();
  await expect(second).toHaveCount(0);
  await page.reload();
  await expect(page.locator('.video-item .video-name')).toHaveText(['clip.mp4']);
  expect((await page.request.get(href)).status()).toBe(200);
});

test('a file that is not a video is refused with the reason', async ({ page }, testInfo) => {
  await page.goto('/account/signup?next=%2Fmedia');
  await page.getByLabel('Username').fill(newUsername('media-text'));
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign up' }).click();
  await expect(page).toHaveURL('/media');
  await page.getByLabel('Video file').setInputFiles({
    name: 'notes.mp4', mimeType: 'video/mp4', buffer: Buffer.from('just some text, not a video\n'.repeat(40)),
  });
  await expect(page.locator('#upload-error')).toContainText('notes.mp4 was not uploaded: the file is not a video container');
  await expect(page.locator('.video-item')).toHaveCount(0);
});
