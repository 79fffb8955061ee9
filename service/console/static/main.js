// The console's shell: sign-in, the header, and a router over the URL's hash (#/tasks, #/tasks/new,
// #/tasks/<id>, #/tasks/<id>/edit), so every screen has a link and the back button works.

import { Api, ApiError, session } from './api.js';
import { field, h } from './dom.js';
import { formView } from './form.js';
import { taskView } from './task.js';
import { tasksView } from './tasks.js';

const main = document.getElementById('main');
const who = document.getElementById('who');
const signOut = document.getElementById('sign-out');

// What every view gets: the API client, the app's zone, a one-shot notice for the next screen, and a signal
// that aborts when the user leaves the screen (a run being followed, a preview waiting to be asked).
const context = { api: null, zone: 'UTC', notice: null, signal: null, go: (...args) => go(...args) };
let controller = null;
let navigation = 0;

function show(view) {
  main.replaceChildren(view);
  const heading = main.querySelector('h1');
  if (heading) {
    heading.tabIndex = -1;
    heading.focus({ preventScroll: true }); // a screen reader hears where it is; Tab goes on from here
  }
}

function signInView() {
  const appKey = h('input', { name: 'app_key', autocomplete: 'username', spellcheck: 'false', required: true });
  const secret = h('input', { name: 'master_secret', type: 'password', autocomplete: 'current-password', required: true });
  const alert = h('p', { class: 'alert', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h('form', { class: 'card narrow', 'aria-labelledby': 'sign-in-title' },
    h('h1', { id: 'sign-in-title' }, 'Sign in'),
    h('p', {}, 'An app key and its master secret (from ', h('code', {}, 'apps create'), '). The secret stays in ',
      'this tab only and goes nowhere but this service\u2019s /v4 API.'),
    field({ label: 'App key', control: appKey }),
    field({ label: 'Master secret', control: secret }),
    alert,
    h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    submit.disabled = true;
    alert.hidden = true;
    const api = new Api(appKey.value.trim(), secret.value);
    try {
      const zone = await api.timeZone();
      session.save({ appKey: appKey.value.trim(), secret: secret.value, zone });
      route();
    } catch (error) {
      alert.textContent = error instanceof ApiError && error.status === 401
        ? `${error.message} Check the app key and the master secret.`
        : error.message;
      alert.hidden = false;
      secret.select();
      secret.focus();
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function errorView(error) {
  return h('section', { class: 'card' },
    h('h1', {}, error.status === 404 ? 'Not found' : 'Something went wrong'),
    h('p', { class: 'alert', role: 'alert' }, error.message),
    h('p', {}, h('a', { href: '#/tasks' }, 'Back to the tasks')));
}

async function route() {
  const current = ++navigation;
  controller?.abort();
  controller = new AbortController();
  const credentials = session.load();
  who.hidden = signOut.hidden = !credentials;
  if (!credentials) {
    context.api = null;
    show(signInView());
    return;
  }
  context.api = new Api(credentials.appKey, credentials.secret);
  context.zone = credentials.zone;
  context.signal = controller.signal;
  who.textContent = `App ${credentials.appKey} \u00b7 ${credentials.zone}`;

  const [path, queryString = ''] = location.hash.replace(/^#\/?/, '').split('?');
  const parts = path.split('/').filter(Boolean);
  const query = Object.fromEntries(new URLSearchParams(queryString));
  let view;
  try {
    if (parts.length === 0 || (parts[0] === 'tasks' && parts.length === 1)) view = await tasksView(context, query);
    else if (parts[0] === 'tasks' && parts[1] === 'new' && parts.length === 2) view = await formView(context, null);
    else if (parts[0] === 'tasks' && parts.length === 2) view = await taskView(context, decodeURIComponent(parts[1]));
    else if (parts[0] === 'tasks' && parts[2] === 'edit' && parts.length === 3) {
      view = await formView(context, decodeURIComponent(parts[1]));
    } else throw new ApiError(404, 28104, `No screen at #${path}.`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      session.forget(); // the secret was rotated or the app disabled meanwhile: ask again
      route();
      return;
    }
    view = errorView(error);
  }
  if (current !== navigation) return; // a later navigation has already replaced this one
  if (context.notice) {
    view.prepend(h('p', { class: 'notice', role: 'status' }, context.notice));
    context.notice = null;
  }
  show(view);
}

// Views move to another screen through context.go, optionally with a notice shown on arrival.
function go(hash, notice = null) {
  context.notice = notice;
  if (location.hash === hash) route();
  else location.hash = hash;
}

signOut.addEventListener('click', () => {
  session.forget();
  location.hash = '#/tasks';
  route();
});
window.addEventListener('hashchange', route);
route();
