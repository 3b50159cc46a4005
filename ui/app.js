// keyledger admin page. Plain JavaScript, no framework, no build step, nothing fetched from
// anywhere but this origin. Text from the server is only ever put into the page with
// textContent or attributes, never parsed as HTML.
'use strict';

(() => {
  const STORAGE_KEY = 'keyledger.credential';

  const KEY_TYPES = {
    admin: 'Can access all endpoints, including those pre-fixed with admin/.',
    basic: 'Can access the non-admin endpoints like Search, Chat, Agents, and Actions.',
    limited: 'Read-only Agent access. Can post messages to Chat endpoints, but cannot read chat history.',
  };

  const EVENT_LABELS = {
    'ledger.initialized': 'Log created',
    'ledger.signer_rotated': 'Signing key rotated',
    'api_key.created': 'Created',
    'api_key.renamed': 'Renamed',
    'api_key.role_changed': 'Type changed',
    'api_key.expiry_changed': 'Expiry changed',
    'api_key.regenerated': 'Regenerated',
    'api_key.disabled': 'Disabled',
    'api_key.enabled': 'Enabled',
    'api_key.deleted': 'Deleted',
    'user.registered': 'User registered',
    'user.role_changed': 'User role changed',
    'user.deactivated': 'User deactivated',
    'pat.created': 'Token issued',
    'pat.revoked': 'Token revoked',
    'credential.activity': 'Activity summary',
  };

  const OUTCOMES = ['VALID', 'FORBIDDEN', 'DISABLED', 'EXPIRED', 'REVOKED', 'NOT_FOUND', 'MALFORMED'];

  const state = {
    secret: null,
    me: null,
    role: null,
    tab: null,
    keys: [], // the page of keys on show
    users: [], // the page of users on show
    tokens: [],
    tokensNext: null,
    selectedUserId: null,
    names: new Map(), // principal id -> human name
    keyChoices: [], // [{id, label}]
    historyKeyId: null,
    // Newest first: `before` is where the page on show ends (exclusive), null for the newest;
    // `back` holds the `before` of each newer page, `next` the `before` of the older one.
    log: { params: null, before: null, back: [], next: null, ticket: 0 },
  };

  // ---------------------------------------------------------------- DOM helpers

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  /** Builds an element: h('td', {class: 'x', 'data-label': 'Name'}, 'text', child…). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function setAttrs(el, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'text') el.textContent = v;
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }

  function append(el, children) {
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  function clear(el) {
    while (el.firstChild) el.firstChild.remove();
  }

  // ---------------------------------------------------------------- formatting

  const pad = (n) => String(n).padStart(2, '0');

  /** Local time as `YYYY-MM-DD HH:MM[:SS]`: compact, sortable, unambiguous. */
  function fmtDate(iso, withSeconds) {
    if (!iso) return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}${withSeconds ? `:${pad(d.getSeconds())}` : ''}`;
    return `${day} ${time}`;
  }

  /** A <time> element, or `empty` text when there is no timestamp. */
  function timeEl(iso, empty = '—', withSeconds = false) {
    if (!iso) return h('span', { class: 'muted' }, empty);
    return h('time', { datetime: iso, title: iso }, fmtDate(iso, withSeconds));
  }

  /** datetime-local value (local time) -> RFC 3339 UTC, or null when empty. */
  function localToRfc3339(value) {
    if (!value) return null;
    const d = new Date(value);
    if (Number.isNaN(d.getTime())) throw new Error('That date and time is not valid.');
    return d.toISOString();
  }

  function shortId(id) {
    return id && id.length > 13 ? `${id.slice(0, 8)}…${id.slice(-4)}` : id || '';
  }

  function principalName(id) {
    if (!id) return '';
    if (id === 'keyledger') return 'keyledger (system)';
    return state.names.get(id) || shortId(id);
  }

  // Names of principals (API keys and users) by id, asked of GET /v1/audit/principals/{id}
  // (admins and auditors may) at most once per id and page load. Names the page learns from
  // its own lists take precedence; an id the server does not know (404) stays an id prefix.
  const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  const lookups = new Map(); // id -> Promise of the lookup

  function lookUpPrincipal(id) {
    let pending = lookups.get(id);
    if (!pending) {
      pending = api('GET', `/v1/audit/principals/${id}`).then((r) => {
        if (!state.names.has(id)) state.names.set(id, r.principal.name);
      }, (e) => {
        // A 404 is an answer (keep it); anything else may be passing: ask again next time.
        if (e.status !== 404) lookups.delete(id);
      });
      lookups.set(id, pending);
    }
    return pending;
  }

  /** Learns the names of these principal ids that the page does not know yet. */
  async function knowNames(ids) {
    const wanted = new Set();
    for (const id of ids) if (id && UUID_RE.test(id) && !state.names.has(id)) wanted.add(id);
    await Promise.all(Array.from(wanted, lookUpPrincipal));
  }

  /** The principal ids an audit event names: its actor, its stream's subject, its data. */
  function idsOfEvent(ev) {
    const out = [];
    if (ev.actor && ev.actor.kind !== 'system') out.push(ev.actor.id);
    const [kind, id] = String(ev.stream || '').split('/');
    if (id && kind !== 'pat') out.push(id);
    const d = ev.data || {};
    for (const k of ['key_id', 'user_id', 'credential_id']) if (typeof d[k] === 'string') out.push(d[k]);
    return out;
  }

  function actorEl(actor) {
    if (!actor) return '';
    if (actor.kind === 'system') return h('span', { class: 'muted' }, 'keyledger (system)');
    const kind = actor.kind === 'service_account' ? 'API key' : 'user';
    return h('span', { title: `${kind} ${actor.id}` }, principalName(actor.id),
      h('span', { class: 'muted' }, ` (${kind})`));
  }

  function badge(text, kind) {
    return h('span', { class: `badge badge-${kind || 'plain'}` }, text);
  }

  function statusBadge(status) {
    const kind = { active: 'ok', disabled: 'warn', expired: 'warn', deleted: 'bad', deactivated: 'bad', revoked: 'bad' }[status];
    return badge(status, kind);
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, opts = {}) {
    const headers = { Accept: 'application/json' };
    if (state.secret) headers.Authorization = `Bearer ${state.secret}`;
    let body;
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    if (opts.ifMatch !== undefined && opts.ifMatch !== null) headers['If-Match'] = `"${opts.ifMatch}"`;
    let res;
    try {
      res = await fetch(path, {
        method, headers, body, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer',
      });
    } catch (e) {
      throw new ApiError(0, 'network', `The server could not be reached (${e.message}).`);
    }
    if (!res.ok) {
      let code = `http_${res.status}`;
      let message = `The server answered ${res.status} ${res.statusText}.`;
      try {
        const j = await res.json();
        if (j && j.error && j.error.message) {
          code = j.error.code;
          message = j.error.message;
        }
      } catch (_) { /* not JSON: keep the status line */ }
      throw new ApiError(res.status, code, message);
    }
    if (opts.raw) return res;
    if (res.status === 204) return null;
    const type = res.headers.get('content-type') || '';
    return type.includes('json') ? res.json() : res.text();
  }

  /** Every event matching `params`, following next_after (bounded). */
  async function allEvents(params, maxPages = 20) {
    const out = [];
    let after = null;
    for (let i = 0; i < maxPages; i += 1) {
      const q = new URLSearchParams({ ...params, limit: '1000' });
      if (after !== null) q.set('after', String(after));
      const page = await api('GET', `/v1/audit/events?${q}`);
      out.push(...page.events);
      if (page.next_after === null || page.next_after === undefined) break;
      after = page.next_after;
    }
    return out;
  }

  // ---------------------------------------------------------------- notices

  const pageStatus = $('#page-status');
  const pageError = $('#page-error');

  function say(region, text) {
    // Clear first so that the same message twice is announced twice.
    region.textContent = '';
    region.classList.toggle('shown', Boolean(text));
    if (text) window.setTimeout(() => { region.textContent = text; }, 30);
  }

  function announce(text) {
    say(pageError, '');
    say(pageStatus, text);
  }

  function messageOf(err) {
    if (err instanceof ApiError && err.code === 'last_admin') {
      return `Refused: this is the last active admin credential, and nobody could administer keyledger without one. `
        + `The server says: ${err.message}`;
    }
    if (err instanceof ApiError) return err.message;
    return (err && err.message) || String(err);
  }

  /** Shows an error in the open dialog if there is one, else on the page. */
  function showError(err, dialog) {
    const open = dialog || $$('dialog[open]').pop();
    const target = open && $('.dialog-error', open);
    const text = messageOf(err);
    if (target) {
      target.textContent = '';
      window.setTimeout(() => { target.textContent = text; }, 30);
    } else {
      say(pageStatus, '');
      say(pageError, text);
    }
  }

  // ---------------------------------------------------------------- dialogs

  function openDialog(dlg, opener, fallbackFocus) {
    dlg.kl = { opener: opener || document.activeElement, fallback: fallbackFocus };
    $$('.dialog-error', dlg).forEach((e) => { e.textContent = ''; });
    dlg.showModal();
    const first = $('[data-autofocus]', dlg);
    if (first) first.focus();
  }

  function restoreFocus(dlg) {
    const info = dlg.kl || {};
    let target = info.opener;
    if (target && !target.isConnected && target.dataset && target.dataset.action) {
      // The row was re-rendered: find the same action on the same item.
      target = $(`[data-action="${CSS.escape(target.dataset.action)}"][data-id="${CSS.escape(target.dataset.id)}"]`);
    }
    if (!target || !target.isConnected || target.disabled || target.closest('[hidden]')) {
      target = info.fallback || $(`#view-${state.tab} h1`) || $('#main');
    }
    if (target && typeof target.focus === 'function') target.focus();
  }

  /** Runs a dialog's clean-up (e.g. wiping a secret) once, as soon as it is dismissed. */
  function cleanUp(dlg) {
    const fn = dlg.kl && dlg.kl.onClose;
    if (fn) {
      dlg.kl.onClose = null;
      fn();
    }
  }

  /** Whether the dialog may close now; if not, tells why (a dialog sets `kl.mayClose`). */
  function mayClose(dlg) {
    const info = dlg.kl || {};
    if (!info.mayClose || info.mayClose()) return true;
    if (info.refused) info.refused();
    return false;
  }

  for (const dlg of $$('dialog')) {
    dlg.addEventListener('cancel', (ev) => { // Escape
      if (!mayClose(dlg)) {
        ev.preventDefault();
        return;
      }
      cleanUp(dlg);
    });
    dlg.addEventListener('close', () => {
      // Browsers let a second Escape in a row close a dialog whatever its cancel handler
      // says: a dialog that may not close yet opens again at once.
      if (!mayClose(dlg)) {
        dlg.showModal();
        return;
      }
      cleanUp(dlg);
      restoreFocus(dlg);
    });
    for (const btn of $$('[data-close]', dlg)) {
      btn.addEventListener('click', () => {
        cleanUp(dlg);
        dlg.close();
      });
    }
  }

  /** Runs a dialog's async action with its submit button disabled; errors stay in the dialog. */
  async function runInDialog(dlg, action) {
    const submit = $('button[type="submit"]', dlg);
    if (submit) submit.disabled = true;
    $$('.dialog-error', dlg).forEach((e) => { e.textContent = ''; });
    try {
      await action();
    } catch (e) {
      showError(e, dlg);
    } finally {
      if (submit) submit.disabled = false;
    }
  }

  /** A confirmation naming what is about to happen; `action` runs on confirm. */
  function confirmAction({ title, text, warning, ok, action, opener }) {
    const dlg = $('#dlg-confirm');
    $('#dlg-confirm-title').textContent = title;
    $('#confirm-text').textContent = text;
    $('#confirm-warning').textContent = warning || '';
    $('#confirm-warning').hidden = !warning;
    $('#confirm-ok').textContent = ok;
    dlg.kl_action = action;
    openDialog(dlg, opener);
  }

  $('#confirm-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const dlg = $('#dlg-confirm');
    runInDialog(dlg, async () => {
      await dlg.kl_action();
      dlg.close();
    });
  });

  // The secret dialog closes (Escape, its button) only once the admin has ticked
  // "I have copied the secret": the secret cannot be shown again.
  const secretConfirm = $('#secret-confirm');
  const secretDone = $('#secret-done');

  function secretCopied() {
    return secretConfirm.checked;
  }

  function refuseSecretClose() {
    const hint = $('#secret-close-hint');
    hint.textContent = '';
    window.setTimeout(() => {
      hint.textContent = 'Copy the secret and tick “I have copied the secret” first: '
        + 'once this dialog closes, nobody can show the secret again.';
    }, 30);
    secretConfirm.focus();
  }

  secretConfirm.addEventListener('change', () => {
    secretDone.setAttribute('aria-disabled', String(!secretCopied()));
    if (secretCopied()) $('#secret-close-hint').textContent = '';
  });

  secretDone.addEventListener('click', () => {
    if (!secretCopied()) {
      refuseSecretClose();
      return;
    }
    const dlg = $('#dlg-secret');
    cleanUp(dlg); // wipe the secret now: the close event comes a task later
    dlg.close();
  });

  // A reload or closing the tab would lose an uncopied secret too: the browser asks first.
  window.addEventListener('beforeunload', (ev) => {
    if ($('#dlg-secret').open && !secretCopied()) {
      ev.preventDefault();
      ev.returnValue = '';
    }
  });

  /** Shows a secret once. Closing the dialog wipes it from the page. */
  function showSecret({ title, subject, secret, opener, fallback }) {
    const dlg = $('#dlg-secret');
    $('#dlg-secret-title').textContent = title;
    $('#secret-subject').textContent = subject;
    const input = $('#secret-value');
    input.value = secret;
    $('#secret-copy-status').textContent = '';
    $('#secret-close-hint').textContent = '';
    secretConfirm.checked = false;
    secretDone.setAttribute('aria-disabled', 'true');
    openDialog(dlg, opener, fallback);
    dlg.kl.mayClose = secretCopied;
    dlg.kl.refused = refuseSecretClose;
    dlg.kl.onClose = () => {
      input.value = '';
      $('#secret-subject').textContent = '';
      $('#secret-copy-status').textContent = '';
      $('#secret-close-hint').textContent = '';
      dlg.kl.mayClose = null;
    };
    input.focus();
    input.select();
  }

  $('#secret-copy').addEventListener('click', async () => {
    const input = $('#secret-value');
    const status = $('#secret-copy-status');
    let copied = false;
    try {
      await navigator.clipboard.writeText(input.value);
      copied = true;
    } catch (_) {
      input.focus();
      input.select();
      try { copied = document.execCommand('copy'); } catch (__) { copied = false; }
    }
    status.textContent = copied
      ? 'Copied to the clipboard. Store it in your secret manager now.'
      : 'Could not copy automatically: the secret is selected, press Ctrl+C (⌘C) to copy it.';
  });

  // ---------------------------------------------------------------- sign in / out

  async function signIn(secret) {
    state.secret = secret;
    let me;
    try {
      me = await api('GET', '/v1/me');
    } catch (e) {
      state.secret = null;
      sessionStorage.removeItem(STORAGE_KEY);
      throw e;
    }
    sessionStorage.setItem(STORAGE_KEY, secret);
    state.me = me;
    state.role = me.principal.role;
    applyIdentity();
  }

  const NOTICE_KEY = 'keyledger.notice';

  /**
   * After a change took this page's own access away (its key disabled, deleted or demoted):
   * starts the page afresh, saying why; signed out unless `keepSession` (a demoted
   * credential still signs in, to be told it has nothing to administer).
   */
  function lostAccess(text, { keepSession = false } = {}) {
    if (!keepSession) sessionStorage.removeItem(STORAGE_KEY);
    sessionStorage.setItem(NOTICE_KEY, text);
    window.history.replaceState(null, '', window.location.pathname);
    window.location.reload();
  }

  function signOut() {
    sessionStorage.removeItem(STORAGE_KEY);
    state.secret = null;
    // A fresh page: nothing of the previous session stays in the DOM.
    window.history.replaceState(null, '', window.location.pathname);
    window.location.reload();
  }

  $('#sign-out').addEventListener('click', signOut);

  $('#signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const input = $('#signin-secret');
    const value = input.value.trim();
    const button = $('#signin-submit');
    button.disabled = true;
    try {
      await signIn(value);
      input.value = '';
    } catch (e) {
      showError(e);
      input.focus();
    } finally {
      button.disabled = false;
    }
  });

  function showSignIn() {
    $('#signin').hidden = false;
    $('#signin-secret').focus();
  }

  function applyIdentity() {
    const { principal, credential } = state.me;
    const name = principal.kind === 'user' ? principal.email : principal.name;
    state.names.set(principal.id, name);
    $('#whoami-name').textContent = name;
    $('#whoami-role').textContent = principal.role;
    $('#whoami-role').className = `badge badge-role-${principal.role}`;
    const via = credential.kind === 'api_key' ? 'API key' : 'token';
    $('#whoami-cred').textContent = `via ${via} ${credential.display || ''}`;
    $('#whoami').hidden = false;
    $('#signin').hidden = true;
    say(pageError, '');

    if (state.role === 'admin') {
      $('#tabs').hidden = false;
      const wanted = (window.location.hash || '').slice(1);
      showTab(['keys', 'users', 'audit'].includes(wanted) ? wanted : 'keys');
    } else if (state.role === 'auditor') {
      // An auditor gets no admin control at all: remove them from the page.
      for (const sel of ['#view-keys', '#view-users', '#tab-keys', '#tab-users',
        '#dlg-create', '#dlg-rename', '#dlg-type', '#dlg-regenerate', '#dlg-user-role']) {
        const el = $(sel);
        if (el) el.remove();
      }
      $('#tabs').hidden = false;
      showTab('audit');
    } else {
      $('#no-access').hidden = false;
      $('#no-access-text').textContent = `This credential has the role “${principal.role}”. `
        + 'Only admin and auditor credentials can use this page. Sign out and use another credential.';
    }
    announce(`Signed in as ${name} (${principal.role}).`);
  }

  // ---------------------------------------------------------------- tabs

  function showTab(name, { focus = false } = {}) {
    if (!$(`#view-${name}`)) return;
    state.tab = name;
    for (const view of $$('.view')) view.hidden = view.id !== `view-${name}`;
    for (const tab of $$('.tab')) {
      if (tab.dataset.tab === name) tab.setAttribute('aria-current', 'page');
      else tab.removeAttribute('aria-current');
    }
    window.history.replaceState(null, '', `#${name}`);
    if (focus) $(`#view-${name} h1`).focus();
    const load = { keys: loadKeys, users: loadUsers, audit: loadAudit }[name];
    load().catch(showError);
  }

  for (const tab of $$('.tab')) {
    tab.addEventListener('click', () => showTab(tab.dataset.tab, { focus: true }));
  }

  // ---------------------------------------------------------------- paged lists

  function cell(label, ...children) {
    return h('td', { 'data-label': label }, ...children);
  }

  function actionButton(label, action, item, name, extraClass) {
    return h('button', {
      type: 'button',
      class: `btn btn-sm ${extraClass || 'btn-secondary'}`,
      'data-action': action,
      'data-id': item.id,
      'aria-label': `${label} ${name}`,
    }, label);
  }

  const SORT_NAMES = { name: 'name', created: 'creation time', last_used: 'last use' };

  /**
   * A list the server pages, searches and sorts (`limit`, `after`, `q`, `sort`): API keys
   * and users. Its controls are `#<id>-search`, `-per-page`, `-prev`, `-next`, `-summary`
   * and the sort buttons in `#<id>-table`'s head. `hide` drops items the page does not show
   * (deleted keys unless asked for); the following server pages then fill the page up.
   * `back` is the stack of `after` cursors of the pages before the one on show.
   */
  function pagedList({ id, path, field, noun, nameSort, hide, namesOf, render }) {
    const els = {
      search: $(`#${id}-search`),
      perPage: $(`#${id}-per-page`),
      prev: $(`#${id}-prev`),
      next: $(`#${id}-next`),
      summary: $(`#${id}-summary`),
      table: $(`#${id}-table`),
    };
    const list = {
      q: '', sort: 'created', descending: true, limit: Number(els.perPage.value),
      after: null, back: [], next: null, ticket: 0, items: [],
    };

    function sortParam() {
      return `${list.descending ? '-' : ''}${list.sort}`;
    }

    function showSort() {
      for (const th of $$('th[data-sort]', els.table)) {
        if (th.dataset.sort === list.sort) th.setAttribute('aria-sort', list.descending ? 'descending' : 'ascending');
        else th.removeAttribute('aria-sort');
      }
    }

    function showPager() {
      els.prev.disabled = list.back.length === 0;
      els.next.disabled = !list.next;
      const n = list.items.length;
      const what = `${n} ${n === 1 ? noun[0] : noun[1]}${list.q ? ` matching “${list.q}”` : ''}`;
      const order = `sorted by ${list.sort === 'name' ? nameSort : SORT_NAMES[list.sort]}, `
        + `${list.descending ? 'descending' : 'ascending'}`;
      const more = list.next ? 'More on the next page.' : 'This is the last page.';
      els.summary.textContent = `Page ${list.back.length + 1}: ${what}, ${order}. ${more}`;
    }

    /** Fetches and shows the page starting after `list.after`; false if a newer load won. */
    async function load() {
      list.ticket += 1;
      const ticket = list.ticket;
      const shown = [];
      let cursor = list.after;
      let next = null;
      for (let round = 0; round < 20; round += 1) {
        const q = new URLSearchParams({ limit: String(list.limit), sort: sortParam() });
        if (list.q) q.set('q', list.q);
        if (cursor) q.set('after', cursor);
        const page = await api('GET', `${path}?${q}`);
        if (ticket !== list.ticket) return false;
        const items = page[field];
        let i = 0;
        while (i < items.length && shown.length < list.limit) {
          if (!hide(items[i])) shown.push(items[i]);
          i += 1;
        }
        const more = page.next_after !== null && page.next_after !== undefined;
        if (shown.length >= list.limit) {
          next = i < items.length || more ? items[i - 1].id : null;
          break;
        }
        if (!more) {
          next = null;
          break;
        }
        cursor = page.next_after;
        next = cursor; // where to go on if the rounds run out
      }
      await knowNames(shown.flatMap(namesOf));
      if (ticket !== list.ticket) return false;
      list.items = shown;
      list.next = next;
      render(shown);
      showSort();
      showPager();
      return true;
    }

    /** Back to the first page (a new search, sort or page size). */
    function restart() {
      list.after = null;
      list.back = [];
      return load();
    }

    let debounce = null;
    function search(now) {
      window.clearTimeout(debounce);
      debounce = null;
      const q = els.search.value.trim();
      if (q === list.q) return;
      if (!now) {
        debounce = window.setTimeout(() => search(true), 300);
        return;
      }
      list.q = q;
      restart().then((shown) => { if (shown) announce(els.summary.textContent); }, showError);
    }
    els.search.addEventListener('input', () => search(false));
    els.search.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter') {
        ev.preventDefault();
        search(true);
      }
    });

    els.perPage.addEventListener('change', () => {
      list.limit = Number(els.perPage.value);
      restart().then((shown) => { if (shown) announce(els.summary.textContent); }, showError);
    });

    for (const btn of $$('button.sort', els.table)) {
      btn.addEventListener('click', () => {
        const sort = btn.dataset.sort;
        if (sort === list.sort) list.descending = !list.descending;
        else {
          list.sort = sort;
          list.descending = sort !== 'name'; // names A→Z, times newest first
        }
        showSort();
        restart().then(() => announce(`${noun[1][0].toUpperCase()}${noun[1].slice(1)} sorted by `
          + `${sort === 'name' ? nameSort : SORT_NAMES[sort]}, ${list.descending ? 'descending' : 'ascending'}.`), showError);
      });
    }

    els.next.addEventListener('click', () => {
      if (!list.next) return;
      list.back.push(list.after);
      list.after = list.next;
      load().then(() => {
        announce(els.summary.textContent);
        if (els.next.disabled) els.prev.focus();
      }, showError);
    });
    els.prev.addEventListener('click', () => {
      if (!list.back.length) return;
      list.after = list.back.pop();
      load().then(() => {
        announce(els.summary.textContent);
        if (els.prev.disabled) els.next.focus();
      }, showError);
    });

    showSort();
    list.load = load;
    list.restart = restart;
    return list;
  }

  /** Every item of an admin list (following next_after, bounded), for pickers. */
  async function allItems(path, field, maxPages = 20) {
    const out = [];
    let after = null;
    for (let i = 0; i < maxPages; i += 1) {
      const q = new URLSearchParams({ limit: '1000' });
      if (after) q.set('after', after);
      const page = await api('GET', `${path}?${q}`);
      out.push(...page[field]);
      if (!page.next_after) break;
      after = page.next_after;
    }
    return out;
  }

  // ---------------------------------------------------------------- row menus
  //
  // The WAI-ARIA menu button pattern: each key row has one "Actions" button
  // (aria-haspopup="menu") opening a menu of the row's actions. Enter, Space or ArrowDown
  // open it on the first item, ArrowUp on the last; ArrowDown/ArrowUp (wrapping), Home, End
  // and a first letter move; Enter or Space runs the item; Escape closes it and puts focus
  // back on the button; Tab or a click elsewhere closes it.

  let openMenu = null; // {button, menu, onPick}

  function menuButton(id, name) {
    return h('button', {
      type: 'button',
      class: 'btn btn-secondary btn-sm menu-button',
      id: `actions-${id}`,
      'data-action': 'menu',
      'data-id': id,
      'aria-haspopup': 'menu',
      'aria-expanded': 'false',
      'aria-label': `Actions for ${name}`,
    }, 'Actions');
  }

  function menuItems() {
    return openMenu ? $$('[role="menuitem"]', openMenu.menu) : [];
  }

  /** Keeps the open menu next to its button, inside the window (the table may scroll). */
  function placeMenu() {
    if (!openMenu) return;
    const { button, menu } = openMenu;
    const r = button.getBoundingClientRect();
    const w = menu.offsetWidth;
    const hgt = menu.offsetHeight;
    const left = Math.max(8, Math.min(r.right - w, window.innerWidth - w - 8));
    let top = r.bottom + 4;
    if (top + hgt > window.innerHeight - 8 && r.top - hgt - 4 >= 8) top = r.top - hgt - 4;
    menu.style.left = `${Math.round(left)}px`;
    menu.style.top = `${Math.round(top)}px`;
  }

  function closeMenu(focusButton) {
    if (!openMenu) return;
    const { button, menu } = openMenu;
    openMenu = null;
    menu.remove();
    button.setAttribute('aria-expanded', 'false');
    button.removeAttribute('aria-controls');
    if (focusButton && button.isConnected) button.focus();
  }

  /** Opens `items` ([{action, label, danger}]) under `button`; `onPick(action, button)`. */
  function showMenu(button, items, onPick, focusLast) {
    closeMenu(false);
    const menu = h('ul', { class: 'menu', role: 'menu', id: `${button.id}-menu`, 'aria-labelledby': button.id },
      items.map((it) => h('li', { role: 'none' }, h('button', {
        type: 'button', role: 'menuitem', tabindex: '-1', 'data-pick': it.action,
        class: `menu-item${it.danger ? ' menu-item-danger' : ''}`,
      }, it.label))));
    button.after(menu);
    button.setAttribute('aria-expanded', 'true');
    button.setAttribute('aria-controls', menu.id);
    openMenu = { button, menu, onPick };
    placeMenu();

    menu.addEventListener('click', (ev) => {
      const item = ev.target.closest('[data-pick]');
      if (!item || !openMenu || openMenu.menu !== menu) return;
      closeMenu(true);
      onPick(item.dataset.pick, button);
    });
    menu.addEventListener('keydown', (ev) => {
      const all = menuItems();
      const at = all.indexOf(document.activeElement);
      let to = null;
      if (ev.key === 'ArrowDown') to = (at + 1) % all.length;
      else if (ev.key === 'ArrowUp') to = (at - 1 + all.length) % all.length;
      else if (ev.key === 'Home' || ev.key === 'PageUp') to = 0;
      else if (ev.key === 'End' || ev.key === 'PageDown') to = all.length - 1;
      else if (ev.key === 'Escape') {
        ev.preventDefault();
        ev.stopPropagation();
        closeMenu(true);
        return;
      } else if (ev.key.length === 1 && /\S/.test(ev.key) && !ev.ctrlKey && !ev.metaKey && !ev.altKey) {
        // Type-ahead: the next item starting with that letter.
        const c = ev.key.toLowerCase();
        for (let k = 1; k <= all.length; k += 1) {
          const j = (at + k) % all.length;
          if (all[j].textContent.trim().toLowerCase().startsWith(c)) {
            to = j;
            break;
          }
        }
      }
      if (to !== null) {
        ev.preventDefault();
        all[to].focus({ preventScroll: true });
      }
    });
    menu.addEventListener('focusout', (ev) => {
      const to = ev.relatedTarget;
      if (openMenu && openMenu.menu === menu && !(to && (menu.contains(to) || to === button))) closeMenu(false);
    });

    const all = menuItems();
    all[focusLast ? all.length - 1 : 0].focus({ preventScroll: true });
  }

  /** Wires the menu buttons inside `container`: `itemsOf(id)` and `onPick(action, id, button)`. */
  function menuButtons(container, itemsOf, onPick) {
    container.addEventListener('click', (ev) => {
      const btn = ev.target.closest('button[data-action="menu"]');
      if (!btn) return;
      if (openMenu && openMenu.button === btn) {
        closeMenu(true);
        return;
      }
      const items = itemsOf(btn.dataset.id);
      if (items.length) showMenu(btn, items, (action, b) => onPick(action, b.dataset.id, b), false);
    });
    container.addEventListener('keydown', (ev) => {
      const btn = ev.target.closest && ev.target.closest('button[data-action="menu"]');
      if (!btn || ev.target !== btn || (ev.key !== 'ArrowDown' && ev.key !== 'ArrowUp')) return;
      ev.preventDefault();
      const items = itemsOf(btn.dataset.id);
      if (items.length) showMenu(btn, items, (action, b) => onPick(action, b.dataset.id, b), ev.key === 'ArrowUp');
    });
  }

  document.addEventListener('pointerdown', (ev) => {
    if (!openMenu) return;
    if (openMenu.menu.contains(ev.target) || openMenu.button.contains(ev.target)) return;
    closeMenu(false);
  }, true);
  window.addEventListener('resize', placeMenu);
  window.addEventListener('scroll', placeMenu, true);

  // ---------------------------------------------------------------- API keys

  function rememberKeyNames(keys) {
    for (const k of keys) state.names.set(k.id, k.name);
  }

  const keysList = pagedList({
    id: 'keys',
    path: '/v1/admin/api-keys',
    field: 'api_keys',
    noun: ['key', 'keys'],
    nameSort: 'name',
    hide: (k) => k.status === 'deleted' && !$('#keys-show-deleted').checked,
    namesOf: (k) => [k.created_by],
    render: (keys) => {
      state.keys = keys;
      rememberKeyNames(keys);
      renderKeys();
    },
  });

  async function loadKeys() {
    await keysList.load();
  }

  function keyById(id) {
    return state.keys.find((k) => k.id === id);
  }

  /** Whether this is the API key the page is signed in with. */
  function isMyKey(key) {
    return Boolean(state.me) && state.me.credential.kind === 'api_key' && state.me.credential.id === key.id;
  }

  /** "old secret valid until …" while the secret replaced by the last regenerate still works. */
  function graceBadge(k) {
    if (k.status !== 'active' || !k.previous_valid_until) return null;
    const until = new Date(k.previous_valid_until);
    if (!(until.getTime() > Date.now())) return null;
    return h('span', {
      class: 'badge badge-warn grace',
      title: `The secret this key had before its last regenerate keeps working until ${k.previous_valid_until}.`,
    }, 'old secret valid until ', h('time', { datetime: k.previous_valid_until }, fmtDate(k.previous_valid_until)));
  }

  function keyMenuItems(id) {
    const k = keyById(id);
    if (!k) return [];
    if (k.status === 'deleted') return [{ action: 'history', label: 'History' }];
    return [
      { action: 'rename', label: 'Rename' },
      { action: 'type', label: 'Change type' },
      { action: 'regenerate', label: 'Regenerate' },
      k.status === 'disabled' ? { action: 'enable', label: 'Enable' } : { action: 'disable', label: 'Disable' },
      { action: 'history', label: 'History' },
      { action: 'delete', label: 'Delete', danger: true },
    ];
  }

  function renderKeys() {
    const body = $('#keys-body');
    clear(body);
    for (const k of state.keys) {
      body.append(h('tr', { 'data-key-id': k.id, 'data-key-name': k.name },
        h('th', { scope: 'row', 'data-label': 'Name', class: 'name-cell' }, k.name),
        cell('Type', badge(k.role, `role-${k.role}`)),
        cell('Key', h('div', { class: 'key-cell' }, h('span', { class: 'mono' }, k.display), graceBadge(k))),
        cell('Status', statusBadge(k.status)),
        cell('Created', timeEl(k.created_at)),
        cell('Created by', h('span', { title: k.created_by }, principalName(k.created_by))),
        cell('Last used', timeEl(k.last_used_at, 'Never')),
        cell('Expires', timeEl(k.expires_at, 'Never')),
        cell('Actions', menuButton(k.id, k.name)),
      ));
    }
    const empty = $('#keys-empty');
    empty.hidden = state.keys.length > 0;
    empty.textContent = keysList.q ? `No API key matches “${keysList.q}”.`
      : keysList.back.length ? 'No more API keys.' : 'No API keys yet.';
  }

  $('#keys-show-deleted').addEventListener('change', () => keysList.restart().catch(showError));
  $('#keys-refresh').addEventListener('click', () => loadKeys().then(() => announce('API keys refreshed.'), showError));

  menuButtons($('#keys-body'), keyMenuItems, (action, id, btn) => {
    const key = keyById(id);
    if (!key) return;
    const handler = {
      rename: openRename, type: openType, regenerate: openRegenerate,
      disable: openDisable, enable: (k) => setEnabled(k, true),
      delete: openDelete, history: openHistory,
    }[action];
    if (handler) handler(key, btn);
  });

  // Create
  $('#open-create-key').addEventListener('click', (ev) => {
    const form = $('#create-form');
    form.reset();
    openDialog($('#dlg-create'), ev.currentTarget);
    $('#create-name').focus();
  });

  $('#create-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const dlg = $('#dlg-create');
    const form = ev.currentTarget;
    runInDialog(dlg, async () => {
      const body = {
        name: form.elements.name.value,
        role: form.elements.role.value,
      };
      const expires = localToRfc3339(form.elements.expires.value);
      if (expires) body.expires_at = expires;
      const r = await api('POST', '/v1/admin/api-keys', { body });
      const opener = dlg.kl.opener;
      dlg.close();
      form.reset();
      showSecret({
        title: 'Your new API key',
        subject: `“${r.api_key.name}” (${r.api_key.role}) was created. Its secret:`,
        secret: r.secret,
        opener,
      });
      announce(`API key “${r.api_key.name}” created.`);
      await keysList.restart();
    });
  });

  // Rename
  function openRename(key, opener) {
    const dlg = $('#dlg-rename');
    dlg.kl_key = key;
    $('#dlg-rename-title').textContent = `Rename “${key.name}”`;
    $('#rename-name').value = key.name;
    openDialog(dlg, opener);
    $('#rename-name').select();
  }

  $('#rename-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const dlg = $('#dlg-rename');
    const key = dlg.kl_key;
    runInDialog(dlg, async () => {
      const name = $('#rename-name').value;
      const r = await api('PATCH', `/v1/admin/api-keys/${key.id}`, { body: { name }, ifMatch: key.version });
      await loadKeys();
      dlg.close();
      announce(`API key “${key.name}” renamed to “${r.api_key.name}”.`);
    });
  });

  // Change type
  const SELF_KEY = 'You are signed in with this key.';

  function showTypeWarning() {
    const dlg = $('#dlg-type');
    const key = dlg.kl_key;
    const checked = $('input[name="role"]:checked', dlg);
    const demotes = key && isMyKey(key) && key.role === 'admin' && checked && checked.value !== 'admin';
    const warning = $('#type-self-warning');
    warning.hidden = !demotes;
    warning.textContent = demotes
      ? `${SELF_KEY} As a ${checked.value} key it can no longer administer keyledger: this page loses its admin `
        + 'access at once, and if no other admin credential is active the server refuses the change.'
      : '';
  }

  function openType(key, opener) {
    const dlg = $('#dlg-type');
    dlg.kl_key = key;
    $('#dlg-type-title').textContent = `Change the type of “${key.name}”`;
    for (const r of $$('input[name="role"]', dlg)) r.checked = r.value === key.role;
    showTypeWarning();
    openDialog(dlg, opener);
    const checked = $('input[name="role"]:checked', dlg);
    if (checked) checked.focus();
  }

  $('#type-form').addEventListener('change', showTypeWarning);

  $('#type-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const dlg = $('#dlg-type');
    const key = dlg.kl_key;
    const role = ev.currentTarget.elements.role.value;
    runInDialog(dlg, async () => {
      if (role === key.role) {
        dlg.close();
        return;
      }
      await api('PATCH', `/v1/admin/api-keys/${key.id}`, { body: { role }, ifMatch: key.version });
      if (isMyKey(key) && role !== 'admin') {
        lostAccess(`API key “${key.name}”, which this page is signed in with, is now of type ${role}.`, { keepSession: true });
        return;
      }
      await loadKeys();
      dlg.close();
      announce(`API key “${key.name}” is now of type ${role}.`);
    });
  });

  // Regenerate
  function openRegenerate(key, opener) {
    const dlg = $('#dlg-regenerate');
    dlg.kl_key = key;
    $('#dlg-regenerate-title').textContent = `Regenerate “${key.name}”`;
    $('#regenerate-text').textContent = `A new secret replaces ${key.display}. Programs using the old `
      + 'secret stop working when the grace period ends.';
    const warning = $('#regenerate-self-warning');
    warning.hidden = !isMyKey(key);
    warning.textContent = isMyKey(key)
      ? `${SELF_KEY} This page switches to the new secret; sign in with the new secret elsewhere too.`
      : '';
    $('#regenerate-form').reset();
    openDialog(dlg, opener);
    $('#regenerate-grace').focus();
  }

  $('#regenerate-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const dlg = $('#dlg-regenerate');
    const key = dlg.kl_key;
    const form = ev.currentTarget;
    runInDialog(dlg, async () => {
      const amount = Number(form.elements.grace.value || '0');
      if (!Number.isFinite(amount) || amount < 0 || !Number.isInteger(amount)) {
        throw new Error('The grace period must be a whole number, 0 or more.');
      }
      const grace = amount * Number(form.elements.unit.value);
      const r = await api('POST', `/v1/admin/api-keys/${key.id}/regenerate`, {
        body: { grace_seconds: grace }, ifMatch: key.version,
      });
      if (isMyKey(key)) {
        state.secret = r.secret;
        sessionStorage.setItem(STORAGE_KEY, r.secret);
        state.me.credential.display = r.api_key.display;
        $('#whoami-cred').textContent = `via API key ${r.api_key.display}`;
      }
      const opener = dlg.kl.opener;
      dlg.close();
      const until = r.api_key.previous_valid_until;
      const old = grace > 0 && until
        ? `The old secret keeps working until ${fmtDate(until, true)}.`
        : 'The old secret no longer works.';
      showSecret({
        title: 'New secret',
        subject: `“${r.api_key.name}” has a new secret. ${old}`,
        secret: r.secret,
        opener,
      });
      announce(`API key “${key.name}” regenerated.`);
      await loadKeys();
    });
  });

  // Disable / enable
  async function changeEnabled(key, enable) {
    await api('POST', `/v1/admin/api-keys/${key.id}/${enable ? 'enable' : 'disable'}`, { ifMatch: key.version });
    announce(`API key “${key.name}” ${enable ? 'enabled' : 'disabled'}.`);
    await loadKeys();
  }

  async function setEnabled(key, enable) {
    try {
      await changeEnabled(key, enable);
      const again = $(`[data-action="menu"][data-id="${key.id}"]`);
      if (again) again.focus();
    } catch (e) {
      showError(e);
    }
  }

  /** Disabling another key is one step; the key this page is signed in with asks first. */
  function openDisable(key, opener) {
    if (!isMyKey(key)) {
      setEnabled(key, false);
      return;
    }
    confirmAction({
      title: `Disable “${key.name}”?`,
      text: `Disable the API key “${key.name}” (${key.display})? Programs using it are refused until it is enabled again.`,
      warning: `${SELF_KEY} This page loses its access at once: you will need another admin credential to `
        + 'enable it again. If it is the last active admin credential, the server refuses.',
      ok: 'Disable key',
      opener,
      action: async () => {
        await api('POST', `/v1/admin/api-keys/${key.id}/disable`, { ifMatch: key.version });
        lostAccess(`API key “${key.name}” is disabled. This page was signed in with it: sign in with another admin credential.`);
      },
    });
  }

  // Delete
  function openDelete(key, opener) {
    confirmAction({
      title: `Delete “${key.name}”?`,
      text: `Delete the API key “${key.name}” (${key.display})? Programs using it are refused at once. `
        + 'This cannot be undone; its history stays in the audit log.',
      warning: isMyKey(key)
        ? `${SELF_KEY} This page loses its access at once. If it is the last active admin credential, the server refuses.`
        : '',
      ok: 'Delete key',
      opener,
      action: async () => {
        await api('DELETE', `/v1/admin/api-keys/${key.id}`, { ifMatch: key.version });
        if (isMyKey(key)) {
          lostAccess(`API key “${key.name}” is deleted. This page was signed in with it: sign in with another admin credential.`);
          return;
        }
        announce(`API key “${key.name}” deleted.`);
        await loadKeys();
      },
    });
  }

  function openHistory(key) {
    state.historyKeyId = key.id;
    showTab('audit');
    $('#history-title').focus();
  }

  // ---------------------------------------------------------------- users and tokens

  const usersList = pagedList({
    id: 'users',
    path: '/v1/admin/users',
    field: 'users',
    noun: ['user', 'users'],
    nameSort: 'email',
    hide: (u) => u.status === 'deactivated' && !$('#users-show-deactivated').checked && u.id !== state.selectedUserId,
    namesOf: (u) => [u.created_by],
    render: (users) => {
      state.users = users;
      for (const u of users) state.names.set(u.id, u.email);
      renderUsers();
    },
  });

  async function loadUsers() {
    await usersList.load();
  }

  function userById(id) {
    return state.users.find((u) => u.id === id);
  }

  /** Whether this is the user the page is signed in as (with a personal access token). */
  function isMyUser(user) {
    return Boolean(state.me) && state.me.principal.kind === 'user' && state.me.principal.id === user.id;
  }

  const SELF_USER = 'You are signed in as this user.';

  function renderUsers() {
    const body = $('#users-body');
    if (!body) return;
    clear(body);
    for (const u of state.users) {
      const actions = h('div', { class: 'row-actions' });
      actions.append(actionButton('Tokens', 'tokens', u, `of ${u.email}`));
      if (u.status === 'active') {
        actions.append(
          actionButton('Change role', 'role', u, `of ${u.email}`),
          actionButton('Deactivate', 'deactivate', u, u.email, 'btn-danger-outline'),
        );
      }
      body.append(h('tr', { 'data-user-id': u.id, 'data-user-email': u.email, class: u.id === state.selectedUserId ? 'selected' : null },
        h('th', { scope: 'row', 'data-label': 'Email', class: 'name-cell' }, u.email),
        cell('Role', badge(u.role, `role-${u.role}`)),
        cell('Status', statusBadge(u.status)),
        cell('Created', timeEl(u.created_at)),
        cell('Created by', h('span', { title: u.created_by }, principalName(u.created_by))),
        cell('Last used', timeEl(u.last_used_at, 'Never')),
        cell('Actions', actions),
      ));
    }
    const empty = $('#users-empty');
    empty.hidden = state.users.length > 0;
    empty.textContent = usersList.q ? `No user matches “${usersList.q}”.`
      : usersList.back.length ? 'No more users.' : 'No users yet.';
  }

  $('#users-show-deactivated').addEventListener('change', () => usersList.restart().catch(showError));
  $('#users-refresh').addEventListener('click', () => loadUsers().then(() => announce('Users refreshed.'), showError));

  $('#register-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const form = ev.currentTarget;
    const submit = $('button[type="submit"]', form);
    submit.disabled = true;
    try {
      const r = await api('POST', '/v1/admin/users', {
        body: { email: form.elements.email.value, role: form.elements.role.value },
      });
      form.reset();
      announce(`User ${r.user.email} registered as ${r.user.role}.`);
      await usersList.restart();
      const tokens = $(`[data-action="tokens"][data-id="${r.user.id}"]`);
      if (tokens) tokens.focus();
    } catch (e) {
      showError(e);
    } finally {
      submit.disabled = false;
    }
  });

  $('#users-body').addEventListener('click', (ev) => {
    const btn = ev.target.closest('button[data-action]');
    if (!btn) return;
    const user = userById(btn.dataset.id);
    if (!user) return;
    if (btn.dataset.action === 'tokens') selectUser(user);
    if (btn.dataset.action === 'role') openUserRole(user, btn);
    if (btn.dataset.action === 'deactivate') openDeactivate(user, btn);
  });

  function showUserRoleWarning() {
    const user = $('#dlg-user-role').kl_user;
    const role = $('#user-role-select').value;
    const demotes = user && isMyUser(user) && user.role === 'admin' && role !== 'admin';
    const warning = $('#user-role-self-warning');
    warning.hidden = !demotes;
    warning.textContent = demotes
      ? `${SELF_USER} As ${role} you can no longer administer keyledger: this page loses its admin access at once, `
        + 'and if no other admin credential is active the server refuses the change.'
      : '';
  }

  function openUserRole(user, opener) {
    const dlg = $('#dlg-user-role');
    dlg.kl_user = user;
    $('#dlg-user-role-title').textContent = `Change the role of ${user.email}`;
    $('#user-role-select').value = user.role;
    showUserRoleWarning();
    openDialog(dlg, opener);
    $('#user-role-select').focus();
  }

  $('#user-role-select').addEventListener('change', showUserRoleWarning);

  $('#user-role-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const dlg = $('#dlg-user-role');
    const user = dlg.kl_user;
    const role = $('#user-role-select').value;
    runInDialog(dlg, async () => {
      if (role !== user.role) {
        await api('PATCH', `/v1/admin/users/${user.id}`, { body: { role }, ifMatch: user.version });
        if (isMyUser(user) && role !== 'admin') {
          lostAccess(`You (${user.email}) are now ${role}.`, { keepSession: true });
          return;
        }
        announce(`${user.email} is now ${role}.`);
        await loadUsers();
      }
      dlg.close();
    });
  });

  function openDeactivate(user, opener) {
    confirmAction({
      title: `Deactivate ${user.email}?`,
      text: `Deactivate the user ${user.email}? Their personal access tokens are revoked at once. This cannot be undone.`,
      warning: isMyUser(user)
        ? `${SELF_USER} This page loses its access at once. If you hold the last active admin credential, the server refuses.`
        : '',
      ok: 'Deactivate user',
      opener,
      action: async () => {
        await api('DELETE', `/v1/admin/users/${user.id}`, { ifMatch: user.version });
        if (isMyUser(user)) {
          lostAccess(`User ${user.email} is deactivated. This page was signed in as that user: sign in with another admin credential.`);
          return;
        }
        announce(`User ${user.email} deactivated.`);
        await loadUsers();
        if (state.selectedUserId === user.id) await loadTokens();
      },
    });
  }

  async function selectUser(user) {
    state.selectedUserId = user.id;
    renderUsers();
    const panel = $('#tokens-panel');
    panel.hidden = false;
    $('#tokens-title').textContent = `Tokens of ${user.email}`;
    $('#token-form').hidden = user.status !== 'active';
    state.tokens = [];
    state.tokensNext = null;
    try {
      await loadTokens();
    } catch (e) {
      showError(e);
    }
    $('#tokens-title').focus();
  }

  /** The selected user's tokens: again as many as are on show (at least 100), or `more`. */
  async function loadTokens({ more = false } = {}) {
    const id = state.selectedUserId;
    if (!id) return;
    const q = new URLSearchParams({ limit: String(more ? 100 : Math.min(1000, Math.max(100, state.tokens.length))) });
    if (more && state.tokensNext) q.set('after', state.tokensNext);
    const r = await api('GET', `/v1/admin/users/${id}/tokens?${q}`);
    if (id !== state.selectedUserId) return;
    state.tokens = more ? state.tokens.concat(r.tokens) : r.tokens;
    state.tokensNext = r.next_after || null;
    renderTokens();
  }

  $('#tokens-more').addEventListener('click', () => loadTokens({ more: true }).then(() => {
    announce(`${state.tokens.length} tokens shown.`);
    if ($('#tokens-more').hidden) $('#tokens-title').focus();
  }, showError));

  function isMyToken(token) {
    return Boolean(state.me) && state.me.credential.kind === 'pat' && state.me.credential.id === token.id;
  }

  function renderTokens() {
    const body = $('#tokens-body');
    clear(body);
    for (const t of state.tokens) {
      const actions = h('div', { class: 'row-actions' });
      if (t.status !== 'revoked') actions.append(actionButton('Revoke', 'revoke', t, t.name, 'btn-danger-outline'));
      body.append(h('tr', { 'data-token-id': t.id, 'data-token-name': t.name },
        h('th', { scope: 'row', 'data-label': 'Name', class: 'name-cell' }, t.name),
        cell('Token', h('span', { class: 'mono' }, t.display)),
        cell('Status', statusBadge(t.status)),
        cell('Created', timeEl(t.created_at)),
        cell('Expires', timeEl(t.expires_at, 'Never')),
        cell('Last used', timeEl(t.last_used_at, 'Never')),
        cell('Actions', actions),
      ));
    }
    $('#tokens-empty').hidden = state.tokens.length > 0;
    $('#tokens-more').hidden = !state.tokensNext;
  }

  $('#token-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const form = ev.currentTarget;
    const user = userById(state.selectedUserId);
    if (!user) return;
    const submit = $('button[type="submit"]', form);
    submit.disabled = true;
    try {
      const days = Number(form.elements.days.value);
      const r = await api('POST', `/v1/admin/users/${user.id}/tokens`, {
        body: { name: form.elements.name.value, expires_in_days: days },
      });
      form.elements.name.value = '';
      showSecret({
        title: 'New personal access token',
        subject: `Token “${r.token.name}” for ${user.email}, valid until ${fmtDate(r.token.expires_at)}. Its secret:`,
        secret: r.secret,
        opener: submit,
      });
      announce(`Token “${r.token.name}” issued to ${user.email}.`);
      await loadTokens();
    } catch (e) {
      showError(e);
    } finally {
      submit.disabled = false;
    }
  });

  $('#tokens-body').addEventListener('click', (ev) => {
    const btn = ev.target.closest('button[data-action="revoke"]');
    if (!btn) return;
    const token = state.tokens.find((t) => t.id === btn.dataset.id);
    const user = userById(state.selectedUserId);
    if (!token || !user) return;
    confirmAction({
      title: `Revoke “${token.name}”?`,
      text: `Revoke the token “${token.name}” (${token.display}) of ${user.email}? It is refused at once. This cannot be undone.`,
      warning: isMyToken(token)
        ? 'You are signed in with this token. This page loses its access at once. If it is the last active admin '
          + 'credential, the server refuses.'
        : '',
      ok: 'Revoke token',
      opener: btn,
      action: async () => {
        await api('DELETE', `/v1/admin/tokens/${token.id}`);
        if (isMyToken(token)) {
          lostAccess(`Token “${token.name}” is revoked. This page was signed in with it: sign in with another admin credential.`);
          return;
        }
        announce(`Token “${token.name}” revoked.`);
        await loadTokens();
      },
    });
  });

  // ---------------------------------------------------------------- audit

  async function loadAudit() {
    const jobs = [loadCheckpoint(), loadKeyChoices()];
    if (!state.log.params) jobs.push(searchLog());
    const results = await Promise.allSettled(jobs);
    const failed = results.find((r) => r.status === 'rejected');
    if (state.historyKeyId) {
      $('#history-key').value = state.historyKeyId;
      await showHistory(state.historyKeyId);
    }
    if (failed) throw failed.reason;
  }

  // Checkpoint and export
  async function loadCheckpoint() {
    const note = await api('GET', '/v1/audit/checkpoint');
    const lines = String(note).split('\n');
    $('#cp-origin').textContent = lines[0] || '';
    $('#cp-size').textContent = lines[1] || '';
    $('#cp-root').textContent = lines[2] || '';
    const sigs = lines.slice(3).filter((l) => l.startsWith('—') || l.startsWith('-'));
    $('#cp-signer').textContent = sigs.join('\n') || '(unsigned)';
  }

  $('#checkpoint-refresh').addEventListener('click', () => loadCheckpoint().then(() => announce('Checkpoint refreshed.'), showError));

  $('#export-download').addEventListener('click', async (ev) => {
    const btn = ev.currentTarget;
    btn.disabled = true;
    try {
      const res = await api('GET', '/v1/audit/export', { raw: true });
      const blob = await res.blob();
      const url = URL.createObjectURL(new Blob([blob], { type: 'application/x-ndjson' }));
      const a = h('a', { href: url, download: 'keyledger-export.ndjson', class: 'visually-hidden' }, 'download');
      document.body.append(a);
      a.click();
      a.remove();
      window.setTimeout(() => URL.revokeObjectURL(url), 30000);
      announce(`Export downloaded as keyledger-export.ndjson (${blob.size.toLocaleString()} bytes).`);
    } catch (e) {
      showError(e);
    } finally {
      btn.disabled = false;
      btn.focus();
    }
  });

  // The API keys as the log knows them (an auditor has no list of keys): the history picker.
  // Names of actors come from GET /v1/audit/principals/{id} instead (see knowNames).
  async function keysFromLog() {
    const [created, renamed, deleted] = await Promise.all([
      allEvents({ type: 'api_key.created' }),
      allEvents({ type: 'api_key.renamed' }),
      allEvents({ type: 'api_key.deleted' }),
    ]);
    const keys = new Map();
    for (const e of created) keys.set(e.data.key_id, { id: e.data.key_id, name: e.data.name, deleted: false });
    for (const e of renamed) { const k = keys.get(e.data.key_id); if (k) k.name = e.data.to; }
    for (const e of deleted) { const k = keys.get(e.data.key_id); if (k) k.deleted = true; }
    return Array.from(keys.values());
  }

  async function loadKeyChoices() {
    let choices;
    if (state.role === 'admin') {
      const keys = await allItems('/v1/admin/api-keys', 'api_keys');
      rememberKeyNames(keys);
      choices = keys.map((k) => ({ id: k.id, label: `${k.name} — ${k.role}, ${k.status} (${k.display})` }));
    } else {
      const keys = await keysFromLog();
      choices = keys.map((k) => ({ id: k.id, label: `${k.name}${k.deleted ? ' (deleted)' : ''} — ${shortId(k.id)}` }));
    }
    state.keyChoices = choices;
    const select = $('#history-key');
    const current = state.historyKeyId || select.value;
    clear(select);
    select.append(h('option', { value: '' }, choices.length ? 'Choose a key…' : 'No keys'));
    for (const c of choices) select.append(h('option', { value: c.id }, c.label));
    if (current && choices.some((c) => c.id === current)) select.value = current;
  }

  $('#history-reload-keys').addEventListener('click', () => loadKeyChoices().then(() => announce('Key list reloaded.'), showError));

  $('#history-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const id = $('#history-key').value;
    if (!id) {
      showError(new Error('Choose a key first.'));
      return;
    }
    state.historyKeyId = id;
    showHistory(id).catch(showError);
  });

  $('#activity-refresh').addEventListener('click', () => {
    if (state.historyKeyId) loadActivity(state.historyKeyId).then(() => announce('Activity refreshed.'), showError);
  });

  async function showHistory(id) {
    const r = await api('GET', `/v1/audit/api-keys/${id}/history`);
    await knowNames([id, ...r.events.flatMap(idsOfEvent)]);
    $('#history-result').hidden = false;
    $('#history-key-title').textContent = `${principalName(id)} (${id})`;
    renderTimeline(r.events);
    await loadActivity(id);
  }

  /** What an event changed, as [field, before, after] or [field, value]. */
  function changesOf(ev) {
    const d = ev.data || {};
    const never = (t) => (t ? fmtDate(t, true) : 'never');
    switch (ev.type) {
      case 'api_key.created':
        return [['name', d.name], ['type', d.role], ['key', d.display], ['expires', never(d.expires_at)]];
      case 'api_key.renamed':
        return [['name', d.from, d.to]];
      case 'api_key.role_changed':
      case 'user.role_changed':
        return [[ev.type.startsWith('user') ? 'role' : 'type', d.from, d.to]];
      case 'api_key.expiry_changed':
        return [['expires', never(d.from), never(d.to)]];
      case 'api_key.regenerated':
        return [['key', d.previous_display, d.display], ['old secret valid until', fmtDate(d.previous_valid_until, true)]];
      case 'api_key.disabled':
      case 'api_key.enabled':
      case 'api_key.deleted':
      case 'user.deactivated':
        return [['status', d.from, d.to]];
      case 'user.registered':
        return [['email', d.email], ['role', d.role]];
      case 'pat.created':
        return [['name', d.name], ['token', d.display], ['user', principalName(d.user_id)], ['expires', never(d.expires_at)]];
      case 'pat.revoked':
        return [['status', d.from, d.to], ['reason', d.reason], ['user', principalName(d.user_id)]];
      case 'credential.activity': {
        const byOutcome = new Map();
        for (const c of d.counts || []) byOutcome.set(c.outcome, (byOutcome.get(c.outcome) || 0) + c.count);
        return [['credential', principalName(d.credential_id)],
          ['requests', Array.from(byOutcome, ([o, n]) => `${o} ×${n}`).join(', ')]];
      }
      case 'ledger.initialized':
        return [['origin', d.origin]];
      case 'ledger.signer_rotated':
        return [['signing key', d.from, d.to]];
      default:
        return Object.entries(d)
          .filter(([k]) => !k.includes('sha256'))
          .map(([k, v]) => [k, typeof v === 'object' ? JSON.stringify(v) : String(v)]);
    }
  }

  function changesList(ev) {
    return h('ul', { class: 'changes' }, changesOf(ev).map((c) => (c.length === 3
      ? h('li', null, h('span', { class: 'chg-field' }, `${c[0]}: `), h('span', { class: 'from' }, String(c[1] ?? '—')),
        h('span', { class: 'arrow', 'aria-label': 'changed to' }, ' → '), h('span', { class: 'to' }, String(c[2] ?? '—')))
      : h('li', null, h('span', { class: 'chg-field' }, `${c[0]}: `), String(c[1] ?? '—')))));
  }

  function changesText(ev) {
    return changesOf(ev).map((c) => (c.length === 3 ? `${c[0]}: ${c[1]} → ${c[2]}` : `${c[0]}: ${c[1]}`)).join('; ');
  }

  function renderTimeline(events) {
    const list = $('#timeline');
    clear(list);
    if (!events.length) {
      list.append(h('li', { class: 'muted' }, 'No events yet.'));
      return;
    }
    for (const ev of events) {
      const kind = ev.type.split('.').pop();
      list.append(h('li', { class: `tl-item tl-${kind}`, 'data-type': ev.type, 'data-seq': ev.seq },
        h('div', { class: 'tl-head' },
          h('strong', { class: 'tl-label' }, EVENT_LABELS[ev.type] || ev.type),
          ' ', h('code', { class: 'tl-type' }, ev.type)),
        h('div', { class: 'tl-meta' }, timeEl(ev.at, '', true), ' · by ', actorEl(ev.actor),
          h('span', { class: 'muted' }, ` · seq ${ev.seq}, version ${ev.version}`)),
        changesList(ev)));
    }
  }

  async function loadActivity(id) {
    const r = await api('GET', `/v1/audit/principals/${id}/activity`);
    renderChart(r, principalName(id));
  }

  function dayRange(first, last) {
    const out = [];
    const d = new Date(`${first}T00:00:00Z`);
    const end = new Date(`${last}T00:00:00Z`);
    while (d <= end && out.length < 400) {
      out.push(d.toISOString().slice(0, 10));
      d.setUTCDate(d.getUTCDate() + 1);
    }
    return out;
  }

  /** An integer tick step (1, 2, 5, 10, 20, 50…) giving about four ticks up to `n`. */
  function tickStep(n) {
    const raw = Math.max(1, n / 4);
    const mag = 10 ** Math.floor(Math.log10(raw));
    for (const m of [1, 2, 5, 10]) if (m * mag >= raw) return m * mag;
    return 10 * mag;
  }

  /** An inline SVG stacked bar chart: one bar per UTC day, one segment per outcome. */
  function renderChart(activity, name) {
    const box = $('#activity-chart');
    clear(box);
    const byDay = new Map();
    const outcomes = new Set();
    for (const c of activity.counts || []) {
      if (!byDay.has(c.day)) byDay.set(c.day, new Map());
      const m = byDay.get(c.day);
      m.set(c.outcome, (m.get(c.outcome) || 0) + c.count);
      outcomes.add(c.outcome);
    }
    if (!byDay.size) {
      box.append(h('p', { class: 'muted' }, 'No recorded activity yet. Use is counted in memory and written to the log '
        + 'when each activity window closes.'));
      return;
    }
    const sorted = Array.from(byDay.keys()).sort();
    let days = dayRange(sorted[0], sorted[sorted.length - 1]);
    if (days.length > 62) days = sorted; // a long, sparse range: only the days with data
    const order = OUTCOMES.filter((o) => outcomes.has(o)).concat(Array.from(outcomes).filter((o) => !OUTCOMES.includes(o)).sort());
    const totals = days.map((d) => Array.from((byDay.get(d) || new Map()).values()).reduce((a, b) => a + b, 0));
    const step = tickStep(Math.max(...totals));
    const ticks = Math.max(1, Math.ceil(Math.max(...totals) / step));
    const max = step * ticks;
    const grand = totals.reduce((a, b) => a + b, 0);

    const left = 44; const right = 12; const top = 12; const bottom = 40;
    const slot = 44;
    const width = Math.max(360, left + right + days.length * slot);
    const height = 230;
    const plotH = height - top - bottom;
    const plotW = width - left - right;
    const slotW = plotW / days.length;
    const barW = Math.min(32, slotW * 0.7);
    const y = (v) => top + plotH - (v / max) * plotH;

    const titleId = 'activity-svg-title';
    const descId = 'activity-svg-desc';
    const perOutcome = order.map((o) => `${o} ${days.reduce((a, d) => a + ((byDay.get(d) || new Map()).get(o) || 0), 0)}`);
    const svg = s('svg', {
      viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-labelledby': `${titleId} ${descId}`,
      class: 'bars', preserveAspectRatio: 'xMinYMin meet',
    },
    s('title', { id: titleId }, `Activity of ${name} per day by outcome`),
    s('desc', { id: descId }, `${grand} requests over ${days.length} day(s): ${perOutcome.join(', ')}.`));

    // Grid and y axis labels.
    for (let i = 0; i <= ticks; i += 1) {
      const v = step * i;
      const yy = y(v);
      svg.append(s('line', { x1: left, x2: width - right, y1: yy, y2: yy, class: i === 0 ? 'axis' : 'grid' }));
      svg.append(s('text', { x: left - 6, y: yy + 4, class: 'tick', 'text-anchor': 'end' }, String(v)));
    }
    const labelEvery = Math.ceil(days.length / Math.max(1, Math.floor(plotW / 48)));
    days.forEach((day, i) => {
      const x = left + i * slotW + (slotW - barW) / 2;
      let acc = 0;
      const m = byDay.get(day) || new Map();
      for (const o of order) {
        const n = m.get(o) || 0;
        if (!n) continue;
        const y0 = y(acc + n);
        const hgt = y(acc) - y0;
        svg.append(s('rect', {
          x: x.toFixed(1), y: y0.toFixed(1), width: barW.toFixed(1), height: Math.max(hgt, 0.5).toFixed(1),
          class: `o-${o.toLowerCase()}`, 'data-day': day, 'data-outcome': o, 'data-count': n,
        }, s('title', null, `${day}: ${o} ${n}`)));
        acc += n;
      }
      if (i % labelEvery === 0) {
        svg.append(s('text', { x: (x + barW / 2).toFixed(1), y: height - bottom + 16, class: 'tick', 'text-anchor': 'middle' }, day.slice(5)));
      }
    });
    svg.append(s('text', { x: left, y: height - 6, class: 'tick' }, 'UTC day (MM-DD)'));

    const legend = h('ul', { class: 'legend', 'aria-label': 'Outcomes' },
      order.map((o) => h('li', null, h('span', { class: `swatch o-${o.toLowerCase()}`, 'aria-hidden': 'true' }), o)));

    const table = h('table', { class: 'data compact' },
      h('caption', null, `Requests per day and outcome for ${name}`),
      h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Day'), order.map((o) => h('th', { scope: 'col' }, o)), h('th', { scope: 'col' }, 'Total'))),
      h('tbody', null, days.filter((d) => byDay.has(d)).map((d) => h('tr', null,
        h('th', { scope: 'row' }, d),
        order.map((o) => h('td', null, String((byDay.get(d).get(o)) || 0))),
        h('td', null, String(Array.from(byDay.get(d).values()).reduce((a, b) => a + b, 0)))))));

    box.append(h('div', { class: 'chart-scroll' }, svg), legend,
      h('details', null, h('summary', null, 'Show the numbers as a table'), h('div', { class: 'table-wrap' }, table)));
  }

  // Log browser
  function logParamsFromForm() {
    const f = $('#log-form').elements;
    const p = {};
    for (const k of ['type', 'stream', 'actor']) {
      const v = f[k].value.trim();
      if (v) p[k] = v;
    }
    const since = localToRfc3339(f.since.value);
    const until = localToRfc3339(f.until.value);
    if (since) p.since = since;
    if (until) p.until = until;
    p.limit = String(f.limit.value || '50');
    return p;
  }

  async function searchLog() {
    state.log.params = logParamsFromForm();
    state.log.before = null;
    state.log.back = [];
    await fetchLogPage();
  }

  /** The page of the log that ends before `state.log.before`, newest first. */
  async function fetchLogPage() {
    state.log.ticket += 1;
    const { ticket } = state.log;
    const q = new URLSearchParams({ ...state.log.params, order: 'desc' });
    if (state.log.before !== null) q.set('before', String(state.log.before));
    const page = await api('GET', `/v1/audit/events?${q}`);
    await knowNames(page.events.flatMap(idsOfEvent));
    if (ticket !== state.log.ticket) return;
    state.log.next = page.next_before ?? null;
    renderLog(page.events);
  }

  function streamEl(stream) {
    const [kind, id] = stream.split('/');
    if (!id) return h('code', null, stream);
    return h('span', { title: stream }, h('code', null, `${kind}/${shortId(id)}`),
      state.names.has(id) ? h('span', { class: 'muted' }, ` ${state.names.get(id)}`) : null);
  }

  function renderLog(events) {
    const body = $('#log-body');
    clear(body);
    for (const ev of events) {
      body.append(h('tr', { 'data-seq': ev.seq, 'data-type': ev.type },
        cell('Seq', String(ev.seq)),
        cell('At', timeEl(ev.at, '', true)),
        cell('Type', h('code', null, ev.type)),
        cell('Stream', streamEl(ev.stream)),
        cell('Actor', actorEl(ev.actor)),
        cell('Details', h('span', { class: 'details' }, changesText(ev))),
      ));
    }
    const pageNo = state.log.back.length + 1;
    $('#log-summary').textContent = events.length
      ? `Page ${pageNo}, newest first: ${events.length} entries, seq ${events[0].seq}–${events[events.length - 1].seq}.`
        + (state.log.next !== null ? ' Older entries match.' : ' No older entries match.')
      : 'No entries match these filters.';
    $('#log-next').disabled = state.log.next === null;
    $('#log-prev').disabled = state.log.back.length === 0;
    $('#log-first').disabled = state.log.back.length === 0;
  }

  $('#log-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    searchLog().catch(showError);
  });
  $('#log-form').addEventListener('reset', () => {
    window.setTimeout(() => searchLog().catch(showError), 0);
  });
  // Older goes down the log with next_before; newer pops the stack of `before` cursors.
  $('#log-next').addEventListener('click', () => {
    if (state.log.next === null) return;
    state.log.back.push(state.log.before);
    state.log.before = state.log.next;
    fetchLogPage().then(() => {
      if ($('#log-next').disabled) $('#log-prev').focus();
    }, showError);
  });
  $('#log-prev').addEventListener('click', () => {
    if (!state.log.back.length) return;
    state.log.before = state.log.back.pop();
    fetchLogPage().then(() => {
      if ($('#log-prev').disabled) $('#log-next').focus();
    }, showError);
  });
  $('#log-first').addEventListener('click', () => {
    state.log.before = null;
    state.log.back = [];
    fetchLogPage().then(() => $('#log-next').focus(), showError);
  });

  // ---------------------------------------------------------------- start

  async function start() {
    const notice = sessionStorage.getItem(NOTICE_KEY);
    sessionStorage.removeItem(NOTICE_KEY);
    const saved = sessionStorage.getItem(STORAGE_KEY);
    if (!saved) {
      showSignIn();
      if (notice) announce(notice);
      return;
    }
    try {
      await signIn(saved);
      if (notice) announce(notice);
    } catch (e) {
      showSignIn();
      showError(new Error(`Your saved session was refused: ${messageOf(e)}`));
    }
  }

  start();
})();
