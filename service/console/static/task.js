// One task: its detail and next fires, Run now with a live status (the polling Location followed until 200),
// enable/disable, delete, its webhook (create, rotate, revoke, with copy buttons), and its run history.

import { confirmDialog, h, timeElement, wallTime } from './dom.js';
import { KINDS, kindOf, lastRunText } from './tasks.js';

function scheduleText(trigger) {
  const kind = kindOf(trigger);
  const body = trigger[kind];
  const zone = body.zone_type === 2 ? ' on each device\u2019s clock' : '';
  if (kind === 'single') return `Once at ${body.time}${zone}`;
  if (kind === 'periodical') {
    const every = body.frequency === 1 ? body.time_unit : `${body.frequency} ${body.time_unit}s`;
    const on = body.point ? ` on ${body.point.join(', ')}` : '';
    return `Every ${every}${on} at ${body.time}, from ${body.start} until ${body.end}${zone}`;
  }
  const range = `${body.start ? `, from ${body.start}` : ''}${body.end ? ` until ${body.end}` : ''}`;
  if (kind === 'cron') return `Cron ${body.expression}${range}${zone}`;
  return `Every ${body.every} ${body.unit}${body.every === 1 ? '' : 's'}, first at ${body.start}${body.end ? ` until ${body.end}` : ''}`;
}

function targetText(to) {
  if (to === 'all') return 'Everyone';
  return Object.entries(to).map(([key, value]) => `${key}: ${[].concat(value).join(', ')}`).join('; ');
}

const row = (term, ...description) => [h('dt', {}, term), h('dd', {}, ...description)];

// A read-only field with a button that copies it.
function copyable(label, value, buttonText) {
  const box = h('input', { readonly: true, value, class: 'mono', 'aria-label': label });
  const said = h('span', { class: 'copied', role: 'status' });
  const button = h('button', {
    type: 'button',
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(value);
      } catch {
        box.select(); // no clipboard permission (an insecure origin): leave it selected for Ctrl+C
        document.execCommand('copy');
      }
      said.textContent = `${label} copied`;
    },
  }, buttonText);
  return h('div', { class: 'copy' }, h('span', { class: 'copy-label' }, label), box, button, said);
}

export async function taskView(context, id) {
  const { api, zone, signal } = context;
  let [task, webhook, upcoming, runs] = await Promise.all([
    api.get(id), api.webhook(id), api.upcoming(id, 5), api.runs(id, 1),
  ]);
  let runsPage = 1;

  const title = h('h1', {});
  const details = h('dl', { class: 'details' });
  const fires = h('div', {});
  const actionsStatus = h('p', { class: 'status-line', role: 'status', 'aria-live': 'polite' });
  const runStatus = h('p', { class: 'run-status', role: 'status', 'aria-live': 'polite', 'data-state': 'idle' });
  const history = h('div', {});
  const hook = h('div', {});
  const toggle = h('button', { type: 'button', onclick: () => setEnabled(!task.enabled) });
  const runButton = h('button', { type: 'button', class: 'primary', onclick: runNow }, 'Run now');

  function drawTask() {
    title.replaceChildren(task.name, ' ', h('span', { class: `badge ${task.enabled ? 'on' : 'off'}` }, task.enabled ? 'enabled' : 'disabled'));
    toggle.textContent = task.enabled ? 'Disable' : 'Enable';
    const push = task.push;
    details.replaceChildren(...[
      row('Description', task.description || h('span', { class: 'none' }, 'none')),
      row('Kind', KINDS[kindOf(task.trigger)] ?? kindOf(task.trigger)),
      row('Schedule', scheduleText(task.trigger)),
      row(`Next run (${zone})`, timeElement(task.next_run_at, zone)),
      row('Last run', lastRunText(task.last_run, zone), task.last_run?.msg_id ? ` \u00b7 msg_id ${task.last_run.msg_id}` : ''),
      row('Consecutive failures', `${task.consecutive_failures}${task.max_failures ? ` (disables itself at ${task.max_failures})` : ' (never disables itself)'}`),
      task.disabled_reason ? row('Disabled because', task.disabled_reason) : [],
      row('Send to', targetText(push.to)),
      row('Platform', [].concat(push.body?.platform ?? []).join(', ')),
      row('Alert', typeof push.body?.notification?.alert === 'string' ? push.body.notification.alert : h('span', { class: 'none' }, 'none')),
      row('Parameters', Object.keys(task.params ?? {}).length
        ? Object.entries(task.params).map(([k, v]) => `${k}=${v}`).join(', ') : h('span', { class: 'none' }, 'none')),
    ].flat());
    fires.replaceChildren(upcoming.fires.length === 0
      ? h('p', {}, task.enabled ? 'No fire left.' : 'None while the task is disabled.')
      : h('ol', { class: 'fires' }, upcoming.fires.map((fire) => h('li', {},
        h('time', { datetime: fire.utc, title: `${wallTime(fire.utc, 'UTC')} UTC` }, fire.time),
        fire.wave ? ` wave ${fire.wave}` : ''))),
    upcoming.fires.length ? h('p', { class: 'hint' }, `Times in ${upcoming.time_zone}; hover a time for UTC.`) : '');
  }

  function drawHistory() {
    if (runs.total_count === 0) {
      history.replaceChildren(h('p', {}, 'No run yet.'));
      return;
    }
    const pages = Math.max(runs.total_pages, 1);
    const move = (page) => async () => {
      runsPage = page;
      runs = await api.runs(id, page);
      drawHistory();
    };
    history.replaceChildren(
      h('table', { class: 'runs' },
        h('thead', {}, h('tr', {}, ['Due', 'Source', 'State', 'Attempts', 'msg_id', 'Error'].map((name) => h('th', { scope: 'col' }, name)))),
        h('tbody', {}, runs.runs.map((run) => h('tr', { 'data-run': run.run_id },
          h('td', { 'data-label': 'Due' }, timeElement(run.due_at, zone), run.wave ? ` wave ${run.wave}` : ''),
          h('td', { 'data-label': 'Source' }, run.source.replace('_', ' ')),
          h('td', { 'data-label': 'State' }, h('span', { class: `outcome ${run.state}` }, run.state)),
          h('td', { 'data-label': 'Attempts' }, String(run.attempts)),
          h('td', { 'data-label': 'msg_id', class: 'mono' }, run.msg_id ?? '\u2014'),
          h('td', { 'data-label': 'Error', class: 'error-text' }, run.error ?? ''))))),
      h('nav', { class: 'pager', 'aria-label': 'Run history pages' },
        h('button', { type: 'button', disabled: runsPage <= 1, onclick: move(runsPage - 1) }, 'Newer runs'),
        h('span', {}, `Page ${runsPage} of ${pages} \u00b7 ${runs.total_count} run${runs.total_count === 1 ? '' : 's'}`),
        h('button', { type: 'button', disabled: runsPage >= pages, onclick: move(runsPage + 1) }, 'Older runs')));
  }

  async function refresh() {
    [task, upcoming, runs] = await Promise.all([api.get(id), api.upcoming(id, 5), api.runs(id, runsPage)]);
    drawTask();
    drawHistory();
  }

  function say(line, text, state) {
    line.textContent = text;
    if (state) line.dataset.state = state;
  }

  async function runNow() {
    runButton.disabled = true;
    try {
      const started = await api.runNow(id);
      const runId = started.json.run_id;
      const outcome = await api.follow(started, (status, code) => {
        const text = code === 202
          ? `Run ${runId}: ${status.status}, ${status.percent}% (${status.sent} sent, ${status.failed} failed of ${status.total})`
          : `Run ${runId}: ${status.status}`;
        say(runStatus, text, code === 202 ? 'running' : status.status);
      }, signal);
      const ids = outcome.msg_ids.length ? ` \u00b7 msg_id ${outcome.msg_ids.join(', ')}` : '';
      const errors = outcome.errors.map((e) => e.error).join('; ');
      say(runStatus, `Run ${runId}: ${outcome.status}${ids}${errors ? ` \u00b7 ${errors}` : ''}`, outcome.status);
      await refresh();
    } catch (error) {
      if (!signal?.aborted) say(runStatus, `Run now failed: ${error.message}`, 'error');
    } finally {
      runButton.disabled = false;
    }
  }

  async function setEnabled(value) {
    toggle.disabled = true;
    try {
      task = await api.update(id, { enabled: value });
      upcoming = await api.upcoming(id, 5);
      drawTask();
      say(actionsStatus, value ? 'Enabled: the task fires from its next time on.' : 'Disabled: the task does not fire until it is enabled again.');
    } catch (error) {
      say(actionsStatus, error.message);
    } finally {
      toggle.disabled = false;
      toggle.focus();
    }
  }

  async function remove() {
    const sure = await confirmDialog({
      title: `Delete \u201c${task.name}\u201d?`,
      text: 'It stops firing at once and leaves the list. Its webhook URLs stop working. This cannot be undone.',
      confirm: 'Delete task',
    });
    if (!sure) return;
    try {
      await api.remove(id);
      context.go('#/tasks', `Deleted \u201c${task.name}\u201d.`);
    } catch (error) {
      say(actionsStatus, error.message);
    }
  }

  function drawWebhook(created = null) {
    const buttons = [];
    if (webhook.exists) {
      buttons.push(h('button', { type: 'button', onclick: () => changeWebhook('rotate') }, 'Rotate URLs'),
        h('button', { type: 'button', class: 'danger', onclick: () => changeWebhook('revoke') }, 'Revoke URLs'));
    } else {
      buttons.push(h('button', { type: 'button', onclick: () => changeWebhook('create') }, 'Create webhook URLs'));
    }
    const state = webhook.exists
      ? h('p', {}, 'The task has webhook URLs, made ', timeElement(webhook.created_at, zone), '. The service keeps only a digest of their token: to see them again, rotate them.')
      : h('p', {}, 'No webhook URLs. Anyone who holds them can run the task, without the master secret.');
    const shown = created ? h('div', { class: 'urls' },
      h('p', { class: 'notice' }, 'Copy the URLs now: they are shown only this once.'),
      copyable('URL', new URL(created.url, location.href).href, 'Copy the URL'),
      copyable('Polling URL', new URL(created.poll_url, location.href).href, 'Copy the polling URL')) : null;
    hook.replaceChildren(state, shown ?? '', h('div', { class: 'actions' }, buttons));
  }

  async function changeWebhook(what) {
    if (what !== 'create') {
      const sure = await confirmDialog({
        title: what === 'rotate' ? 'Rotate the webhook URLs?' : 'Revoke the webhook URLs?',
        text: what === 'rotate' ? 'The current URLs stop working at once; new ones are made.' : 'The URLs stop working at once.',
        confirm: what === 'rotate' ? 'Rotate' : 'Revoke',
      });
      if (!sure) return;
    }
    try {
      if (what === 'revoke') {
        webhook = await api.revokeWebhook(id);
        drawWebhook();
        say(actionsStatus, 'Webhook URLs revoked.');
      } else {
        const created = await api.createWebhook(id);
        webhook = { exists: true, created_at: created.created_at };
        drawWebhook(created);
      }
      hook.querySelector('button')?.focus();
    } catch (error) {
      say(actionsStatus, error.message);
    }
  }

  drawTask();
  drawHistory();
  drawWebhook();
  return h('article', { class: 'task-view' },
    h('p', { class: 'crumbs' }, h('a', { href: '#/tasks' }, '\u2190 Tasks')),
    title,
    h('div', { class: 'actions' }, runButton,
      h('a', { class: 'button', href: `#/tasks/${id}/edit` }, 'Edit'),
      toggle,
      h('button', { type: 'button', class: 'danger', onclick: remove }, 'Delete')),
    actionsStatus, runStatus,
    h('div', { class: 'columns' },
      h('section', { 'aria-labelledby': 'detail-title' }, h('h2', { id: 'detail-title' }, 'Detail'), details),
      h('section', { 'aria-labelledby': 'fires-title' }, h('h2', { id: 'fires-title' }, 'Next fires'), fires)),
    h('section', { 'aria-labelledby': 'runs-title' }, h('h2', { id: 'runs-title' }, 'Run history'), history),
    h('section', { 'aria-labelledby': 'hook-title' }, h('h2', { id: 'hook-title' }, 'Webhook'), hook));
}
