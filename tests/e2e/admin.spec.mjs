// Browser tests of keyledger's admin page: a real server (started by run.sh), Debian's
// Chromium driven by playwright-core, node's built-in test runner.
//
// Env: KEYLEDGER_URL (http://127.0.0.1:PORT), KEYLEDGER_ADMIN (the bootstrap admin secret),
// CHROMIUM (browser path), SCREENSHOT_DIR (where screenshots go).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.KEYLEDGER_URL;
const ADMIN = process.env.KEYLEDGER_ADMIN;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.SCREENSHOT_DIR || new URL('../../screenshots', import.meta.url).pathname;

if (!BASE || !ADMIN) {
  throw new Error('run this through tests/e2e/run.sh (KEYLEDGER_URL and KEYLEDGER_ADMIN are unset)');
}
mkdirSync(SHOTS, { recursive: true });

const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
  + "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

// ------------------------------------------------------------------ helpers

/** POST /v1/verify from node, as a host application would. */
async function verify(key, target = {}) {
  const res = await fetch(`${BASE}/v1/verify`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ key, ...target }),
  });
  assert.equal(res.status, 200);
  return res.json();
}

/** Calls the API from node with a credential; returns {status, body}. */
async function apiAs(secret, method, path, body, headers = {}) {
  const res = await fetch(`${BASE}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${secret}`,
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...headers,
    },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, body: json, text, headers: res.headers };
}

async function keyByName(name) {
  const r = await apiAs(ADMIN, 'GET', '/v1/admin/api-keys');
  return r.body.api_keys.find((k) => k.name === name && k.status !== 'deleted');
}

/** Retries `fn` until it stops throwing (or the time is up, then rethrows). */
async function eventually(fn, { timeout = 10000, interval = 150 } = {}) {
  const end = Date.now() + timeout;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, interval));
    }
  }
}

async function textOf(locator) {
  return (await locator.textContent()) ?? '';
}

async function shot(page, name, fullPage = false) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage });
}

function localInput(date) {
  const p = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${p(date.getMonth() + 1)}-${p(date.getDate())}T${p(date.getHours())}:${p(date.getMinutes())}`;
}

/** Fails on page errors, CSP violations, and requests to anywhere but the server. */
function watch(page, problems) {
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (msg) => {
    const t = msg.text();
    if (msg.type() === 'error' && !t.startsWith('Failed to load resource')) problems.push(`console: ${t}`);
    if (/Content Security Policy|Refused to/i.test(t)) problems.push(`CSP: ${t}`);
  });
  page.on('request', (req) => {
    const u = req.url();
    if (!u.startsWith(BASE) && !u.startsWith('blob:') && !u.startsWith('data:')) problems.push(`external request: ${u}`);
  });
}

async function signIn(page, secret) {
  await page.goto(`${BASE}/`);
  await page.getByLabel('API key or personal access token').fill(secret);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#whoami').waitFor({ state: 'visible' });
}

const button = (scope, name) => scope.getByRole('button', { name, exact: true });

/** Runs `action` (a menu item's name) from the Actions menu of the key row named `name`. */
async function keyAction(page, name, action) {
  const row = page.locator(`#keys-body tr[data-key-name="${name}"]`);
  await button(row, `Actions for ${name}`).click();
  const menu = page.getByRole('menu', { name: `Actions for ${name}`, exact: true });
  await menu.getByRole('menuitem', { name: action, exact: true }).click();
  await menu.waitFor({ state: 'detached' });
}

/** Confirms the secret was copied and closes the once-only secret dialog. */
async function closeSecret(dlg) {
  await dlg.getByLabel('I have copied the secret and stored it safely').check();
  await button(dlg, 'Close').click();
  await dlg.waitFor({ state: 'hidden' });
}

/** A fresh browser context signed in with `secret` (the bootstrap admin by default). */
async function freshPage(browser, problems, secret = ADMIN, viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  watch(page, problems);
  await signIn(page, secret);
  return { context, page };
}

/** A name no other test uses. */
let unique = 0;
function uniqueName(prefix) {
  unique += 1;
  return `${prefix}-${Date.now().toString(36)}-${unique}`;
}

/** Creates an API key from node; returns {id, name, secret, key}. */
async function createKey(name, role = 'basic', secret = ADMIN) {
  const r = await apiAs(secret, 'POST', '/v1/admin/api-keys', { name, role });
  assert.equal(r.status, 201, r.text);
  return { id: r.body.api_key.id, name, secret: r.body.secret, key: r.body.api_key };
}

/** The names in the key table, top to bottom. */
async function keyNames(page) {
  return page.locator('#keys-body tr').evaluateAll((rows) => rows.map((r) => r.dataset.keyName));
}

// ------------------------------------------------------------------ the tests

describe('keyledger admin page', () => {
  let browser;
  let context;
  let page;
  const problems = [];
  const keys = {}; // type -> {name, secret, id}
  let auditorSecret;

  before(async () => {
    // launch() gives every run a fresh, temporary user-data-dir.
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    page = await context.newPage();
    page.setDefaultTimeout(10000);
    watch(page, problems);
  });

  after(async () => {
    if (browser) await browser.close();
  });

  it('serves the page and its assets with the right types and security headers', async () => {
    const res = await fetch(`${BASE}/`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/html/);
    assert.equal(res.headers.get('content-security-policy'), CSP);
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(res.headers.get('referrer-policy'), 'no-referrer');
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const html = await res.text();
    assert.doesNotMatch(html, /<script>|<style|\sstyle=|\son[a-z]+=/i, 'no inline script, style or handler');
    assert.doesNotMatch(html, /https?:\/\//, 'no external URL in the page');
    const js = await fetch(`${BASE}/ui/app.js`);
    assert.equal(js.status, 200);
    assert.match(js.headers.get('content-type'), /^text\/javascript/);
    assert.match(await js.text(), /'use strict'/);
    const css = await fetch(`${BASE}/ui/app.css`);
    assert.equal(css.status, 200);
    assert.match(css.headers.get('content-type'), /^text\/css/);
    assert.doesNotMatch(await css.text(), /@import|url\(\s*['"]?https?:/, 'no external font or import');
  });

  it('refuses a bad credential with the server\'s message', async () => {
    await page.goto(`${BASE}/`);
    await shot(page, '01-sign-in');
    await page.getByLabel('API key or personal access token').fill('klk_not-a-real-key');
    await button(page, 'Sign in').click();
    const alert = page.locator('#page-error');
    assert.equal(await alert.getAttribute('aria-live'), 'assertive');
    await eventually(async () => assert.equal(await textOf(alert), 'the credential is not a keyledger secret'));
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  });

  it('signs in with the bootstrap admin key and shows who is signed in', async () => {
    await signIn(page, ADMIN);
    assert.equal(await textOf(page.locator('#whoami-name')), 'bootstrap-admin');
    assert.equal(await textOf(page.locator('#whoami-role')), 'admin');
    assert.match(await textOf(page.locator('#whoami-cred')), /via API key klk_\*\*\*\*/);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('keyledger.credential')), ADMIN);
    await page.locator('#keys-body tr[data-key-name="bootstrap-admin"]').waitFor();
    // A reload keeps the session (sessionStorage), and the key table comes back.
    await page.reload();
    await page.locator('#keys-body tr[data-key-name="bootstrap-admin"]').waitFor();
  });

  it('creates one key of each type, shows each secret once, and the secret verifies', async () => {
    const expiry = new Date(Date.now() + 30 * 86400e3);
    expiry.setSeconds(0, 0);
    for (const type of ['admin', 'basic', 'limited']) {
      const name = `e2e-${type}`;
      await button(page, 'Create New API Key').click();
      const dlg = page.getByRole('dialog', { name: 'Create New API Key' });
      await dlg.waitFor();
      // Focus starts in the dialog, on the name; Basic is preselected and marked Recommended.
      assert.equal(await page.evaluate(() => document.activeElement.id), 'create-name');
      assert.equal(await dlg.getByRole('radio', { name: 'Basic Recommended' }).isChecked(), true);
      assert.match(await textOf(dlg), /Can access all endpoints, including those pre-fixed with admin\//);
      assert.match(await textOf(dlg), /Read-only Agent access\. Can post messages to Chat endpoints, but cannot read chat history\./);
      await dlg.getByLabel('Name', { exact: true }).fill(name);
      await dlg.getByRole('radio', { name: new RegExp(`^${type}`, 'i') }).check();
      if (type === 'admin') await dlg.getByLabel('Expires (optional, your local time)').fill(localInput(expiry));
      await button(dlg, 'Create key').click();

      const secretDlg = page.getByRole('dialog', { name: 'Your new API key' });
      await secretDlg.waitFor();
      assert.match(await textOf(secretDlg), /Copy this secret now and store it securely/);
      const secret = await secretDlg.getByLabel('Secret', { exact: true }).inputValue();
      assert.match(secret, /^klk_[0-9A-Za-z]{49}$/);
      assert.ok(await button(secretDlg, 'Copy').isVisible());
      if (type === 'basic') await shot(page, '03-create-dialog-secret');
      await closeSecret(secretDlg);
      // Gone from the page once dismissed.
      assert.equal(await page.locator('#secret-value').inputValue(), '');
      assert.equal((await page.content()).includes(secret), false);

      await page.locator(`#keys-body tr[data-key-name="${name}"]`).waitFor();
      const v = await verify(secret);
      assert.equal(v.valid, true);
      assert.equal(v.code, 'VALID');
      assert.equal(v.principal.role, type);
      assert.equal(v.principal.name, name);
      const key = await keyByName(name);
      keys[type] = { name, secret, id: key.id };
    }
    // The expiry went to the server as the same instant, in UTC.
    const admin = await keyByName('e2e-admin');
    assert.equal(new Date(admin.expires_at).getTime(), expiry.getTime());
    assert.match(admin.expires_at, /Z$/);
    const row = page.locator('#keys-body tr[data-key-name="e2e-admin"]');
    assert.notEqual((await textOf(row.locator('td[data-label="Expires"]'))).trim(), 'Never');
    assert.equal((await textOf(row.locator('td[data-label="Created by"]'))).trim(), 'bootstrap-admin');
    for (const col of ['Name', 'Type', 'Key', 'Status', 'Created', 'Created by', 'Last used', 'Expires']) {
      assert.equal(await page.locator('#keys-table thead th', { hasText: new RegExp(`^${col}$`) }).count(), 1, col);
    }
    await shot(page, '02-keys-table');
  });

  it('shows the server\'s message when creating a key with a duplicate name', async () => {
    const expected = await apiAs(ADMIN, 'POST', '/v1/admin/api-keys', { name: 'e2e-basic', role: 'basic' });
    assert.equal(expected.status, 409);
    await button(page, 'Create New API Key').click();
    const dlg = page.getByRole('dialog', { name: 'Create New API Key' });
    await dlg.getByLabel('Name', { exact: true }).fill('e2e-basic');
    await button(dlg, 'Create key').click();
    const err = dlg.locator('.dialog-error');
    assert.equal(await err.getAttribute('aria-live'), 'assertive');
    await eventually(async () => assert.equal(await textOf(err), expected.body.error.message));
    // Escape closes the dialog and focus goes back to the button that opened it.
    await page.keyboard.press('Escape');
    await dlg.waitFor({ state: 'hidden' });
    assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Create New API Key');
  });

  it('renames, changes the type, regenerates, disables, enables and deletes a key', async () => {
    const k = keys.basic;
    // Rename.
    await keyAction(page, k.name, 'Rename');
    let dlg = page.getByRole('dialog', { name: `Rename “${k.name}”` });
    await dlg.getByLabel('New name').fill('e2e-basic-renamed');
    await button(dlg, 'Save name').click();
    await dlg.waitFor({ state: 'hidden' });
    k.name = 'e2e-basic-renamed';
    await page.locator(`#keys-body tr[data-key-name="${k.name}"]`).waitFor();
    assert.equal((await verify(k.secret)).principal.name, k.name);

    // A change made elsewhere makes the page's version stale: If-Match refuses, the page
    // shows the server's message, and after a refresh the action goes through.
    const current = await keyByName(k.name);
    const far = new Date(Date.now() + 90 * 86400e3).toISOString();
    const patched = await apiAs(ADMIN, 'PATCH', `/v1/admin/api-keys/${k.id}`, { expires_at: far },
      { 'if-match': `"${current.version}"` });
    assert.equal(patched.status, 200);
    await keyAction(page, k.name, 'Change type');
    dlg = page.getByRole('dialog', { name: `Change the type of “${k.name}”` });
    await dlg.getByRole('radio', { name: 'Limited' }).check();
    await button(dlg, 'Save type').click();
    await eventually(async () => assert.match(await textOf(dlg.locator('.dialog-error')), /resource is at version \d+, not \d+/));
    await button(dlg, 'Cancel').click();
    await button(page, 'Refresh').first().click();

    // Change type.
    await keyAction(page, k.name, 'Change type');
    dlg = page.getByRole('dialog', { name: `Change the type of “${k.name}”` });
    assert.equal(await dlg.getByRole('radio', { name: 'Basic Recommended' }).isChecked(), true);
    await dlg.getByRole('radio', { name: 'Limited' }).check();
    await button(dlg, 'Save type').click();
    await dlg.waitFor({ state: 'hidden' });
    await eventually(async () => assert.equal((await verify(k.secret)).principal.role, 'limited'));
    assert.equal((await textOf(page.locator(`#keys-body tr[data-key-name="${k.name}"] td[data-label="Type"]`))).trim(), 'limited');

    // Regenerate with no grace: the old secret is refused as REVOKED, the new one works.
    await keyAction(page, k.name, 'Regenerate');
    dlg = page.getByRole('dialog', { name: `Regenerate “${k.name}”` });
    await dlg.getByLabel('Grace period for the old secret (optional)').fill('0');
    await button(dlg, 'Regenerate').click();
    const secretDlg = page.getByRole('dialog', { name: 'New secret' });
    await secretDlg.waitFor();
    const fresh = await secretDlg.getByLabel('Secret', { exact: true }).inputValue();
    assert.match(fresh, /^klk_/);
    assert.notEqual(fresh, k.secret);
    await closeSecret(secretDlg);
    assert.equal((await verify(k.secret)).code, 'REVOKED');
    assert.equal((await verify(fresh)).code, 'VALID');
    const old = k.secret;
    k.secret = fresh;

    // Regenerate another key with a grace period in hours: the old secret keeps working.
    const lim = keys.limited;
    await keyAction(page, lim.name, 'Regenerate');
    dlg = page.getByRole('dialog', { name: `Regenerate “${lim.name}”` });
    await dlg.getByLabel('Grace period for the old secret (optional)').fill('2');
    await dlg.getByLabel('Unit').selectOption({ label: 'hours' });
    await button(dlg, 'Regenerate').click();
    await secretDlg.waitFor();
    const limFresh = await secretDlg.getByLabel('Secret', { exact: true }).inputValue();
    // Once the copy is confirmed, Escape closes the dialog too.
    await secretDlg.getByLabel('I have copied the secret and stored it safely').check();
    await page.keyboard.press('Escape');
    await secretDlg.waitFor({ state: 'hidden' });
    assert.equal(await page.locator('#secret-value').inputValue(), '');
    assert.equal((await verify(lim.secret)).code, 'VALID');
    assert.equal((await verify(limFresh)).code, 'VALID');
    const hist = await apiAs(ADMIN, 'GET', `/v1/audit/api-keys/${lim.id}/history`);
    const regen = hist.body.events.find((e) => e.type === 'api_key.regenerated');
    const graceMs = new Date(regen.data.previous_valid_until) - new Date(regen.at);
    assert.ok(Math.abs(graceMs - 2 * 3600e3) < 5000, `grace of 2 hours, got ${graceMs} ms`);

    // Disable and enable.
    const status = page.locator(`#keys-body tr[data-key-name="${k.name}"] td[data-label="Status"]`);
    await keyAction(page, k.name, 'Disable');
    await eventually(async () => assert.equal((await textOf(status)).trim(), 'disabled'));
    assert.equal((await verify(k.secret)).code, 'DISABLED');
    await keyAction(page, k.name, 'Enable');
    await eventually(async () => assert.equal((await textOf(status)).trim(), 'active'));
    assert.equal((await verify(k.secret)).code, 'VALID');
    assert.equal((await verify(old)).code, 'REVOKED');

    // Delete, after a confirmation that names the key.
    await keyAction(page, k.name, 'Delete');
    dlg = page.getByRole('dialog', { name: `Delete “${k.name}”?` });
    await dlg.waitFor();
    assert.match(await textOf(dlg), new RegExp(`Delete the API key “${k.name}”`));
    // Cancelling changes nothing.
    await button(dlg, 'Cancel').click();
    await dlg.waitFor({ state: 'hidden' });
    assert.equal((await verify(k.secret)).valid, true);
    await keyAction(page, k.name, 'Delete');
    await button(dlg, 'Delete key').click();
    await dlg.waitFor({ state: 'hidden' });
    await page.locator(`#keys-body tr[data-key-name="${k.name}"]`).waitFor({ state: 'detached' });
    assert.equal((await verify(k.secret)).valid, false);
    // Deleted keys are listed on request, with no action but their history.
    await page.getByLabel('Show deleted keys').check();
    const row = page.locator(`#keys-body tr[data-key-name="${k.name}"]`);
    await row.waitFor();
    assert.equal((await textOf(row.locator('td[data-label="Status"]'))).trim(), 'deleted');
    assert.equal(await row.getByRole('button').count(), 1);
    await button(row, `Actions for ${k.name}`).click();
    assert.deepEqual(await page.getByRole('menu', { name: `Actions for ${k.name}` }).getByRole('menuitem').allTextContents(), ['History']);
    await page.keyboard.press('Escape');
    await eventually(async () => assert.match(await textOf(page.locator('#page-status')), /deleted/));
  });

  it('shows every action in the key\'s timeline and its activity per day', async () => {
    const k = keys.basic;
    await keyAction(page, k.name, 'History');
    await page.locator('#view-audit').waitFor();
    const items = page.locator('#timeline > li');
    await eventually(async () => assert.ok((await items.count()) >= 8));
    const types = await items.evaluateAll((els) => els.map((e) => e.dataset.type));
    for (const t of ['api_key.created', 'api_key.renamed', 'api_key.expiry_changed', 'api_key.role_changed',
      'api_key.regenerated', 'api_key.disabled', 'api_key.enabled', 'api_key.deleted']) {
      assert.ok(types.includes(t), `${t} in ${types}`);
    }
    const renamed = page.locator('#timeline > li[data-type="api_key.renamed"]');
    assert.match(await textOf(renamed), /name: e2e-basic → e2e-basic-renamed/);
    assert.match(await textOf(renamed), /by bootstrap-admin \(API key\)/);
    assert.match(await textOf(page.locator('#timeline > li[data-type="api_key.role_changed"]')), /type: basic → limited/);
    assert.match(await textOf(page.locator('#timeline > li[data-type="api_key.deleted"]')), /status: active → deleted/);

    // Activity reaches the log when the (1 s) window closes; the chart shows it by outcome.
    await eventually(async () => {
      await button(page, 'Refresh activity').click();
      const outcomes = await page.locator('#activity-chart svg rect').evaluateAll(
        (els) => els.map((e) => e.dataset.outcome),
      );
      for (const o of ['VALID', 'REVOKED', 'DISABLED']) assert.ok(outcomes.includes(o), `${o} in ${outcomes}`);
    }, { timeout: 15000, interval: 700 });
    const svg = page.locator('#activity-chart svg');
    assert.equal(await svg.getAttribute('role'), 'img');
    assert.match(await textOf(svg.locator('desc')), /requests over \d+ day/);
    await page.locator('#history-title').scrollIntoViewIfNeeded();
    await shot(page, '04-timeline');
  });

  it('browses the audit log with filters and pages', async () => {
    const form = page.locator('#log-form');
    await form.getByLabel('Event type').fill('api_key.renamed');
    await button(form, 'Search log').click();
    await eventually(async () => {
      const types = await page.locator('#log-body tr').evaluateAll((els) => els.map((e) => e.dataset.type));
      assert.ok(types.length >= 1);
      assert.ok(types.every((t) => t === 'api_key.renamed'), String(types));
    });
    assert.match(await textOf(page.locator('#log-body')), /e2e-basic → e2e-basic-renamed/);

    // Stream filter.
    await form.getByLabel('Event type').fill('');
    await form.getByLabel('Stream').fill(`api_key/${keys.admin.id}`);
    await button(form, 'Search log').click();
    await eventually(async () => {
      const types = await page.locator('#log-body tr').evaluateAll((els) => els.map((e) => e.dataset.type));
      assert.deepEqual(types, ['api_key.created']);
    });

    // Actor filter: what the bootstrap key did.
    await form.getByLabel('Stream').fill('');
    const bootstrap = await keyByName('bootstrap-admin');
    await form.getByLabel('Actor id').fill(bootstrap.id);
    await button(form, 'Search log').click();
    await eventually(async () => {
      const actors = await page.locator('#log-body td[data-label="Actor"]').allTextContents();
      assert.ok(actors.length >= 10, String(actors.length));
      assert.ok(actors.every((a) => a === 'bootstrap-admin (API key)'), String(actors));
    });
    await form.getByLabel('Actor id').fill('');

    // Paging, newest first, with next_before (key creations: a set nothing adds to meanwhile).
    await form.getByLabel('Per page').fill('3');
    await form.getByLabel('Event type').fill('api_key.created');
    await button(form, 'Search log').click();
    const created = (await apiAs(ADMIN, 'GET', '/v1/audit/events?type=api_key.created&order=desc')).body.events.map((e) => e.seq);
    assert.ok(created.length >= 4);
    const shownSeqs = () => page.locator('#log-body tr').evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
    await eventually(async () => assert.deepEqual(await shownSeqs(), created.slice(0, 3)));
    assert.match(await textOf(page.locator('#log-summary')), /^Page 1, newest first: 3 entries, seq \d+–\d+\. Older entries match\./);
    await button(page, 'Older entries').click();
    await eventually(async () => assert.deepEqual(await shownSeqs(), created.slice(3, 6)));
    assert.match(await textOf(page.locator('#log-summary')), /^Page 2, newest first:/);
    await button(page, 'Newer entries').click();
    await eventually(async () => assert.deepEqual(await shownSeqs(), created.slice(0, 3)));
    await form.getByLabel('Event type').fill('');

    // A time window: nothing before the epoch's first day.
    await form.getByLabel('Per page').fill('50');
    await form.getByLabel('Until (local time)').fill('2000-01-01T00:00:00');
    await button(form, 'Search log').click();
    await eventually(async () => assert.equal(await textOf(page.locator('#log-summary')), 'No entries match these filters.'));
    await form.getByLabel('Until (local time)').fill('');
    await form.getByLabel('Since (local time)').fill(localInput(new Date(Date.now() - 3600e3)));
    await form.getByLabel('Event type').fill('api_key.created');
    await button(form, 'Search log').click();
    await eventually(async () => assert.equal(await page.locator('#log-body tr').count(), 4));

    // A bad filter shows the server's message.
    await form.getByLabel('Stream').fill('nonsense');
    await button(form, 'Search log').click();
    await eventually(async () => assert.match(await textOf(page.locator('#page-error')), /^stream must look like/));
    await form.getByLabel('Stream').fill('');
    await form.getByLabel('Since (local time)').fill('');
    await form.getByLabel('Event type').fill('');
    await button(form, 'Search log').click();
    await page.locator('#log-card').scrollIntoViewIfNeeded();
    await shot(page, '05-audit-log');
  });

  it('shows the latest checkpoint and downloads the export', async () => {
    await button(page, 'Refresh').first().click();
    assert.equal(await textOf(page.locator('#cp-origin')), 'keyledger.local/log');
    await eventually(async () => {
      await page.locator('#checkpoint-refresh').click();
      const cp = await apiAs(ADMIN, 'GET', '/v1/audit/checkpoint');
      assert.equal(await textOf(page.locator('#cp-size')), cp.text.split('\n')[1]);
    });
    const size = Number(await textOf(page.locator('#cp-size')));
    assert.ok(size > 10);
    assert.match(await textOf(page.locator('#cp-root')), /^[A-Za-z0-9+/]{43}=$/);
    assert.match(await textOf(page.locator('#cp-signer')), /^— keyledger\.local\/log [A-Za-z0-9+/=]+$/);

    const [download] = await Promise.all([
      page.waitForEvent('download'),
      button(page, 'Download export (NDJSON)').click(),
    ]);
    assert.equal(download.suggestedFilename(), 'keyledger-export.ndjson');
    const lines = readFileSync(await download.path(), 'utf8').split('\n').filter(Boolean);
    assert.ok(lines.length >= size, `${lines.length} lines, checkpoint size ${size}`);
    const entries = lines.map((l) => JSON.parse(l));
    assert.equal(entries[0].type, 'ledger.initialized');
    entries.forEach((e, i) => assert.equal(e.seq, i));
  });

  it('registers users, changes a role, deactivates, and issues and revokes tokens', async () => {
    await button(page, 'Users & tokens').click();
    const reg = page.locator('#register-form');
    await reg.getByLabel('Email').fill('auditor@example.com');
    await reg.getByLabel('Role').selectOption('auditor');
    await button(reg, 'Register user').click();
    await page.locator('#users-body tr[data-user-email="auditor@example.com"]').waitFor();

    // A duplicate email shows the server's message in the live region.
    const dup = await apiAs(ADMIN, 'POST', '/v1/admin/users', { email: 'auditor@example.com', role: 'basic' });
    assert.equal(dup.status, 409);
    await reg.getByLabel('Email').fill('auditor@example.com');
    await button(reg, 'Register user').click();
    await eventually(async () => assert.equal(await textOf(page.locator('#page-error')), dup.body.error.message));

    await reg.getByLabel('Email').fill('dev@example.com');
    await reg.getByLabel('Role').selectOption('basic');
    await button(reg, 'Register user').click();
    const dev = page.locator('#users-body tr[data-user-email="dev@example.com"]');
    await dev.waitFor();

    // Change role.
    await button(page, 'Change role of dev@example.com').click();
    let dlg = page.getByRole('dialog', { name: 'Change the role of dev@example.com' });
    await dlg.getByLabel('Role').selectOption('limited');
    await button(dlg, 'Save role').click();
    await dlg.waitFor({ state: 'hidden' });
    await eventually(async () => assert.equal((await textOf(dev.locator('td[data-label="Role"]'))).trim(), 'limited'));

    // Tokens of the auditor: issue two, revoke one.
    await button(page, 'Tokens of auditor@example.com').click();
    const panel = page.locator('#tokens-panel');
    await panel.waitFor();
    assert.equal(await textOf(panel.locator('h2')), 'Tokens of auditor@example.com');
    for (const name of ['laptop', 'old-laptop']) {
      await panel.getByLabel('Token name').fill(name);
      await panel.getByLabel('Valid for (days)').fill('30');
      await button(panel, 'Issue token').click();
      const secretDlg = page.getByRole('dialog', { name: 'New personal access token' });
      await secretDlg.waitFor();
      const secret = await secretDlg.getByLabel('Secret', { exact: true }).inputValue();
      assert.match(secret, /^klp_/);
      if (name === 'laptop') auditorSecret = secret;
      await closeSecret(secretDlg);
      await panel.locator(`tr[data-token-name="${name}"]`).waitFor();
    }
    const me = await apiAs(auditorSecret, 'GET', '/v1/me');
    assert.equal(me.body.principal.email, 'auditor@example.com');
    assert.equal(me.body.principal.role, 'auditor');
    const expires = await textOf(panel.locator('tr[data-token-name="laptop"] td[data-label="Expires"]'));
    assert.notEqual(expires.trim(), 'Never');

    await button(panel, 'Revoke old-laptop').click();
    dlg = page.getByRole('dialog', { name: 'Revoke “old-laptop”?' });
    assert.match(await textOf(dlg), /auditor@example\.com/);
    await button(dlg, 'Revoke token').click();
    await dlg.waitFor({ state: 'hidden' });
    await eventually(async () => assert.equal(
      (await textOf(panel.locator('tr[data-token-name="old-laptop"] td[data-label="Status"]'))).trim(), 'revoked',
    ));
    assert.equal(await panel.locator('tr[data-token-name="laptop"]').getByRole('button', { name: 'Revoke laptop' }).count(), 1);
    await shot(page, '06-users');

    // Deactivate, after a confirmation naming the user.
    await button(page, 'Deactivate dev@example.com').click();
    dlg = page.getByRole('dialog', { name: 'Deactivate dev@example.com?' });
    assert.match(await textOf(dlg), /Deactivate the user dev@example\.com\?/);
    await button(dlg, 'Deactivate user').click();
    await dlg.waitFor({ state: 'hidden' });
    await dev.waitFor({ state: 'detached' });
    await page.getByLabel('Show deactivated users').check();
    await eventually(async () => assert.equal((await textOf(dev.locator('td[data-label="Status"]'))).trim(), 'deactivated'));
  });

  it('labels every control and keeps focus visible', async () => {
    await button(page, 'API Keys').click();
    await page.locator('#keys-body tr').first().waitFor();
    for (const view of ['API Keys', 'Users & tokens', 'Audit']) {
      await button(page, view).click();
      const unlabeled = await page.evaluate(() => {
        const out = [];
        for (const el of document.querySelectorAll('input, select, textarea, button')) {
          if (el.closest('[hidden]') || el.type === 'hidden') continue;
          const name = el.getAttribute('aria-label') || (el.getAttribute('aria-labelledby') || '').split(' ')
            .map((id) => document.getElementById(id)?.textContent || '').join('').trim()
            || Array.from(el.labels || []).map((l) => l.textContent).join('').trim()
            || (el.tagName === 'BUTTON' ? el.textContent.trim() : '');
          if (!name) out.push(el.outerHTML.slice(0, 120));
        }
        return out;
      });
      assert.deepEqual(unlabeled, [], `unlabeled controls on ${view}`);
    }
    // Keyboard: Tab moves focus with a visible outline.
    await button(page, 'API Keys').click();
    await button(page, 'Create New API Key').focus();
    await page.keyboard.press('Tab');
    const outline = await page.evaluate(() => {
      const s = getComputedStyle(document.activeElement);
      return { style: s.outlineStyle, width: parseFloat(s.outlineWidth) };
    });
    assert.notEqual(outline.style, 'none');
    assert.ok(outline.width >= 2);
    // Keyboard: open the dialog with Enter, Escape closes it, focus comes back.
    await button(page, 'Create New API Key').focus();
    await page.keyboard.press('Enter');
    await page.getByRole('dialog', { name: 'Create New API Key' }).waitFor();
    assert.equal(await page.evaluate(() => document.activeElement.id), 'create-name');
    await page.keyboard.press('Escape');
    await page.getByRole('dialog', { name: 'Create New API Key' }).waitFor({ state: 'hidden' });
    assert.equal(await page.evaluate(() => document.activeElement.id), 'open-create-key');
  });

  it('signs out, and an auditor sees the audit views but no admin control', async () => {
    await button(page, 'Sign out').click();
    await page.getByLabel('API key or personal access token').waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('keyledger.credential')), null);
    assert.equal(await page.locator('#whoami').isVisible(), false);

    await page.getByLabel('API key or personal access token').fill(auditorSecret);
    await button(page, 'Sign in').click();
    await page.locator('#whoami').waitFor();
    assert.equal(await textOf(page.locator('#whoami-name')), 'auditor@example.com');
    assert.equal(await textOf(page.locator('#whoami-role')), 'auditor');
    assert.match(await textOf(page.locator('#whoami-cred')), /via token klp_\*\*\*\*/);

    // No admin control at all: not hidden, absent.
    for (const name of ['Create New API Key', 'API Keys', 'Users & tokens', 'Register user']) {
      assert.equal(await page.getByRole('button', { name, exact: true }).count(), 0, name);
    }
    for (const sel of ['#view-keys', '#view-users', '#dlg-create', '#dlg-regenerate', '#register-form', '#keys-body', '#users-body']) {
      assert.equal(await page.locator(sel).count(), 0, sel);
    }
    assert.equal(await page.getByRole('button', { name: /^(Rename|Regenerate|Delete|Disable|Deactivate|Revoke|Actions for) /, exact: false }).count(), 0);

    // The audit views work.
    await page.locator('#view-audit').waitFor();
    assert.equal(await textOf(page.locator('#cp-origin')), 'keyledger.local/log');
    await eventually(async () => assert.ok((await page.locator('#log-body tr').count()) > 0));
    const option = page.locator('#history-key option', { hasText: 'e2e-basic-renamed (deleted)' });
    await option.waitFor({ state: 'attached' });
    await page.getByLabel('API key', { exact: true }).selectOption(await option.getAttribute('value'));
    await button(page, 'Show history').click();
    await eventually(async () => assert.ok((await page.locator('#timeline > li').count()) >= 8));
    assert.match(await textOf(page.locator('#timeline > li[data-type="api_key.created"]')), /by bootstrap-admin \(API key\)/);
    await page.locator('#activity-chart svg').waitFor();
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      button(page, 'Download export (NDJSON)').click(),
    ]);
    assert.equal(download.suggestedFilename(), 'keyledger-export.ndjson');
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot(page, '07-auditor');
  });

  it('is usable at phone width (390 px)', async () => {
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    const p = await phone.newPage();
    p.setDefaultTimeout(10000);
    watch(p, problems);
    try {
      await signIn(p, ADMIN);
      await p.locator('#keys-body tr[data-key-name="e2e-admin"]').waitFor();
      const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `page scrolls sideways by ${overflow}px`);
      // Rows are stacked cards with labelled cells.
      const cellBox = await p.locator('#keys-body tr[data-key-name="e2e-admin"] td[data-label="Status"]').boundingBox();
      assert.ok(cellBox.width > 300, `stacked cell width ${cellBox.width}`);
      // The row's Actions menu opens inside the screen.
      await button(p, 'Actions for e2e-admin').click();
      const menu = p.getByRole('menu', { name: 'Actions for e2e-admin' });
      await menu.waitFor();
      const menuBox = await menu.boundingBox();
      assert.ok(menuBox.x >= 0 && menuBox.x + menuBox.width <= 390, `menu at ${menuBox.x}+${menuBox.width}`);
      await shot(p, '08-phone-keys');
      await p.keyboard.press('Escape');
      await menu.waitFor({ state: 'detached' });

      await button(p, 'Create New API Key').click();
      const dlg = p.getByRole('dialog', { name: 'Create New API Key' });
      await dlg.waitFor();
      const box = await dlg.boundingBox();
      assert.ok(box.x >= 0 && box.x + box.width <= 390, `dialog at ${box.x}+${box.width}`);
      await shot(p, '09-phone-create-dialog');
      await p.keyboard.press('Escape');

      await button(p, 'Audit').click();
      await p.locator('#cp-origin', { hasText: 'keyledger.local/log' }).waitFor();
      await eventually(async () => assert.ok((await p.locator('#log-body tr').count()) > 0));
      const overflowAudit = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflowAudit <= 0, `audit page scrolls sideways by ${overflowAudit}px`);
      await shot(p, '10-phone-audit', true);
    } finally {
      await phone.close();
    }
  });

  // ---------------------------------------------------------------- the review's findings
  // Each of these starts its own browser context and makes its own data, so that it can run
  // alone (KEYLEDGER_E2E_ONLY) and in any order.

  it('warns before an admin disables, deletes or demotes the key it is signed in with, and shows last_admin', async () => {
    // A fresh admin key to sign in with: the page's own credential.
    const self = await createKey(uniqueName('self-admin'), 'admin');
    const { context, page: p } = await freshPage(browser, problems, self.secret);
    const disabled = [];
    try {
      await p.locator(`#keys-body tr[data-key-name="${self.name}"]`).waitFor();
      const status = async () => (await apiAs(self.secret, 'GET', `/v1/admin/api-keys/${self.id}`)).body.api_key.status;

      // Disable asks first and says why; cancelling changes nothing.
      await keyAction(p, self.name, 'Disable');
      let dlg = p.getByRole('dialog', { name: `Disable “${self.name}”?` });
      await dlg.waitFor();
      assert.match(await textOf(dlg.locator('#confirm-warning')), /You are signed in with this key\. This page loses its access at once/);
      await shot(p, '11-self-disable-warning');
      await button(dlg, 'Cancel').click();
      await dlg.waitFor({ state: 'hidden' });
      assert.equal(await status(), 'active');

      // Delete says so too.
      await keyAction(p, self.name, 'Delete');
      dlg = p.getByRole('dialog', { name: `Delete “${self.name}”?` });
      await dlg.waitFor();
      assert.match(await textOf(dlg.locator('#confirm-warning')), /You are signed in with this key/);
      await button(dlg, 'Cancel').click();
      await dlg.waitFor({ state: 'hidden' });

      // Demoting: the warning appears as soon as a non-admin type is chosen.
      await keyAction(p, self.name, 'Change type');
      dlg = p.getByRole('dialog', { name: `Change the type of “${self.name}”` });
      await dlg.waitFor();
      const typeWarning = dlg.locator('#type-self-warning');
      assert.equal(await typeWarning.isVisible(), false);
      await dlg.getByRole('radio', { name: 'Basic Recommended' }).check();
      await typeWarning.waitFor();
      assert.match(await textOf(typeWarning), /You are signed in with this key\. As a basic key it can no longer administer/);
      await button(dlg, 'Cancel').click();
      await dlg.waitFor({ state: 'hidden' });

      // Another key's disable stays one step: no question asked.
      const other = await createKey(uniqueName('not-self'));
      await button(p, 'Refresh').click();
      await keyAction(p, other.name, 'Disable');
      await eventually(async () => assert.equal(
        (await textOf(p.locator(`#keys-body tr[data-key-name="${other.name}"] td[data-label="Status"]`))).trim(), 'disabled',
      ));
      assert.equal(await p.getByRole('dialog').count(), 0);

      // Make the page's key the last active admin credential: the server refuses (409
      // last_admin) and the page shows its message, in the dialog that asked.
      const all = (await apiAs(ADMIN, 'GET', '/v1/admin/api-keys?status=active&limit=1000')).body.api_keys;
      const users = (await apiAs(ADMIN, 'GET', '/v1/admin/users?status=active&limit=1000')).body.users;
      assert.deepEqual(users.filter((u) => u.role === 'admin').map((u) => u.email), [], 'no admin users in this suite');
      for (const k of all.filter((x) => x.role === 'admin' && x.id !== self.id)) {
        const r = await apiAs(self.secret, 'POST', `/v1/admin/api-keys/${k.id}/disable`);
        assert.equal(r.status, 200, r.text);
        disabled.push(k.id);
      }
      const refused = await apiAs(self.secret, 'POST', `/v1/admin/api-keys/${self.id}/disable`);
      assert.equal(refused.status, 409);
      assert.equal(refused.body.error.code, 'last_admin');

      await keyAction(p, self.name, 'Disable');
      dlg = p.getByRole('dialog', { name: `Disable “${self.name}”?` });
      await button(dlg, 'Disable key').click();
      const err = dlg.locator('.dialog-error');
      await eventually(async () => assert.match(await textOf(err), /^Refused: this is the last active admin credential/));
      assert.ok((await textOf(err)).includes(refused.body.error.message), await textOf(err));
      await shot(p, '12-last-admin-refused');
      await button(dlg, 'Cancel').click();
      await dlg.waitFor({ state: 'hidden' });

      await keyAction(p, self.name, 'Change type');
      dlg = p.getByRole('dialog', { name: `Change the type of “${self.name}”` });
      await dlg.getByRole('radio', { name: 'Limited' }).check();
      await button(dlg, 'Save type').click();
      await eventually(async () => assert.ok((await textOf(dlg.locator('.dialog-error'))).includes(refused.body.error.message)));
      await button(dlg, 'Cancel').click();
      assert.equal(await status(), 'active');
      assert.ok(await p.locator('#whoami').isVisible());
    } finally {
      for (const id of disabled) await apiAs(self.secret, 'POST', `/v1/admin/api-keys/${id}/enable`);
      await context.close();
    }
    // With the other admins back, the page's own key may go: the page starts again, signed out, saying why.
    const again = await freshPage(browser, problems, self.secret);
    try {
      const p = again.page;
      await p.locator(`#keys-body tr[data-key-name="${self.name}"]`).waitFor();
      await keyAction(p, self.name, 'Delete');
      const dlg = p.getByRole('dialog', { name: `Delete “${self.name}”?` });
      await button(dlg, 'Delete key').click();
      await p.getByLabel('API key or personal access token').waitFor();
      await eventually(async () => assert.match(await textOf(p.locator('#page-status')), /is deleted\. This page was signed in with it/));
      assert.equal(await p.evaluate(() => sessionStorage.getItem('keyledger.credential')), null);
      assert.equal((await verify(self.secret)).valid, false);
    } finally {
      await again.context.close();
    }
  });

  it('puts a key row\'s actions in one menu, operable with the keyboard', async () => {
    const k = await createKey(uniqueName('menu'));
    const { context, page: p } = await freshPage(browser, problems);
    try {
      const row = p.locator(`#keys-body tr[data-key-name="${k.name}"]`);
      await row.waitFor();
      // One button per row, a menu button.
      assert.equal(await row.getByRole('button').count(), 1);
      const opener = button(row, `Actions for ${k.name}`);
      assert.equal(await opener.getAttribute('aria-haspopup'), 'menu');
      assert.equal(await opener.getAttribute('aria-expanded'), 'false');
      const menu = p.getByRole('menu', { name: `Actions for ${k.name}`, exact: true });
      const focused = () => p.evaluate(() => document.activeElement.getAttribute('aria-label') || document.activeElement.textContent.trim());

      // Enter opens it on the first item; the arrows move and wrap, Home and End jump.
      await opener.focus();
      await p.keyboard.press('Enter');
      await menu.waitFor();
      assert.equal(await opener.getAttribute('aria-expanded'), 'true');
      assert.equal(await opener.getAttribute('aria-controls'), await menu.getAttribute('id'));
      assert.deepEqual(await menu.getByRole('menuitem').allTextContents(),
        ['Rename', 'Change type', 'Regenerate', 'Disable', 'History', 'Delete']);
      assert.equal(await focused(), 'Rename');
      await p.keyboard.press('ArrowDown');
      assert.equal(await focused(), 'Change type');
      await p.keyboard.press('ArrowUp');
      await p.keyboard.press('ArrowUp');
      assert.equal(await focused(), 'Delete');
      await p.keyboard.press('Home');
      assert.equal(await focused(), 'Rename');
      await p.keyboard.press('End');
      assert.equal(await focused(), 'Delete');
      await p.keyboard.press('h');
      assert.equal(await focused(), 'History');
      await shot(p, '13-row-menu');
      // Escape closes it and focus goes back to its button.
      await p.keyboard.press('Escape');
      await menu.waitFor({ state: 'detached' });
      assert.equal(await opener.getAttribute('aria-expanded'), 'false');
      assert.equal(await focused(), `Actions for ${k.name}`);

      // Space opens it too; Enter on an item runs it; the dialog gives focus back to the button.
      await p.keyboard.press('Space');
      await menu.waitFor();
      assert.equal(await focused(), 'Rename');
      await p.keyboard.press('Enter');
      const dlg = p.getByRole('dialog', { name: `Rename “${k.name}”` });
      await dlg.waitFor();
      await p.keyboard.press('Escape');
      await dlg.waitFor({ state: 'hidden' });
      assert.equal(await focused(), `Actions for ${k.name}`);

      // ArrowUp opens it on the last item; Tab closes it.
      await p.keyboard.press('ArrowUp');
      await menu.waitFor();
      assert.equal(await focused(), 'Delete');
      await p.keyboard.press('Tab');
      await menu.waitFor({ state: 'detached' });
      assert.equal(await opener.getAttribute('aria-expanded'), 'false');

      // A click elsewhere closes it; a click on an item runs it.
      await opener.click();
      await menu.waitFor();
      await p.locator('#keys-title').click();
      await menu.waitFor({ state: 'detached' });
      await opener.click();
      await menu.getByRole('menuitem', { name: 'Disable' }).click();
      await eventually(async () => assert.equal((await textOf(row.locator('td[data-label="Status"]'))).trim(), 'disabled'));
      assert.equal((await verify(k.secret)).code, 'DISABLED');
      await eventually(async () => assert.equal(await focused(), `Actions for ${k.name}`));
      await opener.click();
      assert.deepEqual(await menu.getByRole('menuitem').allTextContents(),
        ['Rename', 'Change type', 'Regenerate', 'Enable', 'History', 'Delete']);
      await p.keyboard.press('Escape');
    } finally {
      await context.close();
    }
  });

  it('keeps the once-shown secret open until the admin confirms it is copied', async () => {
    const { context, page: p } = await freshPage(browser, problems);
    try {
      const name = uniqueName('secret');
      await button(p, 'Create New API Key').click();
      const create = p.getByRole('dialog', { name: 'Create New API Key' });
      await create.getByLabel('Name', { exact: true }).fill(name);
      await button(create, 'Create key').click();
      const dlg = p.getByRole('dialog', { name: 'Your new API key' });
      await dlg.waitFor();
      const secret = await dlg.getByLabel('Secret', { exact: true }).inputValue();
      assert.match(secret, /^klk_/);
      const close = button(dlg, 'Close');
      assert.equal(await close.getAttribute('aria-disabled'), 'true');
      const hint = dlg.locator('#secret-close-hint');

      // Escape does not close it: it says what to do and moves focus to the confirmation.
      await p.keyboard.press('Escape');
      await eventually(async () => assert.match(await textOf(hint), /tick “I have copied the secret” first/));
      assert.ok(await dlg.isVisible());
      assert.equal(await p.evaluate(() => document.activeElement.id), 'secret-confirm');
      await shot(p, '14-secret-needs-confirmation');
      // Nor does Escape again (browsers force a close on a repeated Escape: it opens again).
      await p.keyboard.press('Escape');
      await p.keyboard.press('Escape');
      await p.waitForTimeout(200);
      assert.ok(await dlg.isVisible());
      assert.equal(await dlg.getByLabel('Secret', { exact: true }).inputValue(), secret);
      // Nor a click on the backdrop, nor the close button.
      await p.mouse.click(5, 5);
      await p.waitForTimeout(100);
      assert.ok(await dlg.isVisible());
      // (aria-disabled keeps the button focusable; playwright only clicks it when forced.)
      await close.click({ force: true });
      await eventually(async () => assert.match(await textOf(hint), /tick “I have copied the secret” first/));
      assert.ok(await dlg.isVisible());
      assert.equal(await dlg.getByLabel('Secret', { exact: true }).inputValue(), secret);

      // Confirmed: the button closes it, and the secret leaves the page.
      await dlg.getByLabel('I have copied the secret and stored it safely').check();
      assert.equal(await close.getAttribute('aria-disabled'), 'false');
      await close.click();
      await dlg.waitFor({ state: 'hidden' });
      assert.equal(await p.locator('#secret-value').inputValue(), '');
      assert.equal((await p.content()).includes(secret), false);
      assert.equal(await p.evaluate(() => document.activeElement.id), 'open-create-key');

      // The next secret asks again.
      await keyAction(p, name, 'Regenerate');
      const regen = p.getByRole('dialog', { name: `Regenerate “${name}”` });
      await button(regen, 'Regenerate').click();
      const again = p.getByRole('dialog', { name: 'New secret' });
      await again.waitFor();
      assert.equal(await again.getByLabel('I have copied the secret and stored it safely').isChecked(), false);
      await p.keyboard.press('Escape');
      await p.waitForTimeout(100);
      assert.ok(await again.isVisible());
      await closeSecret(again);
    } finally {
      await context.close();
    }
  });

  it('marks a key whose previous secret still works after a regenerate', async () => {
    const graced = await createKey(uniqueName('graced'));
    const cut = await createKey(uniqueName('cut-over'));
    const g = await apiAs(ADMIN, 'POST', `/v1/admin/api-keys/${graced.id}/regenerate`, { grace_seconds: 7200 });
    assert.equal(g.status, 200, g.text);
    const c = await apiAs(ADMIN, 'POST', `/v1/admin/api-keys/${cut.id}/regenerate`, { grace_seconds: 0 });
    assert.equal(c.status, 200, c.text);
    const until = g.body.api_key.previous_valid_until;
    assert.ok(new Date(until) > new Date());
    assert.ok(c.body.api_key.previous_valid_until);

    const { context, page: p } = await freshPage(browser, problems);
    try {
      const gracedRow = p.locator(`#keys-body tr[data-key-name="${graced.name}"]`);
      await gracedRow.waitFor();
      const badge = gracedRow.locator('.badge', { hasText: 'old secret valid until' });
      await badge.waitFor();
      assert.match((await textOf(badge)).trim(), /^old secret valid until \d{4}-\d\d-\d\d \d\d:\d\d$/);
      assert.equal(await badge.locator('time').getAttribute('datetime'), until);
      // Both secrets work meanwhile.
      assert.equal((await verify(graced.secret)).code, 'VALID');
      assert.equal((await verify(g.body.secret)).code, 'VALID');
      // A regenerate with no grace leaves nothing to mark.
      const cutRow = p.locator(`#keys-body tr[data-key-name="${cut.name}"]`);
      assert.equal(await cutRow.locator('.badge', { hasText: 'old secret valid until' }).count(), 0);
      await gracedRow.scrollIntoViewIfNeeded();
      await shot(p, '15-grace-badge');
    } finally {
      await context.close();
    }
  });

  it('lists the audit log newest first and pages to older entries', async () => {
    // Enough key creations for two pages of three, whatever ran before.
    for (let i = 0; i < 6; i += 1) await createKey(uniqueName('log'));
    const latest = (await apiAs(ADMIN, 'GET', '/v1/audit/events?order=desc&limit=1')).body.events[0].seq;
    const { context, page: p } = await freshPage(browser, problems);
    try {
      await button(p, 'Audit').click();
      const seqs = () => p.locator('#log-body tr').evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
      // The first page opens on the newest entries.
      await eventually(async () => {
        const shown = await seqs();
        assert.ok(shown.length > 0);
        assert.ok(shown[0] >= latest, `first row seq ${shown[0]}, newest ${latest}`);
        assert.deepEqual(shown, [...shown].sort((a, b) => b - a));
      });
      assert.match(await textOf(p.locator('#log-summary')), /^Page 1, newest first:/);
      assert.equal(await button(p, 'Newer entries').isDisabled(), true);

      // Older pages follow next_before; Newer goes back; Newest starts over.
      const created = (await apiAs(ADMIN, 'GET', '/v1/audit/events?type=api_key.created&order=desc&limit=1000'))
        .body.events.map((e) => e.seq);
      const form = p.locator('#log-form');
      await form.getByLabel('Event type').fill('api_key.created');
      await form.getByLabel('Per page').fill('3');
      await button(form, 'Search log').click();
      await eventually(async () => assert.deepEqual(await seqs(), created.slice(0, 3)));
      const older = p.waitForRequest((r) => r.url().includes('/v1/audit/events?') && r.url().includes(`before=${created[2]}`));
      await button(p, 'Older entries').click();
      const req = new URL((await older).url());
      assert.equal(req.searchParams.get('order'), 'desc');
      await eventually(async () => assert.deepEqual(await seqs(), created.slice(3, 6)));
      assert.match(await textOf(p.locator('#log-summary')), /^Page 2, newest first: 3 entries/);
      await button(p, 'Older entries').click();
      await eventually(async () => assert.deepEqual(await seqs(), created.slice(6, 9)));
      await button(p, 'Newer entries').click();
      await eventually(async () => assert.deepEqual(await seqs(), created.slice(3, 6)));
      await button(p, 'Newest entries').click();
      await eventually(async () => assert.deepEqual(await seqs(), created.slice(0, 3)));
      assert.equal(await button(p, 'Newer entries').isDisabled(), true);
    } finally {
      await context.close();
    }
  });

  it('shows auditors actors by name, asking the server once per id', async () => {
    // Two admin users act with tokens (user actors); an auditor reads the log.
    const tag = uniqueName('names');
    const actors = [];
    for (const who of ['known', 'unknown']) {
      const u = await apiAs(ADMIN, 'POST', '/v1/admin/users', { email: `${tag}-${who}@example.com`, role: 'admin' });
      assert.equal(u.status, 201, u.text);
      const pat = await apiAs(ADMIN, 'POST', `/v1/admin/users/${u.body.user.id}/tokens`, { name: 'laptop', expires_in_days: 1 });
      const key = await createKey(uniqueName(`made-by-${who}`), 'basic', pat.body.secret);
      actors.push({ user: u.body.user, key });
    }
    const [known, unknown] = actors;
    // The admin users go again (they must not count as admin credentials for other tests).
    for (const a of actors) assert.equal((await apiAs(ADMIN, 'DELETE', `/v1/admin/users/${a.user.id}`)).status, 204);
    const auditor = await apiAs(ADMIN, 'POST', '/v1/admin/users', { email: `${tag}-auditor@example.com`, role: 'auditor' });
    const auditorPat = await apiAs(ADMIN, 'POST', `/v1/admin/users/${auditor.body.user.id}/tokens`, { name: 'laptop', expires_in_days: 1 });

    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const p = await context.newPage();
    p.setDefaultTimeout(10000);
    watch(p, problems);
    const lookups = [];
    p.on('request', (r) => {
      const m = new URL(r.url()).pathname.match(/^\/v1\/audit\/principals\/([^/]+)$/);
      if (m) lookups.push(m[1]);
    });
    try {
      // One principal the server "does not know" (404): the page falls back to its id prefix.
      await p.route(`${BASE}/v1/audit/principals/${unknown.user.id}`, (route) => route.fulfill({
        status: 404, contentType: 'application/json',
        body: JSON.stringify({ error: { code: 'principal_not_found', message: 'no service account or user with this id' } }),
      }));
      await signIn(p, auditorPat.body.secret);
      await p.locator('#view-audit').waitFor();

      // The log as it opens: the deactivations by the bootstrap key are among the newest
      // entries, under its name; no actor is left as an id.
      const id = unknown.user.id;
      const unknownPrefix = `${id.slice(0, 8)}…${id.slice(-4)} (user)`;
      const actorCells = p.locator('#log-body td[data-label="Actor"]');
      await eventually(async () => {
        const shown = await actorCells.allTextContents();
        assert.ok(shown.includes('bootstrap-admin (API key)'), String(shown));
        assert.deepEqual(shown.filter((a) => a.includes('…') && a !== unknownPrefix), [], 'actors shown as ids');
      });

      // A user actor by its email; the unknown one by its id prefix.
      const form = p.locator('#log-form');
      const createdBy = async (key) => {
        await form.getByLabel('Stream').fill(`api_key/${key.id}`);
        await button(form, 'Search log').click();
        const row = p.locator(`#log-body tr[data-type="api_key.created"]`);
        await eventually(async () => assert.match(await textOf(row.locator('td[data-label="Stream"]')), new RegExp(`${key.name}$`)));
        return (await textOf(row.locator('td[data-label="Actor"]'))).trim();
      };
      assert.equal(await createdBy(known.key), `${known.user.email} (user)`);
      assert.equal(await createdBy(unknown.key), unknownPrefix);

      // Each id asked for once, however many rows, pages and searches name it; never the system.
      await form.getByLabel('Stream').fill('');
      await form.getByLabel('Per page').fill('5');
      await button(form, 'Search log').click();
      await eventually(async () => assert.equal(await p.locator('#log-body tr').count(), 5));
      await button(p, 'Older entries').click();
      await button(p, 'Older entries').click();
      await button(p, 'Newest entries').click();
      await eventually(async () => assert.equal(await button(p, 'Newer entries').isDisabled(), true));
      assert.ok(lookups.includes(known.user.id), String(lookups));
      assert.deepEqual(lookups, [...new Set(lookups)], 'each id looked up once');
      assert.ok(!lookups.includes('keyledger'), 'the system actor is not looked up');
      await shot(p, '16-auditor-names');
    } finally {
      await context.close();
    }
  });

  it('searches, sorts and pages API keys and users on the server', async () => {
    const tag = uniqueName('bulk');
    const names = [];
    for (let i = 1; i <= 12; i += 1) {
      const n = `${tag}-${String(i).padStart(2, '0')}`;
      await createKey(n);
      names.push(n);
    }
    const { context, page: p } = await freshPage(browser, problems);
    const listed = [];
    p.on('request', (r) => {
      if (r.url().includes('/v1/admin/api-keys?')) listed.push(new URL(r.url()).searchParams);
    });
    try {
      const view = p.locator('#view-keys');
      await p.locator('#keys-body tr').first().waitFor();
      listed.length = 0;
      // Typing searches on the server, once the typing pauses; case does not matter.
      await view.getByLabel('Search keys').pressSequentially(tag.toUpperCase(), { delay: 20 });
      await eventually(async () => assert.deepEqual(await keyNames(p), [...names].reverse()));
      const searches = listed.filter((q) => q.get('q'));
      assert.ok(searches.length >= 1 && searches.length < tag.length / 2, `${searches.length} searches for ${tag.length} keystrokes`);
      assert.equal(searches.at(-1).get('q'), tag.toUpperCase());
      assert.equal(await p.locator('#keys-table th[data-sort="created"]').getAttribute('aria-sort'), 'descending');

      // A header sorts on the server and says so with aria-sort.
      const nameHeader = p.locator('#keys-table th[data-sort="name"]');
      await button(nameHeader, 'Name').click();
      await eventually(async () => assert.deepEqual(await keyNames(p), names));
      assert.equal(await nameHeader.getAttribute('aria-sort'), 'ascending');
      assert.equal(await p.locator('#keys-table th[data-sort="created"]').getAttribute('aria-sort'), null);
      assert.equal(listed.at(-1).get('sort'), 'name');
      await button(nameHeader, 'Name').click();
      await eventually(async () => assert.deepEqual(await keyNames(p), [...names].reverse()));
      assert.equal(await nameHeader.getAttribute('aria-sort'), 'descending');
      assert.equal(listed.at(-1).get('sort'), '-name');

      // Pages of ten: Next follows next_after, Previous goes back through the cursors.
      const desc = [...names].reverse();
      await view.getByLabel('Per page').selectOption('10');
      await eventually(async () => assert.deepEqual(await keyNames(p), desc.slice(0, 10)));
      assert.equal(listed.at(-1).get('limit'), '10');
      const prev = button(p, 'Previous page of API keys');
      const next = button(p, 'Next page of API keys');
      assert.equal(await prev.isDisabled(), true);
      await next.click();
      await eventually(async () => assert.deepEqual(await keyNames(p), desc.slice(10)));
      assert.ok(listed.at(-1).get('after'), 'the second page starts after a cursor');
      assert.equal(await next.isDisabled(), true);
      assert.match(await textOf(p.locator('#keys-summary')), /^Page 2: 2 keys matching/);
      await shot(p, '17-keys-search-sort-page');
      await prev.click();
      await eventually(async () => assert.deepEqual(await keyNames(p), desc.slice(0, 10)));
      assert.equal(await prev.isDisabled(), true);

      // Nothing found says so.
      await view.getByLabel('Search keys').fill(`${tag}-none`);
      await p.locator('#keys-empty').waitFor();
      assert.match(await textOf(p.locator('#keys-empty')), new RegExp(`^No API key matches “${tag}-none”\\.$`));
      assert.equal(await p.locator('#keys-body tr').count(), 0);

      // Users: the same.
      for (const who of ['b', 'c', 'a']) {
        const r = await apiAs(ADMIN, 'POST', '/v1/admin/users', { email: `${tag}-${who}@example.com`, role: 'basic' });
        assert.equal(r.status, 201, r.text);
      }
      await button(p, 'Users & tokens').click();
      const users = p.locator('#view-users');
      await users.getByLabel('Search users').fill(tag.toUpperCase());
      const emails = () => p.locator('#users-body tr').evaluateAll((rows) => rows.map((r) => r.dataset.userEmail));
      await eventually(async () => assert.deepEqual(await emails(), ['a', 'c', 'b'].map((w) => `${tag}-${w}@example.com`)));
      await button(p.locator('#users-table th[data-sort="name"]'), 'Email').click();
      await eventually(async () => assert.deepEqual(await emails(), ['a', 'b', 'c'].map((w) => `${tag}-${w}@example.com`)));
      assert.equal(await p.locator('#users-table th[data-sort="name"]').getAttribute('aria-sort'), 'ascending');
      await users.getByLabel('Per page').selectOption('10');
      assert.equal(await button(p, 'Next page of users').isDisabled(), true);
    } finally {
      await context.close();
    }
  });

  it('had no script error, CSP violation or request to another origin', () => {
    assert.deepEqual(problems, []);
  });
});
